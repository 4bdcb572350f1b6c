"""Tests of astro_galsim.index: exact search, pynndescent back end, incremental adds, graphs.

pynndescent compiles for 20-40 s in every fresh process, so its index is built once per
module (fixture ``nnd_index``); later builds in the same process are fast.
"""
import numpy as np
import pytest
from astropy.utils.exceptions import AstropyDeprecationWarning
from scipy.spatial.distance import cdist

from astro_galsim.index import NeighbourIndex, exact_knn, recall


def clustered(n, d=16, n_clusters=20, seed=0, spread=0.3):
    """Gaussian blobs: realistic enough for recall tests, hard enough to fail a bad index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)) * 2
    labels = rng.integers(n_clusters, size=n)
    return (centres[labels] + rng.normal(scale=spread, size=(n, d))).astype(np.float32)


def brute_force(data, queries, k, metric='euclidean'):
    dist = cdist(queries.astype(np.float64), data.astype(np.float64),
                 'cosine' if metric == 'cosine' else 'euclidean')
    order = np.argsort(dist, axis=1, kind='stable')[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.fixture(scope='module')
def data():
    x = clustered(4100)
    return x[:4000], x[4000:]


@pytest.fixture(scope='module')
def nnd_index(data):
    """The one pynndescent build paying the numba compilation of this module."""
    return NeighbourIndex(data[0], method='nndescent', random_state=0)


@pytest.mark.parametrize('metric', ['euclidean', 'cosine'])
def test_exact_matches_brute_force(data, metric):
    base, queries = data
    index = NeighbourIndex(base, metric=metric, method='exact')
    indices, distances = index.query(queries, k=10)
    true_i, true_d = brute_force(base, queries, 10, metric)
    assert indices.dtype == np.int64 and distances.dtype == np.float32
    np.testing.assert_array_equal(indices, true_i)
    np.testing.assert_allclose(distances, true_d, rtol=1e-4, atol=1e-5)


def test_exact_blocks_agree(data):
    """Queries the search splits into several blocks give the answers they give one block at a time."""
    base, _ = data
    queries = base   # 4,000 queries of 4,000 vectors: the score matrix is computed in two blocks
    whole = exact_knn(base, queries, 7)
    parts = [exact_knn(base, queries[i:i + 1000], 7) for i in range(0, len(queries), 1000)]
    np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in parts]))


def test_exact_ties_are_deterministic():
    base = np.zeros((6, 4), dtype=np.float32)  # all identical: ties everywhere
    base[5] = 1
    indices, distances = exact_knn(base, base[:1], 4)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 3]])
    np.testing.assert_array_equal(distances, 0)


def test_query_accepts_single_vector_and_clips_k(data):
    base, queries = data
    index = NeighbourIndex(base[:5], method='exact')
    indices, distances = index.query(queries[0], k=50)
    assert indices.shape == (1, 5)
    assert sorted(indices[0]) == [0, 1, 2, 3, 4]
    assert np.all(np.diff(distances[0]) >= 0)


def test_bad_inputs_are_refused(data):
    base, _ = data
    with pytest.raises(ValueError, match='metric'):
        NeighbourIndex(base, metric='manhattan')
    with pytest.raises(ValueError, match='method'):
        NeighbourIndex(base, method='faiss')
    bad = base[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r'NaN or infinite values \(rows \[3\]'):
        NeighbourIndex(bad)
    index = NeighbourIndex(base[:10], method='exact')
    with pytest.raises(ValueError, match='dimensions'):
        index.query(np.zeros((2, 3)))
    with pytest.raises(ValueError, match='k must be'):
        index.query(base[:1], k=0)
    with pytest.raises(ValueError, match='2-D'):
        NeighbourIndex(np.zeros((2, 3, 4)))


def test_auto_method_follows_size(data):
    base, _ = data
    assert NeighbourIndex(base, method='auto').method == 'exact'
    lazy = NeighbourIndex(base, method='auto', exact_threshold=1000, lazy=True)
    assert lazy.method == 'nndescent'
    # a lazy auto index answers small calls exactly instead of building pynndescent
    found = lazy.query(base[:3], 4)
    assert lazy._nnd is None
    np.testing.assert_array_equal(found[0], brute_force(base, base[:3], 4)[0])
    small = NeighbourIndex(base[:500], method='auto', exact_threshold=1000)
    assert small.method == 'exact'
    small.add(base[500:1200])  # crosses the threshold
    assert small.method == 'nndescent'


def test_exact_add_equals_rebuild(data):
    base, queries = data
    grown = NeighbourIndex(base[:1000], metric='cosine', method='exact')
    grown.add(base[1000:2500])
    grown.add(base[2500:])
    fresh = NeighbourIndex(base, metric='cosine', method='exact')
    np.testing.assert_array_equal(grown.vectors, fresh.vectors)
    for a, b in zip(grown.query(queries, 10), fresh.query(queries, 10)):
        np.testing.assert_array_equal(a, b)


def test_allowed_query_exact(data):
    base, queries = data
    index = NeighbourIndex(base, method='exact')
    rows = np.arange(0, len(base), 7)
    indices, distances = index.query(queries, 5, allowed=rows)
    true_i, true_d = brute_force(base[rows], queries, 5)
    np.testing.assert_array_equal(indices, rows[true_i])
    mask = np.zeros(len(base), bool)
    mask[rows] = True
    np.testing.assert_array_equal(index.query(queries, 5, allowed=mask)[0], indices)
    with pytest.raises(ValueError, match='length 4000'):
        index.query(queries, 5, allowed=mask[:10])
    with pytest.raises(IndexError, match='outside'):
        index.query(queries, 5, allowed=[4000])


def test_subset_is_deprecated_for_allowed(data):
    base, queries = data
    index = NeighbourIndex(base, method='exact')
    rows = np.arange(0, len(base), 7)
    with pytest.warns(AstropyDeprecationWarning, match='allowed'):
        indices, _ = index.query(queries, 5, subset=rows)
    np.testing.assert_array_equal(indices, index.query(queries, 5, allowed=rows)[0])


@pytest.mark.parametrize('every', [2, 50])
def test_allowed_query_approximate(data, nnd_index, every):
    """Most rows allowed: over-fetch from the graph; few allowed: exact. Only allowed rows come back."""
    base, queries = data
    mask = np.arange(len(base)) % every == 0
    indices, distances = nnd_index.query(queries, 10, allowed=mask)
    assert indices.shape == (len(queries), 10)
    assert mask[indices].all()
    assert np.all(np.diff(distances, axis=1) >= 0)
    rows = np.flatnonzero(mask)
    true_i, _ = brute_force(base[rows], queries, 10)
    assert recall(indices, rows[true_i]) >= 0.98


def test_nndescent_recall(data, nnd_index):
    base, queries = data
    assert nnd_index.method == 'nndescent'
    indices, distances = nnd_index.query(queries, k=10)
    true_i, true_d = brute_force(base, queries, 10)
    assert recall(indices, true_i) >= 0.99
    # returned distances are true distances of the returned points
    direct = np.linalg.norm(base[indices] - queries[:, None, :], axis=2)
    np.testing.assert_allclose(distances, direct, rtol=1e-4, atol=1e-4)
    exact_i, _ = nnd_index.query(queries, k=10, exact=True)
    np.testing.assert_array_equal(exact_i, true_i)


def test_nndescent_incremental_add(data, nnd_index):
    base, queries = data
    extra = clustered(800, seed=5)
    index = NeighbourIndex(base, method='nndescent', random_state=0, tail_min=500)
    index.add(extra[:300])                      # small: searched exactly as a tail
    assert index._n_main == len(base)
    union = np.concatenate([base, extra[:300]])
    own_i, own_d = index.query(extra[:300], k=1)
    np.testing.assert_array_equal(own_i[:, 0], len(base) + np.arange(300))
    true_i, _ = brute_force(union, queries, 10)
    assert recall(index.query(queries, 10)[0], true_i) >= 0.99
    assert index._n_main == len(base)           # no rebuild for a small tail
    index.add(extra[300:])                      # tail now > 10 %: rebuilt at next query
    got = index.query(queries, 10)
    assert index._n_main == len(base) + len(extra)
    fresh = NeighbourIndex(np.concatenate([base, extra]), method='nndescent', random_state=0)
    expected = fresh.query(queries, 10)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_neighbor_graph_exact(data):
    base, _ = data
    sample = base[:600]
    graph = NeighbourIndex(sample, method='exact').neighbor_graph(5)
    assert graph.shape == (600, 600)
    assert np.all(np.diff(graph.indptr) == 5)
    assert graph.diagonal().sum() == 0 and np.all(graph.indices.reshape(600, 5)
                                                  != np.arange(600)[:, None])
    true_i, true_d = brute_force(sample, sample, 6)
    np.testing.assert_array_equal(np.sort(graph.indices.reshape(600, 5), axis=1),
                                  np.sort(true_i[:, 1:], axis=1))
    np.testing.assert_allclose(np.sort(graph.data.reshape(600, 5), axis=1), true_d[:, 1:],
                               rtol=1e-4, atol=1e-5)


def test_neighbor_graph_duplicates_keep_zero_distance():
    base = np.repeat(np.arange(5, dtype=np.float32)[:, None], 2, axis=0)  # pairs of twins
    graph = NeighbourIndex(base, method='exact').neighbor_graph(1)
    assert graph.nnz == 10  # explicit zeros kept
    np.testing.assert_array_equal(graph.indices, [1, 0, 3, 2, 5, 4, 7, 6, 9, 8])
    np.testing.assert_array_equal(graph.data, 0)


def test_neighbor_graph_nndescent(data, nnd_index):
    base, _ = data
    graph = nnd_index.neighbor_graph(10)
    assert graph.shape == (len(base), len(base))
    rows = graph.indices.reshape(len(base), 10)
    true_i, _ = brute_force(base, base[:500], 11)
    assert recall(rows[:500], true_i[:, 1:]) >= 0.98


def test_recall_helper():
    assert recall([[1, 2, 3]], [[3, 2, 1]]) == 1.0
    assert recall([[1, 2], [5, 6]], [[1, 9], [7, 8]]) == 0.25


def test_index_from_stored_graph(data, nnd_index):
    """An index made from a stored k-NN graph skips NN-descent and answers as well."""
    base, queries = data
    graph = nnd_index.knn_graph
    assert graph.shape == (len(base), nnd_index.n_neighbors) and graph.dtype == np.int32
    assert (graph[:, 0] == np.arange(len(base))).all()   # each vector first in its own row
    again = NeighbourIndex(base, method='nndescent', graph=graph)
    np.testing.assert_array_equal(again.knn_graph[:, 0], graph[:, 0])
    true_i, _ = brute_force(base, queries, 10)
    assert recall(again.query(queries, 10)[0], true_i) >= 0.98
    assert NeighbourIndex(base, method='exact').knn_graph is None
    # a graph of other vectors is not used
    assert NeighbourIndex(base[:100], method='nndescent', lazy=True, graph=graph)._graph is None


@pytest.mark.parametrize('metric', ['euclidean', 'cosine'])
def test_stored_graph_never_runs_nn_descent(data, nnd_index, metric, monkeypatch):
    """NN-descent (not cacheable by numba: 20-30 s of compilation in every fresh process) is
    neither run nor compiled; the index holds the stored graph, nearest first, and answers
    as well as a full build."""
    import pynndescent
    base, queries = data
    graph = exact_knn(base, base, nnd_index.n_neighbors, metric=metric)[0].astype(np.int32)
    assert (graph[:, 0] == np.arange(len(base))).all()

    def refuse(*args, **kwargs):
        raise AssertionError('NN-descent ran although the graph was given')
    monkeypatch.setattr(pynndescent.pynndescent_, 'nn_descent', refuse)
    again = NeighbourIndex(base, metric=metric, method='nndescent', graph=graph)
    assert pynndescent.pynndescent_.nn_descent is refuse    # put back after the build
    kept = again.knn_graph   # the same neighbours (the order of near ties may differ in float32)
    np.testing.assert_array_equal(kept[:, 0], graph[:, 0])
    np.testing.assert_array_equal(np.sort(kept, axis=1), np.sort(graph, axis=1))
    assert (kept == graph).mean() > 0.99
    true_i, _ = brute_force(base, queries, 10, metric)
    assert recall(again.query(queries, 10)[0], true_i) >= 0.98


def test_sorted_graph_orders_the_stored_neighbours():
    from astro_galsim.utils._nndescent import sorted_graph
    rng = np.random.default_rng(3)
    data = rng.normal(size=(50, 4)).astype(np.float32)
    graph = np.argsort(rng.random((50, 8)), axis=1).astype(np.int32)   # arbitrary rows, unsorted
    graph[:, 0] = np.arange(50)
    graph[5, 3] = -1
    indices, distances = sorted_graph(data, graph, 8)
    for i in range(50):
        kept = [j for j in graph[i] if j >= 0 and j != i]
        d = ((data[kept] - data[i]) ** 2).sum(axis=1)
        np.testing.assert_array_equal(indices[i, :len(kept)], np.array(kept)[np.argsort(d, kind='stable')])
        np.testing.assert_allclose(distances[i, :len(kept)], np.sort(d), rtol=1e-5)
        assert (indices[i, len(kept):] == -1).all() and np.isinf(distances[i, len(kept):]).all()
    with pytest.raises(ValueError, match='row numbers'):
        sorted_graph(data, graph + 1, 8)
    # a graph naming rows that do not exist is not used by an index
    assert NeighbourIndex(data, method='nndescent', n_neighbors=8, lazy=True, graph=graph + 1)._graph is None


def test_database_file_keeps_the_graph(data, nnd_index, tmp_path):
    from astropy.io import fits
    from astropy.table import QTable
    from astro_galsim.database import GalaxyDatabase
    base, queries = data
    ids = QTable({'id': [f'g{i}' for i in range(len(base))]})
    db = GalaxyDatabase(base, ids, encoder_id={'name': 'test', 'sha256': '0' * 64},
                        index_options={'method': 'nndescent'})
    db.save(tmp_path / 'plain.fits')   # index not built yet: no graph stored
    with fits.open(tmp_path / 'plain.fits') as hdul:
        assert 'NEIGHBOURS' not in [h.name for h in hdul]
    db.index.prepare()
    db.save(tmp_path / 'graph.fits')
    with fits.open(tmp_path / 'graph.fits') as hdul:
        np.testing.assert_array_equal(hdul['NEIGHBOURS'].data, db.index.knn_graph)
    loaded = GalaxyDatabase.load(tmp_path / 'graph.fits', index_options={'method': 'nndescent'})
    assert loaded.index._graph is not None
    result = loaded.search(queries, k=10)
    true_i, _ = brute_force(base, queries, 10)
    found = np.asarray([loaded.lookup_ids(list(result['id'][result['query'] == q])) for q in range(len(queries))])
    assert recall(found, true_i) >= 0.98
    assert loaded.index._graph is None   # used by the build, then let go


@pytest.mark.parametrize('metric', ['euclidean', 'cosine'])
def test_database_file_keeps_the_search_structure(data, metric, tmp_path, monkeypatch):
    """A saved index's search tree and graph are stored, and a reopened database installs them
    instead of building them (6 of 8 s at a million vectors): the same neighbours and distances."""
    import pynndescent
    from astropy.io import fits
    from astropy.table import QTable
    from astro_galsim.database import GalaxyDatabase
    base, queries = data
    db = GalaxyDatabase(base, QTable({'id': [f'g{i}' for i in range(len(base))]}), metric=metric,
                        encoder_id={'name': 'test', 'sha256': '0' * 64}, index_options={'method': 'nndescent'})
    db.index.prepare()
    expected = db.index.query(queries, 10)
    db.save(tmp_path / 'db.fits')
    with fits.open(tmp_path / 'db.fits') as hdul:
        names = [h.name for h in hdul]
        assert {'SEARCHTREE', 'SEARCHORDER', 'SEARCHPTR', 'SEARCHEDGES'} <= set(names)
        assert hdul['SEARCHTREE'].header['PYNNDVER'] == pynndescent.__version__

    def refuse(*args, **kwargs):
        raise AssertionError('the search structure was built although it was stored')
    with monkeypatch.context() as patch:
        patch.setattr(pynndescent.pynndescent_, 'make_hub_search_tree', refuse)
        patch.setattr(pynndescent.pynndescent_.NNDescent, '_init_search_graph', refuse)
        loaded = GalaxyDatabase.load(tmp_path / 'db.fits', index_options={'method': 'nndescent'})
        loaded.index.prepare()
    rows, distances = loaded.index.query(queries, 10)
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(distances, expected[1])


def test_a_damaged_search_structure_is_rebuilt_not_used(data, nnd_index):
    """Numbers the compiled search reads as addresses must lie within their arrays: a structure
    that points elsewhere (or comes from another pynndescent version) is left aside and the
    index built from the k-NN graph, answering as before."""
    from astro_galsim.utils._nndescent import search_structure_problem
    base, queries = data
    search, graph = nnd_index.search_structure, nnd_index.knn_graph
    n, d = base.shape
    assert search_structure_problem(search, n, d) is None
    expected = NeighbourIndex(base, method='nndescent', graph=graph).query(queries, 10)

    def damaged(**changes):
        return dict(search, **changes)
    children = search['children'].copy()
    children[np.flatnonzero(children[:, 0] > 0)[0], 1] = len(children) + 5
    leaf = search['children'].copy()
    leaf[np.flatnonzero(leaf[:, 0] <= 0)[0]] = (0, -(n + 1))
    edges = search['indices'].copy()
    edges[7] = n
    order = search['order'].copy()
    order[3] = order[4]
    cases = {'children': damaged(children=children), 'leaf': damaged(children=leaf),
             'edges': damaged(indices=edges), 'order': damaged(order=order),
             'indptr': damaged(indptr=search['indptr'][:-1]), 'nan': damaged(offsets=search['offsets'] * np.nan),
             'missing': {k: v for k, v in search.items() if k != 'indptr'}}
    for name, case in cases.items():
        assert search_structure_problem(case, n, d) is not None, name
        index = NeighbourIndex(base, method='nndescent', graph=graph, search=case)
        np.testing.assert_array_equal(index.query(queries, 10)[0], expected[0], err_msg=name)
    other = NeighbourIndex(base, method='nndescent', graph=graph, search=damaged(version='0.0.1'))
    np.testing.assert_array_equal(other.query(queries, 10)[0], expected[0])
