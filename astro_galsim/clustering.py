"""Clustering galaxies through the k-nearest-neighbour graph of their latent vectors.

`cluster` labels the vectors of a `~astro_galsim.index.NeighbourIndex` (HDBSCAN on the
symmetrised graph, or Ward agglomeration with the graph as connectivity);
`~astro_galsim.database.GalaxyDatabase.cluster` is its front.

Examples
--------
>>> import numpy as np
>>> from astro_galsim.clustering import cluster
>>> from astro_galsim.index import NeighbourIndex
>>> rng = np.random.default_rng(0)
>>> blobs = np.concatenate([rng.normal(0, 0.1, (30, 4)), rng.normal(5, 0.1, (30, 4))])
>>> labels = cluster(NeighbourIndex(blobs), min_cluster_size=5)
>>> sorted(set(labels.tolist()))
[0, 1]
"""
import warnings

import numpy as np
from scipy import sparse

from .utils._knn import exact_knn, normalise_rows

__all__ = ['cluster', 'assign_noise', 'group_galaxies']


def cluster(index, *, method='hdbscan', k=15, min_cluster_size=10, min_samples=None, n_clusters=None):
    """Cluster the vectors of a neighbour index using their k-nearest-neighbour graph.

    Parameters
    ----------
    index : `~astro_galsim.index.NeighbourIndex`
        The vectors, with their metric.
    method, k, min_cluster_size, min_samples, n_clusters
        As for `~astro_galsim.database.GalaxyDatabase.cluster`.

    Returns
    -------
    labels : `~numpy.ndarray` of int, shape (N,)
        Cluster number per vector (0, 1, ... in order of first appearance), -1 for noise.
    """
    try:
        from sklearn.cluster import HDBSCAN, AgglomerativeClustering
    except ImportError as exc:  # pragma: no cover - sklearn comes with pynndescent
        raise ImportError('clustering needs scikit-learn '
                          '(pip install scikit-learn).') from exc
    n = len(index)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = index.neighbor_graph(k).tocsr()
    graph.data = np.maximum(graph.data, np.float32(1e-12)).astype(np.float64)
    graph = graph.maximum(graph.T).tocsr()
    if method == 'agglomerative':
        if n_clusters is None:
            raise ValueError("method='agglomerative' needs n_clusters.")
        data = _metric_space(index)
        with warnings.catch_warnings():
            # "the number of connected components of the connectivity matrix is > 1":
            # sklearn completes the graph itself, which is what we want.
            warnings.filterwarnings('ignore', message='.*connected components.*')
            model = AgglomerativeClustering(n_clusters=int(n_clusters), connectivity=graph,
                                            linkage='ward')
            labels = model.fit_predict(data)
    elif method == 'hdbscan':
        min_samples = min(min_cluster_size, k) if min_samples is None else min_samples
        graph = _connect_components(graph, index)
        model = HDBSCAN(metric='precomputed', min_cluster_size=int(min_cluster_size),
                        min_samples=int(min_samples), copy=True)
        labels = model.fit_predict(graph)
    else:
        raise ValueError(f"method must be 'hdbscan' or 'agglomerative'; got {method!r}.")
    return _renumber(labels)


def group_galaxies(database, *, assign_noise=True, **options):
    """The table of `SimilaritySearch.cluster <astro_galsim.SimilaritySearch.cluster>`.

    ``database.cluster(**options)``, HDBSCAN's noise given its nearest clustered
    neighbour's group if ``assign_noise``, as a QTable of ``id``, ``cluster`` and ``core``.
    """
    from astropy.table import QTable
    labels = database.cluster(**options)
    core = labels >= 0
    if assign_noise and not core.all():
        labels = _assign(labels, database.neighbor_graph(options.get('k', 15)))
    return QTable({'id': database.ids, 'cluster': labels, 'core': core})


def assign_noise(labels, graph):
    """Give each noise point (label -1) the cluster of its nearest clustered neighbour.

    Noise points take, in rounds, the label of their nearest neighbour in ``graph`` that
    has one, so a run of noise points between clusters joins the nearer. Points with no
    clustered galaxy anywhere in their part of the graph stay -1.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Cluster labels, -1 for noise.
    graph : `scipy.sparse.csr_matrix`, shape (N, N)
        Neighbour distances (the k-NN graph).

    Returns
    -------
    labels : `~numpy.ndarray` of int
        A copy, noise assigned where possible.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from astro_galsim.clustering import assign_noise
    >>> graph = sparse.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 2, 0], [0, 2, 0, 3], [0, 0, 3, 0.]]))
    >>> assign_noise([0, -1, -1, 1], graph).tolist()
    [0, 0, 1, 1]
    """
    labels = np.array(labels, dtype=np.int64)
    graph = sparse.csr_matrix(graph)
    graph = graph.maximum(graph.T).tocsr()
    while True:
        noise = np.flatnonzero(labels < 0)
        if not noise.size:
            break
        changed = {}
        for i in noise:
            start, stop = graph.indptr[i], graph.indptr[i + 1]
            neighbours, distances = graph.indices[start:stop], graph.data[start:stop]
            clustered = labels[neighbours] >= 0
            if clustered.any():
                changed[i] = labels[neighbours[clustered][np.argmin(distances[clustered])]]
        if not changed:
            break
        labels[list(changed)] = list(changed.values())
    return labels


def _metric_space(index):
    """The vectors as the metric sees them: unit rows for cosine."""
    return normalise_rows(index.vectors) if index.metric == 'cosine' else index.vectors


def _connect_components(graph, index):
    """Join the connected components of a symmetric distance graph.

    Each component is represented by its member closest to the component mean; the
    representatives are linked to their 10 nearest representatives and in a chain, with
    their true distances, so that the graph becomes connected.
    """
    from scipy.sparse import csgraph   # imported here: opening a database never needs it
    n_comp, comp = csgraph.connected_components(graph, directed=False)
    if n_comp == 1:
        return graph
    vectors = _metric_space(index)
    order = np.argsort(comp, kind='stable')
    bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
    reps = np.empty(n_comp, dtype=np.int64)
    for c in range(n_comp):
        members = order[bounds[c]:bounds[c + 1]]
        centre = vectors[members].mean(axis=0)
        reps[c] = members[np.argmin(((vectors[members] - centre) ** 2).sum(axis=1))]
    near, dist = exact_knn(vectors[reps], vectors[reps], min(n_comp, 11), metric=index.metric,
                           normalised=True)
    rows = [np.repeat(reps, near.shape[1]), reps[:-1]]
    cols = [reps[near.ravel()], reps[1:]]
    chain = np.array([_pair_distance(vectors[a], vectors[b], index.metric)
                      for a, b in zip(reps[:-1], reps[1:])])
    data = [dist.ravel(), chain]
    rows, cols, data = np.concatenate(rows), np.concatenate(cols), np.concatenate(data)
    keep = rows != cols
    extra = sparse.csr_matrix((np.maximum(data[keep], 1e-12), (rows[keep], cols[keep])),
                              shape=graph.shape)
    extra = extra.maximum(extra.T)
    return graph.maximum(extra).tocsr()


def _pair_distance(a, b, metric):
    """Distance of two vectors already in the metric's space (unit rows for cosine)."""
    if metric == 'cosine':
        return float(max(0.0, 1 - np.dot(a, b)))
    return float(np.linalg.norm(a - b))


def _renumber(labels):
    """Renumber non-negative labels 0, 1, ... in order of first appearance."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    good = labels >= 0
    if good.any():
        _, first = np.unique(labels[good], return_index=True)
        order = np.argsort(first)
        mapping = np.empty(labels[good].max() + 1, dtype=np.int64)
        mapping[np.unique(labels[good])[order]] = np.arange(order.size)
        out[good] = mapping[labels[good]]
    return out


_assign = assign_noise   # group_galaxies has a keyword of that name
