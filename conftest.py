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


@pytest.fixture
def build_source(shared_data, tmp_path):
    """Make a small build source in the training sample's layout: ``make(n)`` copies its first ``n``
    images into ``tmp_path / 'images'`` with an index.csv, and returns the folder and the index."""
    def make(n):
        import shutil
        from astropy.table import Table
        src = shared_data / 'sdss_galaxies_mikeedi'
        index = Table.read(src / 'index.csv', format='ascii.csv')[:n]
        folder = tmp_path / 'images'
        folder.mkdir()
        for row in index:
            shutil.copy(src / row['path'], folder / f'{row["objid"]}.jpg')
        index['path'] = [f'{objid}.jpg' for objid in index['objid']]
        index.write(folder / 'index.csv', format='ascii.csv')
        return folder, index
    return make


def pytest_collection_modifyitems(config, items):
    """A docs page whose examples read the real images skips, saying why, where they are absent."""
    if _have_shared_data():
        return
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix == '.rst' and '../shared/data' in path.read_text():
            item.add_marker(pytest.mark.skip(reason=f'{path.name} reads them: {_ABSENT}'))
