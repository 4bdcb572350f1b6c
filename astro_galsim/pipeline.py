"""The per-galaxy path: image to normalised encoder input and measurements.

Everything here is a pure function of its inputs (the sky draw used to fill masked
neighbours is seeded), so the same path can be mapped over a catalogue by any
parallel engine and give the same result.
"""
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.wcs.utils import proj_plane_pixel_scales
from tqdm.auto import tqdm

from .config import conf
from .io import read_image
from .preprocessing import to_colour
from .segmentation import measure_galaxy, measurements_table, normalise_galaxy, select_galaxy

__all__ = ['prepare', 'prepare_one', 'DEFAULT_NORMALISATION']

#: Input of the pretrained encoder (keywords of `~astro_galsim.segmentation.normalise_galaxy`):
#: 64 x 64 pixels, 3 half-light radii from the centre to the edge, major axis horizontal,
#: unrelated sources replaced by sky. An encoder's model card stores the settings its inputs
#: were made with; images must be prepared the same way to be compared.
DEFAULT_NORMALISATION = dict(size=64, radius_scale=3.0, rotate=True, isolate=True)


def _as_image(image):
    if isinstance(image, NDData):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image)
    return NDData(np.asarray(image))


def _pixel_position(image, target):
    """Pixel (x, y) of a SkyCoord target through the image WCS, or None for the centre."""
    if target is None or image.wcs is None:
        return None
    x, y = image.wcs.world_to_pixel(target)
    return float(x), float(y)


def _pixel_scale(image):
    if image.wcs is None:
        return np.nan * u.arcsec
    return (proj_plane_pixel_scales(image.wcs).mean() * u.deg).to(u.arcsec)


def prepare_one(image, target=None, *, normalisation=DEFAULT_NORMALISATION, selection=None):
    """Prepare one galaxy image for the encoder.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, path or `~numpy.ndarray`
        The cutout (see `~astro_galsim.read_image` for the file formats).
    target : `~astropy.coordinates.SkyCoord`, optional
        Position of the galaxy; used through the image WCS to pick the central galaxy.
        Default: the image centre.
    normalisation : dict, optional
        Keywords of `~astro_galsim.segmentation.normalise_galaxy`.
    selection : dict, optional
        Keywords of `~astro_galsim.segmentation.select_galaxy`.

    Returns
    -------
    array : `~numpy.ndarray` or None
        ``(3, size, size)`` float32 input for the encoder, None when no galaxy was found.
    record : dict
        The public measurements, ``accepted``, ``reason`` and ``pixel_scale``.
    """
    image = _as_image(image)
    rgb = to_colour(image)
    measurement = measure_galaxy(rgb, _pixel_position(image, target))
    scale = _pixel_scale(image)
    selection = dict(selection or {})
    if np.isfinite(scale):
        selection.setdefault('pixel_scale', scale)
    accepted, reason = select_galaxy(measurement, **selection)
    record = {k: v for k, v in measurement.items() if not k.startswith('_')}
    record.update(accepted=accepted, reason=reason, pixel_scale=scale)
    array = normalise_galaxy(rgb, measurement, **normalisation) if measurement['found'] else None
    return array, record


def _failure(reason):
    return None, {'found': False, 'accepted': False, 'reason': reason, 'pixel_scale': np.nan * u.arcsec}


def _prepare_safely(args):
    image, target, normalisation, selection = args
    if isinstance(image, Exception):  # an image that could not be had (a failed download)
        return _failure(f'retrieval failed: {image}')
    try:
        return prepare_one(image, target, normalisation=normalisation, selection=selection)
    except (OSError, ValueError) as exc:
        return _failure(f'{type(exc).__name__}: {exc}')


def prepare(images, targets=None, *, normalisation=DEFAULT_NORMALISATION, selection=None, workers=1,
            progress=None):
    """Prepare many galaxy images for the encoder; failures become rows, not exceptions.

    Parameters
    ----------
    images : list of `~astropy.nddata.NDData`, path or `~numpy.ndarray`
        The cutouts. An exception in the list (such as the
        `~astro_galsim.retrieval.RetrievalError` that `~astro_galsim.retrieval.get_cutouts`
        gives for a failed download) becomes a row with the reason ``retrieval failed: ...``.
    targets : `~astropy.coordinates.SkyCoord`, optional
        One position per image (an array SkyCoord), or None for the image centres.
    normalisation, selection : dict, optional
        As in `prepare_one`.
    workers : int, optional
        Processes to use; 1 works in this process.
    progress : bool, optional
        Show a progress bar (default: ``conf.show_progress`` for more than 50 images).

    Returns
    -------
    arrays : `~numpy.ndarray`, shape (N, 3, size, size), float32
        Zeros for the images where no galaxy was found.
    table : `~astropy.table.QTable`
        One row per image in input order: the measurements with units, ``accepted``,
        ``reason`` and ``pixel_scale``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:81, :81]
    >>> disc = np.exp(-np.hypot((x - 40) / 10, (y - 40) / 5))[None].repeat(3, 0)
    >>> arrays, table = prepare([disc])
    >>> arrays.shape, bool(table['accepted'][0])
    ((1, 3, 64, 64), True)
    """
    images = list(images)
    if targets is not None:
        if not isinstance(targets, SkyCoord) or targets.isscalar or len(targets) != len(images):
            raise ValueError('targets must be an array SkyCoord with one position per image')
    jobs = [(img, None if targets is None else targets[i], normalisation, selection)
            for i, img in enumerate(images)]
    if progress is None:
        progress = conf.show_progress and len(jobs) > 50
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunksize = max(1, min(16, len(jobs) // (4 * workers)))  # no idle worker at the end
            results = list(tqdm(pool.map(_prepare_safely, jobs, chunksize=chunksize), total=len(jobs),
                                disable=not progress, desc='preparing'))
    else:
        results = [_prepare_safely(job) for job in tqdm(jobs, disable=not progress, desc='preparing')]
    size = normalisation['size']
    arrays = np.zeros((len(results), 3, size, size), dtype=np.float32)
    for i, (array, _) in enumerate(results):
        if array is not None:
            arrays[i] = array
    records = [r for _, r in results]
    table = measurements_table(records, pixel_scale=u.Quantity([r['pixel_scale'] for r in records]))
    table['accepted'] = np.array([r['accepted'] for r in records], dtype=bool)
    table['reason'] = np.array([r['reason'] for r in records], dtype=str)
    return arrays, table
