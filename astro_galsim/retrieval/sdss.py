# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""SDSS: the catalogue cross-match, and calibrated frames resampled onto a galaxy-centred grid.

``source='sdss'``: the SDSS photometric catalogue gives the nearest primary galaxy and its
field; the calibrated g, r, i frames (nanomaggies) are downloaded from the SDSS Science
Archive Server and resampled with `reproject` onto one TAN grid centred on the galaxy,
combining neighbouring frames where the galaxy lies near a frame edge (the frames and the
resampling in the private ``_sdss_frames``).
"""
import json
import math
import warnings

import numpy as np
import astropy.units as u
from astropy import config as _config
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import QTable, Table, unique
from astropy.utils.exceptions import AstropyDeprecationWarning

from ..config import conf as root_conf
from ._cache import CACHE_VERSION, atomic_write_bytes, cache_directory, key, write_cache
from ._http import bounded_reads, call_with_retries, check_status
from ._sdss_frames import BANDS, build_cutout, fetch_frames, neighbour_fields
from .core import (CutoutSource, RetrievalError, RetrievalWarning, as_icrs, progress, register_source)

__all__ = ['Conf', 'conf', 'SDSSFrames']


class Conf(_config.ConfigNamespace):
    """Settings of the SDSS sources (``'sdss'`` and ``'skyserver'``)."""

    data_release = _config.ConfigItem(
        17, 'SDSS data release used for catalogue queries, frame downloads and SkyServer cutouts '
        '(8 to 19: calibrated frames in nanomaggies exist from DR8 on).', cfgtype='integer')


conf = Conf()

#: Native SDSS imaging pixel scale.
NATIVE_SCALE = 0.396 * u.arcsec
#: Coordinates per cross-match upload.
_QUERY_CHUNK = 500
_PHOTO_FIELDS = ['objid', 'ra', 'dec', 'run', 'rerun', 'camcol', 'field', 'type', 'mode',
                 'petroRad_r', 'petroR50_r', 'petroR90_r']
_PHOTO_TYPES = {0: 'UNKNOWN', 1: 'COSMIC_RAY', 2: 'DEFECT', 3: 'GALAXY', 4: 'GHOST',
                5: 'KNOWNOBJ', 6: 'STAR', 7: 'TRAIL', 8: 'SKY', 9: 'NOTATYPE'}


def resolve_release(data_release):
    """The SDSS data release to use: the argument, else this module's ``conf.data_release``.

    ``astro_galsim.conf.data_release`` (where it first lived) still counts when set, with an
    `~astropy.utils.exceptions.AstropyDeprecationWarning`.
    """
    if data_release is None:
        data_release = conf.data_release
        legacy = root_conf.data_release
        if legacy != root_conf.__class__.data_release.defaultvalue:
            warnings.warn('astro_galsim.conf.data_release is deprecated: set '
                          'astro_galsim.retrieval.sdss.conf.data_release instead',
                          AstropyDeprecationWarning)
            data_release = legacy
    try:
        dr = int(data_release)
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


def _object_path(dr, coord, radius):
    name = key(CACHE_VERSION, dr, round(float(coord.ra.deg), 7), round(float(coord.dec.deg), 7),
               round(float(radius.to_value(u.arcsec)), 4))
    return cache_directory() / 'sdss' / f'dr{dr}' / 'objects' / name[:2] / f'{name}.json'


def _empty_row(index, coord):
    return {'index': int(index), 'input_ra': float(coord.ra.deg), 'input_dec': float(coord.dec.deg),
            'found': False, 'reason': '', 'objid': 0, 'ra': math.nan, 'dec': math.nan,
            'separation': math.nan, 'run': -1, 'rerun': -1, 'camcol': -1, 'field': -1,
            'petroRad_r': math.nan, 'petroR50_r': math.nan, 'petroR90_r': math.nan}


def _query_chunk(coords, radius, dr):
    """One cross-match request: every photometric object within ``radius`` of ``coords``."""
    from astroquery.sdss import SDSSClass

    what = f'SDSS DR{dr} catalogue cross-match of {len(coords)} position(s)'

    def request(timeout):
        client = bounded_reads(SDSSClass())
        client.TIMEOUT = timeout  # astroquery's first look-up of the column names waits this long
        return client.query_region_async(coords, radius=radius, photoobj_fields=_PHOTO_FIELDS,
                                         data_release=dr, timeout=timeout, cache=False)
    response = call_with_retries(request, what)
    check_status(response, what)
    text = response.text
    if 'no objects have been found' in text.lower():
        return None
    if 'error_message' in text:
        raise RetrievalError(f'{what}: the service reported an error: {text[:300]}')
    try:
        table = Table.read(text, format='ascii.csv', comment='#')
    except Exception as exc:
        raise RetrievalError(f'{what}: the answer is not a CSV table ({type(exc).__name__}: '
                             f'{str(exc)[:100]}); it begins {text[:200]!r}') from exc
    if len(table) == 0:
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
            write_cache(_object_path(dr, coords[row['index']], radius),
                        lambda path, row=row: atomic_write_bytes(path, json.dumps(row).encode()))
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
    coords = as_icrs(coordinates)
    if coords.isscalar:
        coords = coords.reshape((1,))
    radius = _parse_radius(radius)
    dr = resolve_release(data_release)
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


def _fetch_sdss(coords, shape, scale, dr, radius):
    results = [None] * len(coords)
    rows, errors = _query_objects(coords, radius, dr)
    galaxies = []
    for i in range(len(coords)):
        if i in errors:
            results[i] = errors[i]
        elif not rows[i]['found']:
            results[i] = RetrievalError(rows[i]['reason'])
        else:
            galaxies.append((i, rows[i]))
    if not galaxies:
        return results
    # Frames shared by several galaxies are downloaded once.
    primaries = unique(Table(rows=[(r['run'], r['rerun'], r['camcol'], r['field']) for _, r in galaxies],
                             names=['run', 'rerun', 'camcol', 'field']),
                       keys=['run', 'rerun', 'camcol', 'field'])
    tasks = [((int(f['run']), int(f['rerun']), int(f['camcol']), int(f['field'])), band)
             for f in primaries for band in BANDS]
    paths = fetch_frames(dr, tasks, 'SDSS frames')
    neighbour_tasks = set()
    for _, row in galaxies:
        row['_neighbours'] = neighbour_fields(row, shape, scale, paths, dr)
        neighbour_tasks.update((frame, band) for frame in row['_neighbours'] for band in BANDS)
    paths.update(fetch_frames(dr, sorted(neighbour_tasks - set(paths)), 'SDSS neighbouring frames'))
    for i, row in progress(galaxies, desc='SDSS cutouts', unit='cutout'):
        try:
            cutout = build_cutout(row, shape, scale, dr, paths)
        except RetrievalError as exc:
            results[i] = RetrievalError(f"objid {row['objid']}: {exc}")
            continue
        lost = cutout.mask.mean()
        if lost > 0:
            warnings.warn(f"cutout of SDSS objid {row['objid']}: {lost:.1%} of the "
                          'pixels have no SDSS data (beyond the edge of the camera column or run); '
                          'they are set to 0 and masked', RetrievalWarning)
        results[i] = cutout
    return results


class SDSSFrames(CutoutSource):
    """``source='sdss'``: calibrated g, r, i frames resampled onto a grid centred on the galaxy.

    Options: ``data_release`` (default ``astro_galsim.retrieval.sdss.conf.data_release``) and ``radius`` (the galaxy
    search radius around each position, at most 3 arcmin; default 5 arcsec).
    """

    name = 'sdss'
    bands = BANDS
    pixel_scale = NATIVE_SCALE
    conf = conf
    options = {'data_release': None, 'radius': 5 * u.arcsec}

    def resolve_options(self, **options):
        options = super().resolve_options(**options)
        return {'data_release': resolve_release(options['data_release']),
                'radius': _parse_radius(options['radius'])}

    def cache_key(self, options):
        return [options['data_release'], round(float(options['radius'].to_value(u.arcsec)), 4)]

    def fetch(self, coords, shape, scale, options):
        return _fetch_sdss(coords, shape, scale, options['data_release'], options['radius'])


register_source(SDSSFrames())
