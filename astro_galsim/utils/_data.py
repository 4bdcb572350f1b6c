"""Files shipped in the package's ``data`` folder."""
from importlib import resources
from pathlib import Path

__all__ = ['package_data']


def package_data(name):
    """Path of a file shipped in ``astro_galsim/data``."""
    return Path(str(resources.files('astro_galsim') / 'data' / name))
