import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.table import QTable, Table

from astro_galsim import SimilaritySearch, read_image
from astro_galsim.database import DatabaseError


@pytest.fixture(scope='module')
def gz1(shared_data):
    folder = shared_data / 'sdss_gz1_eggochi'
    labels = Table.read(folder / 'labels.csv', format='ascii.csv')
    rows = np.concatenate([np.flatnonzero(labels['similarity_group'] == g)[:6]
                           for g in ('elliptical', 'spiral_edge_on', 'spiral_face_on')])
    return [folder / labels['path'][i] for i in rows], np.asarray(labels['similarity_group'])[rows]


@pytest.fixture(scope='module')
def search(gz1):
    paths, _ = gz1
    s = SimilaritySearch()
    report = s.add(paths)
    assert report['accepted'].all(), report['reason']
    return s


def test_embed_order_and_input_kinds(search, gz1, shared_data):
    paths, _ = gz1
    vectors = search.embed(paths[:4])
    assert vectors.shape == (4, search.encoder.latent_dim)
    # the same image as a path, as NDData and as an array gives the same vector, in input order
    mixed = search.embed([read_image(paths[2]), str(paths[0]), read_image(paths[1]).data])
    np.testing.assert_allclose(mixed, vectors[[2, 0, 1]], atol=1e-5)
    # stored vectors are what embed gives
    rows = search.database.lookup_ids([p.stem for p in paths[:4]])
    np.testing.assert_allclose(search.vectors[rows], vectors, atol=1e-5)


def test_embed_fits_frame(search, shared_data):
    path = next((shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'cutouts').glob('*.fits'))
    vector = search.embed(path)
    assert vector.shape == (1, search.encoder.latent_dim) and np.isfinite(vector).all()
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_add_report_and_duplicates(search, gz1):
    paths, _ = gz1
    before = len(search)
    report = search.add([paths[0], paths[0]])
    assert list(report['accepted']) == [False, False]
    assert 'already in the database' in report['reason'][0]
    assert len(search) == before
    for column in ('id', 'accepted', 'reason', 'r50', 'ellipticity', 'gini'):
        assert column in report.colnames
    assert report['r50'].unit == u.pix


def test_add_refuses_colliding_ids_by_the_rule_of_every_build(gz1):
    """Plain add() keeps the first of repeated ids and refuses stored ones, with the Dask build's reasons."""
    paths, _ = gz1
    s = SimilaritySearch()
    first = s.add([paths[1], paths[2], paths[2]])
    assert list(first['accepted']) == [True, True, False]
    assert first['reason'][2] == 'id repeated in this batch'
    again = s.add([paths[1], paths[3], paths[3]])
    assert list(again['accepted']) == [False, True, False]
    assert list(again['reason'][[0, 2]]) == ['id already in the database', 'id repeated in this batch']
    assert sorted(s.ids) == sorted(p.stem for p in paths[1:4])


def test_add_rejects_empty_image_with_reason():
    s = SimilaritySearch()
    report = s.add([np.zeros((3, 64, 64), dtype=np.float32)], ids=['blank'])
    assert not report['accepted'][0] and 'no galaxy' in report['reason'][0]
    assert len(s) == 0


def test_query_by_id_and_image_agree(search, gz1):
    paths, groups = gz1
    by_id = search.query(paths[0].stem, k=5)
    assert list(by_id['rank']) == [1, 2, 3, 4, 5]
    assert paths[0].stem not in list(by_id['id'])
    assert np.all(np.diff(by_id['distance']) >= 0)
    by_image = search.query(paths[0], k=5)
    assert list(by_image['id']) == list(by_id['id'])


def test_similar_classes_come_first(search, gz1):
    # on real galaxies, edge-on discs find edge-on discs more often than chance (1/3)
    paths, groups = gz1
    ids = [p.stem for p in paths]
    group_of = dict(zip(ids, groups))
    result = search.query([i for i, g in zip(ids, groups) if g == 'spiral_edge_on'], k=3)
    hits = np.mean([group_of[i] == 'spiral_edge_on' for i in result['id']])
    assert hits > 0.5


def test_query_by_coordinate_in_database_does_not_fetch(monkeypatch, search):
    import astro_galsim.retrieval as retrieval

    def no_network(*args, **kwargs):
        raise AssertionError('a stored position must not be fetched again')
    monkeypatch.setattr(retrieval, 'get_cutouts', no_network)
    s = SimilaritySearch(search.encoder)
    vectors = search.vectors[:5]
    coords = SkyCoord([150.1, 150.2, 150.3, 150.4, 150.5] * u.deg, [1, 1, 1, 1, 1] * u.deg)
    s.database.add(vectors, QTable({'id': [f'g{i}' for i in range(5)], 'coord': coords}))
    result = s.query(SkyCoord(150.1 * u.deg, (1 + 0.5 / 3600) * u.deg), k=2)
    assert result['query_id'][0] == 'g0' and 'g0' not in list(result['id'])
    # a table of positions with the user's own columns carried through
    catalogue = Table({'ra': [150.2, 150.4], 'dec': [1.0, 1.0], 'my_flag': [7, 9]})
    long = s.query(catalogue, k=2)
    assert len(long) == 4 and set(long['query_my_flag']) == {7, 9}
    assert list(long['query_id']) == ['g1', 'g1', 'g3', 'g3']


def test_save_load_round_trip(tmp_path, search):
    path = tmp_path / 'db.fits'
    search.save(path)
    again = SimilaritySearch.load(path)
    assert list(again.ids) == list(search.ids)
    np.testing.assert_array_equal(again.vectors, search.vectors)
    a = search.query(search.ids[0], k=4)
    b = again.query(search.ids[0], k=4)
    assert list(a['id']) == list(b['id'])


def test_load_refuses_another_encoder(tmp_path, search):
    from astro_galsim.database import GalaxyDatabase
    db = GalaxyDatabase(search.vectors, QTable({'id': search.ids}),
                        encoder_id={'name': 'other', 'sha256': '0' * 64})
    db.save(tmp_path / 'other.fits')
    with pytest.raises(DatabaseError, match='(?i)encoder'):
        SimilaritySearch.load(tmp_path / 'other.fits')


def test_bad_inputs_are_explained(search):
    with pytest.raises(TypeError, match='cannot use int'):
        search.embed([42])
    with pytest.raises(KeyError, match='not in the database'):
        search.query('no-such-galaxy')
    with pytest.raises(KeyError, match='not in the database'):
        search.query(12345)
    with pytest.raises(ValueError, match='no SkyCoord column'):
        search.query(Table({'x': [1.0]}))


def test_demo_database(shared_data):
    demo = SimilaritySearch.load_demo()
    assert len(demo) > 7000
    assert demo.vectors.shape == (len(demo), demo.encoder.latent_dim)
    target = SkyCoord(180.4819, -1.0693, unit='deg')
    result = demo.query(target, k=5)
    assert result['query_id'][0] == '587722981740314629'
    assert '587722981740314629' not in list(result['id'])
    # stored vectors are the encoder's description of the training image itself (within the
    # difference of bfloat16, which built the database, and float32 on CPUs without it)
    image = shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'train' / '587722981740314629.jpg'
    row = demo.database.lookup_ids('587722981740314629')
    np.testing.assert_allclose(demo.embed(image)[0], demo.vectors[row], atol=3e-3)


def test_repr(search):
    text = repr(search)
    assert f'{len(search)} galaxies' in text and search.encoder.identity['sha256'][:12] in text


def test_nddata_with_wcs_uses_target(shared_data):
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    # the second galaxy: the first is smaller than the default minimum radius (9.3 < 10 pix)
    row = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')][1]
    image = read_image(folder / row['path'])
    assert isinstance(image, NDData)
    s = SimilaritySearch()
    report = s.add([image], ids=['fits0'])
    assert report['accepted'][0]
    expected = SkyCoord(row['center_ra'], row['center_dec'], unit='deg')
    assert s.database.coords[0].separation(expected) < 1 * u.arcsec


@pytest.fixture(scope='module')
def demo():
    return SimilaritySearch.load_demo()


def test_demo_filters_and_exclusion_on_real_embeddings(demo):
    target = SkyCoord(180.4819, -1.0693, unit='deg')
    result = demo.query(target, k=10, where={'r50': (20 * u.pix, 40 * u.pix)}, exclude_radius=5 * u.deg)
    assert len(result) == 10
    assert np.all((result['r50'] >= 20 * u.pix) & (result['r50'] <= 40 * u.pix))
    known = np.isfinite(result['coord'].ra.deg)
    assert np.all(result['coord'][known].separation(target) > 5 * u.deg)
    # a batch of ids gives one block of k rows per query, in order
    ids = list(demo.ids[:3])
    batch = demo.query(ids, k=4)
    assert list(batch['query_id']) == [i for i in ids for _ in range(4)]


def test_demo_clusters_group_similar_galaxies(demo):
    labels = demo.database.cluster(k=15, min_cluster_size=25)
    assert labels.shape == (len(demo),)
    clustered = labels >= 0
    assert len(np.unique(labels[clustered])) >= 2
    # members of a cluster are closer to each other than random pairs of galaxies
    rng = np.random.default_rng(0)
    vectors = demo.vectors
    same, other = [], []
    for _ in range(2000):
        i, j = rng.integers(0, len(demo), 2)
        d = np.linalg.norm(vectors[i] - vectors[j])
        if clustered[i] and labels[i] == labels[j]:
            same.append(d)
        other.append(d)
    assert np.mean(same) < 0.9 * np.mean(other)


def test_add_positions_with_a_failed_download(monkeypatch, gz1):
    # a position whose download failed becomes a rejected row with the reason; the rest goes in
    import astro_galsim.retrieval as retrieval
    paths, _ = gz1
    image = read_image(paths[0])
    image.meta['objid'] = 'fetched'

    def fake_cutouts(coords, **kwargs):
        return [retrieval.RetrievalError('position outside the SDSS footprint'), image]
    monkeypatch.setattr(retrieval, 'get_cutouts', fake_cutouts)
    s = SimilaritySearch()
    report = s.add(SkyCoord([10.0, 150.0] * u.deg, [-80.0, 1.0] * u.deg))
    assert list(report['accepted']) == [False, True]
    assert report['reason'][0] == 'retrieval failed: position outside the SDSS footprint'
    assert report['id'][0] == '10.00000-80.00000' and report['id'][1] == 'fetched'
    assert list(s.ids) == ['fetched']
    assert s.database.coords[0].separation(SkyCoord(150 * u.deg, 1 * u.deg)) < 1 * u.arcsec


def test_results_say_which_bands_were_compared(search, gz1, shared_data):
    # an r-band frame meets colour JPEGs: the result says so, row by row; a JPEG meets colour
    fits_frame = shared_data / 'sdss_fits_cutouts_pawlikmorph/cutouts/sdsscutout_150.29836+0.22565207_rband.fits'
    paths, _ = gz1
    from_fits = search.query(fits_frame, k=3)
    assert set(from_fits['comparison']) == {'grey (r) vs colour (gri)'}
    from_jpeg = search.query(paths[0], k=3)
    assert set(from_jpeg['comparison']) == {'colour (gri)'}
    # a stored galaxy queried by id keeps the bands it was described from
    by_id = search.query(str(search.ids[0]), k=2)
    assert set(by_id['comparison']) == {'colour (gri)'}
    assert set(search.database.table['bands']) == {'gri'}


def test_fits_frame_finds_its_own_jpeg_among_the_cross_format_galaxies(shared_data):
    # the 12 galaxies that are both a raw r-band frame and a colour JPEG: a database of the 12
    # JPEGs, queried with each frame (a noisier single band, other framing and sky)
    import csv
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    with open(folder / 'same_galaxy_in_mikeedi.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['kind'] == 'standard']
    search = SimilaritySearch()
    report = search.add([shared_data / 'sdss_galaxies_mikeedi' / r['mikeedi_path'] for r in rows],
                        ids=[r['objid'] for r in rows])
    assert report['accepted'].all(), report['reason']
    result = search.query([folder / r['fits_path'] for r in rows], k=12, names=[f"fits-{r['objid']}" for r in rows])
    own = result[result['query_id'] == np.char.add('fits-', result['id'].astype(str))]
    assert len(own) == 12 and set(own['comparison']) == {'grey (r) vs colour (gri)'}
    assert (own['rank'] == 1).sum() >= 8 and own['rank'].max() <= 3, list(own['rank'])


def test_explain_shows_the_labels_of_the_nearest_galaxies(shared_data):
    # a database of NGC/IC galaxies (train split) that stores their Hubble types
    from astro_galsim import SimilaritySearch
    folder = shared_data / 'sdss_ngc_ic_kavehsayeh'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    index = index[index['split'] == 'train'][:12]
    search = SimilaritySearch()
    added = search.add([folder / 'images' / f for f in index['file']], ids=list(index['name']),
                       columns={'hubble_coarse': np.asarray(index['hubble_coarse'], dtype=str)})
    assert added['accepted'].sum() >= 10
    first = str(index['name'][0])
    why = search.explain(first, k=5)
    stored = dict(zip(index['name'], index['hubble_coarse']))
    assert list(why['hubble_coarse']) == [stored[str(i)] for i in why['id']]
    counts = why.meta['nearest_labels']['hubble_coarse']
    assert sum(counts.values()) == 5 and set(counts) <= set(stored.values())
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
