"""Real example data that ship with our dependencies, for the demo and the docs."""
import numpy as np
from astropy.nddata import NDData
from astropy.stats import sigma_clipped_stats
from photutils.segmentation import SourceCatalog, detect_sources
from scipy import ndimage

__all__ = ['hubble_deep_field_cutouts']


def hubble_deep_field_cutouts(n=60, min_size=48):
    """Colour cutouts of the largest galaxies of the Hubble Deep Field.

    The image is the HST WFPC2 colour composite that scikit-image bundles
    (`skimage.data.hubble_deep_field`); its galaxies are found with photutils.

    Parameters
    ----------
    n : int, optional
        How many galaxies, largest first.
    min_size : int, optional
        Smallest cutout side in pixels.

    Returns
    -------
    cutouts : list of `~astropy.nddata.NDData`
        ``(3, ny, nx)`` uint8 colour cutouts centred on the galaxies, with ``meta['objid']``
        (``HDF-<number>``), ``meta['kind'] = 'colour'`` and the pixel position in the field.

    Examples
    --------
    >>> from astro_galsim.demo import hubble_deep_field_cutouts
    >>> cutouts = hubble_deep_field_cutouts(n=5)
    >>> len(cutouts), cutouts[0].data.shape[0], cutouts[0].meta['objid']
    (5, 3, 'HDF-1')
    """
    from skimage.data import hubble_deep_field
    field = hubble_deep_field()                      # (ny, nx, 3) uint8
    grey = field.mean(axis=2)
    _, median, std = sigma_clipped_stats(grey, sigma=3)
    smoothed = ndimage.gaussian_filter(grey, 1.5)
    segm = detect_sources(smoothed, median + 3 * std, n_pixels=40)
    cat = SourceCatalog(grey - median, segm)
    order = np.argsort(cat.area.value)[::-1]
    cutouts = []
    ny, nx = grey.shape
    for i in order:
        # skip sources cut by the field's edge: their light is incomplete
        x, y = float(cat.x_centroid[i]), float(cat.y_centroid[i])
        half = max(min_size / 2, 2.5 * float(cat.semimajor_axis[i].value) * 2)
        if x - half < 0 or y - half < 0 or x + half > nx or y + half > ny:
            continue
        x0, y0, h = int(round(x - half)), int(round(y - half)), int(round(2 * half))
        data = np.ascontiguousarray(field[y0:y0 + h, x0:x0 + h].transpose(2, 0, 1))
        cutouts.append(NDData(data, meta={'objid': f'HDF-{len(cutouts) + 1}', 'kind': 'colour',
                                          'bands': ('F814W', 'F606W', 'F450W'),
                                          'field_position': (x, y)}))
        if len(cutouts) == n:
            break
    return cutouts
