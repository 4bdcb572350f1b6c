"""The catalogue side of a galaxy database: checking what goes in, and filtering rows.

`normalise_table` turns a user's table into the database's catalogue (unique ASCII ``id``
first, ICRS ``coord`` second, columns FITS can store); `check_encoder_id` and
`check_provenance` check the identity stored with the vectors; `where_mask` evaluates a
``where`` filter of `~astro_galsim.database.GalaxyDatabase.search`.
"""
import numbers
import re
import warnings

import numpy as np
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.table import Column, MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from .utils._coords import nan_coords, sky_coords

__all__ = ['normalise_table', 'check_ids', 'check_encoder_id', 'check_provenance', 'where_mask',
           'fill_angular_sizes', 'ANGULAR_SIZES', 'WhereWarning']

#: Radii measured in pixels that a known pixel scale also gives in arcsec, as ``<name>_arcsec``.
ANGULAR_SIZES = ('scale_radius', 'r50', 'r90')


class WhereWarning(AstropyUserWarning):
    """A ``where`` filter that cannot select what it seems to ask for (NaN column, inverted range)."""


#: Column names the database manages itself (``ra``/``dec`` become ``coord``).
# names the columns of query results take (query_<name> carries a query catalogue's columns)
_RESERVED = ('query', 'rank', 'distance', 'separation', 'ra', 'dec')
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


def check_encoder_id(encoder_id):
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


def check_provenance(provenance):
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
        if key == 'pixel_scale':
            value = _pixel_scale(value)
        if not isinstance(value, (str, bool, numbers.Integral, numbers.Real, u.Quantity, list)):
            raise ValueError(f'provenance[{key!r}] must be a str, number, bool, scalar Quantity '
                             f'or list of str; got {type(value).__name__}.')
        if isinstance(value, str) and not value.isascii():
            raise ValueError(f'provenance[{key!r}] must be ASCII (FITS stores ASCII text).')
        out[key] = value
    return out


def _pixel_scale(value):
    """A provenance ``pixel_scale`` as a positive angle (a number or text without unit is arcsec)."""
    try:
        scale = u.Quantity(value, u.arcsec) if not isinstance(value, u.Quantity) or \
            value.unit == u.dimensionless_unscaled else value.to(u.arcsec)
    except (TypeError, ValueError, u.UnitsError):
        scale = None
    if scale is None or not scale.isscalar or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"provenance['pixel_scale'] must be a positive angle per pixel, such as "
                         f"0.4 * u.arcsec (a number means arcsec); got {value!r}.")
    return scale


def fill_angular_sizes(table, pixel_scale):
    """Give the radii of `ANGULAR_SIZES` in arcsec where the images' pixel scale is known.

    Rows whose image had its own scale (a WCS) keep their ``<name>_arcsec``; the others
    (NaN there: JPEGs and PNGs carry no scale) take ``<name> * pixel_scale``. A missing
    ``<name>_arcsec`` column is added. The table is changed in place.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        Catalogue rows with radii in pixels.
    pixel_scale : `~astropy.units.Quantity` or None
        The angle of one pixel of the images without a WCS; None changes nothing.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_galsim.catalogue import fill_angular_sizes
    >>> t = QTable({'r50': [10.0, 20.0] * u.pix, 'r50_arcsec': [3.96, float('nan')] * u.arcsec})
    >>> fill_angular_sizes(t, 0.4 * u.arcsec)
    >>> t['r50_arcsec']
    <Quantity [3.96, 8.  ] arcsec>
    """
    if pixel_scale is None or not len(table):
        return
    scale = _pixel_scale(pixel_scale) / u.pix
    for name in ANGULAR_SIZES:
        if name not in table.colnames or getattr(table[name], 'unit', None) != u.pix:
            continue
        wanted = (table[name] * scale).to(u.arcsec)
        out = f'{name}_arcsec'
        if out not in table.colnames:
            table[out] = wanted
            continue
        column = u.Quantity(table[out], u.arcsec)
        missing = ~np.isfinite(column)
        table[out] = np.where(missing, wanted, column)


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
        icrs = coord.icrs   # in a plain ICRS frame: FK5's equinox would not stack with other rows
        return SkyCoord(icrs.ra, icrs.dec, frame='icrs')
    if has_radec:
        coord = sky_coords(table['ra'], table['dec'])
        table.remove_columns(['ra', 'dec'])
        return coord
    if 'ra' in table.colnames or 'dec' in table.colnames:
        raise ValueError("the table has only one of 'ra' and 'dec'; give both (degrees) or a "
                         "SkyCoord column 'coord'.")
    return nan_coords(n)


def normalise_table(table, n, pixel_scale=None):
    """Validate a catalogue table and return a QTable with id first and coord second.

    With ``pixel_scale`` (the angle of a pixel of images without a WCS), radii missing in
    arcsec are filled (`fill_angular_sizes`).
    """
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
        if name.lower() in _RESERVED or name.lower().startswith('query_') or (
                name.lower() in ('id', 'coord') and name not in ('id', 'coord')):
            raise ValueError(f'column name {name!r} is reserved by the database (reserved: '
                             f"{', '.join(_RESERVED)}, query_*, and id/coord in lower case); rename it.")
        col = table[name]
        if name != 'coord' and getattr(col, 'dtype', None) is not None and col.dtype.kind == 'O':
            raise TypeError(f'column {name!r} has object dtype, which FITS cannot store; convert '
                            'it to numbers, booleans or strings.')
    lowered = [c.lower() for c in table.colnames]
    dupes = {c for c in lowered if lowered.count(c) > 1}
    if dupes:
        raise ValueError(f'column names {sorted(dupes)} differ only in case; FITS column names '
                         'are case-insensitive, rename them.')
    check_ids(ids)
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
    fill_angular_sizes(table, pixel_scale)
    return table


def check_ids(ids):
    if ids.size == 0 or _plain_unique_ascii(ids):
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


#: Characters that str.strip removes, in ASCII.
_ASCII_SPACE = np.array([9, 10, 11, 12, 13, 28, 29, 30, 31, 32], dtype=np.uint32)


def _plain_unique_ascii(ids):
    """True if the ids are certainly fine: ASCII, none empty or padded with white space, unique.

    Works on the character codes, with a hash for uniqueness (a million ids in about 0.2 s,
    against 5 s for sorting the strings); False leaves the verdict and the message to the
    string checks.
    """
    ids = np.ascontiguousarray(ids)
    if ids.dtype.kind != 'U' or ids.ndim != 1 or ids.itemsize == 0:
        return False
    codes = ids.view(np.uint32).reshape(len(ids), -1)
    if codes.max() >= 128:
        return False
    lengths = np.char.str_len(ids)
    if lengths.min() == 0:
        return False
    ends = codes[np.arange(len(ids)), lengths - 1]
    if np.isin(codes[:, 0], _ASCII_SPACE).any() or np.isin(ends, _ASCII_SPACE).any():
        return False
    width = -(-codes.shape[1] // 8) * 8
    packed = np.zeros((len(ids), width), dtype=np.uint8)
    packed[:, :codes.shape[1]] = codes
    hashes = np.zeros(len(ids), dtype=np.uint64)
    for word in packed.view(np.uint64).T:   # eight characters a word; wraps modulo 2**64
        hashes *= np.uint64(1099511628211)
        hashes ^= word
    hashes.sort()
    return not (hashes[1:] == hashes[:-1]).any()


def where_mask(table, where):
    """Boolean mask of the rows of ``table`` passing ``where``.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        The catalogue.
    where : callable or dict
        ``where(table) -> bool mask``, or a dict of conditions that must all hold:
        ``{column: (min, max)}`` (a tuple: either end may be None; Quantities for columns
        with units), ``{column: [a, b, ...]}`` (a list, set or 1-D array: one of these values) or
        ``{column: value}`` for equality. Rows with masked or NaN values fail ranges.

    Warns
    -----
    WhereWarning
        When a condition can pass no galaxy for a reason other than the data: its column is
        NaN (or masked) for every galaxy (a size in arcsec where no pixel scale is known,
        say), a range is inverted (min > max), or a limit is NaN.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import QTable
    >>> from astro_galsim.catalogue import where_mask
    >>> where_mask(QTable({'area': [10, 200, 50] * u.pix**2}), {'area': (40 * u.pix**2, None)})
    array([False,  True,  True])
    >>> where_mask(QTable({'kind': ['S', 'E', 'Irr']}), {'kind': ['S', 'Irr']})
    array([ True, False,  True])
    """
    n = len(table)
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
        _warn_if_hopeless(name, values, filled, cond)
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
            elif isinstance(cond, (list, set, frozenset)) or (isinstance(cond, np.ndarray) and cond.ndim == 1):
                choices = list(cond)   # one of these values
                if isinstance(values, u.Quantity):
                    choices = u.Quantity(choices, values.unit) if choices else []
                ok = np.isin(np.asarray(values.value if isinstance(values, u.Quantity) else values),
                             np.asarray(getattr(choices, 'value', choices)))
            else:
                ok = np.asarray(values == cond)
        except u.UnitsError as exc:
            raise u.UnitsError(f'where[{name!r}]: the limits must have units compatible with '
                               f'the column ({getattr(col, "unit", None)}): {exc}') from exc
        mask &= ok & filled
    return mask


def _is_nan(value):
    try:
        return bool(np.isnan(getattr(value, 'value', value)))
    except (TypeError, ValueError):
        return False


def _warn_if_hopeless(name, values, filled, cond):
    """Warn about a ``where`` condition that passes no galaxy whatever the data."""
    numeric = getattr(values, 'dtype', np.dtype('O')).kind in 'fc'
    if len(values) and (not filled.any() or (numeric and not np.isfinite(
            np.asarray(getattr(values, 'value', values))[filled]).any())):
        hint = (' (sizes in arcsec need the pixel scale of the images: see the pixel_scale of '
                'GalaxyDatabase provenance)' if name.endswith('_arcsec') else '')
        warnings.warn(f'where[{name!r}]: the column is NaN or masked for every galaxy, so no galaxy '
                      f'passes{hint}; filter on another column', WhereWarning, stacklevel=4)
    if isinstance(cond, tuple) and len(cond) == 2:
        low, high = cond
        if any(_is_nan(v) for v in cond if v is not None):
            warnings.warn(f'where[{name!r}]: a limit of {cond!r} is NaN, which no galaxy passes; give None '
                          'for an open end', WhereWarning, stacklevel=4)
        elif low is not None and high is not None:
            try:
                inverted = bool(low > high)
            except (TypeError, u.UnitsError):
                inverted = False
            if inverted:
                warnings.warn(f'where[{name!r}]: the range {cond!r} is inverted (min > max), so no galaxy '
                              'passes; give (min, max)', WhereWarning, stacklevel=4)
