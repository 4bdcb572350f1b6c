"""Galaxy database: latent vectors + catalogue, saved as a self-describing FITS file.

`GalaxyDatabase` keeps, in the same order, the latent vectors of a set of galaxies
(float32, shape (N, d)) and a `~astropy.table.QTable` with one row per galaxy (an
``id`` column, a ``coord`` `~astropy.coordinates.SkyCoord` column and any
measurement columns with units). It answers similarity queries through a
`~astro_galsim.index.NeighbourIndex` and is saved as a FITS file that any FITS tool
(astropy, TOPCAT, fv, DS9) can open; see ``docs/search.rst`` for the format.

Examples
--------
>>> import numpy as np
>>> import astropy.units as u
>>> from astropy.table import QTable
>>> from astro_galsim.database import GalaxyDatabase
>>> rng = np.random.default_rng(0)
>>> table = QTable({'id': [f'gal{i}' for i in range(100)],
...                 'area': rng.uniform(50, 500, 100) * u.pix**2})
>>> db = GalaxyDatabase(rng.normal(size=(100, 8)), table,
...                     encoder_id={'name': 'demo', 'sha256': '0' * 64})
>>> len(db), db.dim
(100, 8)
>>> result = db.search(db.vectors[:1], k=3, query_ids=['gal0'])
>>> list(result.colnames[:4])
['query', 'rank', 'id', 'distance']
>>> 'gal0' in result['id']
False
"""
import functools
import math
import numbers
import os
import re
import warnings

import numpy as np
import astropy.units as u
from astropy.coordinates import Angle, SkyCoord, match_coordinates_sky, search_around_sky
from astropy.io import fits
from astropy.table import Column, MaskedColumn, QTable, Table, vstack

from .index import NeighbourIndex, exact_knn
from .io import atomic_output

__all__ = ['GalaxyDatabase', 'DatabaseError', 'rocchio_query',
           'FORMAT_NAME', 'FORMAT_VERSION']

#: Value of the ``FMTNAME`` keyword that marks an astro_galsim database file.
FORMAT_NAME = 'ASTRO_GALSIM_DB'
#: Version of the file format written by this module (``FMTVERS`` keyword).
FORMAT_VERSION = 1

#: Column names the database manages itself (``ra``/``dec`` become ``coord``).
_RESERVED = ('query', 'rank', 'distance', 'ra', 'dec')
#: Provenance keys mirrored as primary-header keywords: key -> (keyword, comment).
_HEADER_PROVENANCE = {
    'survey': ('SURVEY', 'survey the images come from'),
    'data_release': ('DATAREL', 'data release of the survey'),
    'bands': ('BANDS', 'bands used, comma-separated'),
    'pixel_scale': ('PIXSCALE', '[arcsec] pixel scale of the encoder input'),
}
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


class DatabaseError(Exception):
    """A database file or database content that cannot be used as it is."""


def _version():
    try:
        from ._version import version
    except ImportError:
        version = 'unknown'
    return version


# ---------------------------------------------------------------------------- helpers
def _check_encoder_id(encoder_id):
    if not isinstance(encoder_id, dict) or not {'name', 'sha256'} <= set(encoder_id):
        raise ValueError("encoder_id must be a dict with keys 'name' and 'sha256' (the "
                         f"hex SHA-256 checksum of the encoder weights); got {encoder_id!r}.")
    name, sha = str(encoder_id['name']), str(encoder_id['sha256']).lower()
    if not _SHA256.match(sha):
        raise ValueError("encoder_id['sha256'] must be 64 hexadecimal characters (a SHA-256 "
                         f"digest); got {encoder_id['sha256']!r}.")
    if not name or not name.isascii() or len(name) > 68:
        raise ValueError("encoder_id['name'] must be a non-empty ASCII string of at most 68 "
                         f"characters; got {name!r}.")
    return {'name': name, 'sha256': sha}


def _check_provenance(provenance):
    out = {}
    for key, value in dict(provenance or {}).items():
        if not isinstance(key, str) or not key or not key.isascii():
            raise ValueError(f'provenance keys must be non-empty ASCII strings; got {key!r}.')
        if isinstance(value, u.Quantity):
            if not value.isscalar:
                raise ValueError(f'provenance[{key!r}] must be a scalar Quantity.')
        elif isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) and ',' not in v for v in value):
                raise ValueError(f'provenance[{key!r}]: lists may hold only strings without '
                                 'commas.')
            value = list(value)
        elif isinstance(value, (np.generic,)):
            value = value.item()
        if not isinstance(value, (str, bool, numbers.Integral, numbers.Real, u.Quantity, list)):
            raise ValueError(f'provenance[{key!r}] must be a str, number, bool, scalar Quantity '
                             f'or list of str; got {type(value).__name__}.')
        if isinstance(value, str) and not value.isascii():
            raise ValueError(f'provenance[{key!r}] must be ASCII (FITS stores ASCII text).')
        out[key] = value
    return out


def _coords_from(table, n):
    """Return an ICRS SkyCoord column (NaN where unknown) for ``table``; drop ra/dec."""
    has_radec = 'ra' in table.colnames and 'dec' in table.colnames
    if 'coord' in table.colnames:
        if has_radec:
            raise ValueError("the table has both a 'coord' column and 'ra'/'dec' columns; keep "
                             "only the SkyCoord column 'coord'.")
        coord = table['coord']
        if not isinstance(coord, SkyCoord):
            raise TypeError("the 'coord' column must be a SkyCoord (use NaN for galaxies without "
                            f"a position); got {type(coord).__name__}.")
        return coord.icrs if coord.frame.name != 'icrs' else coord
    if has_radec:
        ra, dec = table['ra'], table['dec']
        ra = ra if isinstance(ra, u.Quantity) else np.asarray(ra, dtype=float) * u.deg
        dec = dec if isinstance(dec, u.Quantity) else np.asarray(dec, dtype=float) * u.deg
        table.remove_columns(['ra', 'dec'])
        return SkyCoord(ra=ra, dec=dec, frame='icrs')
    if 'ra' in table.colnames or 'dec' in table.colnames:
        raise ValueError("the table has only one of 'ra' and 'dec'; give both (degrees) or a "
                         "SkyCoord column 'coord'.")
    return SkyCoord(ra=np.full(n, np.nan) * u.deg, dec=np.full(n, np.nan) * u.deg, frame='icrs')


def _normalise_table(table, n):
    """Validate a catalogue table and return a QTable with id first and coord second."""
    if table is None:
        raise ValueError("a table with an 'id' column must accompany the vectors.")
    if not isinstance(table, Table):
        try:
            table = QTable(table)
        except Exception as exc:
            raise TypeError('table must be an astropy Table/QTable (or convertible to one); '
                            f'got {type(table).__name__}.') from exc
    table = QTable(table, copy=True)
    if len(table) != n:
        raise ValueError(f'the table has {len(table)} rows but there are {n} vectors; they must '
                         'match one to one, in the same order.')
    if 'id' not in table.colnames:
        raise ValueError("the table needs an 'id' column (a unique string per galaxy).")
    table.meta.clear()
    coord = _coords_from(table, n)
    ids = np.asarray(table['id']).astype(str) if n else np.zeros(0, dtype='U1')
    for name in table.colnames:
        if name.lower() in _RESERVED or (name.lower() in ('id', 'coord') and name not in ('id', 'coord')):
            raise ValueError(f'column name {name!r} is reserved by the database (reserved: '
                             f"{', '.join(_RESERVED)}, and id/coord in lower case); rename it.")
        col = table[name]
        if name != 'coord' and getattr(col, 'dtype', None) is not None and col.dtype.kind == 'O':
            raise TypeError(f'column {name!r} has object dtype, which FITS cannot store; convert '
                            'it to numbers, booleans or strings.')
    lowered = [c.lower() for c in table.colnames]
    dupes = {c for c in lowered if lowered.count(c) > 1}
    if dupes:
        raise ValueError(f'column names {sorted(dupes)} differ only in case; FITS column names '
                         'are case-insensitive, rename them.')
    _check_ids(ids)
    for name in table.colnames:
        # FITS stores a dimensionless Quantity as a plain column; hold it that way in memory
        # too, so that a loaded database and new rows stack
        col = table[name]
        if isinstance(col, u.Quantity) and col.unit == u.dimensionless_unscaled:
            table[name] = Column(col.value, name=name)
    table.remove_column('id')
    if 'coord' in table.colnames:
        table.remove_column('coord')
    table.add_column(Column(ids, name='id'), index=0)
    table.add_column(coord, name='coord', index=1)
    return table


def _check_ids(ids):
    if ids.size == 0:
        return
    stripped = np.char.strip(ids)
    if (stripped == '').any():
        raise ValueError(f"empty id at rows {np.flatnonzero(stripped == '')[:10].tolist()}; "
                         'every galaxy needs a non-empty id.')
    if (stripped != ids).any():
        bad = ids[stripped != ids][:5].tolist()
        raise ValueError(f'ids must not start or end with white space (FITS strips it): {bad}.')
    if not all(s.isascii() for s in np.unique(ids)[:100000]):
        raise ValueError('ids must be ASCII text (FITS stores ASCII).')
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f'duplicate ids: {uniq[counts > 1][:10].tolist()}; ids must be unique.')


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
    query = pos.mean(axis=0)
    if negatives is not None:
        neg = np.atleast_2d(np.asarray(negatives, dtype=np.float64))
        if neg.shape[0]:
            if neg.shape[1] != pos.shape[1]:
                raise ValueError(f'negatives have {neg.shape[1]} dimensions, positives '
                                 f'{pos.shape[1]}.')
            query = query + beta * (query - neg.mean(axis=0))
    return query.astype(np.float32)


# ---------------------------------------------------------------------------- class
def _named_errors(load):
    """Any failure to make sense of a file's content is a DatabaseError naming the file."""
    @functools.wraps(load)
    def checked(cls, path, *args, **kwargs):
        try:
            return load(cls, path, *args, **kwargs)
        except (DatabaseError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - crafted content fails in many ways
            raise DatabaseError(f'{os.fspath(path)} is not a valid astro_galsim database '
                                f'({type(exc).__name__}: {exc}); rebuild it or restore a copy.') from exc
    return checked


class GalaxyDatabase:
    """Latent vectors and catalogue of galaxies, searchable and savable to FITS.

    Parameters
    ----------
    vectors : array-like, shape (N, d), optional
        Latent vectors (stored as float32). None for an empty database (give ``dim``).
    table : `~astropy.table.Table` or `~astropy.table.QTable`, optional
        One row per vector, same order, with a unique string ``id`` column. Positions go
        in a `~astropy.coordinates.SkyCoord` column ``coord`` (NaN where unknown) or in
        ``ra``/``dec`` columns (degrees), which are turned into ``coord``. Other columns
        (measurements with units, flags, user columns) are kept and saved.
    encoder_id : dict
        ``{'name': ..., 'sha256': ...}`` identifying the encoder that made the vectors.
    provenance : dict, optional
        Where the images come from, e.g. ``{'survey': 'SDSS', 'data_release': 17,
        'bands': 'gri', 'pixel_scale': 0.396 * u.arcsec}``. Values: str, number, bool,
        scalar Quantity or list of str.
    metric : {'euclidean', 'cosine'}, optional
        Distance used for searching.
    dim : int, optional
        Vector dimension of an empty database.
    index_options : dict, optional
        Keyword arguments for `~astro_galsim.index.NeighbourIndex` (``method``,
        ``exact_threshold``, ``n_neighbors``, ``epsilon``...). The index is built at the
        first query, not when the database is created or loaded.

    Raises
    ------
    ValueError, TypeError
        For mismatched lengths, duplicate or missing ids, bad encoder_id or provenance.
    """

    def __init__(self, vectors=None, table=None, *, encoder_id, provenance=None,
                 metric='euclidean', dim=None, index_options=None):
        self._encoder_id = _check_encoder_id(encoder_id)
        self._provenance = _check_provenance(provenance)
        self._index_options = dict(index_options or {})
        if 'metric' in self._index_options:
            raise ValueError("give the metric as GalaxyDatabase(metric=...), not in index_options.")
        if vectors is None:
            if dim is None:
                raise ValueError('an empty database needs dim (the vector dimension).')
            vectors = np.zeros((0, int(dim)), dtype=np.float32)
            if table is None:
                table = QTable({'id': np.zeros(0, dtype='U1')})
        self._index = NeighbourIndex(vectors, metric=metric, lazy=True, **self._index_options)
        if dim is not None and int(dim) != self._index.dim:
            raise ValueError(f'dim={dim} but the vectors have {self._index.dim} dimensions.')
        self._tables = [_normalise_table(table, len(self._index))]
        self._id_lookup = None

    # ------------------------------------------------------------------ properties
    @property
    def vectors(self):
        """`~numpy.ndarray`: Latent vectors, shape (N, d), float32, read-only."""
        return self._index.vectors

    @property
    def table(self):
        """`~astropy.table.QTable`: One row per galaxy, in the order of `vectors`."""
        if len(self._tables) > 1:
            try:
                self._tables = [vstack(self._tables, join_type='exact', metadata_conflicts='silent')]
            except Exception as exc:  # pragma: no cover - add() checks the columns
                raise DatabaseError(f'cannot join the added tables: {exc}') from exc
        return self._tables[0]

    @property
    def ids(self):
        """`~numpy.ndarray` of str: Galaxy ids, in the order of `vectors`."""
        return np.asarray(self.table['id']).astype(str)

    @property
    def coords(self):
        """`~astropy.coordinates.SkyCoord`: Positions (ICRS; NaN where unknown)."""
        return self.table['coord']

    @property
    def encoder_id(self):
        """dict: ``{'name', 'sha256'}`` of the encoder that produced the vectors."""
        return dict(self._encoder_id)

    @property
    def provenance(self):
        """dict: Where the images come from (survey, data release, bands, pixel scale...)."""
        return dict(self._provenance)

    @property
    def metric(self):
        """str: Distance metric used by `search`."""
        return self._index.metric

    @property
    def dim(self):
        """int: Dimension of the vectors."""
        return self._index.dim

    @property
    def index(self):
        """`~astro_galsim.index.NeighbourIndex`: The search index (built at first query)."""
        return self._index

    def __len__(self):
        return len(self._index)

    def __repr__(self):
        prov = ', '.join(f'{k}={v}' for k, v in self._provenance.items())
        return (f"<GalaxyDatabase: {len(self)} galaxies, d={self.dim}, metric={self.metric!r}, "
                f"encoder={self._encoder_id['name']!r} (sha256 {self._encoder_id['sha256'][:12]}...)"
                f"{', ' + prov if prov else ''}>")

    # ------------------------------------------------------------------ adding
    def add(self, vectors, table):
        """Append galaxies.

        Parameters
        ----------
        vectors : array-like, shape (n, d)
            Their latent vectors (same encoder as the database).
        table : `~astropy.table.Table`
            Their catalogue rows, with the same columns as the database's table (``coord``
            may be absent: positions are then unknown).

        Raises
        ------
        ValueError
            If the ids clash with stored ids, lengths differ or columns differ.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim == 1 and vectors.size == self.dim:
            vectors = vectors[np.newaxis]
        n = vectors.shape[0] if vectors.ndim == 2 else -1
        new = _normalise_table(table, n)
        expected = self._tables[0].colnames
        if len(self) and new.colnames != expected:
            raise ValueError(f'the added table has columns {new.colnames[2:]} but the database '
                             f'has {expected[2:]}; give the same columns in the same order.')
        empty = len(self) == 0
        if not empty:
            clash = np.isin(np.asarray(new['id']).astype(str), self.ids)
            if clash.any():
                raise ValueError(f'ids already in the database: '
                                 f'{np.asarray(new["id"])[clash][:10].tolist()}.')
        self._index.add(vectors)  # validates the vectors first: a refused add changes nothing
        self._tables = [new] if empty else self._tables + [new]
        self._id_lookup = None

    # ------------------------------------------------------------------ lookups
    def lookup_ids(self, ids):
        """Row numbers of galaxies given by id.

        Parameters
        ----------
        ids : str or sequence of str

        Returns
        -------
        int or `~numpy.ndarray` of int
            Row numbers; -1 for ids not in the database.
        """
        if self._id_lookup is None:
            self._id_lookup = {key: i for i, key in enumerate(self.ids)}
        if isinstance(ids, str):
            return self._id_lookup.get(ids, -1)
        return np.array([self._id_lookup.get(str(key), -1) for key in ids], dtype=np.int64)

    def lookup_coords(self, coords, radius=1 * u.arcsec):
        """Row numbers of the stored galaxies nearest to sky positions.

        Parameters
        ----------
        coords : `~astropy.coordinates.SkyCoord`
            Scalar or array of positions.
        radius : `~astropy.units.Quantity`, optional
            Largest separation accepted as the same galaxy.

        Returns
        -------
        int or `~numpy.ndarray` of int
            Row number of the nearest stored galaxy within ``radius``, else -1.
        """
        radius = _angle(radius, 'radius')
        scalar = coords.isscalar
        coords = coords.reshape((1,)) if scalar else coords
        out = np.full(len(coords), -1, dtype=np.int64)
        known = np.flatnonzero(self._known_positions())
        query_ok = np.flatnonzero(np.isfinite(coords.icrs.ra.deg) & np.isfinite(coords.icrs.dec.deg))
        if known.size and query_ok.size:
            catalogue = self.coords[known]
            idx, sep, _ = match_coordinates_sky(coords[query_ok], catalogue)
            good = sep <= radius
            out[query_ok[good]] = known[idx[good]]
        return int(out[0]) if scalar else out

    def _known_positions(self):
        coord = self.coords
        return np.isfinite(coord.ra.deg) & np.isfinite(coord.dec.deg)

    # ------------------------------------------------------------------ filters
    def _where_mask(self, where):
        """Boolean mask of rows passing ``where``."""
        n = len(self)
        if where is None:
            return np.ones(n, dtype=bool)
        table = self.table
        if callable(where):
            mask = np.asarray(where(table))
            if mask.dtype != bool or mask.shape != (n,):
                raise ValueError('where(table) must return a boolean array with one value per '
                                 f'galaxy ({n}); got dtype {mask.dtype}, shape {mask.shape}.')
            return mask
        if not isinstance(where, dict):
            raise TypeError('where must be a callable taking the QTable and returning a boolean '
                            'mask, or a dict {column: (min, max)} or {column: value}.')
        mask = np.ones(n, dtype=bool)
        for name, cond in where.items():
            if name not in table.colnames or name == 'coord':
                raise KeyError(f'where: no column {name!r} to filter on; columns are '
                               f'{table.colnames}.')
            col = table[name]
            values = col if isinstance(col, u.Quantity) else np.asarray(col)
            filled = np.ones(n, dtype=bool)
            if isinstance(col, MaskedColumn) or hasattr(col, 'mask'):
                filled = ~np.asarray(getattr(col, 'mask', np.zeros(n, bool)))
                if isinstance(col, MaskedColumn):
                    values = col.filled(col.fill_value).data
            try:
                if isinstance(cond, tuple):
                    if len(cond) != 2:
                        raise ValueError(f'where[{name!r}] must be (min, max); got {cond!r}.')
                    low, high = cond
                    ok = np.ones(n, dtype=bool)
                    with np.errstate(invalid='ignore'):
                        if low is not None:
                            ok &= np.asarray(values >= low)
                        if high is not None:
                            ok &= np.asarray(values <= high)
                else:
                    ok = np.asarray(values == cond)
            except u.UnitsError as exc:
                raise u.UnitsError(f'where[{name!r}]: the limits must have units compatible with '
                                   f'the column ({getattr(col, "unit", None)}): {exc}') from exc
            mask &= ok & filled
        return mask

    # ------------------------------------------------------------------ search
    def search(self, query_vectors, *, k=10, query_ids=None, query_coords=None,
               exclude_self=True, exclude_radius=None, exclude_ids=None, where=None,
               negative_vectors=None, negative_weight=0.5, metric=None, epsilon=None):
        """Find the stored galaxies most similar to query vectors.

        Parameters
        ----------
        query_vectors : array-like, shape (m, d) or (d,)
            One query per row (for several examples of one kind, combine them first with
            `rocchio_query`).
        k : int, optional
            Results per query. Fewer are returned only if fewer galaxies pass the filter
            and exclusions.
        query_ids : sequence of str, optional
            Ids of the query galaxies: label the results (``query`` column) and, with
            ``exclude_self``, are never returned as their own match.
        query_coords : `~astropy.coordinates.SkyCoord`, optional
            Positions of the queries (one per query, NaN if unknown), for ``exclude_radius``.
        exclude_self : bool, optional
            Drop the stored galaxy with the query's id from its results.
        exclude_radius : `~astropy.units.Quantity` or `~astropy.coordinates.Angle`, optional
            Drop stored galaxies within this separation of the query position (overlapping
            cutouts of the same system).
        exclude_ids : sequence of str, optional
            Ids never returned for any query (e.g. the examples of a combined query).
        where : callable or dict, optional
            Filter on the table: ``where(table) -> bool mask``, or a dict
            ``{column: (min, max)}`` (either end may be None; Quantities for columns with
            units) or ``{column: value}`` for equality (flags). Rows with masked or NaN
            values fail ranges.
        negative_vectors : array-like, shape (q, d), optional
            Examples to move away from: each query ``x`` becomes
            ``(1 + w) x - w mean(negative_vectors)`` with ``w = negative_weight``.
        negative_weight : float, optional
            See ``negative_vectors``.
        metric : {'euclidean', 'cosine'}, optional
            Distance for this search (exact search if it differs from the database's).
        epsilon : float, optional
            pynndescent search breadth for this call.

        Returns
        -------
        `~astropy.table.QTable`
            Long format, one row per (query, match): ``query`` (the query id, or the query
            row number when ``query_ids`` is not given), ``rank`` (1..k), ``id``,
            ``distance``, ``coord`` (if any stored position is known), then the stored
            columns.
        """
        queries = np.asarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[np.newaxis]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f'query_vectors must have shape (m, {self.dim}); got '
                             f'{np.shape(query_vectors)}.')
        m = queries.shape[0]
        k = _positive_int(k, 'k')
        if query_ids is not None:
            query_ids = [query_ids] if isinstance(query_ids, str) else [str(q) for q in query_ids]
            if len(query_ids) != m:
                raise ValueError(f'query_ids has {len(query_ids)} entries for {m} query vectors.')
        if negative_vectors is not None:
            neg = np.atleast_2d(np.asarray(negative_vectors, dtype=np.float64))
            if neg.shape[0]:
                w = float(negative_weight)
                queries = ((1 + w) * queries - w * neg.mean(axis=0)).astype(np.float32)
        if not np.isfinite(queries).all():
            raise ValueError('query_vectors contain NaN or infinite values.')
        metric = self.metric if metric is None else metric

        excluded = self._exclusions(m, query_ids if exclude_self else None, query_coords,
                                    exclude_radius, exclude_ids)
        allowed = self._where_mask(where)
        n_allowed = int(allowed.sum())
        n_excl = max((e.size for e in excluded), default=0)
        fetch = min(k + n_excl, n_allowed)

        indices = dist = None
        if fetch > 0:
            filtered = n_allowed < len(self)
            use_index = metric == self.metric and self._index.method == 'nndescent'
            if use_index and filtered:
                fraction = n_allowed / len(self)
                fetch_index = int(math.ceil(fetch / fraction * 1.5)) + 10
                use_index = fetch_index <= max(100, len(self) // 20)
            if use_index:
                kk = fetch if not filtered else fetch_index
                indices, dist = self._index.query(queries, min(kk, len(self)), epsilon=epsilon)
            else:
                subset = np.flatnonzero(allowed) if filtered else None
                if metric == self.metric:
                    if subset is None:
                        indices, dist = self._index.query(queries, fetch, exact=True)
                    else:
                        indices, dist = self._index.query(queries, fetch, subset=subset)
                else:
                    data = self.vectors if subset is None else self.vectors[subset]
                    indices, dist = exact_knn(data, queries, fetch, metric=metric)
                    if subset is not None:
                        indices = subset[indices]

        rows_q, rows_i, rows_d, rows_r = [], [], [], []
        for qi in range(m):
            if indices is None:
                continue
            idx, d = indices[qi], dist[qi]
            ok = (idx >= 0) & allowed[np.clip(idx, 0, None)]
            if excluded[qi].size:
                ok &= ~np.isin(idx, excluded[qi])
            idx, d = idx[ok][:k], d[ok][:k]
            possible = min(k, n_allowed - int(np.count_nonzero(allowed[excluded[qi]])))
            if idx.size < possible:
                # The approximate over-fetch missed some: search the allowed rows exactly.
                keep = allowed.copy()
                keep[excluded[qi]] = False
                sub = np.flatnonzero(keep)
                ii, dd = exact_knn(self._index._exact_data()[sub] if metric == self.metric
                                   else self.vectors[sub], queries[qi], k, metric=metric,
                                   normalised=metric == self.metric)
                idx, d = sub[ii[0]], dd[0]
            rows_q.append(np.full(idx.size, qi))
            rows_i.append(idx)
            rows_d.append(d)
            rows_r.append(np.arange(1, idx.size + 1))
        return self._result_table(rows_q, rows_i, rows_d, rows_r, query_ids)

    def _exclusions(self, m, self_ids, query_coords, exclude_radius, exclude_ids):
        """Per query, the row numbers that must not be returned."""
        per_query = [[] for _ in range(m)]
        common = np.zeros(0, dtype=np.int64)
        if exclude_ids is not None:
            found = np.atleast_1d(self.lookup_ids([exclude_ids] if isinstance(exclude_ids, str)
                                                  else list(exclude_ids)))
            common = found[found >= 0]
        if self_ids is not None:
            rows = self.lookup_ids(self_ids)
            for qi, row in enumerate(rows):
                if row >= 0:
                    per_query[qi].append(np.array([row]))
        if exclude_radius is not None:
            radius = _angle(exclude_radius, 'exclude_radius')
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
            q_ok = np.flatnonzero(np.isfinite(qc.ra.deg) & np.isfinite(qc.dec.deg))
            known = np.flatnonzero(self._known_positions())
            if q_ok.size and known.size:
                iq, ic, _, _ = search_around_sky(qc[q_ok], self.coords[known], radius)
                for a, b in zip(q_ok[iq], known[ic]):
                    per_query[a].append(np.array([b]))
        elif query_coords is not None and not isinstance(query_coords, SkyCoord):
            raise TypeError('query_coords must be a SkyCoord.')
        return [np.unique(np.concatenate(p + [common])).astype(np.int64) for p in per_query]

    def _result_table(self, rows_q, rows_i, rows_d, rows_r, query_ids):
        cat = lambda parts, dtype: (np.concatenate(parts).astype(dtype) if parts  # noqa: E731
                                    else np.zeros(0, dtype=dtype))
        q = cat(rows_q, np.int64)
        idx = cat(rows_i, np.int64)
        matched = self.table[idx]
        result = QTable()
        if query_ids is not None:
            labels = np.array(query_ids, dtype=str)[q] if q.size else np.zeros(0, dtype='U1')
            result['query'] = labels
        else:
            result['query'] = q
        result['rank'] = cat(rows_r, np.int64)
        result['id'] = matched['id']
        result['distance'] = cat(rows_d, np.float32)
        if self._known_positions().any():
            result['coord'] = matched['coord']
        for name in matched.colnames[2:]:
            result[name] = matched[name]
        result.meta['metric'] = self.metric
        return result

    # ------------------------------------------------------------------ graph / clusters
    def neighbor_graph(self, k=15):
        """Directed k-nearest-neighbour graph of the stored vectors.

        Parameters
        ----------
        k : int, optional
            Neighbours per galaxy (itself excluded).

        Returns
        -------
        `scipy.sparse.csr_matrix`, shape (N, N)
            ``graph[i, j]`` is the distance from galaxy ``i`` to its neighbour ``j``.
        """
        return self._index.neighbor_graph(k)

    def cluster(self, *, method='hdbscan', k=15, min_cluster_size=10, min_samples=None,
                n_clusters=None):
        """Cluster the galaxies using their k-nearest-neighbour graph.

        Parameters
        ----------
        method : {'hdbscan', 'agglomerative'}, optional
            ``'hdbscan'``: `sklearn.cluster.HDBSCAN` on the symmetrised kNN distance graph
            (density-based; finds the number of clusters itself and labels outliers -1).
            If the graph falls apart into several components, they are joined by edges
            between one representative galaxy of each (true distances) so that HDBSCAN
            sees the whole hierarchy.
            ``'agglomerative'``: Ward `sklearn.cluster.AgglomerativeClustering` with the
            kNN graph as connectivity; needs ``n_clusters``.
        k : int, optional
            Neighbours per galaxy in the graph.
        min_cluster_size : int, optional
            HDBSCAN: smallest group called a cluster.
        min_samples : int, optional
            HDBSCAN: neighbours defining a core point (default ``min(min_cluster_size, k)``).
        n_clusters : int, optional
            Agglomerative: number of clusters.

        Returns
        -------
        labels : `~numpy.ndarray` of int, shape (N,)
            Cluster number per galaxy (0, 1, ...), -1 for HDBSCAN noise. Labels are
            numbered in order of the first galaxy of each cluster.

        Notes
        -----
        Needs scikit-learn (installed with pynndescent).
        """
        try:
            from sklearn.cluster import HDBSCAN, AgglomerativeClustering
        except ImportError as exc:  # pragma: no cover - sklearn comes with pynndescent
            raise ImportError('GalaxyDatabase.cluster needs scikit-learn '
                              '(pip install scikit-learn).') from exc
        n = len(self)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        graph = self.neighbor_graph(k).tocsr()
        graph.data = np.maximum(graph.data, np.float32(1e-12)).astype(np.float64)
        graph = graph.maximum(graph.T).tocsr()
        if method == 'agglomerative':
            if n_clusters is None:
                raise ValueError("method='agglomerative' needs n_clusters.")
            data = self.vectors
            if self.metric == 'cosine':
                data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-30)
            with warnings.catch_warnings():
                # "the number of connected components of the connectivity matrix is > 1":
                # sklearn completes the graph itself, which is what we want.
                warnings.filterwarnings('ignore', message='.*connected components.*')
                model = AgglomerativeClustering(n_clusters=int(n_clusters), connectivity=graph,
                                                linkage='ward')
                labels = model.fit_predict(data)
        elif method == 'hdbscan':
            min_samples = min(min_cluster_size, k) if min_samples is None else min_samples
            graph = _connect_components(graph, self._index)
            model = HDBSCAN(metric='precomputed', min_cluster_size=int(min_cluster_size),
                            min_samples=int(min_samples), copy=True)
            labels = model.fit_predict(graph)
        else:
            raise ValueError(f"method must be 'hdbscan' or 'agglomerative'; got {method!r}.")
        return _renumber(labels)

    # ------------------------------------------------------------------ persistence
    def to_hdulist(self):
        """The FITS representation of the database (see ``docs/search.rst``).

        Returns
        -------
        `~astropy.io.fits.HDUList`
            PRIMARY (format keywords), GALAXIES (table), VECTORS (image), PROVENANCE.
        """
        primary = fits.PrimaryHDU()
        hdr = primary.header
        _set_card(hdr, 'FMTNAME', FORMAT_NAME, 'file format: astro_galsim galaxy database')
        _set_card(hdr, 'FMTVERS', FORMAT_VERSION, 'version of the file format')
        _set_card(hdr, 'CREATOR', f'astro_galsim {_version()}'[:68], 'software that wrote the file')
        _set_card(hdr, 'NGALAXY', len(self), 'number of galaxies (table rows, vectors)')
        _set_card(hdr, 'NDIM', self.dim, 'dimension of the latent vectors')
        _set_card(hdr, 'METRIC', self.metric, 'distance metric for similarity search')
        _set_card(hdr, 'ENCNAME', self._encoder_id['name'], 'encoder that made the vectors')
        _set_card(hdr, 'ENCSHA', self._encoder_id['sha256'], 'SHA-256 of the encoder weights')
        for key, (kw, comment) in _HEADER_PROVENANCE.items():
            if key in self._provenance:
                value = self._provenance[key]
                if isinstance(value, u.Quantity):
                    try:
                        value = value.to_value(u.arcsec)
                    except u.UnitsError:
                        continue
                elif isinstance(value, list):
                    value = ','.join(value)
                _set_card(hdr, kw, value, comment)

        table = self.table
        out = Table()
        out['id'] = Column(np.asarray(table['id']).astype(str), description='galaxy id')
        coord = table['coord']
        out['ra'] = Column(coord.ra.deg, unit='deg', description='ICRS right ascension')
        out['dec'] = Column(coord.dec.deg, unit='deg', description='ICRS declination')
        for name in table.colnames[2:]:
            out[name] = table[name]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', fits.verify.VerifyWarning)
            galaxies = fits.table_to_hdu(out)
        galaxies.name = 'GALAXIES'

        vectors = fits.ImageHDU(np.ascontiguousarray(self.vectors, dtype='>f4')
                                if len(self) else None, name='VECTORS')
        _set_card(vectors.header, 'NGALAXY', len(self), 'rows: one vector per GALAXIES row')
        _set_card(vectors.header, 'NDIM', self.dim, 'columns: latent dimension')
        _set_card(vectors.header, 'ENCSHA', self._encoder_id['sha256'], 'SHA-256 of the encoder weights')

        prov = Table(names=('key', 'value', 'type', 'unit'), dtype=('U', 'U', 'U', 'U'))
        for key, value in self._provenance.items():
            if isinstance(value, u.Quantity):
                prov.add_row((key, repr(float(value.value)), 'quantity', value.unit.to_string()))
            elif isinstance(value, bool):
                prov.add_row((key, str(value), 'bool', ''))
            elif isinstance(value, numbers.Integral):
                prov.add_row((key, str(int(value)), 'int', ''))
            elif isinstance(value, numbers.Real):
                prov.add_row((key, repr(float(value)), 'float', ''))
            elif isinstance(value, list):
                prov.add_row((key, ','.join(value), 'list', ''))
            else:
                prov.add_row((key, value, 'str', ''))
        provenance = fits.table_to_hdu(prov) if len(prov) else fits.BinTableHDU(
            Table(names=('key', 'value', 'type', 'unit'), dtype=('S1', 'S1', 'S1', 'S1')))
        provenance.name = 'PROVENANCE'
        return fits.HDUList([primary, galaxies, vectors, provenance])

    def save(self, path, overwrite=False):
        """Write the database to a FITS file, atomically.

        The file is written to a temporary file in the same directory, with FITS
        checksums, then renamed over ``path``: a failed save never leaves a partial file
        and never damages an existing one.

        Parameters
        ----------
        path : str or path-like
            Destination (``.fits`` recommended).
        overwrite : bool, optional
            Replace an existing file.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is False.
        """
        path = os.fspath(path)
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f'{path} exists; pass overwrite=True to replace it.')
        hdul = self.to_hdulist()
        with atomic_output(os.path.abspath(path), sync=True) as fh:
            hdul.writeto(fh, checksum=True)

    @classmethod
    @_named_errors
    def load(cls, path, *, encoder_id=None, index_options=None):
        """Read a database written by `save`.

        Only data are read (FITS tables and images): nothing in the file is executed.

        Parameters
        ----------
        path : str or path-like
            The FITS file.
        encoder_id : dict, optional
            ``{'name', 'sha256'}`` of the encoder that will embed the queries; if given,
            the file must have been made by the same encoder (same SHA-256).
        index_options : dict, optional
            Passed to `~astro_galsim.index.NeighbourIndex`.

        Returns
        -------
        GalaxyDatabase

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        DatabaseError
            If the file is not FITS, not an astro_galsim database, of an unsupported
            version, damaged (checksum failure, truncation, inconsistent sizes), or made by
            a different encoder than ``encoder_id``.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'no database file at {path}.')
        with open(path, 'rb') as fh:
            start = fh.read(30)
        if not start.startswith(b'SIMPLE  =') or start[29:30] != b'T':
            raise DatabaseError(f'{path} is not a FITS file (it does not start with a '
                                '"SIMPLE = T" card); give the path of a database written by '
                                'GalaxyDatabase.save or `astro_galsim build`.')
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                with fits.open(path, checksum=True, memmap=False) as hdul:
                    hdul.verify('exception')
                    primary = hdul[0].header.copy()
                    _check_format(primary, path)
                    names = [h.name for h in hdul]
                    for needed in ('GALAXIES', 'VECTORS', 'PROVENANCE'):
                        if needed not in names:
                            raise DatabaseError(f'{path} is damaged: HDU {needed!r} is missing '
                                                f'(HDUs: {names}).')
                        if names.count(needed) > 1:
                            raise DatabaseError(f'{path} is not a database written by astro_galsim: '
                                                f'it holds {names.count(needed)} {needed!r} HDUs '
                                                f'(HDUs: {names}); rebuild it or restore a copy.')
                    _check_checksums(hdul, path)
                    vectors = hdul['VECTORS'].data
                    galaxies = Table.read(hdul['GALAXIES'], astropy_native=True, mask_invalid=False)
                    prov_table = Table.read(hdul['PROVENANCE'])
            except DatabaseError:
                raise
            except Exception as exc:
                raise DatabaseError(f'{path} could not be read as an astro_galsim database; it '
                                    f'may be damaged or truncated ({type(exc).__name__}: {exc}).'
                                    ) from exc
        for warning in caught:
            message = str(warning.message)
            if 'checksum' in message.lower() or 'datasum' in message.lower():
                raise DatabaseError(f'{path} is damaged: FITS checksum verification failed '
                                    f'({message}). Rebuild it or restore a copy.')
            if 'truncat' in message.lower():
                raise DatabaseError(f'{path} is damaged (truncated): {message}')
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)

        ngal, ndim = int(primary['NGALAXY']), int(primary['NDIM'])
        if vectors is None:
            vectors = np.zeros((0, ndim), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != ndim:
            raise DatabaseError(f'{path} is damaged: VECTORS has shape {vectors.shape} but NDIM '
                                f'is {ndim}.')
        if vectors.shape[0] != ngal or len(galaxies) != ngal:
            raise DatabaseError(f'{path} is damaged: NGALAXY={ngal} but VECTORS holds '
                                f'{vectors.shape[0]} vectors and GALAXIES {len(galaxies)} rows.')
        stored = {'name': str(primary['ENCNAME']), 'sha256': str(primary['ENCSHA'])}
        if encoder_id is not None:
            wanted = _check_encoder_id(encoder_id)
            if wanted['sha256'] != stored['sha256'].lower():
                raise DatabaseError(
                    f"{path} was made by encoder {stored['name']!r} (sha256 {stored['sha256']}) "
                    f"but the current encoder is {wanted['name']!r} (sha256 "
                    f"{wanted['sha256']}); its vectors are not comparable. Re-embed the images "
                    f"with `astro_galsim build` using the current encoder, or load the database "
                    f"with the encoder it was made with.")
        table = QTable(galaxies)
        table.meta.clear()
        for col in ('id', 'ra', 'dec'):
            if col not in table.colnames:
                raise DatabaseError(f'{path} is damaged: GALAXIES has no {col!r} column.')
        ra = u.Quantity(table['ra'], u.deg)
        dec = u.Quantity(table['dec'], u.deg)
        table.remove_columns(['ra', 'dec'])
        ids = np.asarray(table['id']).astype(str)
        table.replace_column('id', Column(ids, name='id'))
        table.add_column(SkyCoord(ra=ra, dec=dec, frame='icrs'), name='coord', index=1)
        return cls(np.asarray(vectors, dtype=np.float32), table, encoder_id=stored,
                   provenance=_read_provenance(prov_table), metric=str(primary['METRIC']),
                   index_options=index_options)


def _set_card(header, keyword, value, comment):
    """Set a header card, dropping the comment if the card would exceed 80 characters."""
    if isinstance(value, str):
        width = max(20, len(value.replace("'", "''")) + 2)
    else:
        width = 20
    if 10 + width + 3 + len(comment) > 80:
        comment = ''
    header[keyword] = (value, comment)


def _check_checksums(hdul, path):
    """Every HDU must carry the checksums `GalaxyDatabase.save` writes, or nothing is verified."""
    unsigned = [h.name for h in hdul if 'CHECKSUM' not in h.header or 'DATASUM' not in h.header]
    if unsigned:
        raise DatabaseError(f'{path} has no FITS checksums in HDU(s) {unsigned}, so damage or edits '
                            'cannot be detected; it was not written by astro_galsim (or was edited '
                            'after). Rebuild it, or restore a copy written by GalaxyDatabase.save.')


def _check_format(header, path):
    name = header.get('FMTNAME')
    if name != FORMAT_NAME:
        raise DatabaseError(f'{path} is a FITS file but not an astro_galsim database (FMTNAME is '
                            f'{name!r}, expected {FORMAT_NAME!r}).')
    version = header.get('FMTVERS')
    if not isinstance(version, int) or version < 1:
        raise DatabaseError(f'{path} has an invalid format version FMTVERS={version!r}.')
    if version > FORMAT_VERSION:
        raise DatabaseError(f'{path} uses database format version {version}, newer than this '
                            f'astro_galsim ({_version()}) reads (version {FORMAT_VERSION}); '
                            'upgrade astro_galsim.')
    for key in ('NGALAXY', 'NDIM', 'METRIC', 'ENCNAME', 'ENCSHA'):
        if key not in header:
            raise DatabaseError(f'{path} is damaged: primary header keyword {key} is missing.')


def _read_provenance(table):
    out = {}
    for row in table:
        key, value, kind, unit = (str(row[c]) for c in ('key', 'value', 'type', 'unit'))
        if kind == 'quantity':
            out[key] = float(value) * u.Unit(unit)
        elif kind == 'bool':
            out[key] = value == 'True'
        elif kind == 'int':
            out[key] = int(value)
        elif kind == 'float':
            out[key] = float(value)
        elif kind == 'list':
            out[key] = value.split(',') if value else []
        else:
            out[key] = value
    return out


def _positive_int(value, name):
    """``value`` as an int if it is a whole number of at least 1, else a ValueError naming ``name``."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)) \
            and value >= 1:
        return int(value)
    raise ValueError(f'{name} must be a whole number of at least 1; got {value!r}.')


def _angle(value, name):
    if isinstance(value, (Angle, u.Quantity)) and value.unit.physical_type == 'angle':
        return Angle(value)
    raise TypeError(f'{name} must be an angle Quantity (e.g. 5 * u.arcsec); got {value!r}.')


def _connect_components(graph, index):
    """Join the connected components of a symmetric distance graph.

    Each component is represented by its member closest to the component mean; the
    representatives are linked to their 10 nearest representatives and in a chain, with
    their true distances, so that the graph becomes connected.
    """
    from scipy import sparse
    from scipy.sparse import csgraph
    n_comp, comp = csgraph.connected_components(graph, directed=False)
    if n_comp == 1:
        return graph
    vectors = index._exact_data()
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
