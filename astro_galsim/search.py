"""`SimilaritySearch`: the front of the package.

It ties the stages together: images (or sky positions, through
`~astro_galsim.retrieval`) are prepared by `~astro_galsim.pipeline`, described by an
encoder (`~astro_galsim.model`), and stored in and searched through a
`~astro_galsim.database.GalaxyDatabase`.
"""
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.table import QTable, Table

from .config import conf
from .database import DatabaseError, GalaxyDatabase, rocchio_query
from .model import file_sha256, load_pretrained
from .utils._coords import coord_id, table_coords
from .utils._data import package_data
from .utils._images import image_id, image_positions, wcs_and_shape

__all__ = ['SimilaritySearch']

DEMO_DATABASE = 'demo_database.fits'
#: Separation within which a queried position is taken to be a galaxy already stored.
SAME_GALAXY_RADIUS = 2 * u.arcsec


class SimilaritySearch:
    """Find the galaxies in a database that look most like a given one.

    Parameters
    ----------
    encoder : `~astro_galsim.model.GalaxyEncoder`, optional
        What describes galaxies as vectors. Default: the pretrained autoencoder shipped
        with the package (`~astro_galsim.model.load_pretrained`).
    database : `~astro_galsim.database.GalaxyDatabase`, optional
        Galaxies to search. Default: an empty database for this encoder.
    selection : dict, optional
        Acceptance criteria for `add` (keywords of
        `~astro_galsim.segmentation.select_galaxy`).
    cutout_options : dict, optional
        Keywords of `~astro_galsim.retrieval.get_cutouts` used when galaxies are given by
        sky position (``source``, ``size``, ``pixel_scale``, ``data_release``).
    provenance : dict, optional
        Where the images of a new database come from (survey, data release, bands...);
        stored with it.

    Examples
    --------
    Build a small database from images, then ask for the neighbours of one of them:

    >>> import numpy as np
    >>> from astro_galsim import SimilaritySearch
    >>> y, x = np.mgrid[:96, :96]
    >>> discs = [np.exp(-np.hypot((x - 48) / (10 + 2 * i), (y - 48) / 6))[None].repeat(3, 0)
    ...          for i in range(6)]
    >>> search = SimilaritySearch()
    >>> report = search.add(discs, ids=[f'disc{i}' for i in range(6)])
    >>> int(report['accepted'].sum()), len(search)
    (6, 6)
    >>> result = search.query('disc0', k=3)
    >>> result['rank'].tolist(), 'disc0' in list(result['id'])
    ([1, 2, 3], False)
    """

    def __init__(self, encoder=None, database=None, *, selection=None, cutout_options=None, provenance=None):
        self.encoder = load_pretrained() if encoder is None else encoder
        if database is None:
            database = GalaxyDatabase(encoder_id=self.encoder.identity, dim=self.encoder.latent_dim,
                                      metric=self.encoder.metric, provenance=provenance)
        elif database.dim != self.encoder.latent_dim:
            raise DatabaseError(f'the database holds vectors of {database.dim} dimensions but the encoder '
                                f'{self.encoder.identity["name"]!r} makes {self.encoder.latent_dim}: it was '
                                'not made by this encoder; rebuild it')
        elif database.encoder_id['sha256'] != self.encoder.identity['sha256']:
            raise ValueError(f'the database was made by encoder {database.encoder_id["name"]!r} '
                             f'(sha256 {database.encoder_id["sha256"][:12]}...), not by '
                             f'{self.encoder.identity["name"]!r} (sha256 {self.encoder.identity["sha256"][:12]}'
                             '...); re-embed its images with this encoder')
        self.database = database
        self.selection = dict(selection or {})
        self.cutout_options = dict(cutout_options or {})

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path, encoder=None, **kwargs):
        """Open a database saved with `save`; it must have been made by ``encoder``.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            The database file.
        encoder : `~astro_galsim.model.GalaxyEncoder`, optional
            Default: the pretrained encoder.
        **kwargs
            Passed to `SimilaritySearch`.
        """
        encoder = load_pretrained() if encoder is None else encoder
        database = GalaxyDatabase.load(path, encoder_id=encoder.identity)
        return cls(encoder, database, **kwargs)

    @classmethod
    def load_demo(cls):
        """The demo database shipped with the package.

        It holds the latent vectors, SDSS objids, positions and measurements (no images)
        of the 7,374 galaxies that the default selection accepts among the 7,505 SDSS DR14
        galaxies the pretrained encoder was trained on (Edukov 2018), so that any of them
        can be queried by position offline. The file's SHA-256 is checked on loading.

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> from astropy.coordinates import SkyCoord
        >>> demo = SimilaritySearch.load_demo()
        >>> result = demo.query(SkyCoord(180.4819, -1.0693, unit='deg'), k=5)
        >>> len(result), str(result['query'][0])
        (5, '587722981740314629')
        """
        path = package_data(DEMO_DATABASE)
        expected = path.with_name(path.name + '.sha256').read_text().strip()
        if file_sha256(path) != expected:
            raise DatabaseError(f'the shipped demo database {str(path)!r} does not match its checksum: '
                                'the installation is damaged; reinstall astro_galsim')
        return cls.load(path)

    def save(self, path, overwrite=False):
        """Write the database (vectors, catalogue, provenance, encoder identity) to FITS."""
        self.database.save(path, overwrite=overwrite)

    # ------------------------------------------------------------------ views
    @property
    def ids(self):
        """`~numpy.ndarray` of str: ids of the stored galaxies, in the order of `vectors`."""
        return self.database.ids

    @property
    def vectors(self):
        """`~numpy.ndarray`: latent vectors of the stored galaxies, shape (N, d)."""
        return self.database.vectors

    @property
    def table(self):
        """`~astropy.table.QTable`: the catalogue of stored galaxies (ids, positions, measurements)."""
        return self.database.table

    def __len__(self):
        return len(self.database)

    def __repr__(self):
        return (f'<SimilaritySearch: {len(self)} galaxies, encoder {self.encoder.identity["name"]} '
                f'(latent {self.encoder.latent_dim}, sha256 {self.encoder.identity["sha256"][:12]}), '
                f'metric {self.database.metric}>')

    # ------------------------------------------------------------------ inputs
    def _images_of(self, inputs, coords=None):
        """Turn user inputs into images (or errors), targets, ids, coordinates and (WCS, shape)s."""
        if isinstance(inputs, Table):
            coords = _table_coords(inputs)
            inputs = coords
        if isinstance(inputs, SkyCoord):
            return self._retrieve(inputs.reshape((1,)) if inputs.isscalar else inputs)
        if isinstance(inputs, (NDData, str, Path, np.ndarray)) and not (
                isinstance(inputs, np.ndarray) and inputs.dtype == object):
            inputs = [inputs] if not (isinstance(inputs, np.ndarray) and inputs.ndim == 4) else list(inputs)
        images = list(inputs)
        for item in images:
            if not isinstance(item, (NDData, str, Path, np.ndarray)):
                raise TypeError(f'cannot use {type(item).__name__} as a galaxy image: give NDData, a file '
                                'path (FITS, JPEG, PNG), a (3, ny, nx) or (ny, nx) array, or SkyCoord positions')
        geometry = [wcs_and_shape(item) for item in images]
        coords = image_positions(images, coords, geometry)
        ids = [image_id(item, i) for i, item in enumerate(images)]
        targets = coords if any(wcs is not None for wcs, _ in geometry) else None
        return images, targets, ids, coords, geometry

    def _retrieve(self, coords):
        from .retrieval import get_cutouts
        cutouts = get_cutouts(coords, **self.cutout_options)   # failed downloads stay as errors
        ids = [str(getattr(c, 'meta', {}).get('objid', coord_id(p)))
               for c, p in zip(cutouts, coords)]
        return cutouts, coords, ids, coords, None

    def _describe(self, images, targets, geometry=None):
        """Prepare and encode images; failed downloads become rejected rows with NaN vectors."""
        from .pipeline import describe  # photutils is imported only when images are prepared
        if len(images) == 0:
            return (np.zeros((0, self.encoder.latent_dim), np.float32),
                    QTable({'found': np.zeros(0, bool), 'accepted': np.zeros(0, bool),
                            'reason': np.zeros(0, str)}))
        workers = conf.workers if len(images) >= 100 else 1
        vectors, table = describe(images, self.encoder, targets, selection=self.selection, workers=workers)
        if targets is not None:
            self._check_target_pixels(images, targets, vectors, table, geometry)
        return vectors, table

    def _check_target_pixels(self, images, targets, vectors, table, geometry=None):
        """Reject galaxies whose WCS puts their position off the image or on no galaxy, saying why.

        A position outside the image cannot be described there (the nearest source would
        be); a position on no galaxy while the image centre holds one points to a wrong WCS.
        """
        from .pipeline import prepare_one
        reasons = table['reason'].astype(object)
        for i, (image, target) in enumerate(zip(images, targets)):
            wcs, shape = wcs_and_shape(image) if geometry is None else geometry[i]
            if wcs is None or not np.isfinite(target.ra.deg):
                continue
            x, y = (float(v) for v in wcs.world_to_pixel(target))
            ny, nx = shape[-2:]
            outside = not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5)
            at_centre = abs(x - (nx - 1) / 2) < 1 and abs(y - (ny - 1) / 2) < 1  # the WCS can't be blamed
            if table['found'][i] and not outside or at_centre:
                continue
            where = (f'the image WCS puts {target.to_string("decimal", precision=5)} at pixel '
                     f'({x:.0f}, {y:.0f}), ' + (f'outside the {nx} x {ny} image' if outside
                                                 else 'where no galaxy was found'))
            try:
                centre = prepare_one(image, selection=self.selection,
                                     normalisation=self.encoder.normalisation)[1]['found']
            except Exception:  # noqa: BLE001 - only the explanation depends on it
                centre = False
            if centre:
                where += ('; the image centre holds a galaxy: the WCS is probably wrong. Correct the '
                          'header, or drop the WCS to describe the galaxy at the centre')
            vectors[i] = np.nan
            table['found'][i] = table['accepted'][i] = False
            reasons[i] = where
        table['reason'] = reasons.astype(str)

    # ------------------------------------------------------------------ main API
    def embed(self, images):
        """Describe galaxies by their latent vectors.

        Parameters
        ----------
        images : `~astropy.nddata.NDData`, path, array, list of these, or `~astropy.coordinates.SkyCoord`
            Images (FITS, JPEG, PNG files; NDData; ``(3, ny, nx)`` colour or ``(ny, nx)``
            arrays) or sky positions to fetch from SDSS.

        Returns
        -------
        vectors : `~numpy.ndarray`, shape (N, d)
            One row per input, in input order; rows of NaN where no galaxy was found.
        """
        images, targets, _, _, geometry = self._images_of(images)
        return self._describe(images, targets, geometry)[0]

    def add(self, images, ids=None, coords=None, *, columns=None, client=None):
        """Add galaxies to the database; only accepted ones are stored.

        Parameters
        ----------
        images : as for `embed`, or a `~astropy.table.Table` with a `~astropy.coordinates.SkyCoord`
            column or ``ra``/``dec`` columns in degrees
            Galaxies to add.
        ids : sequence of str, optional
            Their ids (default: the SDSS objid or file name, else ``'img<n>'``).
        coords : `~astropy.coordinates.SkyCoord`, optional
            Their positions, when the images do not say.
        columns : dict of array-like, optional
            Extra catalogue columns to store (one value per input).
        client : ``distributed.Client``, optional
            Prepare and embed on this Dask cluster (`~astro_galsim.scaleout.build_distributed`,
            in partitions sized to the cluster); each worker makes the encoder once, whatever
            the encoder. Images must be files or positions every worker can reach, or NDData.

        Returns
        -------
        report : `~astropy.table.QTable`
            One row per input: ``id``, ``accepted``, ``reason``, then the measurements.
        """
        if client is not None:
            return self._add_on_dask(images, ids, coords, columns, client)
        user_columns = dict(columns or {})
        if isinstance(images, Table):
            user_columns = {name: images[name] for name in images.colnames
                            if name not in ('ra', 'dec') and not isinstance(images[name], SkyCoord)}
        images, targets, default_ids, coords, geometry = self._images_of(images, coords)
        ids = default_ids if ids is None else [str(i) for i in ids]
        if len(ids) != len(images):
            raise ValueError(f'ids has {len(ids)} entries for {len(images)} images')
        user_columns = _checked_columns(user_columns, len(images))  # before the costly work
        vectors, measured = self._describe(images, targets, geometry)
        report = QTable({'id': np.array(ids, dtype=str)})
        accepted = np.array(measured['accepted'], dtype=bool)
        reasons = list(measured['reason'])
        stored = np.isin(report['id'], self.ids)
        _, first = np.unique(report['id'], return_index=True)
        repeated = ~np.isin(np.arange(len(report)), first)
        for i, galaxy_id in enumerate(ids):
            problem = _id_problem(galaxy_id)
            if problem and accepted[i]:
                reasons[i], accepted[i] = problem, False
        for mask, why in ((stored, 'id already in the database'), (repeated, 'id repeated in this batch')):
            for i in np.flatnonzero(mask & accepted):
                reasons[i] = why
            accepted &= ~mask
        report['accepted'] = accepted
        report['reason'] = np.array(reasons, dtype=str)
        for name in measured.colnames:
            if name not in report.colnames:
                report[name] = measured[name]
        report.meta['normalisation'] = dict(self.encoder.normalisation)
        keep = np.asarray(report['accepted'], dtype=bool)
        if keep.any():
            rows = report[keep]
            rows['coord'] = coords[keep]
            for name, values in user_columns.items():
                rows[name] = values[keep]
            self.database.add(vectors[keep], rows)
        return report

    def _add_on_dask(self, images, ids, coords, columns, client):
        if columns or isinstance(images, Table):
            raise ValueError('add(client=...) takes images or SkyCoord positions, without extra columns')
        from .scaleout import build_distributed
        built, report = build_distributed(images, ids, coords, client=client, encoder=self.encoder,
                                          normalisation=self.encoder.normalisation, selection=self.selection,
                                          cutout_options=self.cutout_options, existing_ids=self.ids)
        if len(built):
            self.database.add(built.vectors, built.table)
        return report

    def query(self, target, k=10, *, exclude_self=True, exclude_radius=None, where=None, negatives=None):
        """Find the stored galaxies that look most like the target(s).

        Parameters
        ----------
        target : `~astropy.nddata.NDData`, path, array, id, `~astropy.coordinates.SkyCoord`, list, or `~astropy.table.Table`
            What to look for. A position already in the database (within 2 arcsec) and an
            id are looked up, not fetched again; other positions are fetched from SDSS.
            A list or array of targets gives a long-format table with a ``query`` column.
        k : int, optional
            Neighbours per target.
        exclude_self : bool, optional
            Leave the target itself out of its neighbours.
        exclude_radius : `~astropy.units.Quantity`, optional
            Also leave out galaxies within this angle of the target (overlapping cutouts).
        where : dict or callable, optional
            Filter on stored columns (see `~astro_galsim.database.GalaxyDatabase.search`).
        negatives : as ``target``, optional
            Galaxies the results should not look like; the query moves away from them.

        Returns
        -------
        result : `~astropy.table.QTable`
            ``query``, ``rank``, ``id``, ``distance``, ``coord`` (when known), the stored
            measurements, and for a `~astropy.table.Table` target its own columns.
        """
        if len(self) == 0:
            raise ValueError('the database is empty: add galaxies (SimilaritySearch.add or '
                             '`astro-galsim build`) before querying it')
        vectors, query_ids, query_coords, carried = self._query_vectors(target)
        negative_vectors = None if negatives is None else self._query_vectors(negatives)[0]
        result = self.database.search(vectors, k=k, query_ids=query_ids, query_coords=query_coords,
                                      exclude_self=exclude_self, exclude_radius=exclude_radius,
                                      where=where, negative_vectors=negative_vectors)
        if carried is not None:
            carried = carried.copy()
            carried['query'] = np.array(query_ids, dtype=str)
            from astropy.table import join
            result = join(result, QTable(carried), keys='query', join_type='left')
            result.sort(['query', 'rank'])
        return result

    def query_examples(self, positives, negatives=None, k=10, *, beta=0.5, **kwargs):
        """Find galaxies like several examples at once (and unlike others).

        The examples' vectors are combined into one query (`~astro_galsim.database.rocchio_query`);
        the examples themselves are left out of the results.
        """
        pos, pos_ids, _, _ = self._query_vectors(positives)
        neg = None if negatives is None else self._query_vectors(negatives)[0]
        query = rocchio_query(pos, neg, beta=beta)
        return self.database.search(query, k=k, query_ids=['examples'], exclude_ids=pos_ids, **kwargs)

    def _query_vectors(self, target):
        """Vectors, labels, positions and carried user columns of query targets."""
        carried = None
        if isinstance(target, Table):
            carried = target
            target = _table_coords(target)
        # a stored id is an id even with a dot in it; other text without a file suffix is one too
        is_id = lambda t: isinstance(t, str) and (  # noqa: E731
            self.database.lookup_ids(t) >= 0 or not Path(t).suffix)
        if is_id(target):
            target = [target]
        if isinstance(target, (list, tuple)) and target and all(is_id(t) for t in target):
            rows = self.database.lookup_ids(target)
            missing = [t for t, r in zip(target, rows) if r < 0]
            if missing:
                raise KeyError(f'ids not in the database: {missing[:5]}; query by image or position instead')
            return self.vectors[rows], list(target), self.database.coords[rows], carried
        if isinstance(target, SkyCoord):
            coords = target.reshape((1,)) if target.isscalar else target
            rows = self.database.lookup_coords(coords, radius=SAME_GALAXY_RADIUS)
            vectors = np.full((len(coords), self.encoder.latent_dim), np.nan, dtype=np.float32)
            labels = [str(self.ids[r]) if r >= 0 else coord_id(c)
                      for r, c in zip(rows, coords)]
            known = rows >= 0
            vectors[known] = self.vectors[rows[known]]
            if (~known).any():
                fetched, measured = self._describe(*self._images_of(coords[~known])[:2])
                vectors[~known] = fetched
                bad = np.flatnonzero(~np.isfinite(fetched).all(axis=1))
                if bad.size:  # say why: outside the survey, no galaxy, or no network
                    raise ValueError(f'no galaxy could be described at '
                                     f'{coords[~known][bad][:3].to_string()}: {measured["reason"][bad[0]]}')
            return vectors, labels, coords, carried
        images, targets, ids, coords, geometry = self._images_of(target)
        vectors, table = self._describe(images, targets, geometry)
        refused = ~np.asarray(table['accepted'], dtype=bool)
        if refused.any():
            bad = [ids[i] for i in np.flatnonzero(refused)]
            raise ValueError(f'no galaxy the selection accepts in query image(s) {bad[:5]}: '
                             f'{table["reason"][refused][0]} (the same test as add; pass '
                             'SimilaritySearch(selection=...) to relax it)')
        return vectors, ids, coords, carried


def _checked_columns(columns, n):
    """Extra catalogue columns as arrays of ``n`` values (a single value is repeated)."""
    out = {}
    for name, values in columns.items():
        if not isinstance(values, (np.ndarray, SkyCoord)):  # Column and Quantity are arrays
            values = np.asanyarray(values)
        if not isinstance(values, SkyCoord) and values.ndim == 0:
            values = np.repeat(values, n)
        if isinstance(values, SkyCoord) and values.isscalar:
            raise ValueError(f'column {name!r} holds one position for {n} images; give one per image')
        if len(values) != n:
            raise ValueError(f'column {name!r} has {len(values)} values for {n} images; give one per '
                             'image (or a single value for all)')
        out[name] = values
    return out


def _id_problem(galaxy_id):
    """Why an id cannot be stored (FITS keeps ASCII and strips end spaces), or ''."""
    if not galaxy_id.strip():
        return 'empty id: every galaxy needs one'
    if galaxy_id != galaxy_id.strip():
        return f'id {galaxy_id!r} starts or ends with white space, which FITS strips'
    if not galaxy_id.isascii():
        return f'id {galaxy_id!r} is not ASCII text, which FITS stores'
    return ''


def _table_coords(table):
    coords = table_coords(table)
    if coords is None:
        raise ValueError(f'the table has no SkyCoord column and no ra/dec columns (columns: {table.colnames}); '
                         'add one to look galaxies up by position')
    return coords
