"""The package's own files and version: the one place that says where they are."""
from importlib import resources
from pathlib import Path

__all__ = ['package_data', 'package_version']

#: The version of a source tree that was never installed (no ``_version.py`` written).
UNKNOWN_VERSION = '0.0.dev0'


def package_data(name):
    """Path of a file shipped in ``astro_galsim/data``."""
    return Path(str(resources.files('astro_galsim') / 'data' / name))


def package_version():
    """The installed version of astro_galsim (``UNKNOWN_VERSION`` in a source tree never installed)."""
    try:
        from .._version import version
    except ImportError:  # pragma: no cover - running from a source tree without an install
        return UNKNOWN_VERSION
    return version
