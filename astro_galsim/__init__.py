"""astro_galsim: find galaxies that look like a given one.

The pipeline, one module per stage: `~astro_galsim.retrieval` (SDSS imaging for a
`~astropy.coordinates.SkyCoord`), `~astro_galsim.preprocessing` (calibrated fluxes to the
encoder's colour form), `~astro_galsim.segmentation` (isolate, measure and normalise the
central galaxy with photutils), `~astro_galsim.model` (the convolutional autoencoder),
`~astro_galsim.index` and `~astro_galsim.database` (pynndescent search and the on-disk
database), and `SimilaritySearch`, which ties them together.
"""
from .config import conf
from .io import read_image
from .search import SimilaritySearch
from .utils._data import package_version

__version__ = package_version()

__all__ = ['conf', 'read_image', 'SimilaritySearch', '__version__']
