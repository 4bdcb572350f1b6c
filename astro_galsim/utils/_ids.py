"""Galaxy ids: which ids a database can store, and which galaxies of a batch are kept when
their ids collide (the one rule of every build)."""
import numpy as np

__all__ = ['refuse_duplicate_ids', 'id_problem']


def id_problem(galaxy_id):
    """Why an id cannot be stored (FITS keeps ASCII and strips end spaces), or ''.

    Examples
    --------
    >>> from astro_galsim.utils._ids import id_problem
    >>> id_problem('g1'), id_problem(' g1')
    ('', "id ' g1' starts or ends with white space, which FITS strips")
    """
    if not galaxy_id.strip():
        return 'empty id: every galaxy needs one'
    if galaxy_id != galaxy_id.strip():
        return f'id {galaxy_id!r} starts or ends with white space, which FITS strips'
    if not galaxy_id.isascii():
        return f'id {galaxy_id!r} is not ASCII text, which FITS stores'
    return ''


def refuse_duplicate_ids(ids, accepted, reasons, stored=()):
    """Refuse ids already ``stored`` and ids repeated in the batch (the first is kept).

    Rows already refused keep their reason. Returns new ``(accepted, reasons)`` arrays.
    """
    ids = np.asarray(ids, dtype=str)
    accepted = np.array(accepted, dtype=bool)
    reasons = np.array(reasons, dtype=object)
    _, first = np.unique(ids, return_index=True)
    repeated = ~np.isin(np.arange(len(ids)), first)
    already = np.isin(ids, np.asarray(stored, dtype=str)) if len(stored) else np.zeros(len(ids), bool)
    for mask, why in ((already, 'id already in the database'), (repeated, 'id repeated in this batch')):
        reasons[mask & accepted] = why
        accepted &= ~mask
    return accepted, reasons.astype(str)
