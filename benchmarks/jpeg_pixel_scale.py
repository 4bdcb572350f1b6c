"""Measurement: the pixel scale of the training sample's colour JPEGs (``DEMO_PIXEL_SCALE``).

The SkyServer JPEGs of ``sdss_galaxies_mikeedi`` carry no WCS. Twelve of their galaxies are
also r-band FITS cutouts with a WCS (0.396"/px) in ``sdss_fits_cutouts_pawlikmorph``
(``same_galaxy_in_mikeedi.csv``). For each pair the JPEG is taken as a north-up, east-left
TAN image centred on the galaxy's catalogued position; its green plane (the r band of the
SkyServer composite) is sampled at the sky position of every FITS pixel, and the JPEG pixel
scale (with a shift of the centre in x and y) is the one that maximises the rank
correlation between the two. The rank correlation does not depend on the JPEG's asinh
stretch. Pairs that correlate at rho < 0.6 (the FITS frame then holds little but sky) are
shown and left out of the summary.

Run from the repository root (the data are read from ``../shared/data``)::

    python benchmarks/jpeg_pixel_scale.py [--kind standard|large|both]
"""
import argparse
import csv
import warnings
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.optimize import minimize
from scipy.stats import spearmanr

DATA = Path('../shared/data')


def pairs(kind='standard'):
    """``(objid, kind, FITS path, JPEG path, ra, dec)`` of every FITS/JPEG pair of one galaxy."""
    with open(DATA / 'sdss_galaxies_mikeedi/index.csv') as handle:
        index = {row['objid']: row for row in csv.DictReader(handle)}
    folder = DATA / 'sdss_fits_cutouts_pawlikmorph'
    with open(folder / 'same_galaxy_in_mikeedi.csv') as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if kind in ('both', row['kind']):
            jpeg = index[row['objid']]
            yield (row['objid'], row['kind'], folder / row['fits_path'],
                   DATA / 'sdss_galaxies_mikeedi' / jpeg['path'], float(jpeg['ra']), float(jpeg['dec']))


def jpeg_scale(fits_path, jpeg_path, ra, dec):
    """The best JPEG pixel scale (arcsec), centre shift (px) and rank correlation of one pair."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # non-standard cards of the DR7 frames
        with fits.open(fits_path) as hdul:
            data = hdul[0].data.astype(float)
            wcs = WCS(hdul[0].header)
    with Image.open(jpeg_path) as image:
        green = np.asarray(image.convert('RGB'), dtype=float)[..., 1]
    n = green.shape[0]
    yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
    xi, eta = SkyCoord(ra, dec, unit='deg').spherical_offsets_to(wcs.pixel_to_world(xx.ravel(), yy.ravel()))
    xi, eta, values, centre = xi.arcsec, eta.arcsec, data.ravel(), (n - 1) / 2

    def cost(params):
        scale, dx, dy = params
        col, row = centre - xi / scale + dx, centre - eta / scale + dy   # east left, north up
        inside = (col > 0) & (col < n - 1) & (row > 0) & (row < n - 1)
        if inside.sum() < 500:
            return 1.0
        return -spearmanr(map_coordinates(green, [row[inside], col[inside]], order=1), values[inside])[0]

    grid = np.arange(0.30, 0.60, 0.01)
    start = grid[np.argmin([cost((s, 0, 0)) for s in grid])]
    best = minimize(cost, [start, 0, 0], method='Nelder-Mead',
                    options=dict(xatol=1e-4, fatol=1e-6, initial_simplex=[
                        [start, 0, 0], [start + 0.01, 0, 0], [start, 1, 0], [start, 0, 1]]))
    return best.x[0], best.x[1], best.x[2], -best.fun


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kind', default='standard', choices=('standard', 'large', 'both'),
                        help='which FITS cutouts of the pairs to register')
    args = parser.parse_args(argv)
    scales = []
    for objid, kind, fits_path, jpeg_path, ra, dec in pairs(args.kind):
        scale, dx, dy, rho = jpeg_scale(fits_path, jpeg_path, ra, dec)
        with Image.open(jpeg_path) as image:
            side = image.size[0]
        print(f'{objid} {kind:8s} JPEG {side:4d} px  scale {scale:.4f}"/px  shift {dx:+.2f} {dy:+.2f} px  '
              f'rho {rho:.3f}{"" if rho >= 0.6 else "  (left out)"}')
        if rho >= 0.6:
            scales.append(scale)
    scales = np.array(scales)
    print(f'{len(scales)} pairs: median {np.median(scales):.4f}"/px, range {scales.min():.4f}-{scales.max():.4f}, '
          f'16-84% {np.percentile(scales, 16):.4f}-{np.percentile(scales, 84):.4f}')


if __name__ == '__main__':
    main()
