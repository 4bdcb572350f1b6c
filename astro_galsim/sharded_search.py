"""Searching a galaxy database kept as several shards, in parallel, with one merged answer.

`query_sharded` asks every shard (for instance one database per machine, or the databases of
several builds) for its k best matches, on a Dask cluster when a client is given, and merges
them into the global top k. It needs ``dask[distributed]`` only with a client. See
``docs/scaleout.rst``.
"""
import os
from pathlib import Path

import numpy as np
from astropy.table import vstack

__all__ = ['query_sharded']

# Per worker process: shard databases by (path, mtime, size).
_SHARD_DATABASES = {}


def _shard_database(path):
    """A shard database file, loaded once per worker process (until the file changes)."""
    from .database import GalaxyDatabase
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    database = _SHARD_DATABASES.get(key)
    if database is None:
        database = GalaxyDatabase.load(path)
        _SHARD_DATABASES[key] = database
    return database


def _search_shard(shard, query_vectors, k, search_options):
    database = _shard_database(shard) if isinstance(shard, (str, Path)) else shard
    return database.search(query_vectors, k=k, **search_options)


def query_sharded(shards, query_vectors, k=10, *, client=None, query_ids=None, **search_options):
    """Search galaxy databases held as several shards and merge their best matches.

    Every shard answers the queries with its own k nearest galaxies (in parallel on the
    cluster when a client is given); the global top k of each query is among these, so
    merging them by distance gives the same answer as one search of all galaxies
    together (exactly so for exact search; for an approximate index, with the recall of
    the shards' indexes).

    Parameters
    ----------
    shards : list of str, `~pathlib.Path` or `~astro_galsim.database.GalaxyDatabase`
        The shard databases, all made by the same encoder. Paths are opened on the
        workers, once per worker process (they must be readable there); with a client
        shard ``i`` is sent to worker ``i`` modulo the number of workers, so that each
        shard stays loaded on one machine.
    query_vectors : array-like, shape (m, d) or (d,)
        The query vectors.
    k : int, optional
        Matches per query.
    client : ``distributed.Client``, optional
        Cluster to search on; None searches the shards one after the other here.
    query_ids : sequence of str, optional
        Labels of the queries (and, with ``exclude_self``, ids never returned for them).
    **search_options
        Other keywords of `~astro_galsim.database.GalaxyDatabase.search` (``where``,
        ``exclude_ids``, ``exclude_self``...).

    Returns
    -------
    result : `~astropy.table.QTable`
        As `~astro_galsim.database.GalaxyDatabase.search` (``query``, ``rank``, ``id``,
        ``distance``, stored columns) with a ``shard`` column: the position of the
        shard in ``shards``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import QTable
    >>> from astro_galsim.database import GalaxyDatabase
    >>> from astro_galsim.sharded_search import query_sharded
    >>> rng = np.random.default_rng(1)
    >>> vectors = rng.normal(size=(60, 8)).astype('f4')
    >>> enc = {'name': 'demo', 'sha256': '0' * 64}
    >>> shards = [GalaxyDatabase(vectors[i::3], QTable({'id': [f'g{j}' for j in range(i, 60, 3)]}),
    ...                          encoder_id=enc) for i in range(3)]
    >>> whole = GalaxyDatabase(vectors, QTable({'id': [f'g{j}' for j in range(60)]}), encoder_id=enc)
    >>> merged = query_sharded(shards, vectors[:2], k=5)
    >>> list(merged['id']) == list(whole.search(vectors[:2], k=5)['id'])
    True
    """
    queries = np.asarray(query_vectors, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[np.newaxis]
    shards = list(shards)
    if not shards:
        raise ValueError('query_sharded needs at least one shard')
    k = int(k)
    if k < 1:
        raise ValueError(f'k must be a positive integer; got {k}')
    options = dict(search_options, query_ids=query_ids)
    if client is None:
        results = [_search_shard(s, queries, k, options) for s in shards]
    else:
        workers = list(client.scheduler_info(n_workers=-1)['workers'])
        futures = []
        for i, shard in enumerate(shards):
            where = {'workers': [workers[i % len(workers)]], 'allow_other_workers': True} if workers else {}
            shard = str(shard) if isinstance(shard, Path) else shard
            futures.append(client.submit(_search_shard, shard, queries, k, options, pure=False, **where))
        results = client.gather(futures)
    for i, result in enumerate(results):
        result['shard'] = np.full(len(result), i, dtype=np.int64)
    common = [c for c in results[0].colnames if all(c in r.colnames for r in results)]
    merged = vstack([r[common] for r in results], join_type='exact', metadata_conflicts='silent')
    if query_ids is not None:
        labels = [query_ids] if isinstance(query_ids, str) else [str(q) for q in query_ids]
        position = {q: i for i, q in enumerate(labels)}
        qnum = np.array([position[str(q)] for q in merged['query']], dtype=np.int64)
    else:
        qnum = np.asarray(merged['query'], dtype=np.int64)
    order = np.lexsort((np.asarray(merged['rank']), np.asarray(merged['shard']),
                       np.asarray(merged['distance'], dtype=np.float64), qnum))
    merged, qnum = merged[order], qnum[order]
    starts = np.searchsorted(qnum, qnum, side='left')
    rank = np.arange(len(merged)) - starts + 1
    keep = rank <= k
    merged = merged[keep]
    merged['rank'] = rank[keep]
    merged.meta['metric'] = results[0].meta.get('metric')
    return merged
