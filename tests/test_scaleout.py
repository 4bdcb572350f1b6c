"""Tests of astro_galsim.scaleout: distributed builds, resumable shards, sharded queries.

One two-worker `astro_galsim.scaleout.local_cluster` (processes, one thread each) serves the whole
module; the builds use real SDSS JPEGs from ``../shared/data/sdss_galaxies_mikeedi``.
"""
import re

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table
from astropy.utils.exceptions import AstropyDeprecationWarning

distributed = pytest.importorskip('distributed')
pq = pytest.importorskip('pyarrow.parquet')

from astro_galsim import SimilaritySearch  # noqa: E402
from astro_galsim.build import add_on_cluster, build_database  # noqa: E402
from astro_galsim.database import GalaxyDatabase  # noqa: E402
from astro_galsim.io import read_image  # noqa: E402
from astro_galsim.partitions import compute_partition, encoder_loads  # noqa: E402
from astro_galsim.scaleout import BuildIncomplete, WORKER_ENVIRON, build_distributed, local_cluster  # noqa: E402
from astro_galsim.sharded_search import query_sharded  # noqa: E402
from astro_galsim.shards import read_shard  # noqa: E402


class FaultHook:
    """A ``before_partition`` callable: records every attempt in ``<marker_dir>/calls.txt`` and
    makes the partitions in ``fail`` raise (or those in ``kill`` end their worker process)
    the first time each one is attempted."""

    def __init__(self, marker_dir, fail=(), kill=()):
        self.marker_dir = str(marker_dir)
        self.fail, self.kill = set(fail), set(kill)

    def __call__(self, number):
        import os
        from pathlib import Path
        directory = Path(self.marker_dir)
        with open(directory / 'calls.txt', 'a') as f:
            f.write(f'{number}\n')
        marker = directory / f'attempted-{number}'
        first = not marker.exists()
        marker.touch()
        if first and number in self.kill:
            os._exit(1)
        if first and number in self.fail:
            raise RuntimeError(f'injected fault in partition {number}')

    @staticmethod
    def calls(marker_dir):
        path = marker_dir / 'calls.txt'
        return [int(n) for n in path.read_text().split()] if path.exists() else []


N_IMAGES = 24
PARTITION = 5   # 25 items -> 5 partitions


@pytest.fixture(scope='module')
def client():
    cluster = local_cluster(2, dashboard_address='127.0.0.1:0')
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope='module')
def images(shared_data, tmp_path_factory):
    """24 real JPEGs and, in the middle, a truncated copy of one (rejected, with a reason)."""
    files = sorted((shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'train').glob('*.jpg'))[:N_IMAGES]
    broken = tmp_path_factory.mktemp('broken') / 'broken.jpg'
    broken.write_bytes(files[0].read_bytes()[:200])
    return [str(f) for f in files[:12]] + [str(broken)] + [str(f) for f in files[12:]]


@pytest.fixture(scope='module')
def serial(images):
    """The same catalogue through the serial in-process path."""
    search = SimilaritySearch()
    report = search.add(images)
    return search, report


def assert_same_database(db, search):
    assert list(db.ids) == list(search.ids)
    # bfloat16 arithmetic (on CPUs with native support) depends on the number of torch threads, one in a
    # Dask worker and all of them in this process, by up to about 1e-4; a misplaced row differs by 0.1-1
    np.testing.assert_allclose(db.vectors, search.vectors, atol=2e-4, rtol=0)
    assert db.table.colnames == search.table.colnames
    for name in search.table.colnames[2:]:
        a, b = search.table[name], db.table[name]
        assert type(a) is type(b), name
        if isinstance(a, u.Quantity):
            assert a.unit == b.unit, name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert db.encoder_id == search.database.encoder_id


def test_distributed_build_equals_serial(client, images, serial, tmp_path):
    search, serial_report = serial
    output = tmp_path / 'db.fits'
    db, report = build_distributed(images, output=output, client=client, partition_size=PARTITION)
    assert len(db) == N_IMAGES  # the broken file is not stored...
    assert_same_database(db, search)
    # ...but it is in the report, with the reason, like in the serial report
    assert list(report['id']) == list(serial_report['id'])
    assert list(report['accepted']) == list(serial_report['accepted'])
    assert list(report['reason']) == list(serial_report['reason'])
    assert not report['accepted'][12] and 'cannot read' in report['reason'][12]
    assert report.meta['partitions'] == 5 and report.meta['partitions_computed'] == 5
    # the saved file is the same database as the serial one saved
    search.save(tmp_path / 'serial.fits')
    serial_loaded = SimilaritySearch.load(tmp_path / 'serial.fits')
    assert_same_database(GalaxyDatabase.load(output), serial_loaded)
    # each worker loaded the encoder at most once, although it computed several partitions
    loads = client.run(encoder_loads)
    assert sum(len(v) for v in loads.values()) >= 1
    assert all(len(v) <= 1 for v in loads.values()), loads


def test_local_cluster_workers(client):
    # one single-threaded process per worker, started with the allocator settings (which
    # glibc reads only at process start) and Dask's own one-thread BLAS settings
    import os
    environs = client.run(lambda: dict(os.environ))
    assert len(environs) == 2
    assert all(n['nthreads'] == 1 for n in client.scheduler_info()['workers'].values())
    for environ in environs.values():
        assert {k: environ.get(k) for k in WORKER_ENVIRON} == WORKER_ENVIRON
        assert environ.get('OMP_NUM_THREADS') == '1'


def test_shard_files(client, images, tmp_path):
    shard_dir = tmp_path / 'shards'
    db, _ = build_distributed(images, client=client, partition_size=PARTITION, shard_dir=shard_dir)
    names = sorted(p.name for p in shard_dir.iterdir())
    assert len(names) == 5 and all(re.fullmatch(r'part-00000\d-[0-9a-f]{16}\.parquet', n) for n in names)
    arrow = pq.read_table(shard_dir / names[2])
    assert arrow.column_names[:3] == ['id', 'accepted', 'reason']
    assert {'ra', 'dec', 'r50', 'gini', 'vector'} <= set(arrow.column_names)
    vector_type = arrow.schema.field('vector').type
    assert vector_type.list_size == 64 and str(vector_type.value_type) == 'float'
    assert arrow.schema.field('r50').metadata[b'unit'] == b'pix'
    assert arrow.schema.field('ra').metadata[b'unit'] == b'deg'
    assert arrow.num_rows == 5
    # partition 2 holds items 10..14, among them the rejected truncated file
    table, vectors, meta = read_shard(shard_dir / names[2])
    assert meta['partition'] == 2 and meta['encoder_sha256'] == db.encoder_id['sha256']
    assert list(table['id']) == [re.sub(r'\.jpg$', '', p.split('/')[-1]) for p in images[10:15]]
    assert table['r50'].unit == u.pix
    assert np.isnan(vectors[2]).all() and np.isfinite(vectors[[0, 1, 3, 4]]).all()
    np.testing.assert_array_equal(vectors[[0, 1, 3, 4]], db.vectors[10:14])


def test_failed_partition_resumes_without_redoing_work(client, images, serial, tmp_path):
    output = tmp_path / 'db.fits'
    hook = FaultHook(tmp_path, fail={2})
    with pytest.raises(BuildIncomplete, match=r'partition\(s\) \[2\] failed.*4 of 5 partitions') as info:
        build_distributed(images, output=output, client=client, partition_size=PARTITION, retries=0,
                          before_partition=hook)
    assert (info.value.done, info.value.total) == (4, 5)
    assert not output.exists()
    assert sorted(FaultHook.calls(tmp_path)) == [0, 1, 2, 3, 4]
    # the restart computes only partition 2, and the result is the uninterrupted database
    db, report = build_distributed(images, output=output, client=client, partition_size=PARTITION,
                                   before_partition=hook)
    assert sorted(FaultHook.calls(tmp_path)) == [0, 1, 2, 2, 3, 4]
    assert report.meta['partitions_computed'] == 1 and report.meta['partitions_reused'] == 4
    assert_same_database(db, serial[0])
    np.testing.assert_array_equal(GalaxyDatabase.load(output).vectors, db.vectors)


def test_stopped_build_resumes(client, images, serial, tmp_path):
    shard_dir = tmp_path / 'shards'
    with pytest.raises(BuildIncomplete, match='stopped') as info:
        build_distributed(images, client=client, partition_size=PARTITION, shard_dir=shard_dir,
                          stop_when=lambda saved: saved >= 2)
    done = info.value.done
    assert 2 <= done < 5
    assert len(list(shard_dir.glob('*.parquet'))) == done
    assert not list(shard_dir.glob('.*tmp'))   # no temporary file left behind
    db, report = build_distributed(images, client=client, partition_size=PARTITION, shard_dir=shard_dir)
    assert report.meta['partitions_computed'] == 5 - done
    assert_same_database(db, serial[0])


def test_transient_fault_is_retried(client, images, serial, tmp_path):
    hook = FaultHook(tmp_path, fail={1})
    db, report = build_distributed(images, client=client, partition_size=PARTITION, retries=1, before_partition=hook)
    assert sorted(FaultHook.calls(tmp_path)) == [0, 1, 1, 2, 3, 4]
    assert_same_database(db, serial[0])


def test_only_changed_partitions_recomputed(client, images, tmp_path, shared_data):
    shard_dir = tmp_path / 'shards'
    build_distributed(images, client=client, partition_size=PARTITION, shard_dir=shard_dir)
    extra = sorted((shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'val').glob('*.jpg'))[:3]
    more = images + [str(p) for p in extra]          # 28 items: partition 5 is new (3 rows)
    db, report = build_distributed(more, client=client, partition_size=PARTITION, shard_dir=shard_dir)
    assert report.meta['partitions_computed'] == 1 and report.meta['partitions_reused'] == 5
    accepted = [p.stem for p, ok in zip(extra, report['accepted'][-3:]) if ok]
    assert len(report) == 28 and accepted and list(db.ids[-len(accepted):]) == accepted
    # other settings give other shards: nothing is reused
    _, report = build_distributed(images, client=client, partition_size=PARTITION, shard_dir=shard_dir,
                                  selection={'min_snr': 1e9})
    assert report.meta['partitions_computed'] == 5
    assert not np.asarray(report['accepted']).any()


def test_nddata_items(client, images, serial):
    """Images given as NDData (sent to the workers as data) give the serial vectors."""
    search, _ = serial
    nddata = [read_image(path) for path in images[:4]]
    db, report = build_distributed(nddata, client=client, partition_size=3)
    assert list(db.ids) == list(search.ids[:4])
    np.testing.assert_allclose(db.vectors, search.vectors[:4], atol=1e-5, rtol=0)


def test_position_items_fetch_cutouts_on_worker(images, monkeypatch):
    """Sky positions are turned into cutouts with get_cutouts; failures become rejected rows."""
    from astro_galsim import retrieval
    real = read_image(images[0])
    calls = []

    def fake_get_cutouts(coords, **options):
        calls.append((len(coords), options))
        return [real, retrieval.RetrievalError('outside the survey footprint')]

    monkeypatch.setattr(retrieval, 'get_cutouts', fake_get_cutouts)
    coords = SkyCoord([180.0, 10.0] * u.deg, [0.0, 5.0] * u.deg)
    from astro_galsim.partitions import encoder_factory
    factory, key, encoder = encoder_factory()
    out = compute_partition(0, coords, ['a', 'b'], coords.ra.deg, coords.dec.deg, factory, key,
                            encoder.normalisation, {}, {'size': 64})
    assert calls == [(2, {'size': 64})]
    assert list(out['accepted']) == [True, False]
    assert out['reason'][1] == 'retrieval failed: outside the survey footprint'
    expected = SimilaritySearch(encoder).embed(real)
    np.testing.assert_allclose(out['vectors'][0], expected[0], atol=1e-5)
    assert np.isnan(out['vectors'][1]).all()
    assert 'images' not in out and all(np.ndim(v) <= 2 for k, v in out.items() if k != 'units')


def test_partition_where_nothing_was_retrieved(monkeypatch, tmp_path):
    """A partition of positions that all fail gives rejected rows with the usual columns."""
    from astro_galsim import retrieval
    from astro_galsim.model import load_pretrained
    from astro_galsim.partitions import encoder_factory
    from astro_galsim.shards import shard_table, write_shard
    monkeypatch.setattr(retrieval, 'get_cutouts',
                        lambda coords, **options: [retrieval.RetrievalError('no frame')] * len(coords))
    coords = SkyCoord([1.0, 2.0] * u.deg, [3.0, 4.0] * u.deg)
    factory, key, encoder = encoder_factory(load_pretrained())
    out = compute_partition(7, coords, ['a', 'b'], coords.ra.deg, coords.dec.deg, factory, key,
                            encoder.normalisation, {}, {})
    assert not out['accepted'].any() and list(out['reason']) == ['retrieval failed: no frame'] * 2
    path = tmp_path / 'part.parquet'
    write_shard(path, shard_table(out, {'partition': 7, 'key': 'k'}))
    table, vectors, meta = read_shard(path)
    assert {'r50', 'r50_arcsec', 'gini', 'n_stars'} <= set(table.colnames)
    assert table['r50_arcsec'].unit == u.arcsec and np.isnan(table['r50']).all()
    assert vectors.shape == (2, 64) and np.isnan(vectors).all()
    assert table['coord'][1].dec.deg == 4.0


def test_bad_input(images, tmp_path):
    with pytest.raises(TypeError, match='cannot use int as a galaxy image'):
        build_distributed([1, 2], client=object())
    with pytest.raises(ValueError, match='partition_size'):
        build_distributed(images, partition_size=0, client=object())
    with pytest.raises(ValueError, match=r'ids has 2 entries for 25 galaxies'):
        build_distributed(images, ids=['a', 'b'], client=object())


def _random_shards(tmp_path, n_shards=3, n=200, dim=16):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    table = QTable({'id': [f'g{i:04d}' for i in range(n)],
                    'area': rng.uniform(50, 500, n) * u.pix ** 2,
                    'coord': SkyCoord(rng.uniform(0, 360, n) * u.deg, rng.uniform(-60, 60, n) * u.deg)})
    enc = {'name': 'test', 'sha256': '1' * 64}
    whole = GalaxyDatabase(vectors, table, encoder_id=enc)
    cuts = np.array_split(rng.permutation(n), n_shards)
    paths = []
    for i, rows in enumerate(cuts):
        rows = np.sort(rows)
        path = tmp_path / f'shard{i}.fits'
        GalaxyDatabase(vectors[rows], table[rows], encoder_id=enc).save(path)
        paths.append(path)
    return whole, paths, rng.normal(size=(6, dim)).astype(np.float32), vectors


@pytest.mark.parametrize('use_client', [True, False])
def test_sharded_query_equals_combined(client, tmp_path, use_client):
    whole, paths, queries, _ = _random_shards(tmp_path)
    expected = whole.search(queries, k=7)
    result = query_sharded(paths, queries, k=7, client=client if use_client else None)
    assert list(result['query']) == list(expected['query'])
    assert list(result['rank']) == list(expected['rank'])
    assert list(result['id']) == list(expected['id'])
    np.testing.assert_allclose(result['distance'], expected['distance'], rtol=1e-6)
    np.testing.assert_array_equal(result['area'], expected['area'])
    assert result['area'].unit == u.pix ** 2
    # the shard column says where each match is stored
    for path_index, gid in zip(result['shard'], result['id']):
        assert gid in GalaxyDatabase.load(paths[path_index]).ids


def test_sharded_query_with_ids_and_filters(client, tmp_path):
    whole, paths, _, vectors = _random_shards(tmp_path)
    ids = ['g0003', 'g0150']
    queries = vectors[[3, 150]]
    kwargs = dict(k=5, query_ids=ids, where={'area': (100 * u.pix ** 2, None)})
    expected = whole.search(queries, **kwargs)
    shards = [GalaxyDatabase.load(p) for p in paths]   # database objects, not paths
    result = query_sharded(shards, queries, client=client, **kwargs)
    assert list(result['query']) == list(expected['query']) == ['g0003'] * 5 + ['g0150'] * 5
    assert list(result['id']) == list(expected['id'])
    assert 'g0003' not in list(result['id'])     # exclude_self works across shards
    assert (result['area'] >= 100 * u.pix ** 2).all()


def test_killed_worker_task_is_rescheduled(client, images, serial, tmp_path):
    """A worker killed in a task: the task runs again on the other worker, nothing is lost."""
    # both workers up (a slow machine may still be starting one), so each holds the encoder recipe
    client.wait_for_workers(2, timeout=120)
    hook = FaultHook(tmp_path, kill={3})
    db, report = build_distributed(images, client=client, partition_size=PARTITION, before_partition=hook)
    calls = FaultHook.calls(tmp_path)
    assert calls.count(3) == 2 and sorted(set(calls)) == [0, 1, 2, 3, 4]
    assert_same_database(db, serial[0])
    client.wait_for_workers(2, timeout=60)


def test_partitions_sized_to_the_cluster(client, images, serial):
    """Without partition_size the catalogue is cut into at least two even partitions per worker."""
    from astro_galsim.partitions import partition_size_for
    assert partition_size_for(300, 2) == 75          # was one partition of 256 and one of 44
    assert partition_size_for(25, 2) == 7 and partition_size_for(10000, 4) == 250
    assert partition_size_for(3, 8) == 1 and partition_size_for(1, 1) == 1
    search, _ = serial
    client.wait_for_workers(2, timeout=120)    # the replacement of the worker killed above
    db, report = build_distributed(images, client=client)
    assert report.meta['partitions'] == 4            # 25 galaxies on 2 workers: 7, 7, 7, 4
    assert list(db.ids) == list(search.ids)


def test_any_encoder_scales_out(client, images, serial):
    """An encoder that no weights file holds is sent to the workers and made once by each."""
    from astro_galsim.model import AutoencoderEncoder, load_pretrained
    from astro_galsim.partitions import encoder_factory
    shipped = load_pretrained()
    # the same weights under another name: a new key, so each worker has to make it from the recipe
    in_memory = AutoencoderEncoder(shipped.model, card=dict(shipped.card, name='in-memory-copy'))
    assert in_memory.path is None
    factory, key, _ = encoder_factory(in_memory)
    assert key == f"in-memory-copy:{shipped.identity['sha256']}" and factory() is not None
    search, _ = serial
    before = client.run(encoder_loads)
    db, report = build_distributed(images[:10], client=client, encoder=in_memory, partition_size=2)
    assert list(db.ids) == list(search.ids[:len(db)])
    np.testing.assert_allclose(db.vectors, search.vectors[:len(db)], atol=1e-5, rtol=0)
    assert db.encoder_id['name'] == 'in-memory-copy'
    loads = client.run(encoder_loads)
    # 5 partitions, each worker made the new encoder at most once, and some worker made it
    made = {w: loads[w][len(before[w]):] for w in loads}
    assert all(m in ([], [key]) for m in made.values()) and any(made.values()), made
    # adding on a cluster no longer needs a weights file; SimilaritySearch.add(client=) says where it went
    s = SimilaritySearch(in_memory)
    with pytest.warns(AstropyDeprecationWarning, match=r'executor=client'):
        s.add(images[:6], client=client)
    assert list(s.ids) == list(search.ids[:len(s)])
    # the one de-duplication of every build: stored ids and repeats in the batch are refused
    again = add_on_cluster(s, images[:2] + [images[7], images[7]], client=client)
    assert list(again['accepted']) == [False, False, True, False] and len(s) == 7
    assert list(again['reason'][[0, 1, 3]]) == ['id already in the database'] * 2 + ['id repeated in this batch']
    with pytest.raises(TypeError, match='GalaxyEncoder'):
        build_distributed(images[:2], client=client, encoder=lambda: 'not an encoder')


def test_build_database_executor(client, images, serial, tmp_path):
    """build_database(executor=client) is the distributed build, resumable from its shards."""
    from astro_galsim.build import build_database
    folder = tmp_path / 'folder'
    folder.mkdir()
    for path in images[:6]:
        (folder / path.split('/')[-1]).symlink_to(path)
    search, report = build_database(folder, tmp_path / 'db.fits', partition_size=2, executor=client)
    assert len(search) == 6 and len(report) == 6 and report['accepted'].all()
    assert len(list((tmp_path / 'db.fits.shards').glob('part-*.parquet'))) == 3
    again = SimilaritySearch.load(tmp_path / 'db.fits')
    expected, _ = serial
    for galaxy_id, vector in zip(again.ids, again.vectors):
        row = list(expected.ids).index(galaxy_id)
        np.testing.assert_allclose(vector, expected.vectors[row], atol=1e-5, rtol=0)


def test_one_resume_scheme_for_local_and_dask_builds(client, images, serial, tmp_path, monkeypatch):
    """A build stopped here is finished on Dask, and one stopped on Dask is finished here: one set of shards."""
    from astro_galsim.build import build_database, read_source
    folder = tmp_path / 'folder'
    folder.mkdir()
    for path in images[:6]:
        (folder / path.split('/')[-1]).symlink_to(path)
    expected, _ = serial
    import astro_galsim.build as build_module
    original, calls = build_module.describe_partition, []

    def counted_describe(items, ids, *args, **kwargs):
        calls.append(list(ids))
        if fail_at and len(calls) == fail_at:
            raise KeyboardInterrupt
        return original(items, ids, *args, **kwargs)
    monkeypatch.setattr(build_module, 'describe_partition', counted_describe)

    def assert_complete(search):
        assert sorted(search.ids) == sorted(expected.ids[:6])
        for galaxy_id, vector in zip(search.ids, search.vectors):
            row = list(expected.ids).index(galaxy_id)
            np.testing.assert_allclose(vector, expected.vectors[row], atol=1e-5, rtol=0)

    # stopped here in its second partition of three, finished on the cluster
    local_first = tmp_path / 'local_first.fits'
    fail_at = 2
    with pytest.raises(KeyboardInterrupt):
        build_database(folder, local_first, partition_size=2)
    fail_at = None
    search, report = build_database(folder, local_first, partition_size=2, executor=client)
    assert report.meta['partitions_reused'] == 1 and report.meta['partitions_computed'] == 2
    assert_complete(search)
    assert_complete(SimilaritySearch.load(local_first))

    # stopped on the cluster after a partition, finished here: only the missing partitions are described
    dask_first = tmp_path / 'dask_first.fits'
    items, ids, coords = read_source(folder)
    with pytest.raises(BuildIncomplete) as info:
        build_distributed(items, ids, coords, shard_dir=f'{dask_first}.shards', client=client, partition_size=2,
                          stop_when=lambda saved: saved >= 1)
    done = info.value.done
    calls.clear()
    search, report = build_database(folder, dask_first, partition_size=2)
    assert len(calls) == 3 - done and len(report) == 2 * (3 - done)
    assert_complete(search)
    assert_complete(SimilaritySearch.load(dask_first))


@pytest.fixture(scope='module')
def fits_folder(shared_data, tmp_path_factory):
    """Real SDSS r-band FITS cutouts named and placed by an index.csv (path, objid, ra, dec), with one
    galaxy listed a second time under an id FITS cannot store."""
    source = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(source / 'index.csv', format='ascii.csv')
    rows = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')][:7]
    folder = tmp_path_factory.mktemp('fits_folder')
    paths = [str(source / p) for p in rows['path']] + [str(source / rows['path'][1])]
    ids = [f'fits{i}' for i in range(len(rows))] + ['fits1\u00e9']   # not ASCII: FITS cannot store it
    ra = list(rows['center_ra']) + [rows['center_ra'][1]]
    dec = list(rows['center_dec']) + [rows['center_dec'][1]]
    Table({'path': paths, 'objid': ids, 'ra': ra, 'dec': dec}).write(folder / 'index.csv', format='ascii.csv')
    return folder, ids


def test_fits_folder_builds_alike_everywhere(client, fits_folder, tmp_path):
    """A FITS folder placed by its index.csv gives the same ids, positions and vectors however it is
    built: serially, in 2 processes, on a 2-worker Dask cluster, and through SimilaritySearch.add; the
    id FITS cannot store is one rejected row, with the same reason, on every path."""
    folder, ids = fits_folder
    built = {'serial': build_database(folder, tmp_path / 'serial.fits', partition_size=3),
             'processes': build_database(folder, tmp_path / 'processes.fits', partition_size=3, executor=2),
             'dask': build_database(folder, tmp_path / 'dask.fits', partition_size=3, executor=client)}
    from astro_galsim.build import read_source
    items, item_ids, coords = read_source(folder)
    added = SimilaritySearch()
    built['add'] = added, added.add(items, ids=item_ids, coords=coords)
    reference, reference_report = built['serial']
    assert 5 <= len(reference) <= 7 and 'fits1' in reference.ids
    assert reference.database.coords[list(reference.ids).index('fits1')].separation(
        coords[1]) < 1 * u.arcsec
    for name, (search, report) in built.items():
        saved = search if name == 'add' else SimilaritySearch.load(tmp_path / f'{name}.fits')
        assert list(saved.ids) == list(reference.ids), name
        # bfloat16 sums in another order on one torch thread (workers) than on several: ~1e-4 apart
        np.testing.assert_allclose(saved.vectors, reference.vectors, atol=5e-4, rtol=0, err_msg=name)
        assert saved.database.coords.separation(reference.database.coords).max() < 1e-6 * u.arcsec, name
        assert list(report['id']) == ids, name
        assert list(report['accepted']) == list(reference_report['accepted']), name
        assert not report['accepted'][-1], name
        assert report['reason'][-1] == "id 'fits1\u00e9' is not ASCII text, which FITS stores", name


def test_scaleout_re_exports_are_deprecated():
    import astro_galsim.scaleout as scaleout
    from astro_galsim import partitions, shards
    with pytest.warns(AstropyDeprecationWarning, match='import it from astro_galsim.partitions'):
        assert scaleout.encoder_factory is partitions.encoder_factory
    with pytest.warns(AstropyDeprecationWarning, match='import it from astro_galsim.shards'):
        assert scaleout.read_shard is shards.read_shard
    assert 'query_sharded' not in scaleout.__all__
