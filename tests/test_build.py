import shutil

import numpy as np
import pytest

from astro_galsim import SimilaritySearch
from astro_galsim.build import build_database, read_source


@pytest.fixture
def image_folder(build_source):
    """A small build source in the training set's layout: images and an index.csv."""
    return build_source(7)


def test_read_source_folder(image_folder):
    folder, index = image_folder
    items, ids, coords = read_source(folder)
    assert ids == [str(o) for o in index['objid']]
    assert coords[0].ra.deg == pytest.approx(index['ra'][0])


def test_build_resumes_without_redoing(image_folder, tmp_path, monkeypatch):
    folder, index = image_folder
    output = tmp_path / 'db.fits'
    # an interrupted build: the second partition fails
    import astro_galsim.build as build_module
    calls = []
    original = build_module.describe_partition

    def failing_describe(items, ids, *args, **kwargs):
        calls.append(list(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(items, ids, *args, **kwargs)
    monkeypatch.setattr(build_module, 'describe_partition', failing_describe)
    with pytest.raises(KeyboardInterrupt):
        build_database(folder, output, partition_size=3)
    partial = SimilaritySearch.load(output)
    assert list(partial.ids) == calls[0]
    monkeypatch.setattr(build_module, 'describe_partition', original)
    # the restart skips what is saved and finishes the rest
    search, report = build_database(folder, output, partition_size=3)
    assert list(report['id']) == [str(o) for o in index['objid'][3:]]
    assert sorted(search.ids) == sorted(str(o) for o in index['objid'])
    # the same database as an uninterrupted build
    fresh, _ = build_database(folder, tmp_path / 'fresh.fits', partition_size=10)
    order = fresh.database.lookup_ids(search.ids)
    np.testing.assert_allclose(search.vectors, fresh.vectors[order], atol=1e-5)


def test_build_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a folder'):
        build_database(tmp_path / 'nothing', tmp_path / 'db.fits')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images'):
        build_database(tmp_path / 'empty', tmp_path / 'db.fits')
    with pytest.raises(ValueError, match='executor must be None, a number of processes'):
        build_database(tmp_path / 'empty', tmp_path / 'db.fits', executor=0)


def test_build_shows_one_progress_bar(shared_data, tmp_path, capsys):
    # the build's own bar only: add() of a chunk of more than 50 images used to show its own
    # "describing" bar interleaved with it
    from astro_galsim import conf
    folder = tmp_path / 'many'
    folder.mkdir()
    for path in sorted((shared_data / 'sdss_galaxies_mikeedi/images/val').glob('*.jpg'))[:55]:
        shutil.copy(path, folder / path.name)
    with conf.set_temp('show_progress', True):
        build_database(folder, tmp_path / 'bar.fits', partition_size=55)
    err = capsys.readouterr().err
    assert 'building' in err and 'describing' not in err and 'preparing' not in err


def test_build_keeps_the_index_columns(image_folder, tmp_path):
    """index.csv's own columns (split, sizes, GZ1 class...) are stored, so where= can filter on them."""
    folder, index = image_folder
    index['hubble'] = ['Sb', 'E', 'Sc', 'Sb', 'S0', 'E', 'Sb']
    index['gz1_class'] = np.ma.masked_array([0, 3, 0, 1, 0, 0, 5], mask=[1, 0, 1, 0, 1, 1, 0])
    index.write(folder / 'index.csv', format='ascii.csv', overwrite=True)
    search, _ = build_database(folder, tmp_path / 'db.fits', partition_size=4)
    loaded = SimilaritySearch.load(tmp_path / 'db.fits')
    for kept in ('split', 'width', 'hubble', 'gz1_class'):
        assert kept in loaded.table.colnames
    rows = loaded.database.lookup_ids([str(o) for o in index['objid']])
    assert list(loaded.table['hubble'][rows]) == list(index['hubble'])
    assert np.isnan(loaded.table['gz1_class'][rows[0]]) and loaded.table['gz1_class'][rows[1]] == 3
    assert 'path' not in loaded.table.colnames and 'objid' not in loaded.table.colnames
    found = loaded.query(str(index['objid'][0]), k=3, where={'hubble': ['E', 'S0']})
    assert set(found['id']) == {str(o) for o, h in zip(index['objid'], index['hubble']) if h in ('E', 'S0')}


def test_build_writes_the_database_once(image_folder, tmp_path, monkeypatch):
    # bytes in proportion to the catalogue: the shards once each and the database once, not a
    # growing database rewritten after every partition
    from astro_galsim.database import GalaxyDatabase
    folder, index = image_folder
    saves, original = [], GalaxyDatabase.save

    def counted_save(self, path, **kwargs):
        saves.append(len(self))
        return original(self, path, **kwargs)
    monkeypatch.setattr(GalaxyDatabase, 'save', counted_save)
    search, report = build_database(folder, tmp_path / 'db.fits', partition_size=2)
    assert report.meta['partitions'] == 4 and report.meta['partitions_computed'] == 4
    assert saves == [len(search)] and len(search) == len(index)
    assert len(list((tmp_path / 'db.fits.shards').glob('part-*.parquet'))) == 4
