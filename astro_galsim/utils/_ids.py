"""Which galaxies of a batch are kept when their ids collide: the one rule of every build."""
import numpy as np

__all__ = ['refuse_duplicate_ids']


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
