"""Sky positions: ra/dec columns to `~astropy.coordinates.SkyCoord`, and ids made from positions."""
import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

__all__ = ['sky_coords', 'table_coords', 'coord_id', 'nan_coords']


def _degrees(values):
    """Angles in degrees: a Quantity is converted, a column keeps its unit, plain numbers are degrees."""
    if isinstance(values, u.Quantity):
        return values.to(u.deg)
    unit = getattr(values, 'unit', None) or u.deg
    filled = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)   # masked entries: unknown
    return (filled * u.Unit(unit)).to(u.deg)


def sky_coords(ra, dec):
    """ICRS positions from ``ra`` and ``dec`` (Quantities, unit-carrying columns or degrees; NaN unknown).

    Examples
    --------
    >>> from astro_galsim.utils._coords import sky_coords
    >>> sky_coords([10.5, 11.0], [-1.0, 2.0]).ra.deg
    array([10.5, 11. ])
    """
    return SkyCoord(ra=_degrees(ra), dec=_degrees(dec), frame='icrs')


def nan_coords(n):
    """``n`` unknown positions (NaN), as a SkyCoord array."""
    return sky_coords(np.full(n, np.nan), np.full(n, np.nan))


def table_coords(table):
    """The positions of a table: its first SkyCoord column, else its ``ra``/``dec`` columns (any case).

    Text columns may hold degrees or sexagesimal positions (right ascension in hours).
    Returns None when the table has neither.

    Raises
    ------
    ValueError
        If the ra/dec columns do not hold positions.
    """
    for name in table.colnames:
        if isinstance(table[name], SkyCoord):
            return table[name]
    names = {n.lower(): n for n in table.colnames}
    if 'ra' not in names or 'dec' not in names:
        return None
    ra, dec = table[names['ra']], table[names['dec']]
    try:
        if getattr(ra, 'unit', None) is None and np.asarray(ra).dtype.kind in 'USO':
            # text: degrees, or sexagesimal with the right ascension in hours
            sexagesimal = any(':' in str(v) or 'h' in str(v) for v in ra)
            return SkyCoord(ra, dec, unit=(u.hourangle if sexagesimal else u.deg, u.deg), frame='icrs')
        return sky_coords(ra, dec)
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise ValueError(f'the ra/dec columns {names["ra"]!r}, {names["dec"]!r} are not positions '
                         f'({exc}); give degrees, or sexagesimal text such as "12:30:00" '
                         '"+12:00:00"') from exc


def coord_id(coord):
    """The id given to a galaxy known only by its position: ``'<ra>+<dec>'`` in degrees, 5 decimals.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.utils._coords import coord_id
    >>> coord_id(SkyCoord(180.4819, -1.0693, unit='deg'))
    '180.48190-1.06930'
    """
    coord = coord.icrs
    return f'{coord.ra.deg:.5f}{coord.dec.deg:+.5f}'
