# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
SDSS retrieval by sky coordinate, with calibrated photometric preprocessing.

Three routes give a galaxy-centred, north-up, three-band cutout as an
`~astropy.nddata.NDData` of shape ``(3, ny, nx)`` in band order i, r, g
(so that the channels map to R, G, B like the SkyServer colour images):

* ``source='sdss'`` (default): the SDSS photometric catalogue gives the
  nearest primary galaxy and its field; the calibrated g, r, i frames
  (nanomaggies) are downloaded from the SDSS Science Archive Server and
  resampled with `reproject` onto one TAN grid centred on the galaxy, combining
  neighbouring frames where the galaxy lies near a frame edge.
* ``source='skyserver'``: the SkyServer ``ImgCutout`` colour JPEG.
* ``source='hips2fits'``: the CDS ``hips2fits`` service on the SDSS9 colour HiPS.

Downloaded frames and finished cutouts are cached on disk (see
`cache_directory`), so a second request for the same coordinates makes no
network request.
"""
import bz2
import gzip
import hashlib
import io
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy import log
from astropy.config import get_cache_dir
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import QTable, Table, unique
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from .config import conf
from .io import atomic_output, nanomaggy

__all__ = ['nanomaggy', 'RetrievalError', 'RetrievalWarning', 'query_sdss_objects',
           'get_cutout', 'get_cutouts', 'cache_directory']


#: Native SDSS imaging pixel scale.
_NATIVE_SCALE = 0.396 * u.arcsec
#: Output band order: channels map to R, G, B.
_BANDS = ('i', 'r', 'g')
_SOURCES = ('sdss', 'skyserver', 'hips2fits')
_HIPS = 'CDS/P/SDSS9/color'
#: Coordinates per cross-match upload.
_QUERY_CHUNK = 500
#: First retry delay in seconds; doubled after every failed attempt.
_BACKOFF_SECONDS = 1.0
_MAX_PIXELS = 2048
_CACHE_VERSION = 1
_PHOTO_FIELDS = ['objid', 'ra', 'dec', 'run', 'rerun', 'camcol', 'field', 'type', 'mode',
                 'petroRad_r', 'petroR50_r', 'petroR90_r']
_PHOTO_TYPES = {0: 'UNKNOWN', 1: 'COSMIC_RAY', 2: 'DEFECT', 3: 'GALAXY', 4: 'GHOST',
                5: 'KNOWNOBJ', 6: 'STAR', 7: 'TRAIL', 8: 'SKY', 9: 'NOTATYPE'}
#: Resample with flux-conserving adaptive resampling when the output pixels are
#: larger than the frame pixels by more than this factor (otherwise bilinear).
_ADAPTIVE_ABOVE = 1.1
_sleep = time.sleep


class RetrievalError(Exception):
    """Raised (or returned as a batch element) when an image cannot be retrieved.

    The message names the input, what went wrong and what can be done.
    """


class RetrievalWarning(AstropyUserWarning):
    """Warning about a retrieved image that is usable but incomplete."""


class _MissingFrame(RetrievalError):
    """An SDSS frame that the archive does not have (HTTP 404)."""


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------

def _as_icrs(coordinates, name='coordinates'):
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
        if not 1 <= n <= _MAX_PIXELS:
            raise ValueError(f'size {size!r} gives {n} pixels at {scale:.3f}/pixel; it must be '
                             f'between 1 and {_MAX_PIXELS} pixels')
        return n

    if isinstance(size, u.Quantity) and size.isscalar or np.isscalar(size):
        n = one(size)
        return (n, n)
    values = list(size)
    if len(values) != 2:
        raise ValueError(f'size must be a scalar or a pair (ny, nx); got {size!r}')
    return (one(values[0]), one(values[1]))


def _resolve_release(data_release):
    dr = conf.data_release if data_release is None else data_release
    try:
        dr = int(dr)
    except (TypeError, ValueError):
        raise TypeError(f'data_release must be an integer such as 17; got {data_release!r}') from None
    if not 8 <= dr <= 19:
        raise ValueError(f'data_release {dr} is not supported: calibrated frames in nanomaggies '
                         'exist from SDSS DR8 on')
    return dr


def _parse_radius(radius):
    try:
        radius = u.Quantity(radius, u.arcsec)
    except (TypeError, u.UnitsError):
        raise TypeError(f'radius must be an angle such as 5 * u.arcsec; got {radius!r}') from None
    if not radius.isscalar or not 0 < radius.value <= 180:
        raise ValueError(f'radius must be a positive angle of at most 3 arcmin (the SDSS '
                         f'cross-match limit); got {radius!r}')
    return radius


# --------------------------------------------------------------------------------------
# Cache and files
# --------------------------------------------------------------------------------------

def cache_directory():
    """Return the directory holding downloaded frames and finished cutouts.

    It is ``astro_galsim.conf.cache_dir`` if set, otherwise a folder ``astro_galsim``
    inside the astropy cache directory (`astropy.config.get_cache_dir`). The
    directory is created if needed. Delete it (or parts of it) to clear the cache.

    Returns
    -------
    path : `pathlib.Path`

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from astro_galsim import conf
    >>> from astro_galsim.retrieval import cache_directory
    >>> with tempfile.TemporaryDirectory() as tmp, conf.set_temp('cache_dir', tmp):
    ...     cache_directory() == Path(tmp)
    True
    """
    root = conf.cache_dir or os.path.join(get_cache_dir(), 'astro_galsim')
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` via a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, suffix='.part') as fh:
        fh.write(data)


def _write_cache(path, write):
    """Write a cache entry; a failure (disk full, read-only cache) only costs a re-download."""
    try:
        write(path)
    except OSError as exc:
        log.warning(f'could not write the cache file {path}: {exc}')


def _key(*parts):
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _cutout_path(source, dr, coord, shape, scale, radius):
    parts = [_CACHE_VERSION, source, dr, round(float(coord.ra.deg), 7), round(float(coord.dec.deg), 7),
             shape[0], shape[1], round(float(scale.to_value(u.arcsec)), 6)]
    if source == 'sdss':
        parts.append(round(float(radius.to_value(u.arcsec)), 4))
    key = _key(*parts)
    return cache_directory() / 'cutouts' / source / f'dr{dr}' / key[:2] / f'{key}.fits'


def _object_path(dr, coord, radius):
    key = _key(_CACHE_VERSION, dr, round(float(coord.ra.deg), 7), round(float(coord.dec.deg), 7),
               round(float(radius.to_value(u.arcsec)), 4))
    return cache_directory() / 'sdss' / f'dr{dr}' / 'objects' / key[:2] / f'{key}.json'


def _frame_path(dr, run, rerun, camcol, field, band):
    return (cache_directory() / 'sdss' / f'dr{dr}' / 'frames' / str(rerun) / str(run) / str(camcol)
            / f'frame-{band}-{run:06d}-{camcol}-{field:04d}.fits')


def _meta_to_json(meta):
    out = {}
    for key, value in meta.items():
        if isinstance(value, u.Quantity):
            out[key] = {'__quantity__': [float(value.value), value.unit.to_string()]}
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return json.dumps(out)


def _meta_from_json(text):
    meta = json.loads(text)
    for key, value in meta.items():
        if isinstance(value, dict) and '__quantity__' in value:
            meta[key] = u.Quantity(value['__quantity__'][0], value['__quantity__'][1])
        elif key == 'frames':
            meta[key] = [tuple(f) for f in value]
    return meta


def _save_cutout(path, nddata):
    header = nddata.wcs.to_header()
    header['AGCACHE'] = (_CACHE_VERSION, 'astro_galsim cutout cache format')
    primary = fits.PrimaryHDU(np.asarray(nddata.data), header=header)
    if nddata.unit is not None:
        primary.header['BUNIT'] = nddata.unit.to_string()
    hdus = [primary]
    mask = nddata.mask if nddata.mask is not None else np.zeros(nddata.data.shape, bool)
    hdus.append(fits.ImageHDU(np.asarray(mask, dtype=np.uint8), name='MASK'))
    meta = np.frombuffer(_meta_to_json(nddata.meta).encode(), dtype=np.uint8)
    hdus.append(fits.ImageHDU(meta, name='META'))
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def _load_cutout(path):
    with fits.open(path, memmap=False) as hdul:
        data = hdul[0].data.copy()
        wcs = WCS(hdul[0].header, naxis=2)
        wcs.pixel_shape = (data.shape[2], data.shape[1])
        mask = hdul['MASK'].data.astype(bool)
        meta = _meta_from_json(hdul['META'].data.tobytes().decode())
        unit = hdul[0].header.get('BUNIT')
    unit = nanomaggy if unit == 'nanomaggy' else (u.Unit(unit) if unit else None)
    return NDData(data, wcs=wcs, mask=mask, unit=unit, meta=meta)


def _progress(iterable=None, **kwargs):
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=not conf.show_progress, **kwargs)


# --------------------------------------------------------------------------------------
# Requests: timeout, retries with exponential backoff
# --------------------------------------------------------------------------------------

def _transient_errors():
    import requests
    from astroquery.exceptions import TimeoutError as AQTimeoutError
    return (requests.exceptions.Timeout, requests.exceptions.ConnectionError, AQTimeoutError,
            TimeoutError, ConnectionError)


class _TransientStatus(Exception):
    def __init__(self, status):
        super().__init__(f'HTTP {status}')
        self.status = status


def _call_with_retries(func, what):
    """Call ``func(timeout)`` (a request); retry transient failures with exponential backoff.

    ``timeout`` is ``(connect, read)`` seconds. A connection that is refused or a host that
    cannot be resolved (no network, or the service is down) is not retried; every attempt
    and pause fits within ``conf.total_timeout``, and each retry is logged.
    """
    transient = _transient_errors() + (_TransientStatus,)
    attempts = max(0, int(conf.max_retries)) + 1
    started = time.monotonic()
    deadline = started + float(conf.total_timeout)
    last, tried = None, 0
    for attempt in range(attempts):
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            tried += 1
            response = func((min(float(conf.connect_timeout), remaining), min(float(conf.timeout), remaining)))
            status = getattr(response, 'status_code', 200)
            if status == 429 or (status is not None and status >= 500):
                raise _TransientStatus(status)
            return response
        except transient as exc:
            last = exc
            if _unreachable(exc):
                raise RetrievalError(
                    f'{what}: could not connect to {_host_of(exc)} ({_cause(exc)}). There is no network '
                    'connection or the service is down: check the connection (and any proxy) and try '
                    'again later. Galaxies already in a database are looked up by id or position '
                    'without the network.') from exc
            delay = _BACKOFF_SECONDS * 2 ** attempt
            if attempt + 1 < attempts and time.monotonic() + delay < deadline:
                log.warning(f'{what}: attempt {attempt + 1} of {attempts} failed ({_cause(exc)}); '
                            f'retrying in {delay:g} s')
                _sleep(delay)
            else:
                break
    kind = 'timed out' if 'timeout' in type(last).__name__.lower() or 'timed out' in str(last) \
        else f'failed ({type(last).__name__}: {last})'
    spent = f'all {tried}' if tried == attempts else f'{tried}'
    raise RetrievalError(
        f'{what}: the request {kind} in {spent} attempt(s) over {time.monotonic() - started:.0f} s '
        f'(astro_galsim.conf.timeout = {conf.timeout} s per attempt, conf.total_timeout = '
        f'{conf.total_timeout} s, conf.max_retries = {conf.max_retries}). The service may be down or '
        'slow: try again later or raise conf.timeout and conf.total_timeout.') from last


def _unreachable(exc):
    """True for a refused connection or an unknown host: retrying cannot help soon."""
    import requests
    from urllib3.exceptions import NewConnectionError
    if isinstance(exc, requests.exceptions.Timeout) or not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = getattr(exc.args[0], 'reason', None) if exc.args else None
    return isinstance(reason, NewConnectionError) or isinstance(exc.__context__, NewConnectionError)


def _host_of(exc):
    from urllib.parse import urlsplit
    url = getattr(getattr(exc, 'request', None), 'url', None)
    return urlsplit(url).netloc if url else 'the service'


def _cause(exc):
    """The innermost reason of a requests error, short: 'Connection refused', 'Read timed out'..."""
    reason = getattr(exc.args[0], 'reason', None) if exc.args else None
    text = str(reason if reason is not None else exc)
    return text.split(': ', 1)[-1][:200] if ': ' in text else text[:200]


def _check_status(response, what):
    status = getattr(response, 'status_code', 200)
    if status is not None and status >= 400:
        raise RetrievalError(f'{what}: the service answered HTTP {status}')


# --------------------------------------------------------------------------------------
# Catalogue query
# --------------------------------------------------------------------------------------

def _empty_row(index, coord):
    return {'index': int(index), 'input_ra': float(coord.ra.deg), 'input_dec': float(coord.dec.deg),
            'found': False, 'reason': '', 'objid': 0, 'ra': math.nan, 'dec': math.nan,
            'separation': math.nan, 'run': -1, 'rerun': -1, 'camcol': -1, 'field': -1,
            'petroRad_r': math.nan, 'petroR50_r': math.nan, 'petroR90_r': math.nan}


def _query_chunk(coords, radius, dr):
    """One cross-match request: every photometric object within ``radius`` of ``coords``."""
    from astroquery.exceptions import RemoteServiceError
    from astroquery.sdss import SDSS, SDSSClass

    what = f'SDSS DR{dr} catalogue cross-match of {len(coords)} position(s)'

    def request(timeout):
        client = SDSSClass()
        client.TIMEOUT = timeout  # astroquery's first look-up of the column names waits this long
        return client.query_region_async(coords, radius=radius, photoobj_fields=_PHOTO_FIELDS,
                                         data_release=dr, timeout=timeout, cache=False)
    response = _call_with_retries(request, what)
    _check_status(response, what)
    text = response.text
    if 'no objects have been found' in text.lower():
        return None
    try:
        table = SDSS._parse_result(response)
    except RemoteServiceError as exc:
        raise RetrievalError(f'{what}: the service reported an error: {str(exc)[:300]}') from exc
    except Exception as exc:
        raise RetrievalError(f'{what}: the answer is not a CSV table ({type(exc).__name__}: '
                             f'{str(exc)[:100]}); it begins {text[:200]!r}') from exc
    if table is None:
        return None
    lower = {name.lower(): name for name in table.colnames}
    missing = [f for f in _PHOTO_FIELDS if f.lower() not in lower]
    if missing:
        raise RetrievalError(f'{what}: the answer lacks the columns {missing}; it begins '
                             f'{text[:200]!r}')
    table.rename_columns([lower[f.lower()] for f in _PHOTO_FIELDS], _PHOTO_FIELDS)
    return table


def _match_chunk(indices, coords, table, radius):
    rows = [_empty_row(i, c) for i, c in zip(indices, coords)]
    outside = (f'no SDSS photometric object within {radius:.1f} of the position: it is probably '
               'outside the SDSS imaging footprint')
    if table is None or len(table) == 0:
        for row in rows:
            row['reason'] = outside
        return rows
    catalog = SkyCoord(np.asarray(table['ra'], float), np.asarray(table['dec'], float),
                       unit='deg', frame='icrs')
    idx_in, idx_cat, sep, _ = search_around_sky(coords, catalog, radius)
    types = np.asarray(table['type'], int)
    modes = np.asarray(table['mode'], int)
    for k, row in enumerate(rows):
        sel = idx_in == k
        if not sel.any():
            row['reason'] = outside
            continue
        cand, seps = idx_cat[sel], sep[sel].to_value(u.arcsec)
        good = (types[cand] == 3) & (modes[cand] == 1)
        if not good.any():
            near = cand[np.argmin(seps)]
            kind = _PHOTO_TYPES.get(int(types[near]), str(types[near]))
            row['reason'] = (f'no primary SDSS galaxy within {radius:.1f}: the nearest object, '
                             f'{seps.min():.2f} arcsec away, has type {kind} and mode '
                             f'{int(modes[near])}; give the position of a galaxy')
            continue
        best = np.argmin(np.where(good, seps, np.inf))
        src = table[cand[best]]
        row.update(found=True, objid=int(src['objid']), ra=float(src['ra']), dec=float(src['dec']),
                   separation=float(seps[best]), run=int(src['run']), rerun=int(src['rerun']),
                   camcol=int(src['camcol']), field=int(src['field']),
                   petroRad_r=float(src['petroRad_r']), petroR50_r=float(src['petroR50_r']),
                   petroR90_r=float(src['petroR90_r']))
    return rows


def _query_objects(coords, radius, dr):
    """Rows (dicts) for each coordinate, and {index: RetrievalError} for service failures."""
    rows = [None] * len(coords)
    todo = []
    for i in range(len(coords)):
        path = _object_path(dr, coords[i], radius)
        if path.exists():
            try:
                rows[i] = json.loads(path.read_text())
                rows[i]['index'] = i
                continue
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        todo.append(i)
    errors = {}
    for start in range(0, len(todo), _QUERY_CHUNK):
        chunk = np.array(todo[start:start + _QUERY_CHUNK])
        sub = coords[chunk]
        try:
            table = _query_chunk(sub, radius, dr)
        except RetrievalError as exc:
            for i in chunk:
                errors[int(i)] = exc
            continue
        for row in _match_chunk(chunk, sub, table, radius):
            rows[row['index']] = row
            _write_cache(_object_path(dr, coords[row['index']], radius),
                         lambda path, row=row: _atomic_write_bytes(path, json.dumps(row).encode()))
    return rows, errors


_ROW_UNITS = {'input_ra': u.deg, 'input_dec': u.deg, 'ra': u.deg, 'dec': u.deg,
              'separation': u.arcsec, 'petroRad_r': u.arcsec, 'petroR50_r': u.arcsec,
              'petroR90_r': u.arcsec}
_ROW_DTYPES = {'index': np.int64, 'found': bool, 'reason': str, 'objid': np.uint64,
               'run': np.int32, 'rerun': np.int32, 'camcol': np.int16, 'field': np.int32}


def query_sdss_objects(coordinates, *, radius=5 * u.arcsec, data_release=None):
    """Find the nearest primary SDSS galaxy to each coordinate.

    All coordinates are cross-matched with the SDSS photometric catalogue in a few
    batched requests (`astroquery.sdss.SDSSClass.query_region` with a radius). The
    answers are cached on disk per coordinate, so a repeated call makes no request.

    Parameters
    ----------
    coordinates : `~astropy.coordinates.SkyCoord`
        One or more positions.
    radius : `~astropy.units.Quantity`, optional
        Search radius around each position (at most 3 arcmin).
    data_release : int, optional
        SDSS data release; default ``astro_galsim.conf.data_release`` (17).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per input coordinate, in input order, with columns ``index``,
        ``input_ra``, ``input_dec``, ``found`` (bool), ``reason`` (why nothing was
        found, else empty), ``objid``, ``ra``, ``dec``, ``separation``, ``run``,
        ``rerun``, ``camcol``, ``field``, ``petroRad_r``, ``petroR50_r``,
        ``petroR90_r`` (angles with units). Rows not found have ``objid`` 0, ``-1``
        identifiers and NaN positions and sizes.

    Raises
    ------
    RetrievalError
        If the catalogue service times out or answers something that is not a
        table.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.retrieval import query_sdss_objects
    >>> coords = SkyCoord([153.69121, 0.0], [-0.3393402, 89.0], unit='deg')
    >>> table = query_sdss_objects(coords, radius=3 * u.arcsec)  # doctest: +REMOTE_DATA
    >>> table['found'].tolist()  # doctest: +REMOTE_DATA
    [True, False]
    """
    coords = _as_icrs(coordinates)
    if coords.isscalar:
        coords = coords.reshape((1,))
    radius = _parse_radius(radius)
    dr = _resolve_release(data_release)
    rows, errors = _query_objects(coords, radius, dr)
    if errors:
        first = next(iter(errors.values()))
        raise RetrievalError(f'{len(errors)} of {len(coords)} position(s) could not be '
                             f'cross-matched: {first}') from first
    columns = {}
    for name in _empty_row(0, coords[0]):
        values = [row[name] for row in rows]
        if name in _ROW_UNITS:
            columns[name] = u.Quantity(np.array(values, float), _ROW_UNITS[name])
        else:
            columns[name] = np.array(values, dtype=_ROW_DTYPES[name])
    table = QTable(columns)
    table.meta['data_release'] = dr
    table.meta['radius'] = radius
    return table


# --------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------

def _frame_url(dr, run, rerun, camcol, field, band):
    from astroquery.sdss import SDSS, conf as sdss_conf
    # The same rule as astroquery's SDSS.get_images_async.
    instrument = 'boss' if dr <= 12 else 'eboss'
    if dr > 17:
        instrument = 'prior-surveys/sdss4-dr17-eboss'
    return SDSS.IMAGING_URL_SUFFIX.format(base=sdss_conf.sas_baseurl, dr=dr, instrument=instrument,
                                          rerun=rerun, run=run, camcol=camcol, field=field, band=band)


def _wcs_from_header(header):
    """Celestial WCS of an SDSS frame header without deprecation warnings."""
    header = header.copy()
    if 'RADECSYS' in header:
        if 'RADESYS' not in header:
            header['RADESYS'] = header['RADECSYS']
        del header['RADECSYS']
    return WCS(header, fix=False, naxis=2).celestial


def _decompress(raw):
    if raw[:3] == b'BZh':
        return bz2.decompress(raw)
    if raw[:2] == b'\x1f\x8b':
        return gzip.decompress(raw)
    return raw


def _validate_frame(data, what):
    """Raise RetrievalError unless ``data`` is a complete calibrated SDSS frame."""
    try:
        with fits.open(io.BytesIO(data), memmap=False, lazy_load_hdus=True) as hdul:
            hdu = hdul[0]
            info = hdu.fileinfo()
            if info['datLoc'] + info['datSpan'] > len(data):
                raise ValueError(f'the file is truncated ({len(data)} bytes, HDU0 needs '
                                 f"{info['datLoc'] + info['datSpan']})")
            header = hdu.header
            if header.get('NAXIS') != 2 or header.get('BITPIX') not in (-32, -64):
                raise ValueError('HDU0 is not a 2-D floating-point image')
            bunit = str(header.get('BUNIT', 'nanomaggy')).strip().lower()
            if not bunit.startswith('nanomagg'):
                raise ValueError(f'HDU0 has BUNIT={bunit!r}, not nanomaggy (not a calibrated frame)')
            wcs = _wcs_from_header(header)
            if wcs.naxis != 2 or not wcs.has_celestial:
                raise ValueError('HDU0 has no celestial WCS')
    except RetrievalError:
        raise
    except Exception as exc:
        raise RetrievalError(f'{what}: the download is not a valid SDSS frame ({exc}); it begins '
                             f'{bytes(data[:60])!r}') from exc


def _fetch_frame(dr, frame, band):
    """Download one frame into the cache (if not there) and return its path."""
    from astroquery.sdss import SDSS

    run, rerun, camcol, field = frame
    path = _frame_path(dr, run, rerun, camcol, field, band)
    if path.exists():
        return path
    url = _frame_url(dr, run, rerun, camcol, field, band)
    what = (f'SDSS DR{dr} {band}-band frame run={run} rerun={rerun} camcol={camcol} '
            f'field={field}')
    response = _call_with_retries(
        lambda timeout: SDSS._request('GET', url, timeout=timeout, cache=False), what)
    status = getattr(response, 'status_code', 200)
    if status == 404:
        raise _MissingFrame(f'{what} is missing from the archive (HTTP 404 for {url}); this field '
                            'has no data in that band')
    _check_status(response, what)
    try:
        data = _decompress(response.content)
    except (OSError, EOFError, ValueError) as exc:
        raise RetrievalError(f'{what}: the download is not a valid compressed file ({exc})') from exc
    _validate_frame(data, what)
    _atomic_write_bytes(path, data)
    return path


def _fetch_frames(dr, tasks, desc):
    """Fetch (frame, band) tasks a few at a time; return {task: Path or RetrievalError}."""
    results = {}
    tasks = list(tasks)
    if not tasks:
        return results
    pending = []
    for task in tasks:
        path = _frame_path(dr, *task[0], task[1])
        if path.exists():
            results[task] = path
        else:
            pending.append(task)
    if not pending:
        return results
    workers = max(1, min(int(conf.download_workers), len(pending)))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            _progress(total=len(pending), desc=desc, unit='frame') as bar:
        futures = {pool.submit(_fetch_frame, dr, *task): task for task in pending}
        for future in as_completed(futures):
            task = futures[future]
            try:
                results[task] = future.result()
            except RetrievalError as exc:
                results[task] = exc
            except Exception as exc:  # a bug or an unexpected answer: keep the batch going
                results[task] = RetrievalError(f'SDSS frame {task}: {type(exc).__name__}: {exc}')
            bar.update(1)
    return results


@lru_cache(maxsize=48)
def _open_frame_cached(path, mtime_ns, size):
    hdul = fits.open(path, memmap=True)
    hdu = hdul[0]
    return hdul, hdu.data, _wcs_from_header(hdu.header)


def _open_frame(path):
    stat = os.stat(path)
    _, data, wcs = _open_frame_cached(str(path), stat.st_mtime_ns, stat.st_size)
    return data, wcs


def _boundary_world(wcs_out, shape):
    """World coordinates of points along the edge of the output grid (1 pixel outside)."""
    ny, nx = shape
    xs = np.linspace(-1.5, nx + 0.5, max(2, nx // 8 + 2))
    ys = np.linspace(-1.5, ny + 0.5, max(2, ny // 8 + 2))
    px = np.concatenate([xs, xs, np.full_like(ys, xs[0]), np.full_like(ys, xs[-1])])
    py = np.concatenate([np.full_like(xs, ys[0]), np.full_like(xs, ys[-1]), ys, ys])
    return wcs_out.pixel_to_world_values(px, py)


def _input_box(wcs_in, shape_in, world, margin=3):
    """Pixel box (y0, y1, x0, x1) of the frame needed for the output, or None; and raw extent."""
    x, y = wcs_in.world_to_pixel_values(*world)
    ny, nx = shape_in
    ext = (np.nanmin(y), np.nanmax(y), np.nanmin(x), np.nanmax(x))
    y0 = max(0, int(math.floor(ext[0])) - margin)
    y1 = min(ny, int(math.ceil(ext[1])) + margin + 1)
    x0 = max(0, int(math.floor(ext[2])) - margin)
    x1 = min(nx, int(math.ceil(ext[3])) + margin + 1)
    if y0 >= y1 or x0 >= x1:
        return None, ext
    return (y0, y1, x0, x1), ext


def _tan_wcs(center, shape, scale):
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


def _resample(data, wcs_in, box, wcs_out, shape, scale):
    """Resample a frame region onto the output grid in nanomaggies per output pixel."""
    from reproject import reproject_adaptive, reproject_interp

    y0, y1, x0, x1 = box
    sub = np.asarray(data[y0:y1, x0:x1], dtype=float)
    sub_wcs = wcs_in.slice((slice(y0, y1), slice(x0, x1)))
    in_area = proj_plane_pixel_area(wcs_in)  # deg2 per frame pixel
    out_area = scale.to_value(u.deg) ** 2
    if out_area > _ADAPTIVE_ABOVE ** 2 * in_area:
        array, footprint = reproject_adaptive((sub, sub_wcs), wcs_out, shape_out=shape,
                                              conserve_flux=True, roundtrip_coords=False)
    else:
        array, footprint = reproject_interp((sub, sub_wcs), wcs_out, shape_out=shape,
                                            order='bilinear', roundtrip_coords=False)
        array *= out_area / in_area
    return array, footprint


def _neighbour_fields(row, shape, scale, paths, dr):
    """Fields of the same run and camcol that the cutout reaches beyond the primary frame."""
    frame = (row['run'], row['rerun'], row['camcol'], row['field'])
    path = paths.get((frame, 'r'))
    if not isinstance(path, Path):
        return []
    data, wcs_in = _open_frame(path)
    center = SkyCoord(row['ra'], row['dec'], unit='deg')
    world = _boundary_world(_tan_wcs(center, shape, scale), shape)
    _, (ymin, ymax, _, _) = _input_box(wcs_in, data.shape, world)
    fields = []
    # Rows run along the scan: the frame of field f - 1 precedes it, f + 1 follows it.
    if ymin < -0.5:
        fields.append(row['field'] - 1)
    if ymax > data.shape[0] - 0.5:
        fields.append(row['field'] + 1)
    return [(row['run'], row['rerun'], row['camcol'], f) for f in fields if f >= 0]


def _edge_weight(wcs_in, shape_in, grid_world):
    """Weight 0 within one pixel of a frame edge rising to 1 further in (for overlaps)."""
    x, y = wcs_in.world_to_pixel_values(*grid_world)
    ny, nx = shape_in
    dist = np.minimum(np.minimum(x + 0.5, nx - 0.5 - x), np.minimum(y + 0.5, ny - 0.5 - y))
    return np.clip(np.nan_to_num(dist, nan=0.0) - 1.0, 0.0, 1.0)


def _build_sdss_cutout(row, shape, scale, dr, paths):
    primary = (row['run'], row['rerun'], row['camcol'], row['field'])
    frames = [primary] + [tuple(f) for f in row.get('_neighbours', [])]
    center = SkyCoord(row['ra'], row['dec'], unit='deg')
    wcs_out = _tan_wcs(center, shape, scale)
    world = _boundary_world(wcs_out, shape)
    grid_world = None
    cube = np.zeros((3,) + tuple(shape), dtype=np.float32)
    mask = np.ones((3,) + tuple(shape), dtype=bool)
    used = set()
    for k, band in enumerate(_BANDS):
        pieces = []
        for frame in frames:
            path = paths.get((frame, band))
            if not isinstance(path, Path):
                if frame == primary:
                    raise path if isinstance(path, RetrievalError) else RetrievalError(
                        f'SDSS {band}-band frame {frame} is not available')
                continue  # a neighbouring field without data: those pixels stay masked
            data, wcs_in = _open_frame(path)
            box, _ = _input_box(wcs_in, data.shape, world)
            if box is None:
                continue
            array, footprint = _resample(data, wcs_in, box, wcs_out, shape, scale)
            good = (footprint > 0) & np.isfinite(array)
            if good.any():
                pieces.append((np.where(good, array, 0.0), good.astype(float), wcs_in, data.shape))
                used.add(frame)
        if not pieces:
            continue
        if len(pieces) == 1:
            value, weight = pieces[0][0], pieces[0][1]
        else:
            # Overlapping frames: average, but let each frame's outermost pixel row/column
            # (where interpolation reaches past its edge) count only where nothing else does.
            if grid_world is None:
                yy, xx = np.mgrid[:shape[0], :shape[1]]
                grid_world = wcs_out.pixel_to_world_values(xx, yy)
            total, weight, total_fp, weight_fp = 0.0, 0.0, 0.0, 0.0
            for array, good, wcs_in, shape_in in pieces:
                w = good * _edge_weight(wcs_in, shape_in, grid_world)
                total = total + array * w
                weight = weight + w
                total_fp = total_fp + array * good
                weight_fp = weight_fp + good
            inner = weight > 0
            value = np.where(inner, total / np.where(inner, weight, 1.0),
                             total_fp / np.where(weight_fp > 0, weight_fp, 1.0))
            weight = weight_fp
        covered = weight > 0
        cube[k][covered] = value[covered].astype(np.float32)
        mask[k] = ~covered
    meta = {'objid': int(row['objid']), 'run': int(row['run']), 'rerun': int(row['rerun']),
            'camcol': int(row['camcol']), 'field': int(row['field']), 'data_release': dr,
            'bands': list(_BANDS), 'source': 'sdss', 'pixel_scale': scale.to(u.arcsec),
            'ra': row['ra'] * u.deg, 'dec': row['dec'] * u.deg,
            'petroRad_r': row['petroRad_r'] * u.arcsec, 'petroR50_r': row['petroR50_r'] * u.arcsec,
            'petroR90_r': row['petroR90_r'] * u.arcsec,
            'frames': sorted((int(f[0]), int(f[2]), int(f[3])) for f in used)}
    return NDData(cube, wcs=wcs_out, mask=mask, unit=nanomaggy, meta=meta)


def _get_sdss(indices, coords, shape, scale, dr, radius, results):
    rows, errors = _query_objects(coords[indices], radius, dr)
    galaxies = []
    for local, i in enumerate(indices):
        if local in errors:
            results[i] = RetrievalError(f'coordinate {i} ({coords[i].to_string("decimal")}): '
                                        f'{errors[local]}')
        elif not rows[local]['found']:
            results[i] = RetrievalError(f'coordinate {i} ({coords[i].to_string("decimal")}): '
                                        f"{rows[local]['reason']}")
        else:
            galaxies.append((i, rows[local]))
    if not galaxies:
        return
    # Frames shared by several galaxies are downloaded once.
    primaries = unique(Table(rows=[(r['run'], r['rerun'], r['camcol'], r['field']) for _, r in galaxies],
                             names=['run', 'rerun', 'camcol', 'field']),
                       keys=['run', 'rerun', 'camcol', 'field'])
    tasks = [((int(f['run']), int(f['rerun']), int(f['camcol']), int(f['field'])), band)
             for f in primaries for band in _BANDS]
    paths = _fetch_frames(dr, tasks, 'SDSS frames')
    neighbour_tasks = set()
    for _, row in galaxies:
        row['_neighbours'] = _neighbour_fields(row, shape, scale, paths, dr)
        neighbour_tasks.update((frame, band) for frame in row['_neighbours'] for band in _BANDS)
    paths.update(_fetch_frames(dr, sorted(neighbour_tasks - set(paths)), 'SDSS neighbouring frames'))
    for i, row in _progress(galaxies, desc='SDSS cutouts', unit='cutout'):
        try:
            cutout = _build_sdss_cutout(row, shape, scale, dr, paths)
        except RetrievalError as exc:
            results[i] = RetrievalError(f"coordinate {i} (objid {row['objid']}): {exc}")
            continue
        lost = cutout.mask.mean()
        if lost > 0:
            warnings.warn(f"cutout of SDSS objid {row['objid']} (coordinate {i}): {lost:.1%} of the "
                          'pixels have no SDSS data (beyond the edge of the camera column or run); '
                          'they are set to 0 and masked', RetrievalWarning)
        results[i] = cutout


# --------------------------------------------------------------------------------------
# Colour JPEG routes
# --------------------------------------------------------------------------------------

def _decode_jpeg(content, shape, what):
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(content)) as image:
            rgb = np.asarray(image.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise RetrievalError(f'{what}: the answer is not an image ({exc}); it begins '
                             f'{bytes(content[:60])!r}') from exc
    return rgb


def _rgb_nddata(rgb, coord, shape, scale, what, meta):
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[:2] != tuple(shape) or rgb.shape[2] < 3:
        raise RetrievalError(f'{what}: expected a {shape[1]}x{shape[0]} colour image, got an array '
                             f'of shape {rgb.shape}')
    if rgb[..., :3].max() <= 2:
        raise RetrievalError(f'{what}: every pixel is black: there is no SDSS imaging at this '
                             'position (outside the footprint)')
    # Image rows run from the top (north) down; FITS/WCS rows run from the bottom (south) up.
    cube = np.ascontiguousarray(np.moveaxis(rgb[::-1, :, :3], 2, 0), dtype=np.uint8)
    meta = dict(meta, bands=list(_BANDS), pixel_scale=scale.to(u.arcsec),
                ra=coord.ra.deg * u.deg, dec=coord.dec.deg * u.deg)
    return NDData(cube, wcs=_tan_wcs(coord, shape, scale), mask=np.zeros(cube.shape, bool),
                  meta=meta)


def _get_skyserver(coord, shape, scale, dr):
    from astroquery.sdss import SDSS, conf as sdss_conf
    url = f'{sdss_conf.skyserver_baseurl}/dr{dr}/SkyServerWS/ImgCutout/getjpeg'
    params = {'ra': float(coord.ra.deg), 'dec': float(coord.dec.deg),
              'scale': float(scale.to_value(u.arcsec)), 'width': shape[1], 'height': shape[0]}
    what = f'SkyServer DR{dr} ImgCutout at {coord.to_string("decimal")}'
    response = _call_with_retries(
        lambda timeout: SDSS._request('GET', url, params=params, timeout=timeout, cache=False), what)
    _check_status(response, what)
    rgb = _decode_jpeg(response.content, shape, what)
    meta = {'objid': None, 'run': None, 'rerun': None, 'camcol': None, 'field': None,
            'data_release': dr, 'source': 'skyserver'}
    return _rgb_nddata(rgb, coord, shape, scale, what, meta)


def _get_hips2fits(coord, shape, scale):
    from astroquery.hips2fits import hips2fitsClass
    client = hips2fitsClass()
    wcs = _tan_wcs(coord, shape, scale)
    what = f'hips2fits {_HIPS} at {coord.to_string("decimal")}'

    def request(timeout):
        client.timeout = timeout
        return client.query_with_wcs_async(hips=_HIPS, wcs=wcs, format='jpg', min_cut=0.5,
                                            max_cut=99.5, stretch='linear', cmap='Greys_r')
    response = _call_with_retries(request, what)
    if getattr(response, 'status_code', 200) != 200:
        try:
            detail = client._parse_result(response, verbose=False, format='jpg')
        except Exception as exc:
            detail = exc
        raise RetrievalError(f'{what}: the service answered HTTP {response.status_code}: {detail}')
    rgb = _decode_jpeg(response.content, shape, what)
    meta = {'objid': None, 'run': None, 'rerun': None, 'camcol': None, 'field': None,
            'data_release': 9, 'source': 'hips2fits', 'hips': _HIPS}
    return _rgb_nddata(rgb, coord, shape, scale, what, meta)


def _get_jpegs(indices, coords, shape, scale, dr, source, results):
    def one(i):
        if source == 'skyserver':
            return _get_skyserver(coords[i], shape, scale, dr)
        return _get_hips2fits(coords[i], shape, scale)

    workers = max(1, min(int(conf.download_workers), len(indices)))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            _progress(total=len(indices), desc=f'{source} cutouts', unit='cutout') as bar:
        futures = {pool.submit(one, i): i for i in indices}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except RetrievalError as exc:
                results[i] = RetrievalError(f'coordinate {i}: {exc}')
            bar.update(1)


# --------------------------------------------------------------------------------------
# Public cutout functions
# --------------------------------------------------------------------------------------

def get_cutouts(coordinates, *, size=128, pixel_scale=_NATIVE_SCALE, source='sdss',
                data_release=None, radius=5 * u.arcsec):
    """Retrieve three-band cutouts for many coordinates; failures do not stop the batch.

    Parameters
    ----------
    coordinates : `~astropy.coordinates.SkyCoord`
        Positions (scalar or array).
    size : int, `~astropy.units.Quantity` or pair, optional
        Cutout size: pixels (int), an angle, or a pair ``(ny, nx)`` of either.
    pixel_scale : `~astropy.units.Quantity`, optional
        Output pixel size (default the native SDSS 0.396 arcsec).
    source : {'sdss', 'skyserver', 'hips2fits'}, optional
        ``'sdss'``: calibrated frames in nanomaggies, resampled onto a grid centred
        on the nearest primary galaxy. ``'skyserver'``: SkyServer colour JPEG;
        ``'hips2fits'``: CDS SDSS9 colour HiPS; both centred on the coordinate,
        uint8.
    data_release : int, optional
        SDSS data release; default ``astro_galsim.conf.data_release``.
    radius : `~astropy.units.Quantity`, optional
        Galaxy search radius around each coordinate (``source='sdss'`` only).

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
    if source not in _SOURCES:
        raise ValueError(f'source must be one of {_SOURCES}; got {source!r}')
    coords = _as_icrs(coordinates)
    if coords.isscalar:
        coords = coords.reshape((1,))
    scale = _parse_pixel_scale(pixel_scale)
    shape = _parse_shape(size, scale)
    dr = _resolve_release(data_release)
    radius = _parse_radius(radius)
    results = [None] * len(coords)
    misses = []
    cache_paths = {}
    for i in range(len(coords)):
        path = _cutout_path(source, dr, coords[i], shape, scale, radius)
        cache_paths[i] = path
        if path.exists():
            try:
                results[i] = _load_cutout(path)
                continue
            except Exception as exc:  # a damaged cache file: fetch again
                log.warning(f'ignoring damaged cached cutout {path}: {exc}')
                path.unlink(missing_ok=True)
        misses.append(i)
    if misses:
        fresh = {}
        if source == 'sdss':
            _get_sdss(misses, coords, shape, scale, dr, radius, fresh)
        else:
            _get_jpegs(misses, coords, shape, scale, dr, source, fresh)
        for i in misses:
            results[i] = fresh.get(i, RetrievalError(f'coordinate {i}: nothing was retrieved'))
            if isinstance(results[i], NDData):
                _write_cache(cache_paths[i], lambda path, i=i: _save_cutout(path, results[i]))
    return results


def get_cutout(coordinate, *, size=128, pixel_scale=_NATIVE_SCALE, source='sdss',
               data_release=None, radius=5 * u.arcsec):
    """Retrieve a three-band cutout (bands i, r, g) of the galaxy at a coordinate.

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
    size, pixel_scale, source, data_release, radius
        As for `get_cutouts`.

    Returns
    -------
    cutout : `~astropy.nddata.NDData`
        ``data`` of shape ``(3, ny, nx)``: bands i, r, g (``meta['bands']``),
        float32 in `nanomaggy` per pixel (``source='sdss'``) or uint8 colour
        channels R, G, B (JPEG sources). ``wcs`` is a 2-D celestial TAN WCS of
        the two spatial axes (the band axis has no WCS); row 0 is the southern
        edge (FITS order), so display with ``origin='lower'``. ``mask`` (same
        shape as ``data``) is True where no frame covers the pixel (those values
        are 0). ``meta`` holds ``objid``, ``run``, ``rerun``, ``camcol``,
        ``field`` (None for JPEG sources), ``data_release``, ``bands``,
        ``source``, ``pixel_scale``, ``ra``, ``dec`` (the cutout centre) and, for
        ``'sdss'``, ``petroRad_r``, ``petroR50_r``, ``petroR90_r`` and ``frames``
        (the (run, camcol, field) combined). No uncertainty is attached.

    Raises
    ------
    RetrievalError
        If there is no galaxy at the position, the position is outside the SDSS
        footprint, a band is missing, or a service times out or answers garbage.

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
    coord = _as_icrs(coordinate, name='coordinate')
    if not coord.isscalar:
        raise ValueError(f'get_cutout takes one coordinate; got {coord.shape} of them: use '
                         'get_cutouts for several')
    result = get_cutouts(coord, size=size, pixel_scale=pixel_scale, source=source,
                         data_release=data_release, radius=radius)[0]
    if isinstance(result, Exception):
        raise result
    return result
