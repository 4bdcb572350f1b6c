"""Shared by the tests and the docs pages' examples: the real SDSS images in ``../shared/data``, read in place."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / 'shared' / 'data'
_ABSENT = (f'real SDSS test images not found at {SHARED_DATA} '
           '(they live in shared/data beside the repository)')


def _have_shared_data():
    return (SHARED_DATA / 'README.md').exists()


@pytest.fixture(scope='session')
def shared_data():
    """Path to the real SDSS image sets; skips the test where they are absent."""
    if not _have_shared_data():
        pytest.skip(_ABSENT)
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """A docs page whose examples read the real images skips, saying why, where they are absent."""
    if _have_shared_data():
        return
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == '.rst' and '../shared/data' in path.read_text():
            item.add_marker(pytest.mark.skip(reason=f'{path.name} reads them: {_ABSENT}'))
