# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Survey cutouts by sky coordinate: one module per survey behind one interface.

`get_cutouts` (and `get_cutout`) give a galaxy-centred, north-up, three-band cutout as an
`~astropy.nddata.NDData` of shape ``(3, ny, nx)`` whose planes map to R, G, B. The survey
is chosen by ``source=``, a name in the registry (`get_source`, `register_source`):

* ``'sdss'`` (default, `~astro_galsim.retrieval.sdss`): calibrated g, r, i frames
  (nanomaggies) resampled with `reproject` onto a grid centred on the nearest primary galaxy;
* ``'skyserver'`` (`~astro_galsim.retrieval.skyserver`): the SkyServer colour JPEG;
* ``'hips2fits'`` (`~astro_galsim.retrieval.hips2fits`): the CDS SDSS9 colour HiPS;
* ``'legacysurvey'`` (`~astro_galsim.retrieval.legacysurvey`): DESI Legacy Surveys DR10
  g, r, z colour cutouts.

Each source keeps its settings in its own configuration namespace (for example
``astro_galsim.retrieval.sdss.conf.data_release``); timeouts, retries and the cache
directory are shared (``astro_galsim.conf``). Downloaded frames and finished cutouts are
cached on disk (see `cache_directory`), so a second request for the same coordinates
makes no network request.
"""
from ..io import nanomaggy
from ._cache import cache_directory
from .core import (CutoutSource, RetrievalError, RetrievalWarning, get_cutout, get_cutouts,
                   get_source, register_source)
# Each survey module registers its source on import.
from . import hips2fits, legacysurvey, sdss, skyserver  # noqa: F401
from .sdss import query_sdss_objects

__all__ = ['nanomaggy', 'RetrievalError', 'RetrievalWarning', 'query_sdss_objects', 'get_cutout',
           'get_cutouts', 'cache_directory', 'CutoutSource', 'register_source', 'get_source']
