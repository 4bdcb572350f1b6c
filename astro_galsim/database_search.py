"""How a `~astro_galsim.database.GalaxyDatabase` is searched: the query plan.

A search asks the database's `~astro_galsim.index.NeighbourIndex` for enough neighbours of
each query to drop its exclusions (itself, ids, galaxies within a radius) and still keep
``k``, among the rows that pass the ``where`` filter; negative examples first move each query
away from them (the Rocchio step, `move_away`). The answer is a long `~astropy.table.QTable`,
one row per (query, match). `GalaxyDatabase.search <astro_galsim.database.GalaxyDatabase.search>`
is the public face of `search_database`.
"""

import numpy as np
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.table import QTable

from .catalogue import where_mask
from .index import exact_knn
from .utils._checks import positive_integer
from .utils._coords import checked_angle, known_positions

__all__ = ['rocchio_query', 'move_away', 'search_database']


def rocchio_query(positives, negatives=None, *, beta=0.5):
    """Combine example vectors into one query (Rocchio relevance feedback).

    The query is the mean of the positive examples moved away from the mean of the
    negative ones::

        q = mean(positives) + beta * (mean(positives) - mean(negatives))

    i.e. ``(1 + beta) * mean(pos) - beta * mean(neg)``. The weights sum to one, so the
    query does not depend on where the origin of the latent space lies (a plain
    ``mean(pos) - beta * mean(neg)`` would drift towards the origin).

    Parameters
    ----------
    positives : array-like, shape (p, d) or (d,)
        Vectors of galaxies that look like what is wanted.
    negatives : array-like, shape (q, d) or (d,), optional
        Vectors of galaxies that do not.
    beta : float, optional
        How far to move away from the negatives.

    Returns
    -------
    `~numpy.ndarray`, shape (d,), float32

    Examples
    --------
    >>> from astro_galsim.database import rocchio_query
    >>> rocchio_query([[1, 0], [3, 0]], [[0, 2]], beta=0.5)
    array([ 3., -1.], dtype=float32)
    """
    pos = np.atleast_2d(np.asarray(positives, dtype=np.float64))
    if pos.shape[0] == 0:
        raise ValueError('rocchio_query needs at least one positive vector.')
    return move_away(pos.mean(axis=0, keepdims=True), negatives, beta=beta)[0]


def move_away(queries, negatives=None, *, beta=0.5):
    """Move each query away from the mean of negative examples: ``(1 + beta) q - beta mean(neg)``.

    The one definition of the Rocchio step, used by `rocchio_query` (on the mean of the
    positives) and by `~astro_galsim.database_search.search_database` (``negative_vectors``,
    on each query).

    Parameters
    ----------
    queries : array-like, shape (m, d)
        Query vectors.
    negatives : array-like, shape (q, d) or (d,), optional
        Vectors to move away from; None or empty leaves the queries as they are.
    beta : float, optional
        How far to move.

    Returns
    -------
    `~numpy.ndarray`, shape (m, d), float32

    Examples
    --------
    >>> from astro_galsim.database import move_away
    >>> move_away([[2, 0], [0, 2]], [[0, 0]], beta=1.0)
    array([[4., 0.],
           [0., 4.]], dtype=float32)
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    if negatives is not None:
        neg = np.atleast_2d(np.asarray(negatives, dtype=np.float64))
        if neg.shape[0]:
            if neg.shape[1] != queries.shape[1]:
                raise ValueError(f'negatives have {neg.shape[1]} dimensions, the queries '
                                 f'{queries.shape[1]}.')
            queries = (1 + beta) * queries - beta * neg.mean(axis=0)
    return queries.astype(np.float32)


def search_database(database, query_vectors, *, k=10, query_ids=None, query_coords=None,
                    exclude_self=True, exclude_radius=None, exclude_ids=None, where=None,
                    negative_vectors=None, negative_weight=0.5, metric=None, epsilon=None):
    """Find the galaxies of ``database`` most similar to query vectors.

    The work behind `GalaxyDatabase.search <astro_galsim.database.GalaxyDatabase.search>`,
    whose documentation gives the parameters and the result.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.database import GalaxyDatabase
    >>> from astro_galsim.database_search import search_database
    >>> db = GalaxyDatabase(np.eye(4, dtype=np.float32), {'id': ['a', 'b', 'c', 'd']},
    ...                     encoder_id={'name': 'toy', 'sha256': '0' * 64})
    >>> search_database(db, db.vectors[:1], k=2, query_ids=['a'], exclude_ids=['b'])['id'].tolist()
    ['c', 'd']
    """
    queries = np.asarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[np.newaxis]
    if queries.ndim != 2 or queries.shape[1] != database.dim:
        raise ValueError(f'query_vectors must have shape (m, {database.dim}); got '
                         f'{np.shape(query_vectors)}.')
    m = queries.shape[0]
    k = positive_integer(k, 'k')
    if query_ids is not None:
        query_ids = [query_ids] if isinstance(query_ids, str) else [str(q) for q in query_ids]
        if len(query_ids) != m:
            raise ValueError(f'query_ids has {len(query_ids)} entries for {m} query vectors.')
    if negative_vectors is not None:
        queries = move_away(queries, negative_vectors, beta=negative_weight)
    if not np.isfinite(queries).all():
        raise ValueError('query_vectors contain NaN or infinite values.')
    metric = database.metric if metric is None else metric

    excluded = _exclusions(database, m, query_ids if exclude_self else None, query_coords,
                           exclude_radius, exclude_ids)
    allowed = where_mask(database.table, where) if where is not None else np.ones(len(database), dtype=bool)
    n_allowed = int(allowed.sum())
    n_excl = max((e.size for e in excluded), default=0)
    fetch = min(k + n_excl, n_allowed)

    rows_q, rows_i, rows_d, rows_r = [], [], [], []
    if fetch > 0:
        filtered = allowed if n_allowed < len(database) else None
        if metric == database.metric:
            # every query gets `fetch` allowed rows: enough to drop its exclusions and keep k
            indices, dist = database.index.query(queries, fetch, epsilon=epsilon, allowed=filtered)
        else:
            rows = np.flatnonzero(allowed)
            indices, dist = exact_knn(database.vectors[rows], queries, fetch, metric=metric)
            indices = rows[indices]
        for qi in range(m):
            idx, d = indices[qi], dist[qi]
            if excluded[qi].size:
                ok = ~np.isin(idx, excluded[qi])
                idx, d = idx[ok], d[ok]
            idx, d = idx[:k], d[:k]
            rows_q.append(np.full(idx.size, qi))
            rows_i.append(idx)
            rows_d.append(d)
            rows_r.append(np.arange(1, idx.size + 1))
    return _result_table(database, rows_q, rows_i, rows_d, rows_r, query_ids)


def _exclusions(database, m, self_ids, query_coords, exclude_radius, exclude_ids):
    """Per query, the row numbers that must not be returned."""
    per_query = [[] for _ in range(m)]
    common = np.zeros(0, dtype=np.int64)
    if exclude_ids is not None:
        found = np.atleast_1d(database.lookup_ids([exclude_ids] if isinstance(exclude_ids, str)
                                                  else list(exclude_ids)))
        common = found[found >= 0]
    if self_ids is not None:
        rows = database.lookup_ids(self_ids)
        for qi, row in enumerate(rows):
            if row >= 0:
                per_query[qi].append(np.array([row]))
    if exclude_radius is not None:
        radius = checked_angle(exclude_radius, 'exclude_radius')
        if not radius >= 0:
            raise ValueError(f'exclude_radius must be a non-negative angle; got {exclude_radius!r}.')
        if query_coords is None:
            raise ValueError('exclude_radius needs query_coords (the positions of the '
                             'queries).')
        if not isinstance(query_coords, SkyCoord):
            raise TypeError('query_coords must be a SkyCoord.')
        qc = query_coords.reshape((1,)) if query_coords.isscalar else query_coords
        if len(qc) != m:
            raise ValueError(f'query_coords has {len(qc)} positions for {m} queries.')
        qc = qc.icrs
        q_ok = np.flatnonzero(known_positions(qc))
        known = np.flatnonzero(known_positions(database.coords))
        if q_ok.size and known.size:
            iq, ic, _, _ = search_around_sky(qc[q_ok], database.coords[known], radius)
            for a, b in zip(q_ok[iq], known[ic]):
                per_query[a].append(np.array([b]))
    elif query_coords is not None and not isinstance(query_coords, SkyCoord):
        raise TypeError('query_coords must be a SkyCoord.')
    return [np.unique(np.concatenate(p + [common])).astype(np.int64) for p in per_query]


def _result_table(database, rows_q, rows_i, rows_d, rows_r, query_ids):
    cat = lambda parts, dtype: (np.concatenate(parts).astype(dtype) if parts  # noqa: E731
                                else np.zeros(0, dtype=dtype))
    q = cat(rows_q, np.int64)
    idx = cat(rows_i, np.int64)
    matched = database.table[idx]
    result = QTable()
    if query_ids is not None:
        labels = np.array(query_ids, dtype=str)[q] if q.size else np.zeros(0, dtype='U1')
        result['query'] = labels
    else:
        result['query'] = q
    result['rank'] = cat(rows_r, np.int64)
    result['id'] = matched['id']
    result['distance'] = cat(rows_d, np.float32)
    if known_positions(database.coords).any():
        result['coord'] = matched['coord']
    for name in matched.colnames[2:]:
        result[name] = matched[name]
    result.meta['metric'] = database.metric
    return result
