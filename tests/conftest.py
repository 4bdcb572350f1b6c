"""Shared fixtures: the real SDSS images in ``../shared/data``, read in place."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data():
    """Path to the real SDSS image sets; skips the test where they are absent."""
    if not (SHARED_DATA / 'README.md').exists():
        pytest.skip(f'real SDSS test images not found at {SHARED_DATA} '
                    '(they live in shared/data beside the repository)')
    return SHARED_DATA
