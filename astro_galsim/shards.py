"""The Parquet shard format of a distributed build: writing, reading and checking a shard.

A shard holds one partition of `~astro_galsim.scaleout.build_distributed`: one row per
galaxy (accepted or not) with its id, reason, measurements, position and vector, and the
partition's key and settings as JSON metadata. It is data only (no pickle); any Parquet
reader opens it.
"""
import json

import numpy as np
from astropy import units as u
from astropy.table import QTable

from .utils._files import atomic_output
from .utils._coords import sky_coords

__all__ = ['read_shard', 'SHARD_FORMAT']

#: Value of the ``format`` key in the metadata of every shard file.
SHARD_FORMAT = 'astro_galsim-shard-1'
_META_KEY = b'astro_galsim'


def shard_table(result, meta):
    import pyarrow as pa
    columns, fields = [], []
    names = ['id', 'accepted', 'reason'] + [c for c in result['columns'] if c not in ('accepted', 'reason')]
    for name in names + ['ra', 'dec']:
        values = np.asarray(result[name])
        if values.dtype.kind == 'U':
            array = pa.array(values.tolist(), type=pa.string())
        else:
            array = pa.array(values)
        unit = result['units'].get(name, 'deg' if name in ('ra', 'dec') else None)
        field = pa.field(name, array.type, metadata=None if unit is None else {'unit': unit})
        columns.append(array)
        fields.append(field)
    vectors = np.ascontiguousarray(result['vectors'], dtype=np.float32)
    dim = vectors.shape[1]
    flat = pa.array(vectors.ravel(), type=pa.float32())
    columns.append(pa.FixedSizeListArray.from_arrays(flat, dim))
    fields.append(pa.field('vector', pa.list_(pa.float32(), dim)))
    meta = dict(meta, format=SHARD_FORMAT, units={f.name: f.metadata[b'unit'].decode()
                                                  for f in fields if f.metadata},
                columns=names, dim=dim, n_rows=len(result['id']))
    # a Quantity in the selection (min_r50=10 * u.pix) is written as its text, as in the partition key
    schema = pa.schema(fields, metadata={_META_KEY: json.dumps(meta, default=str).encode()})
    return pa.Table.from_arrays(columns, schema=schema)


def write_shard(path, table):
    """Write a shard atomically: a temporary file in the same folder, then a rename."""
    import pyarrow.parquet as pq
    with atomic_output(path, sync=True) as fh:
        pq.write_table(table, fh)


def shard_meta(path):
    """Metadata of a shard file, or None if it is missing or unreadable."""
    import pyarrow.parquet as pq
    try:
        schema = pq.read_schema(path)
        meta = json.loads(schema.metadata[_META_KEY])
    except Exception:  # missing, truncated or foreign file: compute again
        return None
    return meta if meta.get('format') == SHARD_FORMAT else None


def read_shard(path):
    """Read a shard written by `~astro_galsim.scaleout.build_distributed`.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        A ``part-<number>-<hash>.parquet`` file.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per galaxy of the partition, accepted or not: ``id``, ``accepted``,
        ``reason``, the measurements (with their units), ``coord``.
    vectors : `~numpy.ndarray`, shape (n, d), float32
        NaN rows for the galaxies not accepted.
    meta : dict
        Partition number, hash, encoder, settings.
    """
    import pyarrow.parquet as pq
    arrow = pq.read_table(path)
    meta = json.loads(arrow.schema.metadata[_META_KEY])
    if meta.get('format') != SHARD_FORMAT:
        raise ValueError(f'{path} is not an astro_galsim shard (format {meta.get("format")!r})')
    units = meta.get('units', {})
    table = QTable()
    for name in meta['columns']:
        values = arrow.column(name).to_numpy(zero_copy_only=False)
        if values.dtype == object:   # Arrow strings (id, reason, bands) come back as Python objects
            values = np.asarray(values, dtype=str) if len(values) else np.zeros(0, dtype='U1')
        table[name] = values * u.Unit(units[name]) if name in units else values
    table['coord'] = sky_coords(arrow.column('ra').to_numpy(), arrow.column('dec').to_numpy())
    flat = arrow.column('vector').combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(len(table), meta['dim'])
    return table, vectors, meta
