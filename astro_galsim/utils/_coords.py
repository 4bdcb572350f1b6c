"""Sky positions: ra/dec columns to `~astropy.coordinates.SkyCoord`, and ids made from positions."""
import numpy as np
from astropy import units as u
from astropy.coordinates import Angle, SkyCoord

__all__ = ['sky_coords', 'table_coords', 'coord_id', 'nan_coords', 'parse_position', 'known_positions',
           'checked_angle']


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


def known_positions(coords):
    """Boolean mask of the positions that are known (finite ra and dec).

    Examples
    --------
    >>> from astro_galsim.utils._coords import known_positions, sky_coords
    >>> known_positions(sky_coords([1.0, float('nan')], [2.0, 3.0]))
    array([ True, False])
    """
    return np.isfinite(coords.ra.deg) & np.isfinite(coords.dec.deg)


def checked_angle(value, name):
    """``value`` as an `~astropy.coordinates.Angle`, or a TypeError naming ``name`` if it is no angle."""
    if isinstance(value, (Angle, u.Quantity)) and value.unit.physical_type == 'angle':
        return Angle(value)
    raise TypeError(f'{name} must be an angle Quantity (e.g. 5 * u.arcsec); got {value!r}.')


# column names catalogues give positions under (VizieR's J2000 ones, SDSS's, photutils' ...), any case
_RA_NAMES = ('ra', 'raj2000', '_raj2000', 'ra_icrs', 'ra_deg', 'radeg', 'ra_j2000', 'alpha_j2000', 'ra2000')
_DEC_NAMES = ('dec', 'dej2000', '_dej2000', 'de_icrs', 'dec_deg', 'dedeg', 'decdeg', 'dec_j2000',
              'delta_j2000', 'dec2000', 'decj2000')


def table_coords(table):
    """The positions of a table: its first SkyCoord column, else its ra/dec columns (any case).

    Recognised names: ``ra``/``dec``, ``RAJ2000``/``DEJ2000`` (VizieR), ``RA_ICRS``/``DE_ICRS``,
    ``ra_deg``/``dec_deg``, ``ALPHA_J2000``/``DELTA_J2000`` (SExtractor) and the like.

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
    ra_name = next((names[n] for n in _RA_NAMES if n in names), None)
    dec_name = next((names[n] for n in _DEC_NAMES if n in names), None)
    if ra_name is None or dec_name is None:
        return None
    names = {'ra': ra_name, 'dec': dec_name}
    ra, dec = table[ra_name], table[dec_name]
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


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_position(text):
    """A position from text: "RA Dec" in degrees or sexagesimal (RA in hours), else None.

    Raises
    ------
    ValueError
        For two numbers outside RA [0, 360) or Dec [-90, 90] degrees.

    Examples
    --------
    >>> from astro_galsim.utils._coords import parse_position
    >>> parse_position('180.4819 -1.0693').ra.deg
    np.float64(180.4819)
    >>> round(float(parse_position('12:01:55.7 -01:04:09').ra.deg), 4)
    180.4821
    >>> parse_position('M51') is None
    True
    """
    parts = text.replace(',', ' ').split()
    if len(parts) == 2 and all(_is_number(p) for p in parts):
        ra, dec = (float(p) for p in parts)
        if not (0 <= ra < 360 and -90 <= dec <= 90):
            raise ValueError(f'"{text}" is not a sky position: RA must be in [0, 360) degrees and Dec in '
                             '[-90, 90] degrees')
        return SkyCoord(ra, dec, unit='deg')
    if len(parts) < 2 or not any(c.isdigit() for c in parts[-1]):
        return None
    try:
        if len(parts) == 2:
            return SkyCoord(parts[0], parts[1], unit=(u.hourangle, u.deg))
        return SkyCoord(text, unit=(u.hourangle, u.deg))
    except ValueError:
        return None
