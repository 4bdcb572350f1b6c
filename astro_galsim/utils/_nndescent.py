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
"""
import threading
import warnings

import numba
import numpy as np

__all__ = ['nndescent_from_graph', 'sorted_graph']

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


def nndescent_from_graph(vectors, graph, *, metric, **kwargs):
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
    if getattr(index, '_rp_forest', False) is None:
        index._rp_forest = np.empty((0, 0), dtype=np.int32)
    index.prepare()
    return index


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
