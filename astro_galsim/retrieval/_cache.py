# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The download cache shared by every survey source: where it lives, atomic writes, cutout files.

Finished cutouts are FITS files (data, a ``MASK`` extension and the ``meta`` as JSON text),
never pickles, so a cache directory from someone else is only ever read as data.
"""
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy import log
from astropy.config import get_cache_dir
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS

from ..config import conf
from ..io import nanomaggy
from ..utils._files import atomic_output

__all__ = ['cache_directory']

#: Format of the cached cutout files; bumping it makes every older entry a miss.
CACHE_VERSION = 2


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


def key(*parts):
    """A short stable hash of JSON-able parts: the name of a cache entry."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` via a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, suffix='.part') as fh:
        fh.write(data)


def write_cache(path, write):
    """Write a cache entry; a failure (disk full, read-only cache) only costs a re-download."""
    try:
        write(path)
    except OSError as exc:
        log.warning(f'could not write the cache file {path}: {exc}')


def cutout_path(source_name, parts):
    """Cache file of a finished cutout of ``source_name`` identified by ``parts``."""
    name = key(CACHE_VERSION, source_name, *parts)
    return cache_directory() / 'cutouts' / source_name / name[:2] / f'{name}.fits'


def _meta_to_json(meta):
    out = {}
    for name, value in meta.items():
        if isinstance(value, u.Quantity):
            out[name] = {'__quantity__': [float(value.value), value.unit.to_string()]}
        elif isinstance(value, np.generic):
            out[name] = value.item()
        else:
            out[name] = value
    return json.dumps(out)


def _meta_from_json(text):
    meta = json.loads(text)
    for name, value in meta.items():
        if isinstance(value, dict) and '__quantity__' in value:
            meta[name] = u.Quantity(value['__quantity__'][0], value['__quantity__'][1])
        elif name == 'frames':
            meta[name] = [tuple(f) for f in value]
    return meta


def save_cutout(path, nddata):
    """Store a finished cutout (data, WCS, mask, unit, meta) as one FITS file, atomically."""
    header = nddata.wcs.to_header()
    header['AGCACHE'] = (CACHE_VERSION, 'astro_galsim cutout cache format')
    primary = fits.PrimaryHDU(np.asarray(nddata.data), header=header)
    if nddata.unit is not None:
        primary.header['BUNIT'] = nddata.unit.to_string()
    mask = nddata.mask if nddata.mask is not None else np.zeros(nddata.data.shape, bool)
    meta = np.frombuffer(_meta_to_json(nddata.meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    fits.HDUList([primary, fits.ImageHDU(np.asarray(mask, dtype=np.uint8), name='MASK'),
                  fits.ImageHDU(meta, name='META')]).writeto(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_cutout(path):
    """Read a cutout written by `save_cutout`."""
    with fits.open(path, memmap=False) as hdul:
        data = hdul[0].data.copy()
        wcs = WCS(hdul[0].header, naxis=2)
        wcs.pixel_shape = (data.shape[2], data.shape[1])
        mask = hdul['MASK'].data.astype(bool)
        meta = _meta_from_json(hdul['META'].data.tobytes().decode())
        unit = hdul[0].header.get('BUNIT')
    unit = nanomaggy if unit == 'nanomaggy' else (u.Unit(unit) if unit else None)
    return NDData(data, wcs=wcs, mask=mask, unit=unit, meta=meta)
