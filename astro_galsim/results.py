"""Result tables of `~astro_galsim.SimilaritySearch.query`: built for joining, and written out.

One row per (query, neighbour). Query-side columns carry a ``query_`` prefix
(``query_id``, ``query_coord`` and a query catalogue's own columns), so a catalogue
with an ``id`` or ``coord`` column joins back without ``id_1``/``id_2``.
"""
import io
from html import escape
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import QTable, Table

from .io import atomic_output

__all__ = ['DEFAULT_COLUMNS', 'ResultTable', 'build_result', 'query_result', 'query_bands', 'query_numbers',
           'neighbour_distances', 'comparison', 'fitting_angle_unit', 'to_flat_table', 'write_result',
           'LABEL_COLUMNS', 'nearest_labels']

#: Catalogue columns that hold a morphology label (Galaxy Zoo 1 class, OpenNGC Hubble type, GALAXY CRUISE
#: interaction type): `SimilaritySearch.explain <astro_galsim.SimilaritySearch.explain>` shows them beside
#: the measurements and counts them among the neighbours.
LABEL_COLUMNS = ('gz1_class', 'hubble', 'hubble_coarse', 'hubble_type', 'similarity_group', 'interaction_type')

#: Neighbour measurements shown by default (``measurements=True`` gives all of them).
DEFAULT_COLUMNS = ('r50', 'r50_arcsec', 'ellipticity', 'gini', 'concentration')
#: Display formats of the columns a result shows.
FORMATS = {'distance': '.4f', 'separation': '.2f', 'r50': '.2f', 'r50_arcsec': '.2f', 'r90': '.2f',
           'r90_arcsec': '.2f', 'ellipticity': '.3f', 'gini': '.3f', 'concentration': '.2f',
           'asymmetry': '.3f', 'smoothness': '.3f', 'snr': '.1f', 'distance_percentile': '.1f'}
_WRITERS = {'.ecsv': 'ascii.ecsv', '.csv': 'ascii.csv', '.vot': 'votable', '.xml': 'votable',
            '.fits': 'fits'}


class ResultTable(QTable):
    """The `~astropy.table.QTable` of `~astro_galsim.SimilaritySearch.query`.

    A QTable in every way; in a notebook it shows the columns that say who is like whom
    (ids, rank, distance, separation, positions and the concise measurements), at most
    20 rows, and names the other columns. `write` writes every format `write_result`
    does, SkyCoord columns included.
    """

    def write(self, *args, **kwargs):
        """Write the table, as `astropy.table.Table.write` does, in any format.

        ECSV keeps the SkyCoord columns (``coord``, ``query_coord``) and ``meta['targets']``;
        formats that cannot hold a SkyCoord (VOTable, FITS, CSV, HTML...) get
        ``ra``/``dec`` and ``query_ra``/``query_dec`` columns in degrees instead
        (`to_flat_table`) and only the scalar meta.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from astro_galsim import SimilaritySearch
        >>> result = SimilaritySearch.load_demo().query('587722981740314629', k=3)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result.write(pathlib.Path(tmp) / 'neighbours.vot', format='votable')
        ...     back = QTable.read(pathlib.Path(tmp) / 'neighbours.vot')
        >>> back.colnames[:6]
        ['query_id', 'rank', 'id', 'distance', 'ra', 'dec']
        """
        fmt = kwargs.get('format')
        output = args[0] if args else kwargs.get('output')
        if fmt is None and isinstance(output, (str, Path)):
            fmt = _WRITERS.get(Path(output).suffix.lower())
            if fmt is not None:   # astropy does not know .vot by its name
                kwargs['format'] = fmt
        if fmt in ('ascii.ecsv', 'ecsv') or not any(isinstance(self[c], SkyCoord) for c in self.colnames):
            return super().write(*args, **kwargs)
        return Table(to_flat_table(self)).write(*args, **kwargs)

    def _repr_html_(self):
        keep = [c for c in ('query_id', 'rank', 'id', 'distance', 'separation', 'coord') + DEFAULT_COLUMNS
                if c in self.colnames]
        hidden = [c for c in self.colnames if c not in keep]
        shown = QTable(self[keep][:20], copy=False)
        note = (f'{len(self)} rows{"; the first 20 shown" if len(self) > 20 else ""}'
                + (f'; also: {", ".join(hidden)}' if hidden else ''))
        return shown._repr_html_() + f'<p>{escape(note)}</p>'


def build_result(found, target_of_row, labels, coords, carried=None, measurements=False, bands=None):
    """The joined result from a database search.

    Parameters
    ----------
    found : `~astropy.table.QTable`
        `~astro_galsim.database.GalaxyDatabase.search` output (``query``, ``rank``, ``id``,
        ``distance``, ``coord``, measurements).
    target_of_row : `~numpy.ndarray` of int
        For each row of ``found``, the number of its query target.
    labels : sequence of str
        ``query_id`` of every target.
    coords : `~astropy.coordinates.SkyCoord`
        Position of every target (NaN where unknown).
    carried : `~astropy.table.Table`, optional
        The query catalogue, one row per target: its columns come along as ``query_<name>``;
        its ``id`` column, with its own type, becomes ``query_id``.
    measurements : bool, optional
        Keep every stored measurement rather than `DEFAULT_COLUMNS`.
    bands : (sequence of str, sequence of str), optional
        The bands of every target and of every row's neighbour (see
        `~astro_galsim.preprocessing.shown_bands`); they give the ``comparison`` column.
    """
    labels = np.asarray(labels, dtype=str)
    result = ResultTable()
    result['query_id'] = labels[target_of_row] if len(found) else np.zeros(0, 'U1')
    result['rank'] = found['rank']
    result['id'] = found['id']
    result['distance'] = found['distance']
    if 'coord' in found.colnames:
        result['coord'] = found['coord']
        query_coord = coords[target_of_row]
        result['query_coord'] = query_coord
        known = (np.isfinite(query_coord.icrs.ra.deg) & np.isfinite(result['coord'].icrs.ra.deg)
                 if len(found) else np.zeros(0, bool))
        separation = np.full(len(found), np.nan) * u.arcsec   # NaN where a position is unknown
        if known.any():
            separation[known] = query_coord[known].separation(result['coord'][known]).to(u.arcsec)
        result['separation'] = fitting_angle_unit(separation)
    if bands is not None:
        query_bands, neighbour_bands = bands
        result['comparison'] = [comparison(query_bands[t], b) for t, b in zip(target_of_row, neighbour_bands)]
    stored = [c for c in found.colnames if c not in ('query', 'rank', 'id', 'distance', 'coord', 'bands')]
    for name in stored if measurements else [c for c in DEFAULT_COLUMNS if c in stored]:
        result[name] = found[name]
    if carried is not None:
        for name in carried.colnames:
            out = name if name.startswith('query_') else f'query_{name}'
            if out == 'query_id':  # the catalogue's own id, with its own type, is what joins back to it
                result[out] = carried[name][target_of_row]
            elif out not in result.colnames:
                result[out] = carried[name][target_of_row]
    for name, fmt in FORMATS.items():
        if name in result.colnames:
            result[name].info.format = fmt
    result.meta.update(found.meta)
    return result


def query_result(database, found, target_of_row, labels, coords, carried, measurements, bands, reasons):
    """The result of `SimilaritySearch.query <astro_galsim.SimilaritySearch.query>` and of
    ``query_examples``: one layout, with ``meta['targets']``.

    ``database`` is the `~astro_galsim.database.GalaxyDatabase` searched, ``bands`` the
    bands of each target (`query_bands`), ``reasons`` why each target failed ('' if not);
    the others are as for `build_result`.
    """
    neighbour = found['bands'] if 'bands' in found.colnames else np.full(len(found), '')
    result = build_result(found, target_of_row, labels, coords, carried, measurements,
                          bands=(bands, _known_bands(database, neighbour)))
    # plain lists, so that result.write() of any format keeps or drops them without error; the
    # query_id of a catalogue's target is its own id, with its type, as in the rows
    own = next((carried[c] for c in ('query_id', 'id') if carried is not None and c in carried.colnames), None)
    result.meta['targets'] = {'query_id': [str(label) for label in labels] if own is None else
                              np.asarray(own).tolist(),
                              'status': ['failed' if r else 'ok' for r in reasons],
                              'reason': [str(r) for r in reasons]}
    return result


def _known_bands(database, bands):
    """Stored bands, the database's provenance ``bands`` where a galaxy's are not recorded."""
    default = str(database.provenance.get('bands', ''))
    bands = np.asarray(bands, dtype=str)
    return np.where(bands != '', bands, default).astype(object)


def query_bands(database, labels, measured):
    """The bands of each query target: of the image described (``measured``, a table or None per
    target), else of the stored galaxy of that id, else the database's provenance ``bands``."""
    table = database.table
    if 'bands' not in table.colnames or not len(labels):
        bands = _known_bands(database, np.full(len(labels), ''))
    else:
        rows = database.lookup_ids([str(i) for i in labels])
        bands = _known_bands(database, np.where(rows >= 0, np.asarray(table['bands'], dtype=str)[np.maximum(rows, 0)],
                                                ''))
    for i, own in enumerate(measured):
        if own is not None and 'bands' in own.colnames:
            bands[i] = str(own['bands'][0])
    return bands


def query_numbers(rank):
    """For each result row, the number of its query among those searched (ranks restart at 1)."""
    return np.cumsum(np.asarray(rank) == 1) - 1


def neighbour_distances(database, n=2000, k=10):
    """Sorted distances of up to ``n`` stored galaxies (a fixed random sample) to their ``k`` nearest
    neighbours: the scale of `SimilaritySearch.distance_percentile
    <astro_galsim.SimilaritySearch.distance_percentile>`."""
    rows = np.random.default_rng(0).permutation(len(database))[:n]
    found = database.search(database.vectors[rows], k=min(k, len(database) - 1), query_ids=list(database.ids[rows]))
    return np.sort(np.asarray(found['distance'], dtype=float))


def fitting_angle_unit(angles):
    """Angles in the unit that reads best for the largest: deg from 1 degree, arcmin from 1', else arcsec.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astro_galsim.results import fitting_angle_unit
    >>> fitting_angle_unit([3.2, 608665.17] * u.arcsec).round(2)
    <Quantity [  0.  , 169.07] deg>
    >>> fitting_angle_unit([1.5, 30.0] * u.arcsec).unit
    Unit("arcsec")
    """
    angles = u.Quantity(angles, u.arcsec)
    finite = angles[np.isfinite(angles)]
    largest = finite.max() if finite.size else 0 * u.arcsec
    unit = u.deg if largest >= 1 * u.deg else u.arcmin if largest >= 1 * u.arcmin else u.arcsec
    return angles.to(unit)


def explanation_table(label, own, found, query_coord, percentile):
    """The query galaxy (rank 0, its measurements ``own``) above its neighbours ``found``.

    The table of `SimilaritySearch.explain <astro_galsim.SimilaritySearch.explain>`: ``id``,
    ``rank``, ``distance``, ``distance_percentile`` (``percentile(distances)``), ``coord`` where
    positions are stored, then every numeric measurement side by side, with display formats.
    """
    table = QTable({'id': np.r_[[label], np.asarray(found['id'], dtype=str)],
                    'rank': np.r_[0, np.asarray(found['rank'])],
                    'distance': np.r_[0.0, np.asarray(found['distance'], dtype=float)]})
    for name in found.colnames:
        values = found[name]
        if name in table.colnames or name in ('query', 'coord', 'accepted', 'reason', 'found') or \
                getattr(values, 'dtype', np.dtype('O')).kind not in 'biuf':
            continue
        mine = own[name][0] if name in own.colnames else np.nan
        if isinstance(values, u.Quantity):
            mine = u.Quantity(mine, values.unit)   # a plain NaN takes the column's unit
            table[name] = np.concatenate([np.atleast_1d(mine.to(values.unit)), values])
        else:
            table[name] = np.r_[float(mine), np.asarray(values, dtype=float)]
    table['distance_percentile'] = percentile(table['distance'])
    for name in LABEL_COLUMNS:   # labels where the database has them: the query's own where it is stored
        if name in found.colnames:
            mine = str(own[name][0]) if name in own.colnames else ''
            table[name] = np.r_[[mine], np.asarray(found[name], dtype=str)]
    table.meta['nearest_labels'] = nearest_labels(found)
    if 'coord' in found.colnames:
        table['coord'] = SkyCoord([query_coord.icrs] + list(found['coord'].icrs))
    first = ['id', 'rank', 'distance', 'distance_percentile'] + (['coord'] if 'coord' in table.colnames else [])
    table = table[first + [c for c in table.colnames if c not in first]]
    for name, fmt in FORMATS.items():
        if name in table.colnames:
            table[name].info.format = fmt
    return table


def nearest_labels(found):
    """How often each label occurs among neighbours that have one, per label column, commonest first.

    Parameters
    ----------
    found : `~astropy.table.Table`
        Neighbours, with any of the `LABEL_COLUMNS` (empty or masked where a galaxy has no label).

    Returns
    -------
    counts : dict
        ``{column: {label: count}}`` for each label column present.

    Examples
    --------
    >>> from astropy.table import Table
    >>> nearest_labels(Table({'hubble_coarse': ['spiral', '', 'spiral', 'lenticular']}))
    {'hubble_coarse': {'spiral': 2, 'lenticular': 1}}
    """
    counts = {}
    for name in LABEL_COLUMNS:
        if name not in found.colnames:
            continue
        column = found[name]
        values = np.asarray(column.filled('') if hasattr(column, 'filled') else column, dtype=str)
        labels, n = np.unique([v for v in values if v.strip() and v not in ('--', 'nan')], return_counts=True)
        order = np.argsort(-n, kind='stable')
        counts[name] = {str(labels[i]): int(n[i]) for i in order}
    return counts


def comparison(query_bands, neighbour_bands):
    """What a query compared: its image's bands against the neighbour's.

    Parameters
    ----------
    query_bands, neighbour_bands : str
        Bands as `~astro_galsim.preprocessing.shown_bands` gives them ('' if unknown).

    Returns
    -------
    text : str
        ``'colour (gri)'`` when both are the same colour bands, ``'grey (r)'`` when both are
        the same single band, else ``'<query> vs <neighbour>'``, for example
        ``'grey (r) vs colour (gri)'``: a single band met colour images (the encoder is
        trained to describe a galaxy alike in both; docs/segmentation.rst measures how well).

    Examples
    --------
    >>> comparison('r', 'gri'), comparison('gri', 'gri')
    ('grey (r) vs colour (gri)', 'colour (gri)')
    """
    def kind(bands):
        if not bands:
            return 'unknown bands'
        return f'grey ({bands})' if len(bands) == 1 else f'colour ({bands})'
    if query_bands == neighbour_bands:
        return kind(query_bands)
    return f'{kind(query_bands)} vs {kind(neighbour_bands)}'


def to_flat_table(result):
    """A copy whose positions are ``<name>_ra``/``<name>_dec`` columns in degrees (``ra``/``dec`` for ``coord``).

    For formats that cannot hold a `~astropy.coordinates.SkyCoord` (VOTable, FITS, CSV).

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> from astropy.table import QTable
    >>> from astro_galsim.results import to_flat_table
    >>> t = QTable({'id': ['a'], 'coord': SkyCoord([10.0], [-1.0], unit='deg'),
    ...             'query_coord': SkyCoord([10.001], [-1.0], unit='deg')})
    >>> to_flat_table(t).colnames
    ['id', 'ra', 'dec', 'query_ra', 'query_dec']
    """
    flat = QTable(meta={k: v for k, v in result.meta.items() if np.isscalar(v)})
    for name in result.colnames:
        column = result[name]
        if isinstance(column, SkyCoord):
            prefix = '' if name == 'coord' else name[:-len('coord')] if name.endswith('coord') else f'{name}_'
            if f'{prefix}ra' in result.colnames:  # a catalogue's own ra/dec came along already
                continue
            flat[f'{prefix}ra'] = column.icrs.ra.to(u.deg)
            flat[f'{prefix}dec'] = column.icrs.dec.to(u.deg)
        else:
            flat[name] = column
    return flat


def write_result(result, path, *, overwrite=False):
    """Write a result table (ECSV keeps SkyCoord columns; VOTable, FITS and CSV get ra/dec).

    The file appears whole or not at all.

    Parameters
    ----------
    result : `~astropy.table.Table`
    path : str or `~pathlib.Path`
        ``.ecsv``, ``.csv``, ``.vot``/``.xml`` (VOTable) or ``.fits``.
    overwrite : bool, optional

    Raises
    ------
    ValueError
        For another suffix.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = _WRITERS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f'cannot write {str(path)!r}: give a file name ending in one of '
                         f'{", ".join(_WRITERS)}')
    if path.exists() and not overwrite:
        raise FileExistsError(f'{str(path)!r} exists; pass overwrite=True to replace it')
    if fmt == 'ascii.ecsv':  # ECSV holds SkyCoord columns and the meta
        table = result.copy(copy_data=False)
    else:
        table = to_flat_table(result)
    for name in table.colnames:   # display formats would round the written values
        if not isinstance(table[name], SkyCoord):
            table[name].info.format = None
    if fmt == 'votable':  # the VOTable writer wants a plain Table, not Quantity-holding QTable
        table = Table(table)
    with atomic_output(path) as handle:
        if fmt.startswith('ascii'):  # the text writers want a text stream
            text = io.StringIO()
            table.write(text, format=fmt)
            handle.write(text.getvalue().encode())
        else:
            table.write(handle, format=fmt)
