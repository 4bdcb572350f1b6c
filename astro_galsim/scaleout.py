"""Scaling out: building and querying galaxy databases on a Dask cluster.

`build_distributed` maps the per-galaxy path (`~astro_galsim.pipeline.describe`: prepare, then
encode) over a catalogue on a Dask ``distributed`` cluster -- a `local_cluster`
using every core of this machine by default, or any cluster given by its client. The
catalogue is cut into partitions; each finished partition is written at once as a
Parquet shard, so a build that is interrupted (killed client, lost cluster, a failing
partition) is resumed by running it again: finished partitions are not computed again.
The shards are then merged into the usual `~astro_galsim.database.GalaxyDatabase` FITS
file.

`query_sharded` searches databases kept as several shards (for instance one per
machine) in parallel and merges the k best matches of every shard into the global top k.

Both need the optional dependencies ``dask[distributed]`` and ``pyarrow``
(``pip install astro_galsim[dask]``). See ``docs/scaleout.rst``.
"""
import functools
import hashlib
import json
import math
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
from astropy import log
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.table import vstack
from tqdm.auto import tqdm

from .config import conf
from .shards import SHARD_FORMAT, read_shard, shard_meta, shard_table, write_shard
from .utils._coords import coord_id, sky_coords
from .utils._data import package_data
from .utils._ids import refuse_duplicate_ids
from .utils._images import image_id, image_positions

__all__ = ['build_distributed', 'query_sharded', 'local_cluster', 'BuildIncomplete', 'read_shard', 'SHARD_FORMAT',
           'WORKER_ENVIRON', 'encoder_factory', 'partition_size_for']


# Per worker process: encoders by factory key, shard databases by (path, mtime, size).
# A worker loads each encoder once, however many partitions it computes.
_ENCODERS = {}
_ENCODER_LOADS = []
_SHARD_DATABASES = {}


class BuildIncomplete(RuntimeError):
    """A distributed build stopped before every partition was done.

    The finished partitions are saved as shards; running the same build again computes
    only the others.

    Attributes
    ----------
    done, total : int
        Partitions saved, partitions in the build.
    shard_dir : `~pathlib.Path`
        Where the shards are.
    """

    def __init__(self, message, *, done, total, shard_dir):
        super().__init__(message)
        self.done, self.total, self.shard_dir = done, total, shard_dir


# ---------------------------------------------------------------------------- cluster
#: Environment given to the worker processes `local_cluster` starts. Dask sets
#: ``MALLOC_TRIM_THRESHOLD_``, which also freezes glibc's mmap threshold at 128 kB: every
#: image-sized array is then a fresh mmap whose pages fault in, and the per-galaxy path
#: costs 30 per cent more CPU. Arrays below 16 MiB come from the heap again with this.
WORKER_ENVIRON = {'MALLOC_MMAP_THRESHOLD_': str(16 * 2**20)}


def local_cluster(n_workers=None, **kwargs):
    """A ``distributed.LocalCluster`` for building databases on this machine.

    One worker process per core (default: the cores this process may use), one thread
    each, with ``WORKER_ENVIRON`` (for a cluster of your own, set the same variables in the
    Dask configuration ``distributed.nanny.pre-spawn-environ``).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes.
    **kwargs
        Further keywords of ``distributed.LocalCluster`` (for example ``dashboard_address``).

    Examples
    --------
    >>> from distributed import Client
    >>> from astro_galsim.scaleout import local_cluster
    >>> with local_cluster(2, dashboard_address=None) as cluster, Client(cluster) as client:  # doctest: +SKIP
    ...     database, report = build_distributed(files, client=client)
    """
    _require()
    import dask
    import distributed
    if n_workers is None:
        n_workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    environ = {f'distributed.nanny.pre-spawn-environ.{k}': v for k, v in WORKER_ENVIRON.items()}
    with dask.config.set(environ):
        return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **kwargs)


# ---------------------------------------------------------------------------- helpers
def _require():
    try:
        import distributed  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ImportError('astro_galsim.scaleout needs dask[distributed] and pyarrow: '
                          'pip install "astro_galsim[dask]"') from exc


def _default_weights():
    from .model import PRETRAINED_WEIGHTS
    return package_data(PRETRAINED_WEIGHTS)


def _the_encoder(encoder):
    return encoder


def encoder_factory(encoder=None):
    """A picklable recipe that makes ``encoder`` in another process, and the key it is cached by.

    An encoder loaded from a weights file travels as its path (each worker reads the file
    and checks its checksum); any other `~astro_galsim.model.GalaxyEncoder` travels as
    itself. Each worker process makes the encoder once per key, however many partitions
    it computes.

    Parameters
    ----------
    encoder : `~astro_galsim.model.GalaxyEncoder`, str, `~pathlib.Path` or callable, optional
        The encoder, a weights file, or a picklable callable without arguments that returns
        the encoder. Default: the pretrained encoder of the package.

    Returns
    -------
    factory : callable
        Called without arguments on a worker, it returns the encoder.
    key : str
        ``'<name>:<sha256>'`` of the encoder's identity.
    encoder : `~astro_galsim.model.GalaxyEncoder`
        The encoder, made here (to read its identity, normalisation and metric).

    Examples
    --------
    >>> from astro_galsim.scaleout import encoder_factory
    >>> factory, key, encoder = encoder_factory()
    >>> factory().identity == encoder.identity, key.startswith(encoder.identity['name'])
    (True, True)
    """
    from .model import AutoencoderEncoder, GalaxyEncoder, load_pretrained
    if encoder is None or isinstance(encoder, (str, Path)):
        path = (Path(encoder) if encoder is not None else _default_weights()).resolve()
        encoder = load_pretrained(path)      # checks the weights against their model card
        factory = functools.partial(load_pretrained, str(path))
    elif isinstance(encoder, GalaxyEncoder):
        if isinstance(encoder, AutoencoderEncoder) and encoder.path is not None:
            factory = functools.partial(load_pretrained, str(Path(encoder.path).resolve()))
        else:
            factory = functools.partial(_the_encoder, encoder)
    elif callable(encoder):
        factory, encoder = encoder, encoder()
        if not isinstance(encoder, GalaxyEncoder):
            raise TypeError(f'the encoder factory returned {type(encoder).__name__}, not a GalaxyEncoder')
    else:
        raise TypeError(f'encoder must be a GalaxyEncoder, a weights file or a callable that returns one; '
                        f'got {type(encoder).__name__}')
    return factory, f"{encoder.identity['name']}:{encoder.identity['sha256']}", encoder


def _worker_encoder(factory, key):
    """The encoder of this key, made once per process."""
    encoder = _ENCODERS.get(key)
    if encoder is None:
        encoder = factory()
        made = f"{encoder.identity['name']}:{encoder.identity['sha256']}"
        if made != key:
            raise ValueError(f'the encoder made on this worker is {made[:40]}..., not {key[:40]}... as on the '
                             'client: give every machine the same weights file')
        _ENCODERS[key] = encoder
        _ENCODER_LOADS.append(key)
    return encoder


def partition_size_for(n, workers, *, largest=256):
    """Galaxies per partition so that ``n`` galaxies keep ``workers`` busy in even parts.

    At least two partitions per worker (so a slow partition does not leave the others
    idle), none above ``largest``, all of nearly the same size.

    Examples
    --------
    >>> from astro_galsim.scaleout import partition_size_for
    >>> partition_size_for(300, 2), partition_size_for(10000, 4), partition_size_for(3, 8)
    (75, 250, 1)
    """
    parts = max(1, min(n, max(2 * max(1, int(workers)), math.ceil(n / largest))))
    return math.ceil(n / parts)


def _encoder_loads():
    """Encoder loads in this process (for tests: once per worker)."""
    return list(_ENCODER_LOADS)


def _partition_key(ids, encoder_sha, normalisation, selection, cutout_options):
    """Hash naming a partition: its ids and everything that changes its result."""
    digest = hashlib.sha256()
    settings = {'encoder': encoder_sha, 'normalisation': normalisation, 'selection': selection,
                'cutout_options': cutout_options}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for i in ids:
        digest.update(b'\0' + str(i).encode())
    return digest.hexdigest()[:16]


def _compute_partition(number, items, ids, ra, dec, factory, encoder_key, normalisation,
                       selection, cutout_options, before=None):
    """Prepare and embed one partition; a pure function of its inputs.

    Returns a dict of plain arrays (no images): ``id``, ``accepted``, ``reason``, the
    measurement columns, ``ra``/``dec`` (deg), ``vectors`` (NaN rows where not accepted)
    and ``units``.
    """
    if before is not None:
        before(number)
    from .pipeline import describe
    encoder = _worker_encoder(factory, encoder_key)
    coords = sky_coords(ra, dec)
    if isinstance(items, SkyCoord):
        from .retrieval import get_cutouts
        images = get_cutouts(items, **cutout_options)   # failed downloads stay as errors: rejected rows
        targets = items
    else:
        images = list(items)
        targets = coords if any(isinstance(im, NDData) and im.wcs is not None for im in images) else None
    found_vectors, table = describe(images, encoder, targets, normalisation=normalisation, selection=selection,
                                    progress=False)
    out = {'id': np.array(ids, dtype=str), 'units': {}}
    for name in table.colnames:
        col = table[name]
        out[name] = np.asarray(getattr(col, 'value', col))
        if isinstance(col, u.Quantity):
            out['units'][name] = col.unit.to_string()
    out['reason'] = out['reason'].astype(str)
    out['accepted'] = out['accepted'].astype(bool)
    out['ra'], out['dec'] = coords.ra.deg, coords.dec.deg
    out['vectors'] = np.where(out['accepted'][:, None], found_vectors, np.float32(np.nan))
    out['columns'] = [name for name in table.colnames]
    return out


# ---------------------------------------------------------------------------- build
def _default_ids_coords(items, ids, coords):
    if isinstance(items, SkyCoord):
        items = items.reshape((1,)) if items.isscalar else items
        coords = items if coords is None else coords
        if ids is None:
            ids = [coord_id(c) for c in items]
        return items, [str(i) for i in ids], coords.icrs
    if isinstance(items, (NDData, str, Path)):
        items = [items]
    items = list(items)
    for item in items:
        if not isinstance(item, (NDData, str, Path)):
            raise TypeError(f'cannot build from {type(item).__name__}: give image file paths, NDData '
                            'or an array SkyCoord of positions')
    if ids is None:
        ids = [image_id(item, i) for i, item in enumerate(items)]
    coords = image_positions(items, coords)   # unknown positions from the images' WCS
    # absolute paths: a worker may run in another directory
    items = [os.path.abspath(i) if isinstance(i, (str, Path)) else i for i in items]
    return items, [str(i) for i in ids], coords.icrs


def build_distributed(items, ids=None, coords=None, output=None, *, client=None, partition_size=None,
                      encoder_path=None, normalisation=None, selection=None, cutout_options=None,
                      shard_dir=None, provenance=None, retries=2, progress=None, before_partition=None,
                      stop_when=None, encoder=None, existing_ids=()):
    """Describe a catalogue of galaxies on a Dask cluster and save the database.

    The catalogue is cut into partitions of ``partition_size`` galaxies. Each partition is
    one task: a worker prepares and describes its galaxies (`~astro_galsim.pipeline.describe`;
    positions are first fetched with `~astro_galsim.retrieval.get_cutouts`) with the
    encoder, which every worker process loads once. Only vectors,
    measurements and selection reasons travel back, never images. Each finished partition
    is written at once as a Parquet shard in ``shard_dir``, named by partition number and
    a hash of its ids, the encoder checksum and the settings; shards already there are
    not computed again, so an interrupted build is resumed by running it again. At the
    end the shards are merged, in catalogue order, into a
    `~astro_galsim.database.GalaxyDatabase` saved to ``output``.

    Parameters
    ----------
    items : list of str, `~pathlib.Path` or `~astropy.nddata.NDData`, or `~astropy.coordinates.SkyCoord`
        Image files (FITS, JPEG, PNG; they must be readable at the same path on every
        worker), images, or sky positions to fetch from SDSS on the workers.
    ids : sequence of str, optional
        One id per galaxy (default: file name, NDData ``objid``/``path`` meta, or the
        position).
    coords : `~astropy.coordinates.SkyCoord`, optional
        Positions of the galaxies when the images do not say (NaN where unknown).
    output : str or `~pathlib.Path`, optional
        Database FITS file to write (replaced if it exists). None: only return it.
    client : ``distributed.Client``, optional
        Cluster to use. Default: a `local_cluster` (one single-threaded worker process per
        core of this machine), closed at the end.
    partition_size : int, optional
        Galaxies per task and per shard: the unit of work redone after an interruption.
        Default: sized to the cluster (`partition_size_for`: at least two even partitions
        per worker, at most 256 galaxies each). Give it to resume a build on a cluster of
        another size, since the shards are named by their galaxies.
    encoder_path : str or `~pathlib.Path`, optional
        Encoder weights (with their ``.json`` model card beside them); default: the
        pretrained encoder of the package. Every worker must see the same file.
    encoder : `~astro_galsim.model.GalaxyEncoder` or callable, optional
        Any encoder instead (or a picklable callable that returns one): see
        `encoder_factory`. Each worker makes it once.
    existing_ids : sequence of str, optional
        Ids of the database these galaxies will join: they are refused (``'id already in
        the database'``), as `~astro_galsim.SimilaritySearch.add` refuses them.
    normalisation : dict, optional
        Default: the encoder's (from its model card).
    selection : dict, optional
        Acceptance criteria (`~astro_galsim.segmentation.select_galaxy` keywords).
    cutout_options : dict, optional
        Keywords of `~astro_galsim.retrieval.get_cutouts` for position items.
    shard_dir : str or `~pathlib.Path`, optional
        Folder of the shards. Default: ``<output>.shards`` beside ``output`` (a fresh
        temporary folder, removed at the end, if ``output`` is None).
    provenance : dict, optional
        Added to the database provenance.
    retries : int, optional
        Times a failing partition task is tried again (a worker that dies is handled by
        the scheduler, which reschedules its tasks).
    progress : bool, optional
        Progress bar (default ``conf.show_progress``).
    before_partition : callable, optional
        ``before_partition(number)`` is called on the worker before each attempt at a
        partition (it must be picklable): to record which partitions run, or to inject a
        fault (raise, or end the worker process) when testing a cluster.
    stop_when : callable, optional
        ``stop_when(saved)`` is called here after each shard is saved, with the number of
        shards saved in this run; when it returns True the build stops (pending partitions
        are cancelled) and raises `BuildIncomplete`, as an interrupted build would: for a
        budget of time or work per run.

    Returns
    -------
    database : `~astro_galsim.database.GalaxyDatabase`
        The accepted galaxies, in catalogue order.
    report : `~astropy.table.QTable`
        Every galaxy: ``id``, ``accepted``, ``reason``, measurements, ``coord``. Its
        ``meta`` counts ``partitions``, ``partitions_computed`` and ``partitions_reused``.

    Raises
    ------
    BuildIncomplete
        If partitions still fail after their retries. The others are saved; run the
        build again to compute only the missing ones.
    ImportError
        Without dask[distributed] and pyarrow.

    Examples
    --------
    >>> from astro_galsim.scaleout import build_distributed
    >>> database, report = build_distributed(['a.jpg', 'b.jpg'], output='db.fits')  # doctest: +SKIP
    """
    _require()
    import distributed
    from .database import GalaxyDatabase

    items, ids, coords = _default_ids_coords(items, ids, coords)
    n = len(ids)
    if len(items) != n or len(coords) != n:
        raise ValueError(f'items ({len(items)}), ids ({n}) and coords ({len(coords)}) must have '
                         'one entry per galaxy')
    if n == 0:
        raise ValueError('nothing to build: items is empty')
    if partition_size is not None and int(partition_size) < 1:
        raise ValueError(f'partition_size must be a positive integer; got {partition_size}')
    bad = [i for i in ids if not i or i.strip() != i or not i.isascii()]
    if bad:
        raise ValueError(f'ids must be non-empty ASCII text without surrounding white space (FITS stores '
                         f'them); bad ids: {bad[:5]}')
    if partition_size is None:
        workers = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
        partition_size = partition_size_for(n, workers)
    partition_size = int(partition_size)
    if encoder is not None and encoder_path is not None:
        raise ValueError('give encoder or encoder_path, not both')
    factory, encoder_key, encoder = encoder_factory(encoder if encoder is not None else encoder_path)
    normalisation = dict(encoder.normalisation if normalisation is None else normalisation)
    selection = dict(selection or {})
    cutout_options = dict(cutout_options or {})

    if shard_dir is None and output is None:
        with tempfile.TemporaryDirectory(prefix='astro_galsim_shards_') as shard_dir:
            return build_distributed(items, ids, coords, None, client=client, partition_size=partition_size,
                                     encoder=factory, normalisation=normalisation, selection=selection,
                                     cutout_options=cutout_options, shard_dir=shard_dir, provenance=provenance,
                                     retries=retries, progress=progress, before_partition=before_partition,
                                     stop_when=stop_when, existing_ids=existing_ids)
    shard_dir = Path(str(output) + '.shards' if shard_dir is None else shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)

    ra, dec = coords.ra.deg, coords.dec.deg
    plan = []
    for number, start in enumerate(range(0, n, partition_size)):
        rows = slice(start, min(start + partition_size, n))
        key = _partition_key(ids[rows], encoder.identity['sha256'], normalisation, selection, cutout_options)
        path = shard_dir / f'part-{number:06d}-{key}.parquet'
        plan.append((number, rows, key, path))
    todo = []
    for number, rows, key, path in plan:
        meta = shard_meta(path) if path.exists() else None
        if meta is None or meta.get('key') != key or meta.get('n_rows') != rows.stop - rows.start:
            todo.append((number, rows, key, path))
    reused = len(plan) - len(todo)
    if reused:
        log.info(f'resuming: {reused} of {len(plan)} partitions already in {shard_dir}')

    own_cluster = None
    try:
        if todo:
            if client is None:
                own_cluster = local_cluster()
                client = distributed.Client(own_cluster)
            _run_partitions(client, todo, items, ids, ra, dec, factory, encoder_key, encoder, normalisation,
                            selection, cutout_options, retries, progress, before_partition, stop_when,
                            total=len(plan), shard_dir=shard_dir)
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()

    tables, vectors = [], []
    for number, rows, key, path in plan:
        table, vec, _ = read_shard(path)
        tables.append(table)
        vectors.append(vec)
    report = vstack(tables, join_type='exact', metadata_conflicts='silent') if len(tables) > 1 else tables[0]
    vectors = np.concatenate(vectors)
    # as SimilaritySearch.add: an id already stored is refused, a repeated one kept at its first occurrence
    accepted, reasons = refuse_duplicate_ids(report['id'], report['accepted'], report['reason'],
                                             stored=existing_ids)
    report['accepted'], report['reason'] = accepted, reasons
    stored = report[accepted]
    order = ['id', 'coord'] + [c for c in stored.colnames if c not in ('id', 'coord')]
    provenance = {'normalisation_size': encoder.input_shape[-1], **(provenance or {})}
    database = GalaxyDatabase(vectors[accepted], stored[order], encoder_id=encoder.identity,
                              metric=encoder.metric, provenance=provenance)
    if output is not None:
        database.save(output, overwrite=True)
    report.meta.update(partitions=len(plan), partitions_computed=len(todo), partitions_reused=reused,
                       shard_dir=str(shard_dir))
    return database, report


def _run_partitions(client, todo, items, ids, ra, dec, factory, encoder_key, encoder, normalisation, selection,
                    cutout_options, retries, progress, before_partition, stop_when, *, total, shard_dir):
    import distributed
    futures = {}
    # the recipe travels to each worker once, not inside every task
    factory = client.scatter(factory, broadcast=True, hash=False)
    run = uuid.uuid4().hex[:8]   # a failed task of an earlier run must not be taken for this one
    for number, rows, key, path in todo:
        part_items = items[rows]
        if any(isinstance(item, NDData) for item in part_items):
            # images travel as data, not inside the task graph
            part_items = client.scatter([part_items])[0]
        future = client.submit(_compute_partition, number, part_items, ids[rows], ra[rows], dec[rows],
                               factory, encoder_key, normalisation, selection,
                               cutout_options, before_partition, key=f'astro_galsim-partition-{number}-{key}-{run}',
                               retries=retries, pure=False)
        futures[future] = (number, key, path)
    meta_common = {'encoder_name': encoder.identity['name'], 'encoder_sha256': encoder.identity['sha256'],
                   'normalisation': normalisation, 'selection': selection}
    failures, written = [], 0
    progress = conf.show_progress if progress is None else progress
    bar = tqdm(total=len(todo), disable=not progress, desc='partitions')
    try:
        for future in distributed.as_completed(list(futures)):
            number, key, path = futures[future]
            if future.status != 'finished':
                try:
                    future.result()
                except Exception as exc:  # keep going: the other partitions are still worth saving
                    failures.append((number, exc))
                continue
            result = future.result()
            future.release()
            write_shard(path, shard_table(result, dict(meta_common, partition=number, key=key)))
            written += 1
            bar.update(1)
            if stop_when is not None and stop_when(written):
                break
    finally:
        bar.close()
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
    done = total - len(todo) + written
    if failures or done < total:
        first = failures[0] if failures else None
        why = (f'partition(s) {sorted(n for n, _ in failures)} failed after {retries} retries '
               f'(first error: {type(first[1]).__name__}: {first[1]})' if first else 'the build was stopped')
        raise BuildIncomplete(f'{why}; {done} of {total} partitions are saved in {shard_dir}: run the '
                              'same build again to compute only the missing ones', done=done, total=total,
                              shard_dir=shard_dir)


# ---------------------------------------------------------------------------- query
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
    >>> from astro_galsim.scaleout import query_sharded
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
