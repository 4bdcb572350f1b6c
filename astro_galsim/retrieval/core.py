# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""What every survey source shares: the source interface, its registry, and `get_cutouts`.

A survey is one module that defines a `CutoutSource` subclass (its name, bands, default
pixel scale, settings, cache key and fetch) and registers an instance with
`register_source`; `get_cutouts` looks the source up by name, answers from the cache
and asks the source only for the cutouts it does not have.
"""
import io
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import astropy.units as u
from astropy import log
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from ..config import conf
from ._cache import cutout_path, load_cutout, save_cutout, write_cache
__all__ = ['RetrievalError', 'RetrievalWarning', 'CutoutSource', 'register_source', 'get_source',
           'get_cutouts', 'get_cutout', 'is_temporary_failure', 'TRY_AGAIN']

#: Largest cutout side, in pixels.
MAX_PIXELS = 2048


class RetrievalError(Exception):
    """Raised (or returned as a batch element) when an image cannot be retrieved.

    The message names the input, what went wrong and what can be done.
    """


#: The words of every retrieval error that may not recur (no network, a slow or failing service).
TRY_AGAIN = 'try again later'


def is_temporary_failure(reason):
    """Whether a rejection reason is a retrieval that may succeed later (a build retries it on resume).

    >>> from astro_galsim.retrieval.core import is_temporary_failure
    >>> is_temporary_failure('retrieval failed: ... the service is down: check the connection and try again later')
    True
    >>> is_temporary_failure('retrieval failed: position outside the SDSS footprint')
    False
    """
    reason = str(reason)
    return reason.startswith('retrieval failed') and TRY_AGAIN in reason


class RetrievalWarning(AstropyUserWarning):
    """Warning about a retrieved image that is usable but incomplete."""


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------

def as_icrs(coordinates, name='coordinates'):
    """``coordinates`` as an ICRS `~astropy.coordinates.SkyCoord`, or a TypeError saying why not."""
    if not isinstance(coordinates, SkyCoord):
        try:
            coordinates = SkyCoord(coordinates)
        except Exception as exc:
            raise TypeError(f'{name} must be an astropy SkyCoord (for example '
                            f"SkyCoord(150.1, 2.2, unit='deg')); could not convert {coordinates!r}: "
                            f'{exc}') from None
    return coordinates.icrs


def _parse_pixel_scale(pixel_scale):
    try:
        scale = u.Quantity(pixel_scale, u.arcsec)
    except (TypeError, u.UnitsError):
        raise TypeError(f'pixel_scale must be an angle per pixel such as 0.396 * u.arcsec; '
                        f'got {pixel_scale!r}') from None
    if not scale.isscalar or not np.isfinite(scale.value) or scale.value <= 0:
        raise ValueError(f'pixel_scale must be a positive scalar angle; got {pixel_scale!r}')
    return scale


def _parse_shape(size, scale):
    """``size`` -> (ny, nx) in output pixels."""
    def one(value):
        if isinstance(value, u.Quantity):
            if value.unit.physical_type == 'angle':
                n = (value / scale).to_value(u.dimensionless_unscaled)
            elif value.unit in (u.pix, u.dimensionless_unscaled):
                n = value.value
            else:
                raise TypeError(f'size must be a number of pixels or an angle; got {size!r}')
        else:
            n = value
        try:
            n = float(n)
        except (TypeError, ValueError):
            raise TypeError(f'size must be a number of pixels or an angle; got {size!r}') from None
        n = int(round(n))
        if not 1 <= n <= MAX_PIXELS:
            raise ValueError(f'size {size!r} gives {n} pixels at {scale:.3f}/pixel; it must be '
                             f'between 1 and {MAX_PIXELS} pixels')
        return n

    if isinstance(size, u.Quantity) and size.isscalar or np.isscalar(size):
        n = one(size)
        return (n, n)
    values = list(size)
    if len(values) != 2:
        raise ValueError(f'size must be a scalar or a pair (ny, nx); got {size!r}')
    return (one(values[0]), one(values[1]))


def tan_wcs(center, shape, scale):
    """North-up, east-left TAN WCS of ``shape`` (ny, nx) with CRVAL at ``center``."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.cunit = ['deg', 'deg']
    wcs.wcs.crval = [center.ra.deg, center.dec.deg]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    step = scale.to_value(u.deg)
    wcs.wcs.cdelt = [-step, step]
    wcs.wcs.radesys = 'ICRS'
    wcs.wcs.set()
    wcs.pixel_shape = (nx, ny)
    return wcs


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that ``conf.show_progress`` can silence."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=not conf.show_progress, **kwargs)


# --------------------------------------------------------------------------------------
# Colour images (JPEG answers)
# --------------------------------------------------------------------------------------

def decode_jpeg(content, what):
    """The RGB pixels of an image answer, or a `RetrievalError` quoting what came instead."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(content)) as image:
            return np.asarray(image.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RetrievalError(f'{what}: the answer is not an image ({exc}); it begins '
                             f'{bytes(content[:60])!r}') from exc


def rgb_cutout(rgb, coord, shape, scale, what, *, bands, survey, meta):
    """A north-up uint8 colour cutout (channels R, G, B = ``bands``) centred on ``coord``."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[:2] != tuple(shape) or rgb.shape[2] < 3:
        raise RetrievalError(f'{what}: expected a {shape[1]}x{shape[0]} colour image, got an array '
                             f'of shape {rgb.shape}')
    if rgb[..., :3].max() <= 2:
        raise RetrievalError(f'{what}: every pixel is black: there is no {survey} imaging at this '
                             'position (outside the footprint)')
    # Image rows run from the top (north) down; FITS/WCS rows run from the bottom (south) up.
    cube = np.ascontiguousarray(np.moveaxis(rgb[::-1, :, :3], 2, 0), dtype=np.uint8)
    meta = dict(meta, bands=list(bands), pixel_scale=scale.to(u.arcsec),
                ra=coord.ra.deg * u.deg, dec=coord.dec.deg * u.deg)
    return NDData(cube, wcs=tan_wcs(coord, shape, scale), mask=np.zeros(cube.shape, bool), meta=meta)


# --------------------------------------------------------------------------------------
# The source interface and its registry
# --------------------------------------------------------------------------------------

class CutoutSource:
    """A survey that `get_cutouts` can fetch three-band cutouts from.

    Subclass it in one module per survey, give the class attributes, implement
    ``fetch_one`` (or ``fetch`` for services that answer many positions at once) and
    register an instance with `~astro_galsim.retrieval.register_source`. See
    :ref:`adding-a-survey`.

    Attributes
    ----------
    name : str
        The ``source=`` value of `get_cutouts`.
    bands : tuple of str
        Band names of the three planes of a cutout, in order (mapped to R, G, B).
    pixel_scale : `~astropy.units.Quantity`
        Default output pixel size (the survey's native one).
    conf : `astropy.config.ConfigNamespace` or None
        The source's own settings (its service address, release...).
    options : dict
        Extra keywords of `get_cutouts` this source takes, with their defaults.

    Examples
    --------
    >>> from astro_galsim.retrieval import get_source
    >>> source = get_source('legacysurvey')
    >>> source.bands, source.pixel_scale
    (('z', 'r', 'g'), <Quantity 0.262 arcsec>)
    """

    name = None
    bands = ()
    pixel_scale = None
    conf = None
    options = {}

    def resolve_options(self, **options):
        """Check this source's extra keywords; return them complete (defaults filled in).

        A keyword this source does not take raises a TypeError naming the ones it does,
        unless its value is None (the "default" every caller may pass).
        """
        unknown = sorted(k for k, v in options.items() if k not in self.options and v is not None)
        if unknown:
            takes = ', '.join(self.options) or 'none'
            raise TypeError(f"source {self.name!r} takes no option {', '.join(map(repr, unknown))} "
                            f'(its options: {takes})')
        return {k: options[k] if options.get(k) is not None else default
                for k, default in self.options.items()}

    def cache_key(self, options):
        """JSON-able parts that, with the position, size and scale, identify a cutout."""
        return [options[k] if not isinstance(options[k], u.Quantity)
                else [float(options[k].value), options[k].unit.to_string()] for k in sorted(options)]

    def fetch_one(self, coord, shape, scale, options):
        """Fetch the cutout at one position: an `~astropy.nddata.NDData`.

        Raise `~astro_galsim.retrieval.RetrievalError` saying why when there is none.
        """
        raise NotImplementedError

    def fetch(self, coords, shape, scale, options):
        """Fetch cutouts at many positions.

        A list in input order, each an `~astropy.nddata.NDData` or a
        `~astro_galsim.retrieval.RetrievalError`.

        The default runs ``fetch_one`` in ``astro_galsim.conf.download_workers`` threads.
        """
        results = [None] * len(coords)
        workers = max(1, min(int(conf.download_workers), len(coords)))
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                progress(total=len(coords), desc=f'{self.name} cutouts', unit='cutout') as bar:
            futures = {pool.submit(self.fetch_one, coords[i], shape, scale, options): i
                       for i in range(len(coords))}
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except RetrievalError as exc:
                    results[futures[future]] = exc
                bar.update(1)
        return results


_REGISTRY = {}


def register_source(source, *, replace=False):
    """Make a `~astro_galsim.retrieval.CutoutSource` available as ``get_cutouts(source=source.name)``.

    Parameters
    ----------
    source : `~astro_galsim.retrieval.CutoutSource`
        An instance with ``name``, ``bands`` and ``pixel_scale`` set.
    replace : bool, optional
        Allow replacing a source already registered under that name.

    Returns
    -------
    source : `~astro_galsim.retrieval.CutoutSource`
        The source given, so that a module can write ``SOURCE = register_source(...)``.

    Examples
    --------
    >>> from astro_galsim.retrieval import get_source, register_source
    >>> register_source(get_source('hips2fits'), replace=True).name
    'hips2fits'
    """
    if not isinstance(source, CutoutSource):
        raise TypeError(f'register_source takes a CutoutSource instance; got {source!r}')
    if not source.name or len(source.bands) != 3 or source.pixel_scale is None:
        raise ValueError(f'{type(source).__name__} needs a name, three bands and a pixel_scale '
                         f'(got {source.name!r}, {source.bands!r}, {source.pixel_scale!r})')
    if source.name in _REGISTRY and not replace and _REGISTRY[source.name] is not source:
        raise ValueError(f'a source named {source.name!r} is already registered; pass replace=True '
                         'to replace it')
    _REGISTRY[source.name] = source
    return source


def get_source(name):
    """The registered `~astro_galsim.retrieval.CutoutSource` called ``name``.

    Examples
    --------
    >>> from astro_galsim.retrieval import get_source
    >>> get_source('sdss').bands
    ('i', 'r', 'g')
    """
    if isinstance(name, CutoutSource):
        return name
    if name not in _REGISTRY:
        raise ValueError(f'source must be one of {tuple(_REGISTRY)}; got {name!r}')
    return _REGISTRY[name]


# --------------------------------------------------------------------------------------
# Public cutout functions
# --------------------------------------------------------------------------------------

def get_cutouts(coordinates, *, size=128, pixel_scale=None, source='sdss', **options):
    """Retrieve three-band cutouts for many coordinates; failures do not stop the batch.

    Parameters
    ----------
    coordinates : `~astropy.coordinates.SkyCoord`
        Positions (scalar or array).
    size : int, `~astropy.units.Quantity` or pair, optional
        Cutout size: pixels (int), an angle, or a pair ``(ny, nx)`` of either.
    pixel_scale : `~astropy.units.Quantity`, optional
        Output pixel size; default the source's native one (0.396 arcsec for the SDSS
        sources, 0.262 arcsec for the Legacy Surveys).
    source : str or `~astro_galsim.retrieval.CutoutSource`, optional
        A registered source (see `~astro_galsim.retrieval.get_source`): ``'sdss'`` (calibrated frames in
        nanomaggies, resampled onto a grid centred on the nearest primary galaxy),
        ``'skyserver'`` (SkyServer colour JPEG), ``'hips2fits'`` (CDS SDSS9 colour
        HiPS) or ``'legacysurvey'`` (DESI Legacy Surveys DR10 g, r, z colour HiPS);
        the colour sources are centred on the coordinate, uint8.
    **options
        The source's own keywords: ``data_release`` (``'sdss'``, ``'skyserver'``;
        default ``astro_galsim.retrieval.sdss.conf.data_release``) and ``radius``
        (``'sdss'``: galaxy search radius, default 5 arcsec).

    Returns
    -------
    cutouts : list
        In input order, each an `~astropy.nddata.NDData` (see `get_cutout`) or a
        `RetrievalError` saying why that coordinate failed.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments (these concern the whole batch).

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.retrieval import get_cutouts
    >>> coords = SkyCoord([153.69121, 0.0], [-0.3393402, 89.0], unit='deg')
    >>> cutouts = get_cutouts(coords, size=64)  # doctest: +REMOTE_DATA
    >>> [type(c).__name__ for c in cutouts]  # doctest: +REMOTE_DATA
    ['NDData', 'RetrievalError']
    """
    src = get_source(source)
    coords = as_icrs(coordinates)
    if coords.isscalar:
        coords = coords.reshape((1,))
    scale = _parse_pixel_scale(src.pixel_scale if pixel_scale is None else pixel_scale)
    shape = _parse_shape(size, scale)
    options = src.resolve_options(**options)
    extra = src.cache_key(options)
    results = [None] * len(coords)
    misses, paths = [], {}
    valid = np.isfinite(coords.ra.deg) & np.isfinite(coords.dec.deg)
    for i in range(len(coords)):
        if not valid[i]:   # never sent: a NaN or masked position is the input's fault, not the network's
            results[i] = RetrievalError(f'coordinate {i}: not a valid position (RA {coords[i].ra.deg}, Dec '
                                        f'{coords[i].dec.deg}: NaN or masked); nothing was requested. Give '
                                        'finite RA and Dec, or drop the row')
            continue
        paths[i] = cutout_path(src.name, [
            round(float(coords[i].ra.deg), 7), round(float(coords[i].dec.deg), 7), shape[0], shape[1],
            round(float(scale.to_value(u.arcsec)), 6), extra])
        if paths[i].exists():
            try:
                results[i] = load_cutout(paths[i])
                continue
            except Exception as exc:  # a damaged cache file: fetch again
                log.warning(f'ignoring damaged cached cutout {paths[i]}: {exc}')
                paths[i].unlink(missing_ok=True)
        misses.append(i)
    if misses:
        fresh = src.fetch(coords[misses], shape, scale, options)
        for i, result in zip(misses, fresh):
            where = f"coordinate {i} ({coords[i].to_string('decimal')})"
            if isinstance(result, NDData):
                write_cache(paths[i], lambda path, r=result: save_cutout(path, r))
            elif isinstance(result, RetrievalError):
                result = RetrievalError(f'{where}: {result}')
            else:
                result = RetrievalError(f'{where}: nothing was retrieved')
            results[i] = result
    return results


def get_cutout(coordinate, *, size=128, pixel_scale=None, source='sdss', **options):
    """Retrieve a three-band cutout of the galaxy at a coordinate.

    With ``source='sdss'`` the nearest primary SDSS galaxy within ``radius`` is
    found, its calibrated g, r, i frames are downloaded (or read from the cache)
    and each band is resampled with `reproject` onto one TAN grid centred on the
    galaxy, north up and east left, at ``pixel_scale`` per pixel. Frames of
    neighbouring fields are combined where the cutout crosses a frame edge.
    Bilinear interpolation is used up to 1.1 times the native pixel size and
    flux-conserving `reproject.reproject_adaptive` beyond it; in both cases the
    values are nanomaggies per output pixel, so aperture sums keep their flux.

    Parameters
    ----------
    coordinate : `~astropy.coordinates.SkyCoord`
        A single position.
    size, pixel_scale, source, **options
        As for `get_cutouts`.

    Returns
    -------
    cutout : `~astropy.nddata.NDData`
        ``data`` of shape ``(3, ny, nx)`` in the source's band order
        (``meta['bands']``: i, r, g for the SDSS sources, z, r, g for the Legacy
        Surveys), float32 in `nanomaggy` per pixel (``source='sdss'``) or uint8
        colour channels R, G, B (colour sources). ``wcs`` is a 2-D celestial TAN
        WCS of the two spatial axes (the band axis has no WCS); row 0 is the
        southern edge (FITS order), so display with ``origin='lower'``. ``mask``
        (same shape as ``data``) is True where no frame covers the pixel (those
        values are 0). ``meta`` holds ``source``, ``bands``, ``pixel_scale``,
        ``ra``, ``dec`` (the cutout centre), ``data_release``, the source's
        identifiers (``'sdss'``: ``objid``, ``run``, ``rerun``, ``camcol``,
        ``field``; HiPS sources: ``hips``) and,
        for ``'sdss'``, ``petroRad_r``, ``petroR50_r``, ``petroR90_r`` and
        ``frames`` (the (run, camcol, field) combined). No uncertainty is attached.

    Raises
    ------
    RetrievalError
        If there is no galaxy at the position, the position is outside the
        survey's footprint, a band is missing, or a service times out or answers
        garbage.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.retrieval import get_cutout
    >>> galaxy = SkyCoord(153.69121, -0.3393402, unit='deg')
    >>> cutout = get_cutout(galaxy, size=1 * u.arcmin)  # doctest: +REMOTE_DATA
    >>> cutout.data.shape, cutout.unit, cutout.meta['bands']  # doctest: +REMOTE_DATA
    ((3, 152, 152), Unit("nanomaggy"), ['i', 'r', 'g'])
    """
    coord = as_icrs(coordinate, name='coordinate')
    if not coord.isscalar:
        raise ValueError(f'get_cutout takes one coordinate; got {coord.shape} of them: use '
                         'get_cutouts for several')
    result = get_cutouts(coord, size=size, pixel_scale=pixel_scale, source=source, **options)[0]
    if isinstance(result, Exception):
        raise result
    return result
