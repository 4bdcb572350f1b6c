"""Exact k-nearest-neighbour search: the one brute-force kernel of the package.

`~astro_galsim.index.NeighbourIndex` (exact back end, filtered queries, the tail of an
approximate index), clustering and `~astro_galsim.evaluation` all select neighbours here.
"""
import sys
import warnings

import numpy as np

__all__ = ['METRICS', 'check_metric', 'normalise_rows', 'smallest_k', 'sorted_smallest_k', 'exact_knn']

#: Distance metrics understood by every back end. ``'euclidean'`` is the L2
#: distance; ``'cosine'`` is ``1 - cos(angle)`` (as in pynndescent and scipy).
METRICS = ('euclidean', 'cosine')

# Bytes of the (queries x vectors) score matrix computed at once by exact search.
_EXACT_BLOCK_BYTES = 32 * 2**20


def check_metric(metric):
    """``metric`` if it is one of `METRICS`, else a ValueError naming the choices."""
    if metric not in METRICS:
        raise ValueError(f'metric must be one of {METRICS}; got {metric!r}.')
    return metric


def normalise_rows(array):
    """Unit-normalise rows (zero rows stay zero, so their cosine distance is 1)."""
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return (array / norms).astype(np.float32, copy=False)


def _torch():
    """torch, if this process has already imported it (importing it costs seconds)."""
    return sys.modules.get('torch')


def _matmul_t(a, b):
    """``a @ b.T``, with torch's BLAS when torch is loaded.

    Once torch is loaded, numpy's OpenBLAS threads and torch's OpenMP threads compete
    for the cores and small numpy products become 100x slower; staying in torch avoids it.
    A process without torch (a command-line look-up) uses numpy and never pays its import.
    """
    torch = _torch()
    if torch is None:  # pragma: no cover
        return a @ b.T
    with warnings.catch_warnings():
        # read-only views (NeighbourIndex.vectors) are only read here
        warnings.filterwarnings('ignore', message='The given NumPy array is not writable')
        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
    return torch.mm(a_t, b_t.T).numpy()


def smallest_k(scores, k):
    """Column indices of the k smallest values of each row (unordered; ties go to the lowest index).

    Uses ``torch.topk`` when torch is loaded (5x faster than ``numpy.argpartition`` on this
    task), else ``numpy.argpartition``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.utils._knn import smallest_k
    >>> np.sort(smallest_k(np.array([[3., 1., 1., 0.]]), 2), axis=1)
    array([[1, 3]])
    """
    torch = _torch()
    if torch is None:  # pragma: no cover
        candidates = np.argpartition(scores, k - 1, axis=1)[:, :k]
    else:
        candidates = torch.topk(torch.from_numpy(scores), k, dim=1, largest=False, sorted=False).indices.numpy()
    # both choose arbitrarily among values tied with the k-th: prefer the lowest indices
    kth = np.take_along_axis(scores, candidates, axis=1).max(axis=1)
    tied = np.flatnonzero((scores <= kth[:, np.newaxis]).sum(axis=1) > k)
    for row in tied:
        idx = np.flatnonzero(scores[row] <= kth[row])
        candidates[row] = idx[np.lexsort((idx, scores[row, idx]))[:k]]
    return candidates


def sorted_smallest_k(scores, k):
    """Indices and values of the k smallest entries of each row, ordered by value then index."""
    return _sort_by_value(smallest_k(scores, k), lambda idx: np.take_along_axis(scores, idx, axis=1))


def _sort_by_value(candidates, values_of):
    """Order candidates by value, ties by index: sort by index first, then stably by value."""
    candidates = np.sort(candidates, axis=1)
    values = values_of(candidates)
    order = np.argsort(values, axis=1, kind='stable')
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(values, order, axis=1)


def exact_knn(data, queries, k, *, metric='euclidean', normalised=False):
    """Exact k nearest neighbours by brute force.

    Scores are computed as one matrix product per block of queries; the ``k``
    best candidates are then selected with a partial sort and their distances
    recomputed directly, so distances are accurate to float32 rounding. Ties
    are broken by the lower index, so the result is deterministic.

    Parameters
    ----------
    data : array-like, shape (n, d)
        Vectors searched.
    queries : array-like, shape (m, d)
        Query vectors.
    k : int
        Number of neighbours; at most ``n`` are returned.
    metric : {'euclidean', 'cosine'}, optional
        Distance metric.
    normalised : bool, optional
        For ``'cosine'``: ``data`` rows already have unit norm (saves a copy).

    Returns
    -------
    indices : `~numpy.ndarray` of int64, shape (m, min(k, n))
        Row numbers in ``data``, nearest first.
    distances : `~numpy.ndarray` of float32, shape (m, min(k, n))
        The matching distances.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.index import exact_knn
    >>> data = np.array([[0, 0], [1, 0], [3, 0]], dtype=np.float32)
    >>> indices, distances = exact_knn(data, [[0.9, 0]], 2)
    >>> indices
    array([[1, 0]])
    >>> distances.round(3)
    array([[0.1, 0.9]], dtype=float32)
    """
    check_metric(metric)
    data = np.ascontiguousarray(data, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[np.newaxis, :]
    n, m = data.shape[0], queries.shape[0]
    k = int(min(k, n))
    out_i = np.empty((m, k), dtype=np.int64)
    out_d = np.empty((m, k), dtype=np.float32)
    if k == 0 or m == 0:
        return out_i, out_d
    if metric == 'cosine':
        if not normalised:
            data = normalise_rows(data)
        queries = normalise_rows(queries)
    else:
        data_sq = np.einsum('ij,ij->i', data, data)
    block = max(1, int(_EXACT_BLOCK_BYTES // (4 * n)))
    for start in range(0, m, block):
        q = queries[start:start + block]
        product = _matmul_t(q, data)
        if metric == 'cosine':
            scores = np.negative(product, out=product)
        else:
            product *= -2
            scores = np.add(product, data_sq, out=product)
        if k < n:
            candidates = smallest_k(scores, k)
        else:
            candidates = np.broadcast_to(np.arange(n), scores.shape)

        def distances(idx):
            # recomputed directly, not from the scores: accurate to float32 rounding
            if metric == 'cosine':
                return np.maximum(1 - np.einsum('ij,ikj->ik', q, data[idx]), 0)
            diff = data[idx] - q[:, np.newaxis, :]
            return np.sqrt(np.einsum('ikj,ikj->ik', diff, diff))
        out_i[start:start + block], out_d[start:start + block] = _sort_by_value(candidates, distances)
    return out_i, out_d
