"""Building a database from a folder of images or a catalogue of positions, resumably."""
import re
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
from .io import COLOUR_SUFFIXES, FITS_SUFFIXES, atomic_output, image_stem
from .utils._coords import coord_id, nan_coords, table_coords

__all__ = ['build_database', 'read_source']


def read_source(source):
    """The galaxies of a build source, as ``(items, ids, coords)``.

    Parameters
    ----------
    source : str or `~pathlib.Path`
        A folder of images (FITS/JPEG/PNG; an ``index.csv`` beside them with ``path`` and
        optionally ``objid``, ``ra``, ``dec`` columns names and places them), or a table
        file (ECSV, CSV, FITS, VOTable) with ``ra``/``dec`` columns in degrees and
        optionally ``objid``/``id``, whose positions are fetched from SDSS.
    """
    source = Path(source)
    if source.is_dir():
        index = source / 'index.csv'
        if index.is_file():
            table = Table.read(index, format='ascii.csv')
            if 'path' not in table.colnames:
                raise ValueError(f'{str(index)!r} has no path column (columns: {table.colnames}): a build '
                                 'index lists the image files (path; optionally objid, ra, dec); fix it, '
                                 'or move it away to build from every image in the folder')
            items = [source / p for p in table['path']]
        else:
            items = sorted(p for p in source.rglob('*') if p.name.lower().endswith(FITS_SUFFIXES + COLOUR_SUFFIXES))
            table = Table({'path': [str(p) for p in items]})
        if not items:
            raise ValueError(f'no images (FITS, JPEG, PNG) found in folder {str(source)!r}')
    elif source.is_file():
        table = Table.read(source, format='ascii.csv' if source.suffix.lower() == '.csv' else None)
        items = None
    else:
        raise FileNotFoundError(f'build source {str(source)!r} is neither a folder of images nor a table file')
    names = {n.lower(): n for n in table.colnames}
    if 'ra' in names and 'dec' in names:
        try:
            coords = table_coords(table)
        except ValueError as exc:
            raise ValueError(f'catalogue {str(source)!r}: {exc}') from exc
    elif items is None:
        raise ValueError(f'catalogue {str(source)!r} has no ra/dec columns (columns: {table.colnames})')
    else:
        coords = nan_coords(len(items))
    id_col = names.get('objid') or names.get('id')
    if id_col is not None:
        ids = [str(v) for v in table[id_col]]
    elif items is not None:
        ids = [image_stem(p) for p in items]
    else:
        ids = [coord_id(c) for c in coords]
    if items is None:
        items = coords
    return items, ids, coords


def build_database(source, output, *, chunk_size=500, resume=True, search=None, provenance=None,
                   executor=None, scheduler=None):
    """Describe every galaxy of ``source`` and save the database to ``output``.

    The database is saved (atomically) after every chunk; a build that stops is resumed
    by running it again: galaxies already in ``output`` are skipped.

    Parameters
    ----------
    source : str or `~pathlib.Path`
        See `read_source`.
    output : str or `~pathlib.Path`
        Database FITS file.
    chunk_size : int, optional
        Galaxies per saved step.
    resume : bool, optional
        Continue a partial database at ``output``; False starts again.
    search : `~astro_galsim.SimilaritySearch`, optional
        Where to add the galaxies (default: a new one with the pretrained encoder).
    provenance : dict, optional
        Stored in a new database.
    executor : int, ``distributed.Client`` or str, optional
        Where the galaxies are described, as reproject's ``parallel=``: None, this process
        (with ``conf.workers`` processes); an int, that many local processes; a Dask
        ``distributed.Client``, its cluster (`~astro_galsim.scaleout.build_distributed`,
        with the encoder of ``search`` if given, whatever it is); ``'dask'``, a local Dask
        cluster of one worker process per core; or a scheduler address (``tcp://host:8786``).
        On Dask, partitions of ``chunk_size`` galaxies are saved as shards in
        ``<output>.shards`` and reused on a restart.
    scheduler : str, optional
        Deprecated name of ``executor`` for a scheduler address, or ``'local'`` (``'dask'``).

    Returns
    -------
    search : `~astro_galsim.SimilaritySearch`
    report : `~astropy.table.Table`
        One row per galaxy processed in this run: id, accepted, reason.
    """
    from .search import SimilaritySearch
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f'chunk_size must be a whole number of galaxies of at least 1; got {chunk_size!r}')
    output = Path(output)
    if scheduler is not None:
        warnings.warn('build_database(scheduler=...) is deprecated: use executor=', AstropyDeprecationWarning)
        executor = 'dask' if scheduler == 'local' else scheduler
    if isinstance(executor, bool) or (isinstance(executor, (int, np.integer)) and executor < 1):
        raise ValueError(f'executor must be None, a number of processes (at least 1), a Dask Client, '
                         f"'dask' or a scheduler address; got {executor!r}")
    items, ids, coords = read_source(source)
    if executor is not None and not isinstance(executor, (int, np.integer)):
        search, report = _build_on_dask(items, ids, coords, output, executor, chunk_size, resume, provenance,
                                        search)
        _summarise(report, output, len(search))
        return search, report
    if executor is not None:
        with conf.set_temp('workers', int(executor)):
            return build_database(source, output, chunk_size=chunk_size, resume=resume, search=search,
                                  provenance=provenance)
    if search is None:
        if resume and output.exists():
            search = SimilaritySearch.load(output)
            log.info(f'resuming: {len(search)} galaxies already in {output}')
        else:
            search = SimilaritySearch(provenance=provenance)
    todo = np.flatnonzero(~np.isin(np.array(ids), search.ids))
    reports = []
    bar = tqdm(total=len(todo), disable=not conf.show_progress, desc='building')
    for start in range(0, len(todo), chunk_size):
        rows = todo[start:start + chunk_size]
        chunk = items[rows] if isinstance(items, SkyCoord) else [items[i] for i in rows]
        with conf.set_temp('show_progress', False):   # one bar, the build's, not one per chunk beside it
            report = search.add(chunk, ids=[ids[i] for i in rows],
                                coords=None if isinstance(items, SkyCoord) else coords[rows])
        reports.append(Table(report[['id', 'accepted', 'reason']]))
        search.save(output, overwrite=True)
        bar.update(len(rows))
    bar.close()
    from astropy.table import vstack
    report = vstack(reports) if reports else Table({'id': [], 'accepted': [], 'reason': []})
    _summarise(report, output, len(search))
    return search, report


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


def _build_on_dask(items, ids, coords, output, executor, chunk_size, resume, provenance, search):
    import shutil
    from .scaleout import build_distributed
    from .search import SimilaritySearch
    if not resume:
        shutil.rmtree(str(output) + '.shards', ignore_errors=True)
    client, own = (None, False) if executor == 'dask' else (executor, False)
    if isinstance(executor, str) and executor != 'dask':
        from distributed import Client
        client, own = Client(executor), True
    options = {} if search is None else dict(encoder=search.encoder, selection=search.selection,
                                             cutout_options=search.cutout_options, existing_ids=search.ids)
    try:
        database, report = build_distributed(items, ids, coords, output, client=client,
                                             partition_size=chunk_size, provenance=provenance, **options)
    finally:
        if own:
            client.close()
    if search is None:
        search = SimilaritySearch(database=database)
    elif len(database):
        search.database.add(database.vectors, database.table)
    return search, Table(report[['id', 'accepted', 'reason']])
