"""Exact float64 distances between all items of a labelled set, in bounded blocks.

The retrieval metrics of `astro_galsim.evaluation` rank every item against all the
others, and `astro_galsim.invariance` sets its scale from the same neighbour distances:
one matrix product per chunk of queries, so memory stays bounded for tens of thousands
of vectors. (`~astro_galsim.utils._knn.exact_knn` serves the searches, in float32.)
"""
import numpy as np
from tqdm.auto import tqdm

from ..config import conf
from ._knn import check_metric, sorted_smallest_k

__all__ = ['prepare_space', 'distance_block', 'row_chunks', 'nearest_others']

# Elements of one (chunk x N) float64 distance block: 2**22 elements = 32 MiB.
_BLOCK_ELEMENTS = 2 ** 22


def prepare_space(x, metric):
    """Return the vectors in the form used by `_distance_block`."""
    check_metric(metric)
    if metric == 'cosine':
        norms = np.linalg.norm(x, axis=1)
        zero = norms == 0
        if zero.any():
            raise ValueError(f'vectors has {int(zero.sum())} all-zero row(s) (first at index '
                             f'{int(np.flatnonzero(zero)[0])}); the cosine distance is undefined for '
                             "them. Drop them or use metric='euclidean'.")
        x = x / norms[:, None]
    return x, np.einsum('ij,ij->i', x, x)


def distance_block(x, sq, rows, metric):
    """Distances from ``x[rows]`` to every row of ``x`` (shape ``(len(rows), N)``).

    Euclidean distances are returned *squared* (same ranking, no square root needed).
    """
    d = x[rows] @ x.T
    if metric == 'euclidean':
        d *= -2.0
        d += sq[rows, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
    else:
        np.subtract(1.0, d, out=d)
        np.maximum(d, 0.0, out=d)
    return d


def row_chunks(n_rows, n_cols, desc):
    size = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    starts = range(0, n_rows, size)
    disable = (not conf.show_progress) or len(starts) <= 1
    for start in tqdm(starts, desc=desc, disable=disable, leave=False):
        yield slice(start, min(start + size, n_rows))


def nearest_others(x, sq, rows, k, metric, desc='nearest neighbours'):
    """Indices and distances of the k nearest other items of each of ``x[rows]``."""
    n = x.shape[0]
    idx = np.empty((rows.size, k), dtype=np.intp)
    dist = np.empty((rows.size, k), dtype=np.float64)
    for sl in row_chunks(rows.size, n, desc):
        r = rows[sl]
        d = distance_block(x, sq, r, metric)
        d[np.arange(r.size), r] = np.inf
        idx[sl], dist[sl] = sorted_smallest_k(d, k)
    if metric == 'euclidean':
        np.sqrt(dist, out=dist)
    return idx, dist
