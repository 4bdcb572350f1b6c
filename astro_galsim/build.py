"""Building a database from a folder of images or a catalogue of positions, resumably."""
import re
import shutil
import warnings
from io import StringIO
from pathlib import Path

import numpy as np
from astropy import log
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.utils.exceptions import AstropyDeprecationWarning
from tqdm.auto import tqdm

from .config import conf
from .ingest import folder_images
from .partitions import describe_partition, plan_partitions, read_partitions, save_partition
from .search import SimilaritySearch
from .utils._checks import positive_integer
from .utils._coords import coord_id, table_coords
from .utils._files import atomic_output

__all__ = ['build_database', 'read_source', 'source_columns', 'add_on_cluster']


def read_source(source):
    """The galaxies of a build source, as ``(items, ids, coords)``.

    Parameters
    ----------
    source : str or `~pathlib.Path`
        A folder of images (FITS/JPEG/PNG; an ``index.csv`` beside them with ``path`` and
        optionally ``objid``, ``ra``, ``dec`` columns names and places them; read by
        `~astro_galsim.ingest.folder_images`), or a table
        file (ECSV, CSV, FITS, VOTable) with ``ra``/``dec`` columns in degrees and
        optionally ``objid``/``id``, whose positions are fetched from SDSS.
    """
    source = Path(source)
    if source.is_dir():
        return folder_images(source)
    if not source.is_file():
        raise FileNotFoundError(f'build source {str(source)!r} is neither a folder of images nor a table file')
    table = Table.read(source, format='ascii.csv' if source.suffix.lower() == '.csv' else None)
    names = {n.lower(): n for n in table.colnames}
    if 'ra' not in names or 'dec' not in names:
        raise ValueError(f'catalogue {str(source)!r} has no ra/dec columns (columns: {table.colnames})')
    try:
        coords = table_coords(table)
    except ValueError as exc:
        raise ValueError(f'catalogue {str(source)!r}: {exc}') from exc
    id_col = names.get('objid') or names.get('id')
    ids = [str(v) for v in table[id_col]] if id_col is not None else [coord_id(c) for c in coords]
    return coords, ids, coords


def source_columns(source):
    """The columns of a build source's ``index.csv`` or catalogue that the database keeps, by id.

    Every column but those that name or place the galaxies (``path``, ``objid``/``id``,
    ``ra``/``dec``), as `read_source` reads them; None for a folder without an index.

    Returns
    -------
    columns : `~astropy.table.Table` or None
        ``id`` (as `read_source` gives it) then the kept columns.
    """
    source = Path(source)
    path = source / 'index.csv' if source.is_dir() else source
    if not path.is_file():
        return None
    table = Table.read(path, format='ascii.csv' if path.suffix.lower() == '.csv' else None)
    _, ids, _ = read_source(source)
    skip = {'path', 'objid', 'id', 'ra', 'dec'}
    kept = [c for c in table.colnames if c.lower() not in skip and not isinstance(table[c], SkyCoord)
            and getattr(table[c], 'ndim', 1) == 1]
    if not kept:
        return None
    columns = Table(table[kept], copy=True)
    columns.meta.clear()
    columns.add_column(np.asarray(ids, dtype=str), name='id', index=0)
    return columns


def _attach_columns(search, columns):
    """Add the source's own columns to the stored galaxies, by id.

    A galaxy not in the source keeps the value a column already has, else a blank (NaN, '').
    A column named like one the database makes (a measurement, ``accepted``...) is stored as
    ``catalogue_<name>``.
    """
    from .segmentation import MEASUREMENT_COLUMNS
    if columns is None or not len(search):
        return
    table = search.database.table
    made = {n.lower() for n in MEASUREMENT_COLUMNS} | {'coord', 'accepted', 'reason', 'found', 'bands'} | {
        n.lower() for n in table.colnames if n.endswith('_arcsec')}
    rows = search.database.lookup_ids([str(i) for i in columns['id']])
    found = rows >= 0
    for name in columns.colnames[1:]:
        out = f'catalogue_{name}' if name.lower() in made else name
        values = columns[name]
        mask = np.asarray(getattr(values, 'mask', np.zeros(len(values), bool)), dtype=bool) | ~found
        data = np.asarray(getattr(values, 'data', values))
        complete = not mask.any() and found.sum() == len(table) and out not in table.colnames
        if data.dtype.kind in 'biu' and complete:
            full = np.zeros(len(table), dtype=data.dtype)
        elif data.dtype.kind in 'biuf':
            full = np.full(len(table), np.nan)
            data = data.astype(float)
        else:
            full, data = np.full(len(table), '', dtype=object), data.astype(str)
        if out in table.colnames:   # an earlier build's values, for the galaxies not in this source
            full = np.asarray(table[out]).astype(full.dtype)
        full[rows[~mask]] = data[~mask]
        table[out] = full.astype(str) if full.dtype == object else full
        if getattr(values, 'unit', None) is not None:
            table[out].unit = values.unit


def build_database(source, output, *, partition_size=500, resume=True, search=None, provenance=None,
                   executor=None, scheduler=None, chunk_size=None):
    """Describe every galaxy of ``source`` and save the database to ``output``.

    The catalogue is cut into partitions of ``partition_size`` galaxies, each described by the
    describe stage (`~astro_galsim.ingest.describe_items`) wherever it runs. Each finished
    partition is saved at once as a Parquet shard in ``<output>.shards``
    (`~astro_galsim.partitions`); the database file is written (atomically) once, from the
    shards, when the build ends or stops, so a build writes bytes in proportion to its
    catalogue. A build that stops is resumed by running it again: the partitions saved as
    shards are read back, not computed again, whichever executor saved them.

    Parameters
    ----------
    source : str or `~pathlib.Path`
        See `read_source`.
    output : str or `~pathlib.Path`
        Database FITS file.
    partition_size : int, optional
        Galaxies per partition: the unit of work, per saved shard and per task.
    resume : bool, optional
        Reuse the shards of an earlier run of the same build; False removes them and starts
        again.
    search : `~astro_galsim.SimilaritySearch`, optional
        Where to add the galaxies (default: a new one with the pretrained encoder); its
        encoder, selection and cutout options describe them. Ids it holds already are refused.
    provenance : dict, optional
        Stored in a new database.
    executor : int, ``distributed.Client`` or str, optional
        Where the galaxies are described, as reproject's ``parallel=``: None, this process
        (with ``conf.workers`` processes); an int, that many local processes; a Dask
        ``distributed.Client``, its cluster (`~astro_galsim.scaleout.build_distributed`,
        with the encoder of ``search`` if given, whatever it is); ``'dask'``, a local Dask
        cluster of one worker process per core; or a scheduler address (``tcp://host:8786``).
    scheduler : str, optional
        Deprecated name of ``executor`` for a scheduler address, or ``'local'`` (``'dask'``).
    chunk_size : int, optional
        Deprecated name of ``partition_size``.

    Returns
    -------
    search : `~astro_galsim.SimilaritySearch`
    report : `~astropy.table.Table`
        One row per galaxy: id, accepted, reason (here, the galaxies described in this run;
        on Dask, every galaxy).
    """
    if chunk_size is not None:
        warnings.warn('build_database(chunk_size=...) is deprecated: use partition_size=', AstropyDeprecationWarning)
        partition_size = chunk_size
    partition_size = positive_integer(partition_size, 'partition_size')
    output = Path(output)
    if scheduler is not None:
        warnings.warn('build_database(scheduler=...) is deprecated: use executor=', AstropyDeprecationWarning)
        executor = 'dask' if scheduler == 'local' else scheduler
    if isinstance(executor, bool) or (isinstance(executor, (int, np.integer)) and executor < 1):
        raise ValueError(f'executor must be None, a number of processes (at least 1), a Dask Client, '
                         f"'dask' or a scheduler address; got {executor!r}")
    items, ids, coords = read_source(source)
    shard_dir = Path(f'{output}.shards')
    if not resume:
        shutil.rmtree(shard_dir, ignore_errors=True)
    if executor is not None and not isinstance(executor, (int, np.integer)):
        search, report = _build_on_dask(items, ids, coords, output, executor, partition_size, provenance, search)
        columns = source_columns(source)
        if columns is not None:   # the index's or catalogue's own columns, by id
            _attach_columns(search, columns)
            search.save(output, overwrite=True)
        _summarise(report, output, len(search))
        return search, report
    search = SimilaritySearch(provenance=provenance) if search is None else search
    workers = conf.workers if executor is None else int(executor)
    report = _build_here(search, items, ids, coords, output, shard_dir, partition_size, workers=workers,
                         columns=source_columns(source))
    _summarise(report, output, len(search))
    return search, report


def _build_here(search, items, ids, coords, output, shard_dir, partition_size, workers, columns=None):
    """The build in this process: its partitions described as a Dask worker describes them, here.

    Each finished partition is saved at once as its shard (the build's record, O(partition)
    bytes); the database file is written once, from the shards, when the build ends or stops.
    """
    encoder = search.encoder
    normalisation = dict(encoder.normalisation)
    plan = plan_partitions(ids, partition_size, shard_dir, encoder_sha256=encoder.identity['sha256'],
                           normalisation=normalisation, selection=search.selection,
                           cutout_options=search.cutout_options)
    saved = [p.number for p in plan if p.saved]
    if saved:
        log.info(f'resuming: {len(saved)} of {len(plan)} partitions already in {shard_dir}')
    todo = [p for p in plan if not p.saved]
    stored = search.ids   # refused, as repeats in the build are, by the one rule for colliding ids
    shard_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=sum(p.rows.stop - p.rows.start for p in todo), disable=not conf.show_progress,
               desc='building')
    computed = []
    try:
        for partition in todo:
            rows = np.arange(partition.rows.start, partition.rows.stop)
            chunk = items[rows] if isinstance(items, SkyCoord) else [items[i] for i in rows]
            result = describe_partition(chunk, [ids[i] for i in rows], coords[rows], encoder, normalisation,
                                        search.selection, search.cutout_options, workers=workers)
            save_partition(partition, result, encoder, normalisation, search.selection)
            computed.append(partition.number)
            bar.update(len(rows))
    finally:
        bar.close()
        done = [p for p in plan if p.number in saved or p.number in computed]
        if done:   # also when the build stops: the database holds what is described
            report, vectors, rows = read_partitions(done, stored=stored)
            search.database.add(vectors, rows)
            _attach_columns(search, columns)   # the index's or catalogue's own columns, by id
        if done or not todo:
            search.save(output, overwrite=True)
    if not done:
        return Table({'id': [], 'accepted': [], 'reason': []})
    sizes = [p.rows.stop - p.rows.start for p in done]
    now = np.repeat([p.number in computed for p in done], sizes)
    report = Table(report[now][['id', 'accepted', 'reason']])
    report.meta.update(partitions=len(plan), partitions_computed=len(computed), partitions_reused=len(saved),
                       shard_dir=str(shard_dir))
    return report


def _summarise(report, output, total):
    """Print what a build did and write the reasons of its rejections beside the database."""
    accepted = np.asarray(report['accepted'], bool)
    print(f'{output}: {total} galaxies ({int(accepted.sum())} added now, {int((~accepted).sum())} rejected)')
    path = Path(f'{output}.rejected.ecsv')
    if accepted.all():
        path.unlink(missing_ok=True)  # the reasons of an earlier run no longer hold
        return
    rejected = Table(report[~accepted][['id', 'reason']])
    text = StringIO()
    rejected.write(text, format='ascii.ecsv')
    with atomic_output(path) as handle:
        handle.write(text.getvalue().encode())
    # the kinds of reason (the first test that failed, without its values), most frequent first
    kinds = [re.sub(r'[-+]?\d[\d.]*', 'N', str(r).split(';')[0]) for r in rejected['reason']]
    names, counts = np.unique(kinds, return_counts=True)
    for i in np.argsort(-counts, kind='stable')[:5]:
        print(f'  {counts[i]} rejected: {names[i]}')
    print(f'  reasons for each rejected galaxy: {path}')


def _build_on_dask(items, ids, coords, output, executor, partition_size, provenance, search):
    from .scaleout import build_distributed
    client, own = (None, False) if executor == 'dask' else (executor, False)
    if isinstance(executor, str) and executor != 'dask':
        from distributed import Client
        client, own = Client(executor), True
    options = {} if search is None else dict(encoder=search.encoder, selection=search.selection,
                                             cutout_options=search.cutout_options, existing_ids=search.ids)
    try:
        database, report = build_distributed(items, ids, coords, output, client=client,
                                             partition_size=partition_size, provenance=provenance, **options)
    finally:
        if own:
            client.close()
    if search is None:
        search = SimilaritySearch(database=database)
    elif len(database):
        search.database.add(database.vectors, database.table)
    return search, Table(report[['id', 'accepted', 'reason']])


def add_on_cluster(search, items, ids=None, coords=None, *, client):
    """Describe galaxies on a Dask cluster and add them to ``search``: what ``SimilaritySearch.add(client=)`` did.

    Parameters
    ----------
    search : `~astro_galsim.SimilaritySearch`
        Its encoder, selection and cutout options describe the galaxies; ids it holds are refused.
    items, ids, coords
        As for `~astro_galsim.scaleout.build_distributed`.
    client : ``distributed.Client``

    Returns
    -------
    report : `~astropy.table.QTable`
        One row per galaxy, as `~astro_galsim.scaleout.build_distributed` gives it.
    """
    from .scaleout import build_distributed
    built, report = build_distributed(items, ids, coords, client=client, encoder=search.encoder,
                                      normalisation=search.encoder.normalisation, selection=search.selection,
                                      cutout_options=search.cutout_options, existing_ids=search.ids)
    if len(built):
        search.database.add(built.vectors, built.table)
    return report
