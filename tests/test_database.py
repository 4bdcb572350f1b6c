"""Tests of astro_galsim.database: FITS persistence, refusal of bad files, queries, clustering.

Synthetic vectors only (the lead adds tests on real embeddings). Everything uses the exact
back end except ``test_filters_with_nndescent_index``, the one pynndescent build here.
"""
import os

import numpy as np
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable
from scipy.spatial.distance import cdist

from astro_galsim.database import (FORMAT_NAME, DatabaseError, GalaxyDatabase,
                                   rocchio_query)

ENCODER = {'name': 'conv-ae-64', 'sha256': '3f' * 32}
OTHER_ENCODER = {'name': 'conv-ae-64', 'sha256': 'a1' * 32}
PROVENANCE = {'survey': 'SDSS', 'data_release': 17, 'bands': 'gri',
              'pixel_scale': 0.396 * u.arcsec, 'note': 'synthetic', 'deblended': True,
              'threshold': 1.5, 'band_list': ['g', 'r', 'i']}


def make_db(n=500, d=16, seed=0, n_clusters=5, **kwargs):
    """Clustered vectors with a realistic catalogue (some positions unknown)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)) * 4
    labels = rng.integers(n_clusters, size=n)
    vectors = (centres[labels] + rng.normal(scale=0.5, size=(n, d))).astype(np.float32)
    ra = rng.uniform(150, 160, n)
    dec = rng.uniform(-5, 5, n)
    ra[::50] = np.nan  # images without a position
    dec[::50] = np.nan
    table = QTable({
        'id': [f'SDSS J{i:06d}' for i in range(n)],
        'coord': SkyCoord(ra=ra * u.deg, dec=dec * u.deg),
        'area': rng.uniform(50, 2000, n) * u.pix**2,
        'semimajor_sigma': rng.uniform(1, 20, n) * u.arcsec,
        'r_mag': rng.uniform(14, 18, n) * u.mag,
        'accepted': rng.random(n) > 0.2,
        'n_sources': rng.integers(1, 5, n),
        'morphology': rng.choice(['spiral', 'elliptical', 'merger'], n),
        'cluster': labels,
    })
    db = GalaxyDatabase(vectors, table, encoder_id=ENCODER, provenance=PROVENANCE,
                        index_options={'method': 'exact'}, **kwargs)
    return db


@pytest.fixture(scope='module')
def db():
    return make_db()


def brute(vectors, queries, k):
    dist = cdist(queries, vectors)
    return np.argsort(dist, axis=1, kind='stable')[:, :k]


# ---------------------------------------------------------------------------- persistence
def test_round_trip_is_identical(db, tmp_path):
    path = tmp_path / 'galaxies.fits'
    db.save(path)
    back = GalaxyDatabase.load(path, encoder_id=ENCODER)
    assert len(back) == len(db) and back.dim == db.dim
    assert back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, db.vectors)
    np.testing.assert_array_equal(back.ids, db.ids)
    assert back.ids.dtype.kind == 'U'
    assert back.encoder_id == ENCODER and back.metric == 'euclidean'
    assert back.table.colnames == db.table.colnames
    for name in db.table.colnames:
        if name == 'coord':
            continue
        original, loaded = db.table[name], back.table[name]
        assert getattr(original, 'unit', None) == getattr(loaded, 'unit', None), name
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(original), err_msg=name)
    assert back.table['area'].unit == u.pix**2 and back.table['r_mag'].unit == u.mag
    assert back.table['accepted'].dtype == bool
    np.testing.assert_array_equal(back.coords.ra.deg, db.coords.ra.deg)  # NaN == NaN here
    np.testing.assert_array_equal(back.coords.dec.deg, db.coords.dec.deg)
    assert np.isnan(back.coords.ra.deg[0])
    prov = back.provenance
    assert prov.keys() == PROVENANCE.keys()
    for key, value in PROVENANCE.items():
        assert type(prov[key]) is type(value), key
        if isinstance(value, u.Quantity):
            assert prov[key].unit == value.unit and prov[key].value == value.value
        else:
            assert prov[key] == value, key
    # Searching the loaded copy gives the same answer
    a = db.search(db.vectors[:5], k=5)
    b = back.search(back.vectors[:5], k=5)
    np.testing.assert_array_equal(a['id'], b['id'])


def test_file_is_plain_fits(db, tmp_path):
    """What other tools see: documented HDUs, keywords, columns and units."""
    path = tmp_path / 'galaxies.fits'
    db.save(path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ['PRIMARY', 'GALAXIES', 'VECTORS', 'PROVENANCE']
        header = hdul[0].header
        assert header['FMTNAME'] == FORMAT_NAME and header['FMTVERS'] == 1
        assert header['NGALAXY'] == len(db) and header['NDIM'] == db.dim
        assert header['ENCNAME'] == ENCODER['name'] and header['ENCSHA'] == ENCODER['sha256']
        assert header['SURVEY'] == 'SDSS' and header['DATAREL'] == 17
        assert header['BANDS'] == 'gri' and header['PIXSCALE'] == pytest.approx(0.396)
        table = hdul['GALAXIES']
        assert table.columns.names[:3] == ['id', 'ra', 'dec']
        assert table.columns['ra'].unit == 'deg' and table.columns['area'].unit == 'pix2'
        assert hdul['VECTORS'].data.shape == (len(db), db.dim)
        assert hdul['VECTORS'].data.dtype.name == 'float32'
        assert 'CHECKSUM' in hdul['VECTORS'].header


def test_empty_database_round_trip(tmp_path):
    empty = GalaxyDatabase(encoder_id=ENCODER, dim=8)
    assert len(empty) == 0 and empty.vectors.shape == (0, 8)
    empty.save(tmp_path / 'empty.fits')
    back = GalaxyDatabase.load(tmp_path / 'empty.fits')
    assert len(back) == 0 and back.dim == 8
    result = back.search(np.zeros(8), k=3)
    assert len(result) == 0


def test_refuses_foreign_encoder(db, tmp_path):
    path = tmp_path / 'galaxies.fits'
    db.save(path)
    with pytest.raises(DatabaseError) as info:
        GalaxyDatabase.load(path, encoder_id=OTHER_ENCODER)
    message = str(info.value)
    assert ENCODER['sha256'] in message and OTHER_ENCODER['sha256'] in message
    assert 'astro_galsim build' in message


def test_refuses_non_fits_file(tmp_path):
    path = tmp_path / 'notes.fits'
    path.write_text('id,ra,dec\nA,1,2\n')
    with pytest.raises(DatabaseError, match='not a FITS file'):
        GalaxyDatabase.load(path)
    with pytest.raises(FileNotFoundError):
        GalaxyDatabase.load(tmp_path / 'missing.fits')


def test_refuses_foreign_fits_file(tmp_path):
    path = tmp_path / 'image.fits'
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(path)
    with pytest.raises(DatabaseError, match='not an astro_galsim database'):
        GalaxyDatabase.load(path)


def _rewrite(src, dst, edit):
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    hdul.writeto(dst, checksum=True)


def test_refuses_newer_version_and_inconsistent_sizes(db, tmp_path):
    path = tmp_path / 'galaxies.fits'
    db.save(path)

    def newer(hdul):
        hdul[0].header['FMTVERS'] = 2
    _rewrite(path, tmp_path / 'v2.fits', newer)
    with pytest.raises(DatabaseError, match='version 2.*upgrade'):
        GalaxyDatabase.load(tmp_path / 'v2.fits')

    def drop_vector(hdul):
        hdul['VECTORS'].data = hdul['VECTORS'].data[:-1]
    _rewrite(path, tmp_path / 'short.fits', drop_vector)
    with pytest.raises(DatabaseError, match='damaged.*NGALAXY=500.*499 vectors'):
        GalaxyDatabase.load(tmp_path / 'short.fits')

    def drop_hdu(hdul):
        del hdul['PROVENANCE']
    _rewrite(path, tmp_path / 'nohdu.fits', drop_hdu)
    with pytest.raises(DatabaseError, match="HDU 'PROVENANCE' is missing"):
        GalaxyDatabase.load(tmp_path / 'nohdu.fits')


def test_refuses_corrupted_and_truncated_files(db, tmp_path):
    path = tmp_path / 'galaxies.fits'
    db.save(path)
    raw = bytearray(path.read_bytes())
    with fits.open(path) as hdul:
        offset = hdul['VECTORS'].fileinfo()['datLoc']
    raw[offset + 100] ^= 0xFF  # flip bits in one vector
    (tmp_path / 'flipped.fits').write_bytes(bytes(raw))
    with pytest.raises(DatabaseError, match='checksum'):
        GalaxyDatabase.load(tmp_path / 'flipped.fits')
    good = path.read_bytes()
    (tmp_path / 'truncated.fits').write_bytes(good[:offset + 1000])
    with pytest.raises(DatabaseError, match='damaged|truncated'):
        GalaxyDatabase.load(tmp_path / 'truncated.fits')


def test_save_is_atomic(db, tmp_path, monkeypatch):
    path = tmp_path / 'galaxies.fits'
    small = make_db(n=20, seed=3)
    small.save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match='overwrite=True'):
        db.save(path)

    def failing_writeto(self, fileobj, **kwargs):
        fileobj.write(b'SIMPLE  =                    T' + b' ' * 2000)  # a partial file
        raise OSError('disk full')
    monkeypatch.setattr(fits.HDUList, 'writeto', failing_writeto)
    with pytest.raises(OSError, match='disk full'):
        db.save(path, overwrite=True)
    with pytest.raises(OSError, match='disk full'):
        db.save(tmp_path / 'new.fits')
    assert path.read_bytes() == before                 # old file untouched
    assert sorted(os.listdir(tmp_path)) == ['galaxies.fits']  # no partial or temp file
    monkeypatch.undo()
    db.save(path, overwrite=True)
    assert len(GalaxyDatabase.load(path)) == len(db)


# ---------------------------------------------------------------------------- validation
def test_table_validation():
    vectors = np.zeros((3, 4))
    with pytest.raises(ValueError, match="'id' column"):
        GalaxyDatabase(vectors, QTable({'x': [1, 2, 3]}), encoder_id=ENCODER)
    with pytest.raises(ValueError, match='duplicate ids'):
        GalaxyDatabase(vectors, QTable({'id': ['a', 'b', 'a']}), encoder_id=ENCODER)
    with pytest.raises(ValueError, match='2 rows but there are 3 vectors'):
        GalaxyDatabase(vectors, QTable({'id': ['a', 'b']}), encoder_id=ENCODER)
    with pytest.raises(ValueError, match="'distance' is reserved"):
        GalaxyDatabase(vectors, QTable({'id': ['a', 'b', 'c'], 'distance': [1, 2, 3]}),
                       encoder_id=ENCODER)
    with pytest.raises(ValueError, match='sha256'):
        GalaxyDatabase(vectors, QTable({'id': ['a', 'b', 'c']}),
                       encoder_id={'name': 'x', 'sha256': 'abc'})
    # ra/dec columns become a SkyCoord column
    db = GalaxyDatabase(vectors, QTable({'id': ['a', 'b', 'c'], 'ra': [1., 2., 3.],
                                         'dec': [0., 0., 1.]}), encoder_id=ENCODER)
    assert db.table.colnames == ['id', 'coord']
    assert db.coords[2].ra.deg == 3.0


def test_add_equals_building_at_once(db):
    whole = make_db()
    part = GalaxyDatabase(whole.vectors[:200], whole.table[:200], encoder_id=ENCODER,
                          provenance=PROVENANCE, index_options={'method': 'exact'})
    part.add(whole.vectors[200:350], whole.table[200:350])
    part.add(whole.vectors[350:], whole.table[350:])
    assert len(part) == len(whole)
    np.testing.assert_array_equal(part.vectors, whole.vectors)
    np.testing.assert_array_equal(part.ids, whole.ids)
    assert part.lookup_ids('SDSS J000400') == 400
    a = part.search(whole.vectors[:10], k=7)
    b = whole.search(whole.vectors[:10], k=7)
    np.testing.assert_array_equal(a['id'], b['id'])
    with pytest.raises(ValueError, match='already in the database'):
        part.add(whole.vectors[:2], whole.table[:2])
    other = whole.table[:2].copy()
    other.remove_column('morphology')
    other['id'] = ['new1', 'new2']
    with pytest.raises(ValueError, match='same columns'):
        part.add(whole.vectors[:2], other)


# ---------------------------------------------------------------------------- queries
def test_search_matches_brute_force_and_format(db):
    queries = db.vectors[[3, 70, 140]] + 0.01
    result = db.search(queries, k=10, query_ids=['q1', 'q2', 'q3'])
    assert result.colnames[:5] == ['query', 'rank', 'id', 'distance', 'coord']
    assert result.colnames[5:] == db.table.colnames[2:]
    assert len(result) == 30
    np.testing.assert_array_equal(result['rank'], np.tile(np.arange(1, 11), 3))
    np.testing.assert_array_equal(result['query'], np.repeat(['q1', 'q2', 'q3'], 10))
    expected = db.ids[brute(db.vectors, queries, 10)].ravel()
    np.testing.assert_array_equal(result['id'], expected)
    assert result['area'].unit == u.pix**2
    rows = db.lookup_ids(result['id'])
    np.testing.assert_allclose(result['distance'],
                               np.linalg.norm(db.vectors[rows] - np.repeat(queries, 10, 0),
                                              axis=1), rtol=1e-5)


def test_exclude_self(db):
    result = db.search(db.vectors[:4], k=5, query_ids=db.ids[:4])
    for qid in db.ids[:4]:
        hits = result[result['query'] == qid]
        assert qid not in hits['id'] and len(hits) == 5
    kept = db.search(db.vectors[:4], k=5, query_ids=db.ids[:4], exclude_self=False)
    np.testing.assert_array_equal(kept['id'][kept['rank'] == 1], db.ids[:4])


def test_exclusion_radius():
    """Galaxies near the query on the sky (same system, overlapping cutouts) are dropped."""
    db = make_db(n=300)
    vectors = db.vectors.copy()
    table = db.table.copy()
    centre = SkyCoord(155 * u.deg, 0 * u.deg)
    # rows 1..3: near-identical images of the query's system, 2-8 arcsec away
    vectors[1:4] = vectors[0] + 1e-3
    ra = table['coord'].ra.deg.copy()
    dec = table['coord'].dec.deg.copy()
    ra[:4] = 155 + np.array([0, 2, 5, 8]) / 3600
    dec[:4] = 0
    table['coord'] = SkyCoord(ra * u.deg, dec * u.deg)
    db = GalaxyDatabase(vectors, table, encoder_id=ENCODER, index_options={'method': 'exact'})
    plain = db.search(vectors[0], k=5, query_ids=[db.ids[0]])
    assert set(db.ids[1:4]) <= set(plain['id'])
    result = db.search(vectors[0], k=5, query_ids=[db.ids[0]], query_coords=centre,
                       exclude_radius=10 * u.arcsec)
    assert len(result) == 5
    assert not set(db.ids[:4]) & set(result['id'])
    known = np.isfinite(result['coord'].ra.deg)
    assert np.all(result['coord'][known].separation(centre) > 10 * u.arcsec)
    # a smaller radius keeps the galaxy 8 arcsec away
    result = db.search(vectors[0], k=5, query_ids=[db.ids[0]], query_coords=centre,
                       exclude_radius=6 * u.arcsec)
    assert db.ids[3] in result['id'] and db.ids[2] not in result['id']
    with pytest.raises(ValueError, match='query_coords'):
        db.search(vectors[0], k=5, exclude_radius=6 * u.arcsec)
    with pytest.raises(TypeError, match='angle'):
        db.search(vectors[0], k=5, query_coords=centre, exclude_radius=6)


def test_filters_return_k_results(db):
    queries = db.vectors[:3]
    # selective range filter with units (about 5 % of galaxies), in other units than stored
    where = {'area': (100 * u.pix**2, 180 * u.pix**2),
             'semimajor_sigma': (None, 20 * u.arcsec)}
    result = db.search(queries, k=10, where=where)
    passing = np.flatnonzero((db.table['area'] >= 100 * u.pix**2)
                             & (db.table['area'] <= 180 * u.pix**2))
    assert len(passing) >= 10
    assert len(result) == 30
    assert np.all((result['area'] >= 100 * u.pix**2) & (result['area'] <= 180 * u.pix**2))
    first = result[result['query'] == 0]['id']
    expected = passing[brute(db.vectors[passing], queries[:1], 10)[0]]
    np.testing.assert_array_equal(first, db.ids[expected])
    # equality on a flag, a callable, and a filter leaving fewer than k galaxies
    flagged = db.search(queries, k=10, where={'accepted': False, 'morphology': 'merger'})
    assert np.all(~flagged['accepted']) and np.all(flagged['morphology'] == 'merger')
    assert len(flagged) == 30
    few = db.search(queries[:1], k=10, where=lambda t: np.isin(t['id'], db.ids[:4]))
    assert sorted(few['id']) == sorted(db.ids[:4])
    with pytest.raises(u.UnitsError, match='area'):
        db.search(queries, k=3, where={'area': (1 * u.s, None)})
    with pytest.raises(KeyError, match='no column'):
        db.search(queries, k=3, where={'missing': (0, 1)})
    with pytest.raises(ValueError, match='boolean'):
        db.search(queries, k=3, where=lambda t: np.arange(len(t)))


def test_positives_and_negatives():
    """A query between two clusters is pulled away from the negative examples' cluster."""
    db = make_db(n=400, n_clusters=2, seed=7)
    labels = np.asarray(db.table['cluster'])
    a, b = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    middle = (db.vectors[a].mean(0) + db.vectors[b].mean(0)) / 2
    negatives = db.vectors[b[:5]]
    result = db.search(middle, k=20, negative_vectors=negatives, negative_weight=0.5)
    assert np.all(result['cluster'] == 0)
    # same as searching with the Rocchio vector
    query = rocchio_query(middle, negatives, beta=0.5)
    np.testing.assert_array_equal(db.search(query, k=20)['id'], result['id'])
    # several positives from cluster 1 -> results from cluster 1, examples excluded
    positives = b[:3]
    query = rocchio_query(db.vectors[positives], db.vectors[a[:3]])
    result = db.search(query, k=10, exclude_ids=db.ids[positives])
    assert np.all(result['cluster'] == 1)
    assert not set(db.ids[positives]) & set(result['id'])


def test_rocchio_query_formula():
    pos = np.array([[1., 0.], [3., 2.]])
    neg = np.array([[0., 4.]])
    np.testing.assert_allclose(rocchio_query(pos, neg, beta=0.25),
                               1.25 * pos.mean(0) - 0.25 * neg.mean(0))
    np.testing.assert_allclose(rocchio_query(pos), pos.mean(0))
    # translation invariance: shifting everything shifts the query
    np.testing.assert_allclose(rocchio_query(pos + 10, neg + 10), rocchio_query(pos, neg) + 10)
    with pytest.raises(ValueError, match='at least one positive'):
        rocchio_query(np.zeros((0, 2)))


def test_lookups(db):
    assert db.lookup_ids('SDSS J000007') == 7
    np.testing.assert_array_equal(db.lookup_ids(['SDSS J000009', 'nope', 'SDSS J000001']),
                                  [9, -1, 1])
    coords = db.coords[[3, 5]]
    shifted = coords.spherical_offsets_by([0.5, 3] * u.arcsec, [0, 0] * u.arcsec)
    np.testing.assert_array_equal(db.lookup_coords(shifted), [3, -1])
    np.testing.assert_array_equal(db.lookup_coords(shifted, radius=5 * u.arcsec), [3, 5])
    assert db.lookup_coords(db.coords[12]) == 12
    assert db.lookup_coords(SkyCoord(np.nan * u.deg, np.nan * u.deg)) == -1
    assert db.lookup_coords(SkyCoord(0 * u.deg, 80 * u.deg)) == -1


def test_position_lookups_agree_with_astropys_matching(monkeypatch):
    """A few positions are matched by a direct product, many through astropy's k-d tree: the same
    rows for positions near stored ones, in another frame, unknown or stored twice; a database
    that grows is matched against its new rows."""
    import astro_galsim.database as database
    rng = np.random.default_rng(3)
    n = 500
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ra[7], dec[7] = np.nan, np.nan
    ra[9], dec[9] = ra[8], dec[8]          # two galaxies at one position: the direct match takes the first
    table = QTable({'id': [f'g{i}' for i in range(n)], 'coord': SkyCoord(ra * u.deg, dec * u.deg)})
    db = GalaxyDatabase(rng.normal(size=(n, 4)).astype(np.float32), table, encoder_id=ENCODER,
                        provenance=PROVENANCE, index_options={'method': 'exact'})
    picks = rng.choice(n, 200, replace=False)
    targets = db.coords[picks].spherical_offsets_by(rng.normal(0, 1, 200) * u.arcsec,
                                                    rng.normal(0, 1, 200) * u.arcsec)
    targets = SkyCoord(np.r_[targets.ra.deg, np.nan, ra[8]] * u.deg, np.r_[targets.dec.deg, 0, dec[8]] * u.deg)
    direct = db.lookup_coords(targets.transform_to('fk5'), radius=2 * u.arcsec)
    monkeypatch.setattr(database, '_DIRECT_MATCH_PAIRS', 0)
    db._position_lookup = None
    tree = db.lookup_coords(targets, radius=2 * u.arcsec)
    tie = np.isin(tree, [8, 9])     # the k-d tree takes either of two galaxies at one position
    np.testing.assert_array_equal(direct[~tie], tree[~tie])
    assert (direct[tie] == 8).all() and tie[-1]
    assert (direct[:-2] >= 0).mean() > 0.5 and direct[-2] == -1
    monkeypatch.setattr(database, '_DIRECT_MATCH_PAIRS', 2 ** 22)
    assert db.lookup_coords(SkyCoord(10 * u.deg, 10 * u.deg)) == -1
    db.add(np.zeros((1, 4), np.float32), QTable({'id': ['new'], 'coord': SkyCoord([10] * u.deg, [10] * u.deg)}))
    assert db.lookup_coords(SkyCoord(10 * u.deg, 10 * u.deg)) == n


def test_metric_override_is_exact(db):
    result = db.search(db.vectors[:2], k=5, metric='cosine')
    norm = db.vectors / np.linalg.norm(db.vectors, axis=1, keepdims=True)
    expected = np.argsort(1 - norm[:2] @ norm.T, axis=1, kind='stable')[:, :5]
    np.testing.assert_array_equal(result['id'], db.ids[expected].ravel())


def test_repr_and_len(db):
    text = repr(db)
    assert '500 galaxies' in text and 'd=16' in text and 'conv-ae-64' in text
    assert 'survey=SDSS' in text
    assert len(db) == 500


# ---------------------------------------------------------------------------- graph, clusters
def test_neighbor_graph(db):
    graph = db.neighbor_graph(5)
    assert graph.shape == (500, 500) and graph.nnz == 2500
    true = brute(db.vectors, db.vectors, 6)[:, 1:]
    np.testing.assert_array_equal(np.sort(graph.indices.reshape(500, 5), 1), np.sort(true, 1))


def _agreement(labels, truth):
    """Each planted cluster maps to one label, and different clusters to different labels."""
    mapping = {}
    for t in np.unique(truth):
        found, counts = np.unique(labels[truth == t], return_counts=True)
        mapping[t] = found[np.argmax(counts)]
        assert counts.max() >= 0.95 * (truth == t).sum()
    assert len(set(mapping.values())) == len(mapping) and -1 not in mapping.values()


def test_cluster_recovers_planted_clusters(db):
    truth = np.asarray(db.table['cluster'])
    labels = db.cluster(method='hdbscan', k=10, min_cluster_size=20)
    assert labels.shape == (500,) and labels.dtype == np.int64
    _agreement(labels, truth)
    labels = db.cluster(method='agglomerative', k=10, n_clusters=5)
    assert set(labels) == set(range(5))
    _agreement(labels, truth)
    assert labels[0] == 0  # numbered by first appearance
    with pytest.raises(ValueError, match='n_clusters'):
        db.cluster(method='agglomerative')


def test_cluster_touching_clusters():
    """Two overlapping blobs joined in the kNN graph are still separated by HDBSCAN."""
    rng = np.random.default_rng(4)
    vectors = np.concatenate([rng.normal(0, 1, (200, 8)), rng.normal(0, 1, (200, 8)) + 5])
    table = QTable({'id': [str(i) for i in range(400)]})
    db = GalaxyDatabase(vectors, table, encoder_id=ENCODER)
    labels = db.cluster(k=15, min_cluster_size=30)
    _agreement(labels[labels >= 0], np.repeat([0, 1], 200)[labels >= 0])
    assert np.mean(labels >= 0) > 0.8


# ---------------------------------------------------------------------------- pynndescent
def test_filters_with_nndescent_index():
    """Over-fetch through the approximate index, and exact fall-back when very selective."""
    db = make_db(n=3000, d=16, seed=11)
    fast = GalaxyDatabase(db.vectors, db.table, encoder_id=ENCODER,
                          index_options={'method': 'nndescent'})
    queries = db.vectors[:20] + 0.05
    for where in ({'accepted': True}, {'area': (100 * u.pix**2, 130 * u.pix**2)}):
        got = fast.search(queries, k=10, where=where, query_ids=db.ids[:20])
        want = db.search(queries, k=10, where=where, query_ids=db.ids[:20])
        assert len(got) == len(want) == 200
        assert fast.index.method == 'nndescent'
        hits = sum(len(set(got['id'][got['query'] == q]) & set(want['id'][want['query'] == q]))
                   for q in db.ids[:20])
        assert hits / 200 >= 0.97
        assert not np.any(got['id'] == got['query'])
