"""The partitions of a build: how a catalogue is cut, and how a stopped build resumes.

Every build (`~astro_galsim.build.build_database` here or on Dask,
`~astro_galsim.scaleout.build_distributed`, ``SimilaritySearch.add(client=)``) cuts its
catalogue into partitions of consecutive galaxies and keeps one resume scheme:

* each partition is named by a key, a hash of its ids and of everything that changes its
  result (encoder checksum, normalisation, selection, cutout options);
* a finished partition is saved at once as a Parquet shard (`~astro_galsim.shards`) named by
  its number and key;
* a build run again reads the shards whose key still holds and computes only the others
  (`plan_partitions`), wherever it runs: a build stopped here can be finished on a cluster
  and the other way round.

The work of one partition on a worker (`compute_partition`) makes its encoder once per
process from a picklable recipe (`encoder_factory`).
"""
import functools
import hashlib
import json
import math
from collections import namedtuple
from pathlib import Path

import numpy as np
from astropy import units as u

from .ingest import describe_items
from .shards import read_shard, shard_meta, shard_table, write_shard
from .utils._checks import positive_integer
from .utils._coords import sky_coords
from .utils._data import package_data
from .utils._encoders import cached_encoder, encoder_loads as cached_encoder_loads
from .utils._ids import refuse_duplicate_ids

__all__ = ['Partition', 'plan_partitions', 'partition_size_for', 'save_partition', 'read_partitions',
           'encoder_factory', 'encoder_loads', 'compute_partition', 'describe_partition', 'partition_result']

# ---------------------------------------------------------------------------- the plan
Partition = namedtuple('Partition', ['number', 'rows', 'key', 'path', 'saved'])
Partition.__doc__ = """One partition of a build: its ``number``, its ``rows`` (a slice of the catalogue),
its ``key``, the ``path`` of its shard and whether that shard is ``saved`` already."""


def partition_size_for(n, workers, *, largest=256):
    """Galaxies per partition so that ``n`` galaxies keep ``workers`` busy in even parts.

    At least two partitions per worker (so a slow partition does not leave the others
    idle), none above ``largest``, all of nearly the same size.

    Examples
    --------
    >>> from astro_galsim.partitions import partition_size_for
    >>> partition_size_for(300, 2), partition_size_for(10000, 4), partition_size_for(3, 8)
    (75, 250, 1)
    """
    parts = max(1, min(n, max(2 * max(1, int(workers)), math.ceil(n / largest))))
    return math.ceil(n / parts)


def _partition_key(ids, settings):
    """Hash naming a partition: its ids and everything that changes its result."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for i in ids:
        digest.update(b'\0' + str(i).encode())
    return digest.hexdigest()[:16]


def plan_partitions(ids, partition_size, shard_dir, *, encoder_sha256, normalisation, selection,
                    cutout_options):
    """Cut a build into partitions and tell which are saved already: the resume scheme of every build.

    Parameters
    ----------
    ids : sequence of str
        The galaxies of the build, in catalogue order.
    partition_size : int
        Galaxies per partition (the last may hold fewer).
    shard_dir : str or `~pathlib.Path`
        Folder of the shards.
    encoder_sha256 : str
        Checksum of the encoder.
    normalisation, selection, cutout_options : dict
        The settings of the build; with the ids and the encoder they make each partition's key.

    Returns
    -------
    list of `Partition`
        A partition is ``saved`` when its shard exists, is readable and holds its key and its
        number of galaxies; any other shard is computed again.

    Examples
    --------
    >>> from astro_galsim.partitions import plan_partitions
    >>> plan = plan_partitions(['a', 'b', 'c'], 2, 'shards', encoder_sha256='0' * 64,
    ...                        normalisation={}, selection={}, cutout_options={})
    >>> [(p.number, p.rows, p.saved) for p in plan]
    [(0, slice(0, 2, None), False), (1, slice(2, 3, None), False)]
    >>> plan[1].path.name.startswith('part-000001-')
    True
    """
    partition_size = positive_integer(partition_size, 'partition_size')
    settings = {'encoder': encoder_sha256, 'normalisation': normalisation, 'selection': selection,
                'cutout_options': cutout_options}
    shard_dir, n, plan = Path(shard_dir), len(ids), []
    for number, start in enumerate(range(0, n, partition_size)):
        rows = slice(start, min(start + partition_size, n))
        key = _partition_key(ids[rows], settings)
        path = shard_dir / f'part-{number:06d}-{key}.parquet'
        meta = shard_meta(path) if path.exists() else None
        saved = meta is not None and meta.get('key') == key and meta.get('n_rows') == rows.stop - rows.start
        saved = saved and not meta.get('temporary_failures')   # downloads that failed are tried again
        plan.append(Partition(number, rows, key, path, saved))
    return plan


def save_partition(partition, result, encoder, normalisation, selection):
    """Write the result of a partition (`compute_partition`, `partition_result`) as its shard, atomically."""
    from .retrieval.core import is_temporary_failure
    meta = {'encoder_name': encoder.identity['name'], 'encoder_sha256': encoder.identity['sha256'],
            'normalisation': normalisation, 'selection': selection, 'partition': partition.number,
            'key': partition.key,
            'temporary_failures': int(sum(is_temporary_failure(r) for r in result['reason']))}
    write_shard(partition.path, shard_table(result, meta))


def read_partitions(partitions, stored=()):
    """The saved shards of ``partitions`` as one report and the vectors a database stores.

    Parameters
    ----------
    partitions : list of `Partition`
        Saved partitions, in catalogue order.
    stored : sequence of str, optional
        Ids of the database the galaxies join: refused, as repeats in the batch are, by the
        one rule for colliding ids.

    Returns
    -------
    report : `~astropy.table.QTable`
        Every galaxy: ``id``, ``accepted``, ``reason``, measurements, ``coord``.
    vectors : `~numpy.ndarray`
        The vectors of the accepted galaxies.
    rows : `~astropy.table.QTable`
        Their catalogue rows (``id``, ``coord`` first), ready for `GalaxyDatabase.add
        <astro_galsim.database.GalaxyDatabase.add>`.
    """
    from astropy.table import vstack
    tables, vectors = [], []
    for partition in partitions:
        table, vec, _ = read_shard(partition.path)
        tables.append(table)
        vectors.append(vec)
    report = vstack(tables, join_type='exact', metadata_conflicts='silent') if len(tables) > 1 else tables[0]
    accepted, reasons = refuse_duplicate_ids(report['id'], report['accepted'], report['reason'], stored=stored)
    report['accepted'], report['reason'] = accepted, reasons
    kept = report[accepted]
    order = ['id', 'coord'] + [c for c in kept.colnames if c not in ('id', 'coord')]
    return report, np.concatenate(vectors)[accepted], kept[order]


# ---------------------------------------------------------------------------- encoders
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
    >>> from astro_galsim.partitions import encoder_factory
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


def encoder_loads():
    """The keys of the encoders this process has made for partitions, in the order it made them.

    Each is made once per process (the one per-process encoder cache); on a cluster,
    ``client.run(encoder_loads)`` tells which worker made which encoder.

    Examples
    --------
    >>> from astro_galsim.partitions import encoder_loads
    >>> isinstance(encoder_loads(), list)
    True
    """
    return cached_encoder_loads()


# ---------------------------------------------------------------------------- the work
def partition_result(report, vectors, coords):
    """A partition's result as plain arrays (what a shard holds), from a table of its galaxies.

    Parameters
    ----------
    report : `~astropy.table.QTable`
        One row per galaxy: ``accepted``, ``reason`` and the measurements (the table of
        `~astro_galsim.pipeline.describe`, or the report of `SimilaritySearch.add
        <astro_galsim.SimilaritySearch.add>` with its ``id`` column).
    vectors : array-like, shape (n, d)
        Their vectors (any values where not accepted: they are stored as NaN).
    coords : `~astropy.coordinates.SkyCoord`
        Their positions (NaN where unknown).

    Returns
    -------
    dict
        ``accepted``, ``reason``, the measurement columns, ``ra``/``dec`` (deg), ``vectors``,
        ``units`` and ``columns``; ``id`` if the report has one.
    """
    out = {'units': {}}
    for name in report.colnames:
        col = report[name]
        out[name] = np.asarray(getattr(col, 'value', col))
        if isinstance(col, u.Quantity):
            out['units'][name] = col.unit.to_string()
    out['reason'] = out['reason'].astype(str)
    out['accepted'] = out['accepted'].astype(bool)
    out['ra'], out['dec'] = coords.ra.deg, coords.dec.deg
    out['vectors'] = np.where(out['accepted'][:, None], np.asarray(vectors, np.float32), np.float32(np.nan))
    out['columns'] = [name for name in report.colnames if name != 'id']
    return out


def compute_partition(number, items, ids, ra, dec, factory, encoder_key, normalisation, selection,
                      cutout_options, before=None):
    """Prepare and embed one partition; a pure function of its inputs, as a worker runs it.

    Parameters
    ----------
    number : int
        The partition's number (given to ``before``).
    items : list of paths or `~astropy.nddata.NDData`, or `~astropy.coordinates.SkyCoord`
        Its galaxies: images, or positions whose cutouts are fetched with
        `~astro_galsim.retrieval.get_cutouts` (failed downloads become rejected rows).
    ids : sequence of str
        Their ids.
    ra, dec : array-like
        Their positions in degrees (NaN where unknown).
    factory, encoder_key
        From `encoder_factory`: the encoder is made once per process.
    normalisation, selection, cutout_options : dict
        Settings of `~astro_galsim.pipeline.describe` and `~astro_galsim.retrieval.get_cutouts`.
    before : callable, optional
        ``before(number)`` is called first (to record attempts, or inject a fault in a test).

    Returns
    -------
    dict
        Plain arrays, no images (see `partition_result`), with ``id``.
    """
    if before is not None:
        before(number)
    return describe_partition(items, ids, sky_coords(ra, dec), cached_encoder(factory, encoder_key),
                              normalisation, selection, cutout_options)


def describe_partition(items, ids, coords, encoder, normalisation, selection, cutout_options, workers=1):
    """The result of one partition (see `partition_result`), described by the describe stage.

    `~astro_galsim.ingest.describe_items` with the partition's ids and positions: the work of
    `compute_partition` on a worker, and of the serial build here (with ``workers`` processes).
    """
    described = describe_items(items, encoder, ids=ids, coords=coords, normalisation=normalisation,
                               selection=selection, cutout_options=cutout_options, workers=workers, progress=False)
    return partition_result(described.report, described.vectors, described.coords)
