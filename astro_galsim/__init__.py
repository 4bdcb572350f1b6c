"""astro_galsim: find galaxies that look like a given one."""
try:
    from ._version import version as __version__
except ImportError:  # pragma: no cover - running from a source tree without an install
    __version__ = '0.0.dev0'

from .config import conf
from .io import read_image

__all__ = ['conf', 'read_image', '__version__']
