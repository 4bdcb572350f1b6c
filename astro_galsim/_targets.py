"""Private to `~astro_galsim.search`: what a user can name as a galaxy, and its vector.

A query target is a stored id, a sky position, an image, text meaning any of these, or a
table or photutils ``SourceCatalog`` of them. `classify_target` sorts one into
``('id', str)``, ``('coord', SkyCoord)`` or ``('image', image)``; `target_vectors` turns a
batch into vectors: stored galaxies give theirs, the others are described.
"""
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from .ingest import is_source_catalog, source_cutouts, table_positions
from .io import COLOUR_SUFFIXES, FITS_SUFFIXES
from .utils._coords import coord_id, known_positions, nan_coords, parse_position
from .utils._images import image_items

__all__ = ['NOT_STORED', 'target_vectors', 'plain_icrs', 'stored_selves', 'warn_if_k_too_large',
           'classify_target', 'as_target_list', 'text_target', 'place_targets', 'raise_for_missing_ids']

IMAGE_SUFFIXES = FITS_SUFFIXES + COLOUR_SUFFIXES


NOT_STORED = 'id not in the database; query by image or position instead'


def raise_for_missing_ids(labels, reasons):
    """KeyError naming the ids that are not stored, if any."""
    missing = [label for label, reason in zip(labels, reasons) if reason == NOT_STORED]
    if missing:
        raise KeyError(f'ids not in the database: {missing[:5]}; query by image or position instead')


def target_vectors(target, database, describe, *, coords=None, names=None, match_radius):
    """Vectors (NaN rows where failed), labels, positions, failure reasons, the carried catalogue and
    the measurements of the targets described here (None for stored ones).

    ``describe(inputs, coords=None)`` describes images or positions not in ``database`` (the
    describe stage, `~astro_galsim.ingest.describe_items`) and returns their vectors, report,
    default ids and positions.
    """
    carried = source_labels = None
    if isinstance(target, Table):
        carried = target
        target = table_positions(target)
    elif is_source_catalog(target):
        # the query_id of a source is its photutils label, with its type, so that results join back
        source_labels = np.atleast_1d(target.labels)
        carried = Table({'id': source_labels})
        target, coords = source_cutouts(target)
    positions_given = None   # a SkyCoord array stays one array (iterating it is slow)
    if isinstance(target, SkyCoord):
        positions_given = plain_icrs(target.reshape((1,)) if target.isscalar else target.ravel())
        items = [('coord', None)] * len(positions_given)
    else:
        items = [classify_target(t, database) for t in as_target_list(target)]
    if coords is not None:
        items, coords = place_targets(items, coords)
    n = len(items)
    vectors = np.full((n, database.dim), np.nan, dtype=np.float32)
    labels, reasons = [''] * n, [''] * n
    measured = [None] * n   # measurements of targets described here (stored ones are in the table)
    positions = nan_coords(n)
    kinds = np.array([kind for kind, _ in items], dtype=object)
    if (kinds == 'id').any():
        where_id = np.flatnonzero(kinds == 'id')
        rows = database.lookup_ids([items[i][1] for i in where_id])
        found = rows >= 0
        vectors[where_id[found]] = database.vectors[rows[found]]
        positions[where_id[found]] = database.coords[rows[found]]
        for i, ok in zip(where_id, found):
            labels[i] = items[i][1]
            reasons[i] = '' if ok else NOT_STORED
    if (kinds == 'coord').any():
        where_c = np.flatnonzero(kinds == 'coord')
        sky = positions_given if positions_given is not None else plain_icrs(
            SkyCoord([plain_icrs(items[i][1]) for i in where_c]))
        positions[where_c] = sky
        rows = database.lookup_coords(sky, radius=match_radius)
        known = rows >= 0
        for i, r in zip(where_c[known], rows[known]):
            labels[i] = str(database.ids[r])
        for i, c in zip(where_c[~known], sky[~known]):
            labels[i] = coord_id(c)
        vectors[where_c[known]] = database.vectors[rows[known]]
        if (~known).any():
            fetched, table = describe(sky[~known])[:2]
            vectors[where_c[~known]] = fetched
            for j, (i, vector) in enumerate(zip(where_c[~known], fetched)):
                measured[i] = table[j:j + 1]
                if not np.isfinite(vector).all():  # outside the survey, no galaxy, or no network
                    reasons[i] = table['reason'][j] or 'no galaxy could be described there'
    if (kinds == 'image').any():
        where_im = np.flatnonzero(kinds == 'image')
        given = None
        if coords is not None:
            given = coords[where_im]
        # a place in a frame (given) is the query's target, WCS or not
        described, table, ids, image_coords = describe([items[i][1] for i in where_im], given)
        accepted = np.asarray(table['accepted'], dtype=bool)
        vectors[where_im] = np.where(accepted[:, None], described, np.nan)
        positions[where_im] = plain_icrs(image_coords)
        shared = Counter(id(items[i][1]) for i in where_im)
        for j, i in enumerate(where_im):
            # several galaxies placed in one frame are told apart by their positions
            labels[i] = coord_id(given[j]) if shared[id(items[i][1])] > 1 else ids[j]
            measured[i] = table[j:j + 1]
            if not accepted[j]:   # relaxing the selection helps only where a galaxy was found
                reasons[i] = (f'no galaxy the selection accepts: {table["reason"][j]} (pass '
                              'SimilaritySearch(selection=...) to relax it)') if table['found'][j] else \
                    f'not described: {table["reason"][j]}'
    for i, (kind, value) in enumerate(items):
        if kind == 'error':
            labels[i], reasons[i] = f'target{i}', value
    if source_labels is not None and names is None:
        labels = [str(label) for label in source_labels]
    if names is not None:
        names = [str(name) for name in as_target_list(names)]
        if len(names) != n:
            raise ValueError(f'names has {len(names)} entries for {n} query targets; give one per target')
        labels = names
    return vectors, labels, positions, reasons, carried, measured


def plain_icrs(coord):
    """``coord`` in ICRS, without the attributes of the frame it came from (``equinox``, ``obstime``).

    A SkyCoord transformed from FK5 keeps ``equinox`` and cannot be stored into an ICRS array.
    """
    icrs = coord.icrs
    return SkyCoord(icrs.ra, icrs.dec, frame='icrs')


def stored_selves(database, labels, coords, match_radius):
    """Per target, the id of the stored galaxy it is: its own id if stored, else the galaxy
    within ``match_radius`` of its position ('' where none)."""
    labels = [str(label) for label in labels]
    selves = np.array(labels, dtype=object)
    unknown = np.flatnonzero(database.lookup_ids(labels) < 0) if labels else np.zeros(0, int)
    selves[unknown] = ''
    if unknown.size:
        rows = np.atleast_1d(database.lookup_coords(coords[unknown], radius=match_radius))
        selves[unknown[rows >= 0]] = database.ids[rows[rows >= 0]]
    return [str(s) for s in selves]


def warn_if_k_too_large(k, size):
    """Warn when more neighbours are asked for than a database of ``size`` galaxies holds."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > size:
        warnings.warn(f'k={k} neighbours asked for, but the database holds only {size} galaxies: each '
                      f'target gets at most {size} (fewer once itself is left out)', AstropyUserWarning,
                      stacklevel=3)


def classify_target(item, database):
    """One query target as ('id', str), ('coord', SkyCoord) or ('image', image)."""
    if isinstance(item, (bool, np.bool_)):
        raise TypeError(f'cannot use {item!r} as a query target: give an image, an id or a position')
    if isinstance(item, (int, np.integer)):
        return 'id', str(int(item))
    if isinstance(item, SkyCoord):
        if not item.isscalar:
            raise TypeError('a list of targets holds an array of positions; give the SkyCoord array '
                            'itself, or one position per list entry')
        return 'coord', item
    if isinstance(item, np.str_):
        item = str(item)
    if isinstance(item, str):
        return text_target(item, database)
    image = image_items(item, name='query target')
    if isinstance(image, (NDData, Path, np.ndarray)):
        return 'image', image
    raise TypeError(f'cannot use {type(item).__name__} as a query target: give an image (NDData, '
                    'CCDData, Cutout2D, FITS HDU or HDUList, file path, array), an id (str or int), '
                    'a position (SkyCoord, "RA Dec", name), or a Table or SourceCatalog of them')


def as_target_list(target):
    """A list of query targets from one target, a list/tuple, or a 1-D array/Column of ids."""
    if isinstance(target, fits.HDUList):   # a list, but one image
        return [target]
    if isinstance(target, (list, tuple)):
        return list(target)
    if isinstance(target, np.ndarray) and target.dtype.kind in 'iuUSO' and target.ndim >= 1 and not (
            target.dtype.kind in 'iu' and target.ndim >= 2):
        return list(np.ravel(target)) if target.dtype.kind != 'O' else list(target)
    if isinstance(target, np.ndarray) and target.ndim == 4:
        return list(target)
    return [target]


def text_target(text, database):
    """Text as a stored id, an image file, a position or a name (the CLI's rules)."""
    if database.lookup_ids(text) >= 0:
        return 'id', text
    path = Path(text)
    if path.is_file():
        return 'image', path
    if path.is_dir():
        raise ValueError(f'{text!r} is a directory; give an image file (FITS, JPEG, PNG), a database id, '
                         '"RA Dec" or a name')
    if path.suffix.lower() in IMAGE_SUFFIXES or '/' in text or '\\' in text:
        raise FileNotFoundError(f'image file {text!r} does not exist (nor is it an id in the database)')
    position = parse_position(text)
    if position is not None:
        return 'coord', position
    if text.strip().isdigit() or not text.strip():
        raise KeyError(f'ids not in the database: [{text!r}]; query by image or position instead')
    try:
        return 'coord', SkyCoord.from_name(text)
    except Exception as exc:  # noqa: BLE001 - the name resolver raises several kinds of errors
        raise KeyError(f'{text!r} is not in the database: not a stored id, an image file, "RA Dec" '
                       f'or a name the resolver knows ({" ".join(str(exc).split())[:200]})') from None


def place_targets(items, coords):
    """Targets and positions for ``coords=``: one image and many positions gives one query per position."""
    coords = coords.ravel() if not coords.isscalar else coords.reshape((1,))
    unknown = np.flatnonzero(~known_positions(coords))
    if unknown.size:
        raise ValueError(f'coords holds {unknown.size} position(s) that are not valid (NaN or masked, first at '
                         f'index {unknown[0]}): give finite RA and Dec, or leave coords out to describe the '
                         'galaxy at the image centre')
    if len(items) == 1 and items[0][0] == 'image':
        return items * len(coords), coords
    if len(items) != len(coords):
        raise ValueError(f'coords has {len(coords)} positions for {len(items)} targets; give one per '
                         'target, or one image and any number of positions in it')
    if any(kind != 'image' for kind, _ in items):
        raise ValueError('coords places galaxies in images; the targets include ids or positions')
    return items, coords
