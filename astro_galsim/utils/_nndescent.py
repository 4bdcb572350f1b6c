"""A pynndescent index made from a stored k-NN graph, without running NN-descent.

``pynndescent.NNDescent`` always calls its NN-descent routine, even with ``init_graph`` and
``n_iters=0``, and that routine takes the distance function as an argument, which keeps
numba from caching its compiled code on disk: every fresh process spends 20-30 s compiling
it before a stored graph can be used. `nndescent_from_graph` hands ``NNDescent`` the stored
graph in place of that routine's result (the neighbours of each vector, nearest first, with
their distances computed here by a small compiled function cached on disk), so that the
only work left is ``prepare``: the search tree and search graph, whose compiled code
pynndescent caches on disk itself. The index is the one the ``init_graph`` route gives.

numba writes its cache beside the compiled modules (``__pycache__``) or, where that is not
writable, in the directory named by the ``NUMBA_CACHE_DIR`` environment variable (or the
user's cache directory): the first process pays the compilation once, later ones load it.

``prepare`` itself (the search tree, the diversified search graph, the reordering) takes most
of the remaining time at survey sizes (6 of 8 s for a million vectors). `search_structure`
gives what it builds as plain arrays, which a database file stores; handed back to
`nndescent_from_graph` (checked first: every number that the compiled search reads as an
address is within its array), they are installed as ``prepare`` would leave them, and only
the search function is set up.
"""
import threading
import warnings

import numba
import numpy as np

__all__ = ['nndescent_from_graph', 'sorted_graph', 'search_structure', 'search_structure_problem']

# pynndescent's kernel numbers (pynndescent.kernels): the two dense distances it searches with
_SQEUCLIDEAN, _ALT_DOT = 1, 2
_FLOAT32_MAX = np.float32(np.finfo(np.float32).max)
# the replacement of pynndescent's NN-descent routine is installed for one build at a time
_LOCK = threading.Lock()


@numba.njit(parallel=True, fastmath=True, cache=True)
def _sorted_graph(data, graph, n_neighbors, kernel):
    n, width = graph.shape
    indices = np.full((n, n_neighbors), -1, dtype=np.int32)
    distances = np.full((n, n_neighbors), np.inf, dtype=np.float32)
    for i in numba.prange(n):
        m = 0
        for j in range(width):
            c = graph[i, j]
            if c < 0 or c == i:
                continue
            s = np.float32(0.0)
            if kernel == _SQEUCLIDEAN:
                for t in range(data.shape[1]):
                    e = data[i, t] - data[c, t]
                    s += e * e
            else:
                for t in range(data.shape[1]):
                    s += data[i, t] * data[c, t]
                s = _FLOAT32_MAX if s <= 0.0 else np.float32(-np.log2(s))
            # insertion into the sorted row, nearest first (ties keep the stored order)
            p = min(m, n_neighbors)
            while p > 0 and distances[i, p - 1] > s:
                if p < n_neighbors:
                    indices[i, p] = indices[i, p - 1]
                    distances[i, p] = distances[i, p - 1]
                p -= 1
            if p < n_neighbors:
                indices[i, p] = c
                distances[i, p] = s
            m += 1
    return indices, distances


def sorted_graph(data, graph, n_neighbors, kernel=_SQEUCLIDEAN):
    """Each vector's stored neighbours, nearest first, as pynndescent's NN-descent returns them.

    Parameters
    ----------
    data : `~numpy.ndarray` of float32, shape (n, d)
        The vectors as pynndescent searches them (unit rows for its cosine metric).
    graph : `~numpy.ndarray` of int, shape (n, width)
        Stored neighbours of each row (-1 where none); the row itself is left out.
    n_neighbors : int
        Columns of the result.
    kernel : {1, 2}, optional
        pynndescent's distance: 1 squared euclidean, 2 ``-log2`` of the dot product.

    Returns
    -------
    indices : `~numpy.ndarray` of int32, shape (n, n_neighbors)
    distances : `~numpy.ndarray` of float32, shape (n, n_neighbors)
        Sorted by distance in each row, padded with -1 and infinity.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.utils._nndescent import sorted_graph
    >>> data = np.array([[0.], [1.], [3.]], dtype=np.float32)
    >>> indices, distances = sorted_graph(data, np.array([[0, 2, 1], [1, 0, 2], [2, 0, 1]]), 2)
    >>> indices
    array([[1, 2],
           [0, 2],
           [1, 0]], dtype=int32)
    >>> distances[0]
    array([1., 9.], dtype=float32)
    """
    if kernel not in (_SQEUCLIDEAN, _ALT_DOT):
        raise ValueError(f'kernel must be 1 (squared euclidean) or 2 (alternative dot); got {kernel!r}.')
    data = np.ascontiguousarray(data, dtype=np.float32)
    graph = np.ascontiguousarray(graph, dtype=np.int32)
    if graph.ndim != 2 or len(graph) != len(data) or (graph.size and (graph.min() < -1
                                                                      or graph.max() >= len(data))):
        raise ValueError(f'graph must have {len(data)} rows of row numbers (or -1); got shape {graph.shape}.')
    return _sorted_graph(data, graph, int(n_neighbors), int(kernel))


class _Unsupported(Exception):
    """The stored graph cannot stand in for NN-descent here (another distance or data type)."""


def search_structure(index):
    """The prepared search tree and search graph of a `pynndescent.NNDescent`, as plain arrays.

    Parameters
    ----------
    index : `pynndescent.NNDescent`
        A prepared dense float32 index with one search tree.

    Returns
    -------
    dict or None
        ``hyperplanes`` (float32, (m, d)), ``offsets`` (float32, (m,)), ``children`` (int32,
        (m, 2): two later nodes, or ``-start, -end`` of a leaf's rows), ``leaf_size``,
        ``order`` (int32: the rows in tree order), ``indptr`` (int64) and ``indices`` (int32):
        the search graph over rows in tree order, ``min_distance`` and the pynndescent
        ``version`` that made them. None where the index is not of that kind.
    """
    import pynndescent
    forest = getattr(index, '_search_forest', None)
    graph = getattr(index, '_search_graph', None)
    order = getattr(index, '_vertex_order', None)
    if (not forest or len(forest) != 1 or graph is None or order is None or getattr(index, '_is_sparse', True)
            or getattr(index, 'quantization', None) is not None or getattr(index, '_bit_trees', True)):
        return None
    tree = forest[0]
    if not np.array_equal(tree.indices, np.arange(len(order))):   # prepare() puts the tree in row order
        return None
    return {'hyperplanes': np.asarray(tree.hyperplanes, dtype=np.float32),
            'offsets': np.asarray(tree.offsets, dtype=np.float32),
            'children': np.asarray(tree.children, dtype=np.int32), 'leaf_size': int(tree.leaf_size),
            'order': np.asarray(order, dtype=np.int32), 'indptr': np.asarray(graph.indptr, dtype=np.int64),
            'indices': np.asarray(graph.indices, dtype=np.int32), 'min_distance': float(index._min_distance),
            'version': str(pynndescent.__version__)}


def search_structure_problem(search, n, d):
    """What makes a stored search structure unusable for ``n`` vectors of dimension ``d``, or None.

    The compiled search reads these numbers as array positions without bounds checks, so a
    structure from a file is used only when every one of them lies within its array: the tree's
    nodes point to later nodes or to a range of rows, the graph's rows and neighbours are rows,
    the order is a permutation.
    """
    try:
        hyperplanes, offsets, children = search['hyperplanes'], search['offsets'], search['children']
        order, indptr, indices = search['order'], search['indptr'], search['indices']
        m = len(children)
        if hyperplanes.shape != (m, d) or offsets.shape != (m,) or children.shape != (m, 2) or m == 0:
            return f'the search tree has arrays of shapes {hyperplanes.shape}, {offsets.shape}, {children.shape}'
        if not (np.isfinite(hyperplanes).all() and np.isfinite(offsets).all()
                and np.isfinite(search['min_distance'])):
            return 'the search tree holds non-finite numbers'
        node = np.arange(m)
        internal = children[:, 0] > 0
        if not ((children[internal] > node[internal, None]) & (children[internal] < m)).all():
            return 'a node of the search tree points to a node that is not after it'
        leaves = -children[~internal].astype(np.int64)
        if not ((leaves[:, 0] >= 0) & (leaves[:, 0] <= leaves[:, 1]) & (leaves[:, 1] <= n)).all():
            return 'a leaf of the search tree holds rows outside the vectors'
        if not 0 < int(search['leaf_size']) <= n:
            return f'leaf size {search["leaf_size"]}'
        if order.shape != (n,) or not (order.min(initial=0) >= 0 and order.max(initial=0) < n
                                       and (np.bincount(order, minlength=n) == 1).all()):
            return 'the tree order is not a permutation of the rows'
        if indptr.shape != (n + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
            return 'the search graph row pointers are inconsistent'
        if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= n)):
            return 'the search graph points outside the vectors'
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return f'it is incomplete ({type(exc).__name__}: {exc})'
    return None


def _install_search(index, search):
    """Put a stored search tree and graph in place, as ``prepare`` leaves them."""
    from pynndescent.rp_trees import FlatTree
    from scipy.sparse import csr_array
    n = index._raw_data.shape[0]
    order = np.asarray(search['order'], dtype=np.int32)
    index._search_forest = (FlatTree(np.asarray(search['hyperplanes'], dtype=np.float32),
                                     np.asarray(search['offsets'], dtype=np.float32),
                                     np.asarray(search['children'], dtype=np.int32),
                                     np.arange(n, dtype=np.int32), int(search['leaf_size'])),)
    index._vertex_order = order
    index._raw_data = np.ascontiguousarray(index._raw_data[order])
    index._min_distance = np.float32(search['min_distance'])
    index._visited = np.zeros(n // 8 + 1, dtype=np.uint8)
    indices = np.asarray(search['indices'], dtype=np.int32)
    graph = csr_array((np.ones(len(indices), dtype=np.uint8), indices,
                       np.asarray(search['indptr'], dtype=np.int64)), shape=(n, n))
    graph.has_sorted_indices = True
    index._search_graph = graph
    if hasattr(index, '_rp_forest'):
        del index._rp_forest


def nndescent_from_graph(vectors, graph, *, metric, search=None, **kwargs):
    """A prepared `pynndescent.NNDescent` over ``vectors`` whose k-NN graph is ``graph``.

    Parameters
    ----------
    vectors : `~numpy.ndarray` of float32, shape (n, d)
        The indexed vectors.
    graph : `~numpy.ndarray` of int, shape (n, n_neighbors)
        Their k-NN graph from an earlier build (each row's own index may be listed; it is
        left out as pynndescent does).
    metric : str
        pynndescent metric (``'euclidean'`` or ``'cosine'`` take the fast route).
    search : dict, optional
        The search tree and graph of this index from an earlier `search_structure`, made by
        the same pynndescent version and checked with `search_structure_problem`: installed
        in place of building them.
    **kwargs
        Further keywords of `pynndescent.NNDescent` (``n_neighbors``, ``random_state``...).

    Returns
    -------
    `pynndescent.NNDescent`
        Prepared: its search tree and search graph are built, as after
        ``NNDescent(vectors, init_graph=graph, n_iters=0)`` followed by ``prepare()``.
        With another metric, or a pynndescent without the expected internals, that slower
        route (which compiles NN-descent in every process) is taken.
    """
    import pynndescent
    vectors = np.array(vectors, dtype=np.float32)   # pynndescent's cached code takes writable arrays
    graph = np.ascontiguousarray(graph, dtype=np.int32)
    kwargs = dict(kwargs)
    with warnings.catch_warnings():
        # a stored graph lists each vector's own row first, which pynndescent drops: one slot
        # of n_neighbors stays empty and it says so; the search graph is built all the same
        warnings.filterwarnings('ignore', message='Failed to correctly find n_neighbors')
        try:
            index = _without_nn_descent(pynndescent, vectors, graph, metric, kwargs)
        except _Unsupported:
            index = pynndescent.NNDescent(vectors, metric=metric, init_graph=graph, n_iters=0, **kwargs)
    # pynndescent turns its tree off when given a graph; prepare() then builds the search tree
    # that queries start from (without it recall falls, see index.NNDESCENT_DEFAULTS): the
    # graph-informed one of a full build, where its construction forest (which prepare()
    # drops unused) would be, rather than a random-projection tree held in numba typed lists
    # that Python code reads through functions compiled afresh in every process
    index.tree_init = True
    if search is not None and _can_install(index, search):
        _install_search(index, search)
    elif getattr(index, '_rp_forest', False) is None:
        index._rp_forest = np.empty((0, 0), dtype=np.int32)
    index.prepare()
    return index


def _can_install(index, search):
    import pynndescent
    return (search.get('version') == pynndescent.__version__ and not getattr(index, '_is_sparse', True)
            and getattr(index, 'quantization', None) is None and not getattr(index, '_bit_trees', True)
            and not hasattr(index, '_search_graph')
            and search_structure_problem(search, *index._raw_data.shape) is None)


def _without_nn_descent(pynndescent, vectors, graph, metric, kwargs):
    """``NNDescent`` with its NN-descent routine answered from ``graph``."""
    module = getattr(pynndescent, 'pynndescent_', None)
    if metric not in ('euclidean', 'cosine') or not callable(getattr(module, 'nn_descent', None)):
        raise _Unsupported

    def stored(data, n_neighbors, *args, kernel=0, **ignored):
        if kernel not in (_SQEUCLIDEAN, _ALT_DOT) or len(data) != len(graph):
            raise _Unsupported
        return sorted_graph(data, graph, n_neighbors, kernel)

    with _LOCK:
        original = module.nn_descent
        module.nn_descent = stored
        try:
            return pynndescent.NNDescent(vectors, metric=metric, tree_init=False, **kwargs)
        finally:
            module.nn_descent = original
