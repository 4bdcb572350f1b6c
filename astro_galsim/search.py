"""`SimilaritySearch`: the front of the package.

It ties the stages together: images (or sky positions, through
`~astro_galsim.retrieval`) are prepared by `~astro_galsim.pipeline`, described by an
encoder (`~astro_galsim.model`), and stored in and searched through a
`~astro_galsim.database.GalaxyDatabase`.
"""
import warnings

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.utils.exceptions import AstropyDeprecationWarning

from .clustering import group_galaxies
from .database import DatabaseError, GalaxyDatabase, html_summary, rocchio_query
from .model import file_sha256, load_pretrained, query_arithmetic
from .ingest import describe_items
from ._targets import raise_for_missing_ids, stored_selves, target_vectors, warn_if_k_too_large
from .results import explanation_table, neighbour_distances, query_bands, query_numbers, query_result
from .utils._coords import nan_coords
from .utils._data import package_data
from .utils._ids import refuse_duplicate_ids

__all__ = ['SimilaritySearch', 'DEMO_PIXEL_SCALE']

DEMO_DATABASE = 'demo_database.fits'
#: Pixel scale of the training sample's SkyServer JPEGs (Edukov 2018), so of the demo database,
#: whatever the image size: registered on the 12 galaxies that are also SDSS FITS frames, each
#: JPEG's scale is 0.3997-0.4003"/px, median 0.3999 (``benchmarks/jpeg_pixel_scale.py``).
DEMO_PIXEL_SCALE = 0.400 * u.arcsec
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
        self._distance_scale = None   # sorted neighbour distances, and the size they were made for
        self.selection = dict(selection or {})
        self.cutout_options = dict(cutout_options or {})

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path, encoder=None, *, pixel_scale=None, **kwargs):
        """Open a database saved with `save`; it must have been made by ``encoder``.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            The database file.
        encoder : `~astro_galsim.model.GalaxyEncoder`, optional
            Default: the pretrained encoder.
        pixel_scale : `~astropy.units.Quantity`, optional
            Pixel scale of its images without a WCS, if the file does not record it (sizes in arcsec).
        **kwargs
            Passed to `SimilaritySearch`.
        """
        encoder = load_pretrained() if encoder is None else encoder
        database = GalaxyDatabase.load(path, encoder_id=encoder.identity, pixel_scale=pixel_scale)
        return cls(encoder, database, **kwargs)

    @classmethod
    def load_demo(cls):
        """The demo database shipped with the package.

        It holds the latent vectors, SDSS objids, positions and measurements (no images)
        of the 7,402 galaxies that the default selection accepts among the 7,505 SDSS DR14
        galaxies the pretrained encoder was trained on (Edukov 2018), so that any of them
        can be queried by position offline. The file's SHA-256 is checked on loading. Its
        images' pixel scale is `~astro_galsim.search.DEMO_PIXEL_SCALE` (0.400"/px): sizes are in arcsec too.

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> from astropy.coordinates import SkyCoord
        >>> demo = SimilaritySearch.load_demo()
        >>> result = demo.query(SkyCoord(180.4819, -1.0693, unit='deg'), k=5)
        >>> len(result), str(result['query_id'][0])
        (5, '587722981740314629')
        >>> demo.table['r50_arcsec'][0] / demo.table['r50'][0]   # doctest: +FLOAT_CMP
        <Quantity 0.4 arcsec / pix>
        """
        path = package_data(DEMO_DATABASE)
        expected = path.with_name(path.name + '.sha256').read_text().strip()
        if file_sha256(path) != expected:
            raise DatabaseError(f'the shipped demo database {str(path)!r} does not match its checksum: '
                                'the installation is damaged; reinstall astro_galsim')
        return cls.load(path, pixel_scale=DEMO_PIXEL_SCALE)

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

    def _repr_html_(self):
        rows = self.database.summary()
        rows['encoder'] = (f'{self.encoder.identity["name"]} (latent {self.encoder.latent_dim}, '
                           f'sha256 {self.encoder.identity["sha256"][:12]}...)')
        return html_summary('SimilaritySearch', rows)

    # ------------------------------------------------------------------ inputs
    def _described_inputs(self, inputs, coords=None):
        """Images or positions described (`~astro_galsim.ingest.describe_items`): vectors, report, ids, positions."""
        return describe_items(inputs, self.encoder, coords=coords, selection=self.selection,
                              cutout_options=self.cutout_options, storable_ids=False)

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
        return self._described_inputs(images)[0]

    def add(self, images, ids=None, coords=None, *, columns=None, client=None):
        """Add galaxies to the database; only accepted ones are stored.

        Parameters
        ----------
        images : as for `embed`, a folder, a `~astropy.table.Table` with a `~astropy.coordinates.SkyCoord`
            column or ``ra``/``dec`` columns in degrees, or a photutils ``SourceCatalog`` (one
            cutout per source, ids ``source<label>``)
            Galaxies to add. A folder means its images, named and placed by its ``index.csv``
            where it has one, as ``build`` reads it (`~astro_galsim.ingest.folder_images`).
        ids : sequence of str, optional
            Their ids (default: the SDSS objid or file name, else ``'img<n>'``).
        coords : `~astropy.coordinates.SkyCoord`, optional
            Their positions, when the images do not say.
        columns : dict of array-like, optional
            Extra catalogue columns to store (one value per input).
        client : ``distributed.Client``, optional
            Deprecated: use ``build_database(source, output, search=search, executor=client)``
            (`~astro_galsim.build.build_database`), which this calls.

        Returns
        -------
        report : `~astropy.table.QTable`
            One row per input: ``id``, ``accepted``, ``reason``, then the measurements.
        """
        if client is not None:
            warnings.warn('SimilaritySearch.add(client=...) is deprecated: build on a Dask cluster with '
                          'build_database(source, output, search=search, executor=client)',
                          AstropyDeprecationWarning, stacklevel=2)
            if columns or isinstance(images, Table):
                raise ValueError('add(client=...) takes images or SkyCoord positions, without extra columns')
            from .build import add_on_cluster
            return add_on_cluster(self, images, ids, coords, client=client)
        user_columns = dict(columns or {})
        if isinstance(images, Table):
            user_columns = {name: images[name] for name in images.colnames
                            if name not in ('ra', 'dec') and not isinstance(images[name], SkyCoord)}
        n = len(images) if isinstance(images, (list, tuple, Table)) else None
        if n is not None:   # checked before the costly work
            _checked_columns(user_columns, n)
        vectors, report, ids, coords = describe_items(images, self.encoder, ids=ids, coords=coords,
                                                      selection=self.selection, cutout_options=self.cutout_options)
        user_columns = _checked_columns(user_columns, len(report))
        with self.database.lock:   # the stored ids checked and the rows added at once, whatever other threads do
            # the one rule of every build: an id already stored is refused, a repeated one kept at its first
            report['accepted'], report['reason'] = refuse_duplicate_ids(ids, report['accepted'], report['reason'],
                                                                        stored=self.ids)
            keep = np.asarray(report['accepted'], dtype=bool)
            if keep.any():
                rows = report[keep]
                rows['coord'] = coords[keep]
                for name, values in user_columns.items():
                    rows[name] = values[keep]
                self.database.add(vectors[keep], rows)
        return report

    def query(self, target, k=10, *, coords=None, names=None, match_radius=SAME_GALAXY_RADIUS,
              exclude_self=True, exclude_radius=None, where=None, negatives=None, on_error='raise',
              measurements=False):
        """Find the stored galaxies that look most like the target(s).

        Parameters
        ----------
        target : image, id, position, text, or a list, array, `~astropy.table.Table` or catalogue of these
            What to look for:

            * images: `~astropy.nddata.NDData` (also `~astropy.nddata.CCDData`), a
              `~astropy.nddata.Cutout2D`, a FITS HDU or `~astropy.io.fits.HDUList`, an image
              file (FITS, JPEG, PNG) or a ``(3, ny, nx)``/``(ny, nx)`` array;
            * ids of stored galaxies: str or int (SDSS objids as astroquery returns them), or
              an array or `~astropy.table.Column` of them;
            * positions: `~astropy.coordinates.SkyCoord` (any shape), "RA Dec" text (degrees
              or sexagesimal) or an object name (resolved through Sesame; needs the network);
              a position within ``match_radius`` of a stored galaxy is that galaxy, others
              are fetched from SDSS;
            * a catalogue: a `~astropy.table.Table` with a SkyCoord column or ra/dec columns
              (``ra``/``dec``, ``RAJ2000``/``DEJ2000``...), whose columns come along as
              ``query_<name>``; or a photutils ``SourceCatalog``, one cutout per source from
              its data and WCS.
        k : int, optional
            Neighbours per target (a warning says when the database holds fewer).
        coords : `~astropy.coordinates.SkyCoord`, optional
            Where the query galaxies are in the target image(s): with one image, one query per
            position in it; with several, one position per image. Positions come from the
            image WCS (never from pointing keywords such as ``RA``/``DEC``), so give them
            here for galaxies off the image centre.
        names : sequence of str, optional
            ``query_id`` of each target (default: the stored id, the image's objid or file
            name, or ``'<ra><dec>'``).
        match_radius : `~astropy.units.Quantity`, optional
            Separation within which a position is taken to be a stored galaxy.
        exclude_self : bool, optional
            Leave the target itself out of its neighbours: the stored galaxy of its id, or,
            for an image or a position, the stored galaxy within ``match_radius`` of it.
        exclude_radius : `~astropy.units.Quantity`, optional
            Also leave out galaxies within this angle of the target (overlapping cutouts).
        where : dict or callable, optional
            Filter on stored columns (see `~astro_galsim.database.GalaxyDatabase.search`).
        negatives : as ``target``, optional
            Galaxies the results should not look like; the query moves away from them.
        on_error : {'raise', 'skip'}, optional
            What a target that cannot be described does: raise, or leave it out of the
            rows and say why in ``result.meta['targets']``.
        measurements : bool, optional
            Give every stored measurement, not only the concise default set.

        Returns
        -------
        result : `~astropy.table.QTable`
            One row per (target, neighbour), in target order: ``query_id``, ``rank``, ``id``,
            ``distance``, ``coord`` and ``query_coord`` (when positions are stored),
            ``separation`` (where both are known), measurements, and a catalogue target's own
            columns as ``query_<name>``. ``result.meta['targets']`` holds, per target, its
            ``query_id``, ``status`` (``'ok'`` or ``'failed'``) and ``reason``, as lists
            (``Table(result.meta['targets'])`` makes them a table).

        Raises
        ------
        ValueError
            With ``on_error='raise'``, if a target cannot be described (the first reasons).
        KeyError
            For text that is neither a stored id, a file, a position nor a known name.

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> demo = SimilaritySearch.load_demo()
        >>> result = demo.query(['180.4819 -1.0693', 587722981742084144], k=2)
        >>> result['query_id', 'rank'].pformat()[2:]
        ['587722981740314629    1', '587722981740314629    2', '587722981742084144    1', '587722981742084144    2']
        """
        if len(self) == 0:
            raise ValueError('the database is empty: add galaxies (SimilaritySearch.add or '
                             '`astro-galsim build`) before querying it')
        if on_error not in ('raise', 'skip'):
            raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
        vectors, labels, query_coords, reasons, carried, measured = self._target_vectors(
            target, coords=coords, names=names, match_radius=match_radius)
        failed = np.flatnonzero([bool(r) for r in reasons])
        if failed.size and on_error == 'raise':
            raise_for_missing_ids(labels, reasons)
            shown = '; '.join(f'{labels[i]}: {reasons[i]}' for i in failed[:3])
            raise ValueError(f'{failed.size} of {len(labels)} target(s) could not be described ({shown}); '
                             "pass on_error='skip' to keep the results of the others")
        negative_vectors = None
        if negatives is not None:
            negative_vectors, negative_ids, _, why, _, _ = self._target_vectors(negatives, match_radius=match_radius)
            raise_for_missing_ids(negative_ids, why)
            if not np.isfinite(negative_vectors).all():
                raise ValueError(f'a negative example could not be described: {next(r for r in why if r)}')
        warn_if_k_too_large(k, len(self))
        ok = np.setdiff1d(np.arange(len(labels)), failed)
        self_ids = stored_selves(self.database, labels, query_coords, match_radius)   # by id or position
        found = self.database.search(vectors[ok], k=k, query_ids=[self_ids[i] for i in ok],
                                     query_coords=query_coords[ok], exclude_self=exclude_self,
                                     exclude_radius=exclude_radius, where=where,
                                     negative_vectors=negative_vectors) if ok.size else \
            self.database.search(np.zeros((1, self.database.dim), np.float32), k=1)[:0]
        target_of_row = ok[query_numbers(found['rank'])] if len(found) else np.zeros(0, np.int64)
        return query_result(self.database, found, target_of_row, labels, query_coords, carried, measurements,
                            query_bands(self.database, labels, measured), reasons)

    def query_examples(self, positives, negatives=None, k=10, *, beta=0.5, name='examples',
                       match_radius=SAME_GALAXY_RADIUS, measurements=False, **kwargs):
        """Find galaxies like several examples at once (and unlike others).

        The examples' vectors are combined into one query (`~astro_galsim.database.rocchio_query`);
        the examples (the stored galaxies they are, by id or position) are left out.

        Parameters
        ----------
        positives, negatives : as the ``target`` of `query`
            Galaxies the results should look like, and unlike.
        k, match_radius, measurements
            As for `query`.
        beta, name : float, str, optional
            How far to move away from the negatives; the ``query_id`` of the combined query.
        **kwargs
            ``where``, ``exclude_radius``... as for `~astro_galsim.database.GalaxyDatabase.search`.

        Returns
        -------
        result : `~astropy.table.QTable`
            The table `query` returns, for one target named ``name``.

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> demo = SimilaritySearch.load_demo()
        >>> like = demo.query_examples(['587722981740314629', '587722981742084144'], k=3)
        >>> like.colnames == demo.query('587722981740314629', k=3).colnames
        True
        >>> like['query_id'].tolist()[:1], '587722981742084144' in list(like['id'])
        (['examples'], False)
        """
        pos, pos_ids, pos_coords, reasons, _, measured = self._target_vectors(positives, match_radius=match_radius)
        raise_for_missing_ids(pos_ids, reasons)
        neg = None if negatives is None else self._target_vectors(negatives, match_radius=match_radius)[0]
        if any(reasons) or (neg is not None and not np.isfinite(neg).all()):
            raise ValueError(f'an example could not be described: {next((r for r in reasons if r), "")}')
        warn_if_k_too_large(k, len(self))
        query = rocchio_query(pos, neg, beta=beta)
        selves = [s for s in stored_selves(self.database, pos_ids, pos_coords, match_radius) if s]
        found = self.database.search(query, k=k, query_ids=[str(name)], exclude_ids=list(pos_ids) + selves, **kwargs)
        bands = set(query_bands(self.database, pos_ids, measured))
        return query_result(self.database, found, np.zeros(len(found), np.int64), [str(name)], nan_coords(1), None,
                            measurements, [bands.pop() if len(bands) == 1 else ''], [''])

    def _target_vectors(self, target, *, coords=None, names=None, match_radius=SAME_GALAXY_RADIUS):
        with query_arithmetic():   # compared, not stored: a one-off query need not import torch
            return target_vectors(target, self.database, self._described_inputs, coords=coords, names=names,
                                  match_radius=match_radius)

    def cluster(self, *, method='hdbscan', k=15, min_cluster_size=10, min_samples=None, n_clusters=None, assign_noise=True):
        """Group the stored galaxies by their k-nearest-neighbour graph.

        Galaxy shapes are mostly a continuum: HDBSCAN finds few dense groups (in the demo
        database, described by ``astro_galsim-ae-v8``, 3 groups, and 37% of its galaxies
        noise; 33% with ``astro_galsim-ae-v7``, 57% with ``ae-v6``, 32% with ``ae-v5``, 60%
        with ``ae-v4``). By default each noise galaxy takes the group of its nearest
        clustered neighbour (`~astro_galsim.clustering.assign_noise`), and ``core`` says
        which galaxies HDBSCAN placed itself.

        Parameters
        ----------
        method, k, min_cluster_size, min_samples, n_clusters
            As for `~astro_galsim.database.GalaxyDatabase.cluster`.
        assign_noise : bool, optional
            False leaves noise galaxies at -1.

        Returns
        -------
        groups : `~astropy.table.QTable`
            ``id``, ``cluster`` (0, 1, ...; -1 for noise) and ``core``, one row per stored
            galaxy in the order of `ids`.

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> demo = SimilaritySearch.load_demo()
        >>> groups = demo.cluster()
        >>> bool((groups['cluster'] >= 0).all()), 0.55 < float(groups['core'].mean()) < 0.7
        (True, True)
        """
        return group_galaxies(self.database, method=method, k=k, min_cluster_size=min_cluster_size,
                              min_samples=min_samples, n_clusters=n_clusters, assign_noise=assign_noise)

    def distance_percentile(self, distance):
        """Where a distance falls among those between stored galaxies and their neighbours.

        The scale is the distances of up to 2,000 stored galaxies (a fixed random sample) to
        their 10 nearest neighbours, computed once per `SimilaritySearch` (again after `add`):
        5 means closer than 95% of the neighbour distances in this database, 50 a typical
        neighbour.

        Parameters
        ----------
        distance : float or array-like

        Returns
        -------
        float or `~numpy.ndarray`
            Percentiles in [0, 100].

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> demo = SimilaritySearch.load_demo()
        >>> float(demo.distance_percentile(0.0)), float(demo.distance_percentile(10.0))
        (0.0, 100.0)
        """
        if len(self) < 2:
            raise ValueError('distances have no scale in a database of fewer than 2 galaxies')
        if self._distance_scale is None or self._distance_scale[1] != len(self):
            self._distance_scale = (neighbour_distances(self.database), len(self))
        scale = self._distance_scale[0]
        return 100.0 * np.searchsorted(scale, np.asarray(distance, dtype=float), side='right') / len(scale)

    def explain(self, target, k=5, **kwargs):
        """Why the neighbours of one galaxy are similar: its measurements beside theirs.

        Parameters
        ----------
        target : as for `query`, one galaxy
        k : int, optional
            Neighbours to explain.
        **kwargs
            Passed to `~astro_galsim.database.GalaxyDatabase.search` (``where``,
            ``exclude_radius``...), and ``match_radius`` as for `query`.

        Returns
        -------
        explanation : `~astropy.table.QTable`
            The query galaxy (``rank`` 0) then its neighbours: ``id``, ``rank``, ``distance``,
            ``distance_percentile`` (see `distance_percentile`), ``coord`` where positions are
            stored, and every measurement (``r50_arcsec`` and the like where the pixel scale
            is known). `~astro_galsim.visualization.similarity_figure` shows their normalised
            inputs side by side. Where the database has morphology labels (the
            `~astro_galsim.results.LABEL_COLUMNS`, such as ``hubble_coarse``), they are
            shown too, and ``meta['nearest_labels']`` counts them among the neighbours
            (`~astro_galsim.results.nearest_labels`).

        Examples
        --------
        >>> from astro_galsim import SimilaritySearch
        >>> demo = SimilaritySearch.load_demo()
        >>> why = demo.explain('587722981740314629', k=3)
        >>> why['rank'].tolist(), str(why['id'][0])
        ([0, 1, 2, 3], '587722981740314629')
        >>> bool(why['distance_percentile'][1] <= why['distance_percentile'][3])
        True
        """
        radius = kwargs.pop('match_radius', SAME_GALAXY_RADIUS)
        vectors, labels, coords, reasons, _, measured = self._target_vectors(target, match_radius=radius)
        if len(labels) != 1:
            raise ValueError(f'explain takes one galaxy; got {len(labels)} targets')
        raise_for_missing_ids(labels, reasons)
        if reasons[0]:
            raise ValueError(f'{labels[0]}: {reasons[0]}')
        found = self.database.search(vectors, k=k, query_ids=stored_selves(self.database, labels, coords, radius),
                                     query_coords=coords, **kwargs)
        row = self.database.lookup_ids(labels[0])
        own = self.table[row:row + 1] if measured[0] is None else measured[0]
        return explanation_table(labels[0], own, found, coords[0], self.distance_percentile)


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
