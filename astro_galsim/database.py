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
import os
import threading

import numpy as np
import astropy.units as u
from astropy.coordinates import UnitSphericalRepresentation, match_coordinates_sky
from astropy.table import QTable, vstack

from .catalogue import check_encoder_id, check_provenance, normalise_table
from .clustering import cluster
from .database_file import (FORMAT_NAME, FORMAT_VERSION, DatabaseError, database_hdulist,  # noqa: F401
                            read_database_file, write_database_file)
from .database_search import move_away, rocchio_query, search_database
from .index import NeighbourIndex
from .utils._coords import checked_angle, known_positions

__all__ = ['GalaxyDatabase', 'DatabaseError', 'rocchio_query', 'move_away',
           'FORMAT_NAME', 'FORMAT_VERSION']


# ---------------------------------------------------------------------------- class
#: Largest number of (query, stored) position pairs compared directly by `GalaxyDatabase.lookup_coords`
#: (32 MiB of products); more go through astropy's k-d tree matching.
_DIRECT_MATCH_PAIRS = 2 ** 22


def _unit_vectors(coords):
    """(n, 3) cartesian unit vectors of positions, as astropy's catalogue matching compares them."""
    return coords.data.represent_as(UnitSphericalRepresentation).to_cartesian().xyz.value.T


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
        scalar Quantity or list of str. ``pixel_scale`` is the angle of one pixel of the
        images that carry no WCS (JPEG, PNG): their radii get ``r50_arcsec`` and the like
        from it (`~astro_galsim.catalogue.fill_angular_sizes`).
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
        self._encoder_id = check_encoder_id(encoder_id)
        self._provenance = check_provenance(provenance)
        self._index_options = dict(index_options or {})
        self._lock = threading.RLock()   # add, search and save in several threads: never misaligned
        if 'metric' in self._index_options:
            raise ValueError("give the metric as GalaxyDatabase(metric=...), not in index_options.")
        if vectors is None:
            if dim is None:
                raise ValueError('an empty database needs dim (the vector dimension).')
            vectors = np.zeros((0, int(dim)), dtype=np.float32)
            if table is None:
                table = QTable({'id': np.zeros(0, dtype='U1')})
        self._index = NeighbourIndex(vectors, metric=metric, lazy=True, **self._index_options)
        self._index_options.pop('graph', None)   # held by the index until its build
        self._index_options.pop('search', None)
        if dim is not None and int(dim) != self._index.dim:
            raise ValueError(f'dim={dim} but the vectors have {self._index.dim} dimensions.')
        self._tables = [normalise_table(table, len(self._index), self._provenance.get('pixel_scale'))]
        self._id_lookup = self._position_lookup = None

    # ------------------------------------------------------------------ properties
    @property
    def vectors(self):
        """`~numpy.ndarray`: Latent vectors, shape (N, d), float32, read-only."""
        return self._index.vectors

    @property
    def table(self):
        """`~astropy.table.QTable`: One row per galaxy, in the order of `vectors`."""
        with self._lock:
            return self._joined_table()

    def _joined_table(self):
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

    def summary(self):
        """What the database holds, as a dict of short texts (for notebooks and ``astro-galsim info``).

        Examples
        --------
        >>> import numpy as np
        >>> from astro_galsim.database import GalaxyDatabase
        >>> db = GalaxyDatabase(np.eye(3, 4, dtype=np.float32), {'id': ['a', 'b', 'c']},
        ...                     encoder_id={'name': 'toy', 'sha256': '0' * 64})
        >>> db.summary()['galaxies'], db.summary()['with a position']
        ('3', '0 (3 known by id only)')
        """
        coords = self.coords
        placed = int(np.sum(known_positions(coords))) if len(self) else 0
        return {'galaxies': str(len(self)),
                'with a position': f'{placed} ({len(self) - placed} known by id only)',
                'vectors': f'{self.dim} dimensions, {self.metric} distance',
                'encoder': f"{self._encoder_id['name']} (sha256 {self._encoder_id['sha256'][:12]}...)",
                'provenance': ', '.join(f'{k}={v}' for k, v in self._provenance.items()) or 'not given',
                'columns': ', '.join(self.table.colnames) if len(self) else ''}

    def _repr_html_(self):
        return html_summary('GalaxyDatabase', self.summary())

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
        with self._lock:   # the ids checked and the rows appended at once: threads never interleave them
            self._add(vectors, table)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != '_lock'}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def lock(self):
        """``threading.RLock``: held while the database changes, is searched or is saved.

        Hold it to make several steps one (a check of stored ids, then `add`); it is reentrant.
        """
        return self._lock

    def _add(self, vectors, table):
        vectors = np.asarray(vectors)
        if vectors.ndim == 1 and vectors.size == self.dim:
            vectors = vectors[np.newaxis]
        n = vectors.shape[0] if vectors.ndim == 2 else -1
        new = normalise_table(table, n, self._provenance.get('pixel_scale'))
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
        self._id_lookup = self._position_lookup = None

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
        with self._lock:
            if self._id_lookup is None:
                self._id_lookup = {key: i for i, key in enumerate(self.ids)}
            lookup = self._id_lookup
        if isinstance(ids, str):
            return lookup.get(ids, -1)
        return np.array([lookup.get(str(key), -1) for key in ids], dtype=np.int64)

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
        radius = checked_angle(radius, 'radius')
        scalar = coords.isscalar
        coords = coords.reshape((1,)) if scalar else coords
        out = np.full(len(coords), -1, dtype=np.int64)
        with self._lock:
            if self._position_lookup is None:   # the known positions, kept until the next add
                stored = self.coords
                known = np.flatnonzero(known_positions(stored))
                self._position_lookup = known, stored[known], _unit_vectors(stored[known])
            known, catalogue, unit = self._position_lookup
        query_ok = np.flatnonzero(known_positions(coords.icrs))
        if known.size and query_ok.size:
            targets = coords[query_ok]
            if len(targets) * len(catalogue) <= _DIRECT_MATCH_PAIRS:
                # a few positions: the nearest by one product with the stored unit vectors, without
                # building a k-d tree (importing scipy.spatial alone costs a fresh process 0.15 s)
                idx = np.argmax(_unit_vectors(targets.transform_to(catalogue)) @ unit.T, axis=1)
                sep = catalogue[idx].separation(targets)
            else:
                idx, sep, _ = match_coordinates_sky(targets, catalogue)
            good = sep <= radius
            out[query_ok[good]] = known[idx[good]]
        return int(out[0]) if scalar else out

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
        with self._lock:   # vectors and rows of one moment, whatever other threads add
            return search_database(self, query_vectors, k=k, query_ids=query_ids, query_coords=query_coords,
                                   exclude_self=exclude_self, exclude_radius=exclude_radius,
                                   exclude_ids=exclude_ids, where=where, negative_vectors=negative_vectors,
                                   negative_weight=negative_weight, metric=metric, epsilon=epsilon)

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
        Needs scikit-learn (installed with pynndescent). The work is done by
        `astro_galsim.clustering.cluster`.
        """
        return cluster(self._index, method=method, k=k, min_cluster_size=min_cluster_size,
                       min_samples=min_samples, n_clusters=n_clusters)

    # ------------------------------------------------------------------ persistence
    def to_hdulist(self):
        """The FITS representation of the database (see ``docs/search.rst``).

        Returns
        -------
        `~astropy.io.fits.HDUList`
            PRIMARY (format keywords), GALAXIES (table), VECTORS (image), PROVENANCE, and
            NEIGHBOURS (the k-NN graph) and the SEARCH* HDUs (its search tree and graph) once
            a pynndescent index has been built over all galaxies (``db.index.prepare()``): a
            reopened database then sets up its index from them without running NN-descent or
            building the search structures again.
        """
        with self._lock:   # a snapshot: later adds replace these arrays and tables, never change them
            return database_hdulist(self.vectors, self.table, encoder_id=self._encoder_id,
                                    provenance=self._provenance, metric=self.metric,
                                    graph=self._index.knn_graph, search=self._index.search_structure)

    def save(self, path, overwrite=False):
        """Write the database to a FITS file, atomically.

        The file is written to a temporary file in the same directory, with FITS
        checksums, then renamed over ``path``: a failed save never leaves a partial file
        and never damages an existing one. Once the pynndescent index has been built over
        every galaxy (``db.index.prepare()``), its k-NN graph is saved too, so that the
        reopened database builds its index without running NN-descent again.

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
        write_database_file(path, self.to_hdulist(), overwrite=overwrite)

    @classmethod
    @_named_errors
    def load(cls, path, *, encoder_id=None, index_options=None, pixel_scale=None):
        """Read a database written by `save`.

        Only data are read (FITS tables and images): nothing in the file is executed. A
        stored k-NN graph (``NEIGHBOURS``) is handed to the index, which builds from it.

        Parameters
        ----------
        path : str or path-like
            The FITS file.
        encoder_id : dict, optional
            ``{'name', 'sha256'}`` of the encoder that will embed the queries; if given,
            the file must have been made by the same encoder (same SHA-256).
        index_options : dict, optional
            Passed to `~astro_galsim.index.NeighbourIndex`.
        pixel_scale : `~astropy.units.Quantity`, optional
            The pixel scale of the images without a WCS, for a file whose provenance does
            not record one (the file's own wins): radii get their ``*_arcsec`` from it.

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
        vectors, table, stored, provenance, metric, graph, search = read_database_file(path)
        if encoder_id is not None:
            wanted = check_encoder_id(encoder_id)
            if wanted['sha256'] != stored['sha256'].lower():
                raise DatabaseError(
                    f"{path} was made by encoder {stored['name']!r} (sha256 {stored['sha256']}) "
                    f"but the current encoder is {wanted['name']!r} (sha256 "
                    f"{wanted['sha256']}); its vectors are not comparable. Re-embed the images "
                    f"with `astro_galsim build` using the current encoder, or load the database "
                    f"with the encoder it was made with.")
        if pixel_scale is not None and 'pixel_scale' not in provenance:
            provenance = dict(provenance, pixel_scale=pixel_scale)
        return cls(vectors, table, encoder_id=stored, provenance=provenance, metric=metric,
                   index_options=dict(index_options or {}, graph=graph, search=search))


def html_summary(title, rows):
    """An HTML table of ``{name: text}`` under a bold title, every text escaped."""
    from html import escape
    body = ''.join(f'<tr><th style="text-align:left">{escape(k)}</th><td style="text-align:left">{escape(v)}'
                   '</td></tr>' for k, v in rows.items())
    return f'<p><b>{escape(title)}</b></p><table>{body}</table>'
