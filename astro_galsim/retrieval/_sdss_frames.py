# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""SDSS calibrated frames: downloaded once, cached, and resampled onto a galaxy-centred grid.

Private to `astro_galsim.retrieval.sdss`, which finds each galaxy's field in the SDSS
catalogue and hands it here: the g, r, i frames (nanomaggies) come from the SDSS Science
Archive Server and are resampled with `reproject` onto one TAN grid centred on the
galaxy, combining neighbouring frames where the galaxy lies near a frame edge.
"""
import bz2
import gzip
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from ..config import conf as root_conf
from ..io import nanomaggy
from ._cache import atomic_write_bytes, cache_directory
from ._http import check_status, get as http_get
from .core import RetrievalError, progress, tan_wcs

__all__ = ['BANDS', 'fetch_frames', 'neighbour_fields', 'build_cutout']

#: Output band order: channels map to R, G, B.
BANDS = ('i', 'r', 'g')
#: Resample with flux-conserving adaptive resampling when the output pixels are
#: larger than the frame pixels by more than this factor (otherwise bilinear).
_ADAPTIVE_ABOVE = 1.1


class _MissingFrame(RetrievalError):
    """An SDSS frame that the archive does not have (HTTP 404)."""


def _frame_path(dr, run, rerun, camcol, field, band):
    return (cache_directory() / 'sdss' / f'dr{dr}' / 'frames' / str(rerun) / str(run) / str(camcol)
            / f'frame-{band}-{run:06d}-{camcol}-{field:04d}.fits')


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
    run, rerun, camcol, field = frame
    path = _frame_path(dr, run, rerun, camcol, field, band)
    if path.exists():
        return path
    url = _frame_url(dr, run, rerun, camcol, field, band)
    what = (f'SDSS DR{dr} {band}-band frame run={run} rerun={rerun} camcol={camcol} '
            f'field={field}')
    response = http_get(url, what)
    status = getattr(response, 'status_code', 200)
    if status == 404:
        raise _MissingFrame(f'{what} is missing from the archive (HTTP 404 for {url}); this field '
                            'has no data in that band')
    check_status(response, what)
    try:
        data = _decompress(response.content)
    except (OSError, EOFError, ValueError) as exc:
        raise RetrievalError(f'{what}: the download is not a valid compressed file ({exc})') from exc
    _validate_frame(data, what)
    atomic_write_bytes(path, data)
    return path


def fetch_frames(dr, tasks, desc):
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
    workers = max(1, min(int(root_conf.download_workers), len(pending)))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress(total=len(pending), desc=desc, unit='frame') as bar:
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


def neighbour_fields(row, shape, scale, paths, dr):
    """Fields of the same run and camcol that the cutout reaches beyond the primary frame."""
    frame = (row['run'], row['rerun'], row['camcol'], row['field'])
    path = paths.get((frame, 'r'))
    if not isinstance(path, Path):
        return []
    data, wcs_in = _open_frame(path)
    center = SkyCoord(row['ra'], row['dec'], unit='deg')
    world = _boundary_world(tan_wcs(center, shape, scale), shape)
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


def build_cutout(row, shape, scale, dr, paths):
    primary = (row['run'], row['rerun'], row['camcol'], row['field'])
    frames = [primary] + [tuple(f) for f in row.get('_neighbours', [])]
    center = SkyCoord(row['ra'], row['dec'], unit='deg')
    wcs_out = tan_wcs(center, shape, scale)
    world = _boundary_world(wcs_out, shape)
    grid_world = None
    cube = np.zeros((3,) + tuple(shape), dtype=np.float32)
    mask = np.ones((3,) + tuple(shape), dtype=bool)
    used = set()
    for k, band in enumerate(BANDS):
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
            'bands': list(BANDS), 'source': 'sdss', 'pixel_scale': scale.to(u.arcsec),
            'ra': row['ra'] * u.deg, 'dec': row['dec'] * u.deg,
            'petroRad_r': row['petroRad_r'] * u.arcsec, 'petroR50_r': row['petroR50_r'] * u.arcsec,
            'petroR90_r': row['petroR90_r'] * u.arcsec,
            'frames': sorted((int(f[0]), int(f[2]), int(f[3])) for f in used)}
    return NDData(cube, wcs=wcs_out, mask=mask, unit=nanomaggy, meta=meta)
