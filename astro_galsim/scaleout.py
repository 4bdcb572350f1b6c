"""Scaling out: building galaxy databases on a Dask cluster.

`build_distributed` maps the per-galaxy path (`~astro_galsim.pipeline.describe`: prepare, then
encode) over a catalogue on a Dask ``distributed`` cluster -- a `local_cluster`
using every core of this machine by default, or any cluster given by its client. The
catalogue is cut into partitions (`~astro_galsim.partitions`); each finished partition is
written at once as a Parquet shard, so a build that is interrupted (killed client, lost
cluster, a failing partition) is resumed by running it again: finished partitions are not
computed again. The shards are then merged into the usual
`~astro_galsim.database.GalaxyDatabase` FITS file.

`~astro_galsim.sharded_search.query_sharded` searches databases kept as several shards in
parallel.

Both need the optional dependencies ``dask[distributed]`` and ``pyarrow``
(``pip install astro_galsim[dask]``). See ``docs/scaleout.rst``.
"""
import os
import tempfile
import uuid
from pathlib import Path

from astropy import log
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from tqdm.auto import tqdm

from . import partitions
from .config import conf
from .ingest import interpret_items
from .partitions import compute_partition, plan_partitions, read_partitions, save_partition
from .utils._checks import positive_integer
from .utils._coords import coord_id

__all__ = ['build_distributed', 'local_cluster', 'BuildIncomplete', 'WORKER_ENVIRON']

# names this module used to give beside its own: where they live
_MOVED = {'query_sharded': 'sharded_search', 'read_shard': 'shards', 'SHARD_FORMAT': 'shards',
          'encoder_factory': 'partitions', 'partition_size_for': 'partitions'}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings
        from astropy.utils.exceptions import AstropyDeprecationWarning
        home = _MOVED[name]
        warnings.warn(f'astro_galsim.scaleout.{name} is deprecated: import it from astro_galsim.{home}',
                      AstropyDeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f'astro_galsim.{home}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


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


# ---------------------------------------------------------------------------- build
def _catalogue(items, ids, coords):
    """The galaxies of a build as the describe stage reads them, with the ids and positions of its plan."""
    items, ids, coords, _ = interpret_items(items, ids, coords)
    if isinstance(items, SkyCoord):
        # the plan names partitions by their ids before anything is fetched: positions name themselves
        return items, ids if ids is not None else [coord_id(c) for c in items], coords
    # absolute paths: a worker may run in another directory
    return [os.path.abspath(i) if isinstance(i, (str, Path)) else i for i in items], ids, coords


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
        Default: sized to the cluster (`~astro_galsim.partitions.partition_size_for`: at least two even partitions
        per worker, at most 256 galaxies each). Give it to resume a build on a cluster of
        another size, since the shards are named by their galaxies.
    encoder_path : str or `~pathlib.Path`, optional
        Encoder weights (with their ``.json`` model card beside them); default: the
        pretrained encoder of the package. Every worker must see the same file.
    encoder : `~astro_galsim.model.GalaxyEncoder` or callable, optional
        Any encoder instead (or a picklable callable that returns one): see
        `~astro_galsim.partitions.encoder_factory`. Each worker makes it once.
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

    items, ids, coords = _catalogue(items, ids, coords)
    n = len(ids)
    if n == 0:
        raise ValueError('nothing to build: items is empty')
    if partition_size is not None:
        partition_size = positive_integer(partition_size, 'partition_size')
    if partition_size is None:
        workers = sum(client.nthreads().values()) if client is not None else (os.cpu_count() or 1)
        partition_size = partitions.partition_size_for(n, workers)
    partition_size = int(partition_size)
    if encoder is not None and encoder_path is not None:
        raise ValueError('give encoder or encoder_path, not both')
    factory, encoder_key, encoder = partitions.encoder_factory(encoder if encoder is not None else encoder_path)
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
    plan = plan_partitions(ids, partition_size, shard_dir, encoder_sha256=encoder.identity['sha256'],
                           normalisation=normalisation, selection=selection, cutout_options=cutout_options)
    todo = [p for p in plan if not p.saved]
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

    # as SimilaritySearch.add: an id already stored is refused, a repeated one kept at its first occurrence
    report, vectors, rows = read_partitions(plan, stored=existing_ids)
    provenance = {'normalisation_size': encoder.input_shape[-1], **(provenance or {})}
    database = GalaxyDatabase(vectors, rows, encoder_id=encoder.identity, metric=encoder.metric,
                              provenance=provenance)
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

    def submit(partition, attempt=0):
        number, rows, key = partition.number, partition.rows, partition.key
        part_items = items[rows]
        if any(isinstance(item, NDData) for item in part_items):
            # images travel as data, not inside the task graph
            part_items = client.scatter([part_items])[0]
        future = client.submit(compute_partition, number, part_items, ids[rows], ra[rows], dec[rows],
                               factory, encoder_key, normalisation, selection, cutout_options, before_partition,
                               key=f'astro_galsim-partition-{number}-{key}-{run}-{attempt}',
                               retries=retries, pure=False)
        futures[future] = partition, attempt
        return future

    for partition in todo:
        submit(partition)
    failures, written = [], 0
    progress = conf.show_progress if progress is None else progress
    bar = tqdm(total=len(todo), disable=not progress, desc='partitions')
    try:
        completed = distributed.as_completed(list(futures))
        for future in completed:
            partition, attempt = futures[future]
            try:
                result = future.result()
            except distributed.client.FutureCancelledError as exc:
                # finished, but its worker died before the result was fetched: compute it again
                if attempt < retries:
                    completed.add(submit(partition, attempt + 1))
                else:
                    failures.append((partition.number, exc))
                continue
            except Exception as exc:  # keep going: the other partitions are still worth saving
                failures.append((partition.number, exc))
                continue
            future.release()
            save_partition(partition, result, encoder, normalisation, selection)
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
