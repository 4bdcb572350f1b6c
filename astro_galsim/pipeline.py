"""The per-galaxy path: image to normalised encoder input and measurements.

Everything here is a pure function of its inputs (the sky draw used to fill masked
neighbours is seeded), so the same path can be mapped over a catalogue by any
parallel engine and give the same result.
"""
import functools
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs.utils import proj_plane_pixel_scales
from tqdm.auto import tqdm

from .config import conf
from .preprocessing import SDSS_BAND_WEIGHTS, shown_bands, to_colour
from .segmentation import measure_galaxy, measurements_table, normalise_galaxy, select_galaxy
from .surveys import resolution_of, survey_of
from .utils._checks import image_content_problem, image_input_problem
from .utils._encoders import cached_encoder, encoder_key, keep_encoder
from .utils._images import as_image as _as_image, pixel_position as _pixel_position

__all__ = ['prepare', 'prepare_one', 'describe', 'DEFAULT_NORMALISATION']

#: Input of the pretrained encoder (keywords of `~astro_galsim.segmentation.normalise_galaxy`):
#: 64 x 64 pixels, 1.5 isophotal radii (``scale_radius``) from the centre to the edge, major axis
#: horizontal, unrelated sources replaced by sky. An encoder's model card stores the settings its
#: inputs were made with; images must be prepared the same way to be compared.
DEFAULT_NORMALISATION = dict(size=64, radius_scale=1.5, scale='scale_radius', rotate=True, isolate=True)


# the detection needs a few pixels of sky around a galaxy of a few pixels
_MIN_SIDE = 16


def _check_pixels(image):
    """Refuse, saying why, an image whose mask does not fit it or whose pixels are unusable."""
    data = np.asarray(image.data)
    problem = image_input_problem(image, int(conf.max_image_pixels))   # before any pass over the pixels
    if problem:
        raise ValueError(problem)
    if not np.issubdtype(data.dtype, np.number):
        raise ValueError(f'image data of type {data.dtype} are not numbers')
    if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4:
        raise ValueError(f'an array of shape {data.shape} has its colour planes last; give them first, '
                         '(3, ny, nx), e.g. numpy.moveaxis(image, -1, 0)')
    mask = None if image.mask is None else np.asarray(image.mask, dtype=bool)
    if mask is not None and mask.shape not in (data.shape, data.shape[-2:]):
        raise ValueError(f'the mask has shape {mask.shape} but the image {data.shape}; give a mask of '
                         f'the image shape or of its last two axes {data.shape[-2:]}')
    # (no full-size mask of usable pixels where no mask is given: this runs for every image)
    usable = None if mask is None else ~np.broadcast_to(mask, data.shape)
    if data.dtype.kind in 'fc':
        infinite = np.isinf(data) if usable is None else np.isinf(data) & usable
        if infinite.any():
            raise ValueError(f'the image holds {int(infinite.sum())} infinite pixel(s); set them to NaN or '
                             'flag them in the mask')
        finite = np.isfinite(data) if usable is None else np.isfinite(data) & usable
        has_pixel = finite.any()
    else:   # integers are always finite
        has_pixel = data.size > 0 and (usable is None or usable.any())
    if not has_pixel:
        raise ValueError('the image holds no finite, unmasked pixel')
    if min(data.shape[-2:]) < _MIN_SIDE:
        raise ValueError(f'the image is only {data.shape[-1]} x {data.shape[-2]} pixels: too small to find and '
                         f'measure a galaxy in; give a cutout of at least {_MIN_SIDE} pixels a side')
    problem = image_content_problem(data, mask)   # the one test of "is this a galaxy image at all"
    if problem:
        raise ValueError(problem)


def _sdss_stretch(image):
    """Whether an image's colour form has the SDSS colour-image stretch (SDSS bands, or none named)."""
    meta = image.meta or {}
    bands = meta.get('bands')
    return (bands is None or set(bands) <= set(SDSS_BAND_WEIGHTS)) and survey_of(meta).name == 'sdss'


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
        The public measurements, ``accepted``, ``reason``, ``pixel_scale``, ``bands`` (see
        `~astro_galsim.preprocessing.shown_bands`) and ``survey`` (whose resolution and colour
        rendering were assumed, `~astro_galsim.surveys.SURVEYS`).
    """
    image = _as_image(image, target)   # a huge FITS file with a known position: a section around it
    _check_pixels(image)
    rgb = to_colour(image)
    measurement = measure_galaxy(rgb, _pixel_position(image, target))
    meta = image.meta or {}
    # the pixel scale is known from the WCS, the meta or a named survey; where it is not (NaN), the
    # resolution limit assumes SDSS's native scale (select_galaxy) and angular limits are refused
    scale, seeing = resolution_of(meta, _pixel_scale(image))
    selection = dict(selection or {})
    if np.isfinite(scale):
        selection.setdefault('pixel_scale', scale)
    selection.setdefault('seeing', seeing)
    if not _sdss_stretch(image):   # a saturated core means a star only in SDSS's colour stretch
        selection.setdefault('max_peak_level', None)
    accepted, reason = select_galaxy(measurement, **selection)
    record = dict(measurement)
    # which survey's resolution and colour rendering were assumed (astro_galsim.surveys)
    record.update(accepted=accepted, reason=reason, pixel_scale=scale, bands=shown_bands(image),
                  survey=survey_of(meta).name)
    radius = measurement.get(normalisation.get('scale', 'scale_radius'), np.nan)
    array = normalise_galaxy(rgb, measurement, **normalisation) if np.isfinite(radius) else None
    return array, record


def _failure(reason):
    return None, {'found': False, 'accepted': False, 'reason': reason, 'pixel_scale': np.nan * u.arcsec, 'bands': ''}


def _prepare_safely(args):
    image, target, normalisation, selection = args
    if isinstance(image, Exception):  # an image that could not be had (a failed download)
        return _failure(f'retrieval failed: {image}')
    try:
        return prepare_one(image, target, normalisation=normalisation, selection=selection)
    except Exception as exc:  # noqa: BLE001 - one bad image is a rejected row, never a lost batch
        return _failure(f'{type(exc).__name__}: {exc}')


def _jobs(images, targets, normalisation, selection):
    images = list(images)
    if targets is not None:
        if not isinstance(targets, SkyCoord) or targets.isscalar or len(targets) != len(images):
            raise ValueError('targets must be an array SkyCoord with one position per image')
    return [(img, None if targets is None else targets[i], normalisation, selection)
            for i, img in enumerate(images)]


def _run_chunk(jobs, encoder=None):
    """Prepare a chunk of images and, given an encoder, encode them at once.

    Returns the arrays (None where no galaxy was found) or, with an encoder, their vectors
    (NaN rows there), and the records.
    """
    results = [_prepare_safely(job) for job in jobs]
    arrays, records = [a for a, _ in results], [r for _, r in results]
    if encoder is None:
        return arrays, records
    vectors = np.full((len(jobs), encoder.latent_dim), np.nan, dtype=np.float32)
    found = [i for i, a in enumerate(arrays) if a is not None]
    if found:
        vectors[found] = encoder.encode(np.stack([arrays[i] for i in found]))
    return vectors, records


def _start_worker(encoder):
    """Start a worker process: keep its encoder in the per-process cache, and run torch on one thread.

    One process per core: torch must not start a thread per core in each (``conf.num_threads``,
    when set, still wins, as in any process). No configuration is written.
    """
    keep_encoder(encoder)
    import torch
    torch.set_num_threads(1)


def _run_worker_chunk(jobs, key=None):
    """`_run_chunk` in a worker process, with the encoder it keeps in the per-process cache."""
    return _run_chunk(jobs, None if key is None else cached_encoder(None, key))


def _map_chunks(jobs, workers, progress, encoder=None):
    """`_run_chunk` over chunks of the jobs, in ``workers`` processes, results in input order.

    Each process holds its own encoder (a copy kept once when it starts, in the per-process
    cache of ``utils/_encoders.py``), so encoding runs
    beside preparation in every process instead of after it in this one.
    """
    if progress is None:
        progress = conf.show_progress and len(jobs) > 50
    batch = max(1, conf.batch_size // 8) if encoder is not None else 1  # 8 views per galaxy
    parts = []
    with tqdm(total=len(jobs), disable=not progress, desc='preparing' if encoder is None else 'describing') as bar:
        if workers > 1 and len(jobs) > 1:
            # chunks small enough that no process waits idle at the end
            size = max(1, min(batch if encoder is not None else 16, len(jobs) // (8 * workers)))
            chunks = [jobs[i:i + size] for i in range(0, len(jobs), size)]
            key = None if encoder is None else encoder_key(encoder)
            with ProcessPoolExecutor(workers, initializer=None if encoder is None else _start_worker,
                                     initargs=() if encoder is None else (encoder,)) as pool:
                for part in pool.map(functools.partial(_run_worker_chunk, key=key), chunks):
                    parts.append(part)
                    bar.update(len(part[1]))
        else:
            for start in range(0, len(jobs), batch):
                parts.append(_run_chunk(jobs[start:start + batch], encoder))
                bar.update(len(parts[-1][1]))
    return [x for out, _ in parts for x in out], [r for _, records in parts for r in records]


def _records_table(records):
    table = measurements_table(records, pixel_scale=u.Quantity([r['pixel_scale'] for r in records]))
    table['accepted'] = np.array([r['accepted'] for r in records], dtype=bool)
    table['reason'] = np.array([r['reason'] for r in records], dtype=str)
    table['bands'] = np.array([r.get('bands', '') for r in records], dtype=str)
    table['survey'] = np.array([r.get('survey', '') for r in records], dtype=str)
    return table


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

    See Also
    --------
    describe : preparation and encoding in one pass.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:81, :81]
    >>> disc = np.exp(-np.hypot((x - 40) / 10, (y - 40) / 5))[None].repeat(3, 0)
    >>> arrays, table = prepare([disc])
    >>> arrays.shape, bool(table['accepted'][0])
    ((1, 3, 64, 64), True)
    """
    jobs = _jobs(images, targets, normalisation, selection)
    results, records = _map_chunks(jobs, workers, progress)
    size = normalisation['size']
    arrays = np.zeros((len(results), 3, size, size), dtype=np.float32)
    for i, array in enumerate(results):
        if array is not None:
            arrays[i] = array
    return arrays, _records_table(records)


def describe(images, encoder, targets=None, *, normalisation=None, selection=None, workers=1, progress=None):
    """Prepare galaxy images and describe them with an encoder, in one pass.

    The same as `prepare` with the encoder's normalisation followed by
    ``encoder.encode``, but every worker process encodes the galaxies it has just
    prepared, in batches, so that the two stages share the cores.

    Parameters
    ----------
    images : list of `~astropy.nddata.NDData`, path or `~numpy.ndarray`
        The cutouts (as for `prepare`).
    encoder : `~astro_galsim.model.GalaxyEncoder`
        What describes the prepared images; with ``workers > 1`` it is copied into each
        worker process once (it must be picklable where processes are spawned, not forked).
    targets : `~astropy.coordinates.SkyCoord`, optional
        One position per image, or None for the image centres.
    normalisation : dict, optional
        Keywords of `~astro_galsim.segmentation.normalise_galaxy`; default (and what the
        encoder was trained on) ``encoder.normalisation``.
    selection : dict, optional
        Keywords of `~astro_galsim.segmentation.select_galaxy`.
    workers : int, optional
        Processes to use; 1 works in this process. Each worker runs torch on one thread.
    progress : bool, optional
        Show a progress bar (default: ``conf.show_progress`` for more than 50 images).

    Returns
    -------
    vectors : `~numpy.ndarray`, shape (N, d), float32
        One row per image in input order; NaN where no galaxy was found.
    table : `~astropy.table.QTable`
        The measurements, ``accepted``, ``reason`` and ``pixel_scale`` (as for `prepare`).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.model import load_pretrained
    >>> y, x = np.mgrid[:81, :81]
    >>> disc = np.exp(-np.hypot((x - 40) / 10, (y - 40) / 5))[None].repeat(3, 0)
    >>> vectors, table = describe([disc, np.zeros((81, 81))], load_pretrained())
    >>> vectors.shape, np.isfinite(vectors).all(axis=1).tolist(), str(table['reason'][1]).split(' (')[0]
    ((2, 64), [True, False], 'ValueError: not a galaxy image: every pixel holds 0')
    """
    normalisation = dict(encoder.normalisation if normalisation is None else normalisation)
    jobs = _jobs(images, targets, normalisation, selection)
    vectors, records = _map_chunks(jobs, workers, progress, encoder=encoder)
    vectors = np.array(vectors, dtype=np.float32).reshape(len(jobs), encoder.latent_dim)
    return vectors, _records_table(records)
