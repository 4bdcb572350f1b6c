"""Nearest-neighbour index over latent vectors: exact (numpy/BLAS) or pynndescent.

`NeighbourIndex` answers k-nearest-neighbour queries over a set of float32 vectors.
Two back ends share one interface:

``'exact'``
    Brute force with one matrix product per batch of queries (BLAS), followed by a
    partial sort. Exact, needs no build, and is the fastest choice for small sets
    (up to a few hundred thousand vectors) in a fresh process.
``'nndescent'``
    An approximate nearest-neighbour graph built with `pynndescent.NNDescent`.
    Queries are 100x or more faster than brute force at a million vectors, but the
    first build in every Python process spends 20-40 s compiling (numba).

``method='auto'`` picks ``'exact'`` below ``exact_threshold`` vectors and
``'nndescent'`` above it. Results are a pure function of the vectors and the
options (the random state of pynndescent is fixed by ``random_state``).

Examples
--------
>>> import numpy as np
>>> from astro_galsim.index import NeighbourIndex
>>> rng = np.random.default_rng(0)
>>> vectors = rng.normal(size=(1000, 64)).astype(np.float32)
>>> index = NeighbourIndex(vectors)
>>> index.method
'exact'
>>> indices, distances = index.query(vectors[:3], k=5)
>>> indices[:, 0]
array([0, 1, 2])
>>> distances.shape
(3, 5)
"""
import math
import os
import warnings

import numpy as np
from astropy.utils.exceptions import AstropyDeprecationWarning
from scipy import sparse

from .utils._knn import METRICS, check_metric, exact_knn, normalise_rows

__all__ = ['NeighbourIndex', 'exact_knn', 'recall', 'METRICS', 'NNDESCENT_DEFAULTS']

#: pynndescent settings used unless overridden. Tuned with
#: ``benchmarks/search.py`` to reach recall@10 >= 0.99 on clustered d=64 vectors.
#: The decisive setting is ``search_tree_leaf_budget``: with pynndescent's default (1)
#: queries whose search-tree leaf lies in the wrong cluster of well separated clusters
#: cannot reach their neighbours through the (disconnected) graph and find none of
#: them (recall plateaued at 0.97 whatever ``epsilon``); starting from 8 leaves fixes it.
NNDESCENT_DEFAULTS = {
    'n_neighbors': 30,
    'pruning_degree_multiplier': 2.0,
    'diversify_prob': 0.5,
    'search_tree_leaf_budget': 8,
    'epsilon': 0.1,
}


def _as_vectors(vectors, name, dim=None):
    """Validate ``vectors`` and return a C-contiguous float32 2-D array."""
    array = np.asarray(vectors)
    if array.ndim == 1 and array.size and dim is not None and array.shape[0] == dim:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f'{name} must be a 2-D array of shape (n, d); got shape {array.shape}.')
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f'{name} must hold real numbers; got dtype {array.dtype}.')
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f'{name} have {array.shape[1]} dimensions but the index holds '
                         f'{dim}-dimensional vectors; use vectors from the same encoder.')
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f'{name} contain NaN or infinite values (rows {bad[:10].tolist()}'
                         f'{"..." if bad.size > 10 else ""}); drop or re-embed those rows.')
    return array


def _valid_graph(graph, n):
    """Whether ``graph`` is an integer array of ``n`` rows whose entries are rows (or -1)."""
    return (graph.ndim == 2 and graph.shape[0] == n and np.issubdtype(graph.dtype, np.integer)
            and (graph.size == 0 or (graph.min() >= -1 and graph.max() < n)))


def _merge(indices_a, dist_a, indices_b, dist_b, k):
    """Merge two sorted neighbour lists (per row) into the k best."""
    indices = np.concatenate([indices_a, indices_b], axis=1)
    dist = np.concatenate([dist_a, dist_b], axis=1)
    order = np.argsort(dist, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(dist, order, axis=1)


class NeighbourIndex:
    """k-nearest-neighbour index over float32 vectors, exact or approximate.

    Parameters
    ----------
    vectors : array-like, shape (n, d)
        The indexed vectors (converted to float32; NaN or infinite values are refused).
    metric : {'euclidean', 'cosine'}, optional
        Distance metric. ``'cosine'`` distances are ``1 - cos(angle)``.
    method : {'auto', 'exact', 'nndescent'}, optional
        ``'exact'``: brute force (no build, exact). ``'nndescent'``: pynndescent graph
        (approximate; slow first build in a fresh process). ``'auto'``: exact below
        ``exact_threshold`` vectors, pynndescent above; re-decided when vectors are added.
    n_neighbors : int, optional
        Degree of the pynndescent k-NN graph (larger: better recall, slower build).
    random_state : int, optional
        Seed of pynndescent's random projections, so that builds are reproducible.
    exact_threshold : int, optional
        Size below which ``method='auto'`` searches exactly. Exact search of a batch
        of queries over 100,000 vectors of d=64 takes well under a millisecond per
        query, while pynndescent's first build costs 20-40 s of compilation.
    epsilon : float, optional
        pynndescent search breadth (0-0.5); larger is more accurate and slower.
    pruning_degree_multiplier, diversify_prob : float, optional
        pynndescent search-graph settings (see `pynndescent.NNDescent`).
    tail_fraction : float, optional
        Vectors added with `add` to a pynndescent index are first searched exactly (the
        "tail"); the graph is rebuilt from all vectors at the next query once the tail
        exceeds this fraction of the indexed vectors and ``tail_min`` vectors.
    tail_min : int, optional
        See ``tail_fraction``.
    n_jobs : int or None, optional
        Threads used by pynndescent (None: all).
    lazy : bool, optional
        Defer the pynndescent build to the first query that needs it (or `prepare`), so
        that creating the index is instantaneous.
    graph : `~numpy.ndarray` of int, shape (n, n_neighbors), optional
        The k-NN graph of these vectors from an earlier build (`knn_graph`, as stored in a
        database file). The pynndescent index is then made from it without running
        NN-descent again: only its search tree and search graph are built, which is many
        times faster at a million vectors. Ignored if its shape does not match or it names
        rows that do not exist.
    search : dict, optional
        With ``graph``: the search tree and search graph of that build (`search_structure`,
        as stored in a database file), installed instead of being built again. Ignored unless
        the same pynndescent version made it and every row number in it is within the vectors.
    build_work : float, optional
        With ``lazy=True`` and ``method='auto'``, calls whose work (queries x vectors) is
        below this are answered by exact search instead of triggering the pynndescent
        build (which takes minutes at a million vectors): a few interactive queries on a
        freshly loaded large database stay fast (about 30 ms each at 1M x 64), while a
        large batch or `neighbor_graph` builds the index.
    **nndescent_kwargs
        Further keyword arguments for `pynndescent.NNDescent` (default
        ``search_tree_leaf_budget=8``).

    Attributes
    ----------
    method : str
        The back end in use, ``'exact'`` or ``'nndescent'``.

    Raises
    ------
    ValueError
        For unknown metric or method, wrong shapes or non-finite vectors.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.index import NeighbourIndex
    >>> rng = np.random.default_rng(1)
    >>> index = NeighbourIndex(rng.normal(size=(500, 16)), metric='cosine')
    >>> index.add(rng.normal(size=(10, 16)))
    >>> len(index)
    510
    >>> graph = index.neighbor_graph(5)
    >>> graph.shape, graph.nnz
    ((510, 510), 2550)
    """

    def __init__(self, vectors, *, metric='euclidean', method='auto', n_neighbors=None,
                 random_state=0, exact_threshold=200_000, epsilon=None,
                 pruning_degree_multiplier=None, diversify_prob=None, tail_fraction=0.1,
                 tail_min=1000, n_jobs=None, lazy=False, build_work=5e8, graph=None, search=None,
                 **nndescent_kwargs):
        check_metric(metric)
        if method not in ('auto', 'exact', 'nndescent'):
            raise ValueError(f"method must be 'auto', 'exact' or 'nndescent'; got {method!r}.")
        self.metric = metric
        self.requested_method = method
        self.random_state = random_state
        self.exact_threshold = int(exact_threshold)
        self.tail_fraction = float(tail_fraction)
        self.tail_min = int(tail_min)
        self.build_work = float(build_work)
        self.n_jobs = n_jobs

        def pick(value, key):
            return NNDESCENT_DEFAULTS[key] if value is None else value
        self.n_neighbors = int(pick(n_neighbors, 'n_neighbors'))
        self.epsilon = float(pick(epsilon, 'epsilon'))
        nndescent_kwargs.setdefault('search_tree_leaf_budget',
                                    NNDESCENT_DEFAULTS['search_tree_leaf_budget'])
        self._nnd_kwargs = dict(
            n_neighbors=self.n_neighbors,
            pruning_degree_multiplier=pick(pruning_degree_multiplier, 'pruning_degree_multiplier'),
            diversify_prob=pick(diversify_prob, 'diversify_prob'),
            **nndescent_kwargs)

        array = _as_vectors(vectors, 'vectors')
        self._dim = array.shape[1]
        self._buffer = array.copy() if np.shares_memory(array, np.asarray(vectors)) else array
        self._n = array.shape[0]
        self._unit = None          # unit-normalised copy for cosine exact search
        self._nnd = None           # pynndescent index over the first _n_main vectors
        self._n_main = 0
        self._graph = None         # a stored k-NN graph of all vectors, used by the next build
        self._search = None        # ...and the search tree and graph built from it
        if graph is not None:
            graph = np.asarray(graph)
            if (self._wants_nndescent() and graph.shape == (self._n, self.n_neighbors)
                    and _valid_graph(graph, self._n)):
                self._graph, self._search = graph, search
        if not lazy:
            self._build()

    # ------------------------------------------------------------------ state
    def __len__(self):
        return self._n

    def __repr__(self):
        return (f'<NeighbourIndex: {self._n} vectors of d={self._dim}, metric={self.metric!r}, '
                f'method={self.method!r}>')

    @property
    def dim(self):
        """int: Dimension of the vectors."""
        return self._dim

    @property
    def vectors(self):
        """`~numpy.ndarray`: The indexed vectors, shape (n, d), float32 (read-only view)."""
        view = self._buffer[:self._n]
        view.flags.writeable = False
        return view

    @property
    def method(self):
        """str: Back end in use: ``'exact'`` or ``'nndescent'``."""
        return 'nndescent' if self._wants_nndescent() else 'exact'

    def _wants_nndescent(self):
        if self.requested_method == 'auto':
            return self._n >= self.exact_threshold
        return self.requested_method == 'nndescent'

    def _tail_too_big(self):
        tail = self._n - self._n_main
        return tail > max(self.tail_min, self.tail_fraction * self._n_main)

    def _build(self):
        """(Re)build the back end over all vectors."""
        self._nnd, self._n_main, self._unit = None, 0, None
        if self._wants_nndescent() and self._n > 0:
            stored = self._graph is not None and len(self._graph) == self._n
            self._nnd = _build_nndescent(self.vectors, metric=self.metric,
                                         random_state=self.random_state, n_jobs=self.n_jobs,
                                         graph=self._graph if stored else None,
                                         search=self._search if stored else None, **self._nnd_kwargs)
            self._n_main = self._n
        self._graph = self._search = None

    @property
    def knn_graph(self):
        """`~numpy.ndarray` or None: The pynndescent k-NN graph over all vectors, if built.

        Shape (n, n_neighbors), int32; row ``i`` lists the neighbours of vector ``i``
        (itself first), -1 where fewer were found. Give it back as ``graph=`` to make the
        same index without running NN-descent again. None when the index is exact, not yet
        built, or has vectors added since its build.
        """
        if self._nnd is None or self._n_main != self._n:
            return None
        return np.asarray(self._nnd.neighbor_graph[0], dtype=np.int32)

    @property
    def search_structure(self):
        """dict or None: The search tree and search graph of the pynndescent index, if built.

        Plain arrays (``astro_galsim.utils._nndescent.search_structure``), given back with
        `knn_graph` as ``search=`` to skip building them again. None when `knn_graph` is.
        """
        if self._nnd is None or self._n_main != self._n:
            return None
        from .utils._nndescent import search_structure
        return search_structure(self._nnd)

    def _ensure_current(self):
        """Rebuild lazily when the back end no longer matches the vectors."""
        if self._wants_nndescent():
            if self._nnd is None or self._tail_too_big():
                self._build()
        elif self._nnd is not None:
            self._build()

    # ------------------------------------------------------------------ API
    def add(self, vectors):
        """Append vectors (incremental: no rebuild of the whole index).

        New vectors get the next row numbers. With the exact back end they are simply
        appended. With pynndescent they are searched exactly alongside the graph until
        they exceed ``tail_fraction`` of the index; the next query then rebuilds the
        graph from all vectors, giving the same index as a fresh build.

        Parameters
        ----------
        vectors : array-like, shape (m, d)
            Vectors to add.
        """
        new = _as_vectors(vectors, 'vectors', dim=self._dim)
        need = self._n + new.shape[0]
        if need > self._buffer.shape[0]:
            capacity = max(need, int(self._buffer.shape[0] * 1.5) + 16)
            buffer = np.empty((capacity, self._dim), dtype=np.float32)
            buffer[:self._n] = self._buffer[:self._n]
            self._buffer = buffer
        self._buffer[self._n:need] = new
        self._n = need
        if self._unit is not None:
            self._unit = np.concatenate([self._unit, normalise_rows(new)])

    def query(self, vectors, k=10, *, epsilon=None, exact=False, allowed=None, subset=None):
        """Find the k nearest indexed vectors of each query vector.

        Parameters
        ----------
        vectors : array-like, shape (m, d) or (d,)
            Query vectors.
        k : int, optional
            Neighbours per query; at most ``len(self)`` (or the number of allowed rows)
            are returned.
        epsilon : float, optional
            pynndescent search breadth for this call (default: the index's ``epsilon``).
        exact : bool, optional
            Search exactly even if the index uses pynndescent.
        allowed : array-like of bool or int, optional
            Return only these rows (a boolean mask of length ``len(self)``, or row
            numbers). An approximate index over-fetches from its graph when most rows are
            allowed, and searches the allowed rows exactly when few are, or for the
            queries whose over-fetch found too few: every query gets ``min(k, n_allowed)``
            allowed neighbours. Returned indices refer to the whole index.
        subset : array-like of bool or int, optional
            Deprecated: use ``allowed`` (with ``exact=True`` for the same exact search).

        Returns
        -------
        indices : `~numpy.ndarray` of int64, shape (m, min(k, n))
            Row numbers of the neighbours, nearest first.
        distances : `~numpy.ndarray` of float32, shape (m, min(k, n))
            Their distances.

        Examples
        --------
        >>> import numpy as np
        >>> from astro_galsim.index import NeighbourIndex
        >>> index = NeighbourIndex(np.arange(10, dtype=np.float32)[:, None])
        >>> index.query([[0.2]], k=2, allowed=np.arange(10) % 2 == 1)[0]
        array([[1, 3]])
        """
        queries = _as_vectors(vectors, 'query vectors', dim=self._dim)
        k = int(k)
        if k < 1:
            raise ValueError(f'k must be a positive integer; got {k}.')
        if subset is not None:
            warnings.warn('NeighbourIndex.query(subset=...) is deprecated; use allowed=... '
                          '(with exact=True for an exact search).', AstropyDeprecationWarning)
            allowed, exact = subset, True
        rows = None if allowed is None else self._allowed_rows(allowed)
        small_call = (self.requested_method == 'auto' and self._nnd is None
                      and queries.shape[0] * self._n < self.build_work)
        n_allowed = self._n if rows is None else rows.size
        # with few allowed rows the graph would have to be searched too deep: search them exactly
        fetch = k if rows is None else int(math.ceil(k * self._n / max(n_allowed, 1) * 1.5)) + 10
        if (exact or not self._wants_nndescent() or small_call
                or (rows is not None and fetch > max(100, self._n // 20))):
            return self._exact(queries, k, rows)
        indices, dist = self._approximate(queries, min(fetch, self._n), epsilon)
        keep = indices >= 0
        if rows is not None:
            mask = np.zeros(self._n, dtype=bool)
            mask[rows] = True
            keep &= mask[np.clip(indices, 0, None)]
        want = min(k, n_allowed)
        if indices.shape[1] < want:
            return self._exact(queries, k, rows)
        # the allowed neighbours first, in their order
        first = np.argsort(~keep, axis=1, kind='stable')[:, :want]
        out_i = np.take_along_axis(indices, first, axis=1)
        out_d = np.take_along_axis(dist, first, axis=1)
        short = np.flatnonzero(keep.sum(axis=1) < want)
        if short.size:   # the graph missed some: search those queries exactly
            out_i[short], out_d[short] = self._exact(queries[short], k, rows)
        return out_i, out_d

    def _allowed_rows(self, allowed):
        """Row numbers from a boolean mask or an array of row numbers."""
        allowed = np.asarray(allowed)
        if allowed.dtype == bool:
            if allowed.shape != (self._n,):
                raise ValueError(f'a boolean allowed mask must have length {self._n}; '
                                 f'got shape {allowed.shape}.')
            return np.flatnonzero(allowed)
        rows = allowed.astype(np.int64, copy=False).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= self._n):
            raise IndexError(f'allowed holds row numbers outside 0..{self._n - 1}.')
        return rows

    def _search_data(self, start=0):
        """The vectors as exact search reads them (unit rows for cosine), from row ``start``."""
        if self.metric == 'cosine':
            if self._unit is None or self._unit.shape[0] != self._n:
                self._unit = normalise_rows(self.vectors)
            return self._unit[start:]
        return self.vectors[start:]

    def _exact(self, queries, k, rows=None):
        """Exact neighbours among all rows or among ``rows``."""
        data = self._search_data()
        if rows is None:
            return exact_knn(data, queries, k, metric=self.metric, normalised=True)
        idx, dist = exact_knn(data[rows], queries, k, metric=self.metric, normalised=True)
        return rows[idx], dist

    def _approximate(self, queries, k, epsilon):
        """Neighbours from the pynndescent graph, merged with an exact search of the tail."""
        self._ensure_current()
        kk = min(k, self._n_main)
        eps = self.epsilon if epsilon is None else float(epsilon)
        indices, dist = self._nnd.query(queries, k=kk, epsilon=eps)
        indices = indices.astype(np.int64, copy=False)
        dist = dist.astype(np.float32, copy=False)
        if self._n > self._n_main:
            t_i, t_d = exact_knn(self._search_data(self._n_main), queries, k,
                                 metric=self.metric, normalised=True)
            indices, dist = _merge(indices, dist, t_i + self._n_main, t_d, min(k, self._n))
        return indices, dist

    def neighbor_graph(self, k=15):
        """The k-nearest-neighbour graph of the indexed vectors.

        Parameters
        ----------
        k : int, optional
            Neighbours per vector (the vector itself is not counted).

        Returns
        -------
        graph : `scipy.sparse.csr_matrix`, shape (n, n)
            ``graph[i, j]`` is the distance from vector ``i`` to its neighbour ``j``;
            each row has ``min(k, n - 1)`` entries (directed graph, not symmetric).
            Exact duplicates appear as explicitly stored zeros.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f'k must be a positive integer; got {k}.')
        n = self._n
        k = min(k, n - 1)
        if k <= 0:
            return sparse.csr_matrix((n, n), dtype=np.float32)
        if self._wants_nndescent():
            self._ensure_current()
        use_graph = (self._wants_nndescent() and self._n_main == n
                     and self._nnd.n_neighbors >= k + 1)
        if use_graph:
            indices, dist = self._nnd.neighbor_graph
            indices, dist = indices[:, :k + 1], dist[:, :k + 1]
        else:
            # k + 1 because each vector finds itself (or an exact duplicate).
            indices, dist = [], []
            step = 4096
            for start in range(0, n, step):
                i, d = self.query(self.vectors[start:start + step], k + 1)
                indices.append(i)
                dist.append(d)
            indices, dist = np.concatenate(indices), np.concatenate(dist)
        rows = np.arange(n)[:, np.newaxis]
        is_self = indices == rows
        # Drop the self match; if it was not found, drop the farthest neighbour.
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), indices.shape[1] - 1)
        keep = np.ones(indices.shape, dtype=bool)
        keep[np.arange(n), drop] = False
        keep &= indices >= 0
        counts = keep.sum(axis=1)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        graph = sparse.csr_matrix((dist[keep].astype(np.float32), indices[keep], indptr),
                                  shape=(n, n))
        return graph

    def prepare(self):
        """Build or refresh the back end now rather than at the next query."""
        self._ensure_current()


def _build_nndescent(vectors, *, metric, random_state, n_jobs, graph=None, search=None, **kwargs):
    """Build and prepare a pynndescent index (imported lazily: import takes seconds).

    With ``graph`` (a k-NN graph of these vectors from an earlier build), NN-descent is
    neither run nor compiled: the graph is taken as it is (its distances recomputed), then the
    search tree and search graph are built by ``prepare`` as after a full build, with compiled
    code that numba caches on disk (`~astro_galsim.utils._nndescent.nndescent_from_graph`); with
    ``search`` as well (that build's search tree and graph), only the search function is set up.
    """
    try:
        import pynndescent
    except ImportError as exc:  # pragma: no cover - pynndescent is a dependency
        raise ImportError("method='nndescent' needs the pynndescent package "
                          "(pip install pynndescent), or use method='exact'.") from exc
    kwargs = dict(kwargs)
    kwargs.pop('epsilon', None)
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if graph is not None:
        from .utils._nndescent import nndescent_from_graph
        return nndescent_from_graph(vectors, graph, metric=metric, random_state=random_state,
                                    n_jobs=n_jobs, search=search, **kwargs)
    index = pynndescent.NNDescent(vectors, metric=metric, random_state=random_state,
                                  n_jobs=n_jobs, **kwargs)
    index.prepare()
    return index


def recall(indices, true_indices):
    """Fraction of the true neighbours found, averaged over queries (recall@k).

    Parameters
    ----------
    indices, true_indices : array-like of int, shape (m, k)
        Approximate and exact neighbour indices.

    Returns
    -------
    float

    Examples
    --------
    >>> from astro_galsim.index import recall
    >>> recall([[0, 1, 2]], [[0, 2, 5]])
    0.6666666666666666
    """
    indices = np.asarray(indices)
    true_indices = np.asarray(true_indices)
    k = true_indices.shape[1]
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(indices, true_indices))
    return hits / (k * true_indices.shape[0]) if true_indices.size else math.nan
