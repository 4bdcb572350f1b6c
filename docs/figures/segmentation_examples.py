"""Input, segmentation and normalised result for a few real galaxies (JPEG and FITS).

Writes ``docs/_static/segmentation_examples.png``. Run from the repository root::

    python docs/figures/segmentation_examples.py

It reads the real images in ``../shared/data``.
"""
import warnings
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy import units as u  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from astro_galsim.io import read_image  # noqa: E402
from astro_galsim.preprocessing import to_colour  # noqa: E402
from astro_galsim.segmentation import measure_galaxy, normalise_galaxy, segmentation_map  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / 'shared' / 'data'
OUT = ROOT / 'docs' / '_static' / 'segmentation_examples.png'
EXAMPLES = [
    ('sdss_galaxies_mikeedi/images/train/587739407326052358.jpg', None, 'spiral (JPEG)'),
    ('sdss_galaxies_mikeedi/images/train/587727865646415929.jpg', None, 'edge-on + bright star (JPEG)'),
    ('sdss_gz1_eggochi/images/587722982271615079.jpg', None, 'small galaxy between stars (JPEG)'),
    ('sdss_fits_cutouts_pawlikmorph/cutouts/sdsscutout_148.93658+0.8608237_rband.fits',
     SkyCoord(148.93658 * u.deg, 0.8608237 * u.deg), 'r-band fpC (FITS, WCS target)'),
]
COLOURS = ListedColormap(['black', '#4c9be8', '#e8a33c', '#e8e23c'])


def main():
    fig, axes = plt.subplots(len(EXAMPLES), 3, figsize=(6.6, 2.3 * len(EXAMPLES)))
    for row, (path, target, title) in zip(axes, EXAMPLES):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            image = read_image(DATA / path)
        rgb = to_colour(image)
        position = None
        if target is not None and image.wcs is not None:
            position = tuple(float(v) for v in image.wcs.world_to_pixel(target))
        m = measure_galaxy(rgb, position)
        row[0].imshow(rgb.transpose(1, 2, 0), origin='lower' if image.meta.get('kind') == 'fits' else 'upper')
        row[0].plot(m['x_centroid'], m['y_centroid'], '+', color='cyan', ms=10)
        row[0].set_title(title, fontsize=7)
        row[1].imshow(segmentation_map(m, rgb.shape[1:]), cmap=COLOURS, vmin=0, vmax=3, interpolation='nearest',
                      origin='lower' if image.meta.get('kind') == 'fits' else 'upper')
        row[1].set_title(f'central / foreign / stars; r50 {m["r50"]:.1f} px', fontsize=7)
        row[2].imshow(normalise_galaxy(rgb, m).transpose(1, 2, 0), origin='upper')
        row[2].set_title('normalised 64 x 64, 3 r50', fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(OUT, dpi=65)
    print(f'wrote {OUT} ({OUT.stat().st_size // 1024} KB)')


if __name__ == '__main__':
    main()
