"""The describe stage: the one place where inputs become vectors.

Every door into a database calls `describe_items`: `SimilaritySearch.add
<astro_galsim.SimilaritySearch.add>` and ``embed``, the query targets that are not stored
galaxies, the serial build and every partition of a Dask build
(`~astro_galsim.partitions.compute_partition`). It takes the galaxies in any form the
package accepts (image files, arrays, NDData and its kin, FITS HDUs, a photutils
``SourceCatalog``, a table or `~astropy.coordinates.SkyCoord` of positions to fetch) with
their ids and positions, and gives their vectors and a report of one row per galaxy. So an
input is read, placed, fetched, described and checked in one way, whichever door it came in
by: the same input gives the same id, position and vector everywhere, and a bad one (an
unreadable file, a failed download, an id FITS cannot store) is one rejected row.
"""
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.nddata import NDData
from astropy.table import QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from .config import conf
from .io import COLOUR_SUFFIXES, FITS_SUFFIXES, file_kind, image_stem
from .utils._coords import coord_id, known_positions, nan_coords, table_coords
from .utils._ids import id_problem
from .utils._images import image_id, image_items, image_positions, wcs_and_shape

__all__ = ['Described', 'describe_items', 'interpret_items', 'folder_images', 'is_source_catalog',
           'source_cutouts', 'table_positions']

Described = namedtuple('Described', ['vectors', 'report', 'ids', 'coords'])
Described.__doc__ = """What `describe_items` gives: ``vectors`` (N, d), one row per input (NaN where no
galaxy was described); ``report``, a `~astropy.table.QTable` of ``id``, ``accepted``, ``reason``
and the measurements; ``ids`` (list of str) and ``coords`` (`~astropy.coordinates.SkyCoord`,
NaN where unknown), in input order."""

# from this many images on, the pipeline's processes pay for starting
_MANY = 100


def is_source_catalog(items):
    """Whether ``items`` is a photutils ``SourceCatalog``."""
    return type(items).__name__ == 'SourceCatalog' and type(items).__module__.startswith('photutils')


def source_cutouts(catalog):
    """One NDData cutout (with its WCS) per source of a photutils SourceCatalog, and the source positions."""
    if catalog.wcs is None or not hasattr(catalog.wcs, 'deepcopy'):
        raise ValueError('the SourceCatalog has no FITS WCS (SourceCatalog(..., wcs=...)): without one '
                         'its sources have no sky positions to query')
    extent = np.maximum(catalog.bbox_xmax - catalog.bbox_xmin, catalog.bbox_ymax - catalog.bbox_ymin) + 1
    side = int(max(64, 2 * np.max(np.atleast_1d(extent)))) | 1  # odd: the source at the centre pixel
    try:
        cutouts = catalog.make_cutouts((side, side), mode='partial', fill_value=np.nan)
    except ValueError:   # integer data cannot hold NaN: pad with 0, masked below
        cutouts = catalog.make_cutouts((side, side), mode='partial', fill_value=0)
    cutouts = [cutouts] if catalog.isscalar else cutouts
    images = []
    for label, cutout in zip(np.atleast_1d(catalog.labels), cutouts):
        wcs = catalog.wcs.deepcopy()
        wcs.wcs.crpix = wcs.wcs.crpix - np.asarray(cutout.xyorigin, dtype=float)
        outside = np.ones(cutout.data.shape, dtype=bool)   # the padding beyond the catalogue's image
        outside[cutout.slices_cutout] = False
        images.append(NDData(np.array(cutout.data), wcs=wcs, mask=outside,
                             meta={'objid': f'source{label}', 'kind': 'fits'}))
    sky = catalog.sky_centroid
    return images, (sky.reshape((1,)) if sky.isscalar else sky)


def table_positions(table):
    """The positions of a table's rows (a SkyCoord column, or ra/dec columns), or a ValueError saying why not."""
    coords = table_coords(table)
    if coords is None:
        raise ValueError(f'the table has no SkyCoord column and no ra/dec columns (columns: {table.colnames}); '
                         'add one to look galaxies up by position')
    return coords


def folder_images(folder):
    """The images of a folder with their ids and positions, as a build reads them.

    An ``index.csv`` in the folder (a ``path`` column; optionally ``objid``/``id``, ``ra``,
    ``dec`` in degrees) lists, names and places the images; without one, every FITS, JPEG
    and PNG file under the folder is taken, named by its file name. Entries that are not
    regular files (a FIFO) are skipped with a warning.

    Parameters
    ----------
    folder : str or `~pathlib.Path`

    Returns
    -------
    items : list of `~pathlib.Path`
    ids : list of str
    coords : `~astropy.coordinates.SkyCoord`
        NaN where the index does not place an image.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from astro_galsim.ingest import folder_images
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / 'ngc1.jpg').write_bytes(b''), (folder / 'notes.txt').write_text('')
    >>> items, ids, coords = folder_images(folder)
    >>> ids
    ['ngc1']
    """
    folder = Path(folder)
    index = folder / 'index.csv'
    if index.is_file():
        table = Table.read(index, format='ascii.csv')
        if 'path' not in table.colnames:
            raise ValueError(f'{str(index)!r} has no path column (columns: {table.colnames}): a build '
                             'index lists the image files (path; optionally objid, ra, dec); fix it, '
                             'or move it away to build from every image in the folder')
        items = [folder / p for p in table['path']]
    else:
        items = sorted(p for p in folder.rglob('*') if p.name.lower().endswith(FITS_SUFFIXES + COLOUR_SUFFIXES))
        items = [p for p in items if p.is_file() or not p.exists() or _skipped(p)]   # a FIFO blocks reads
        table = Table({'path': [str(p) for p in items]})
    if not items:
        raise ValueError(f'no images (FITS, JPEG, PNG) found in folder {str(folder)!r}')
    names = {n.lower(): n for n in table.colnames}
    if 'ra' in names and 'dec' in names:
        try:
            coords = table_coords(table)
        except ValueError as exc:
            raise ValueError(f'catalogue {str(folder)!r}: {exc}') from exc
    else:
        coords = nan_coords(len(items))
    id_col = names.get('objid') or names.get('id')
    ids = [str(v) for v in table[id_col]] if id_col is not None else [image_stem(p) for p in items]
    return items, ids, coords


def _skipped(path):
    """Warn that a path which is not a regular file (a FIFO...) is left out; False."""
    warnings.warn(f'{str(path)!r} is skipped: it is not a regular file ({file_kind(path)})', AstropyUserWarning)
    return False


def interpret_items(items, ids=None, coords=None):
    """The galaxies of an input, before anything is described: the one reading of every input kind.

    Parameters
    ----------
    items : image, list of images, folder, `~astropy.table.Table`, ``SourceCatalog`` or SkyCoord
        Images: NDData (also CCDData), `~astropy.nddata.Cutout2D`, FITS HDU or HDUList, image
        file (FITS, JPEG, PNG) or ``(3, ny, nx)``/``(ny, nx)`` array (a ``(n, 3, ny, nx)``
        array is ``n`` images). A folder means its images, with the ids and positions of its
        ``index.csv`` where it has one (`folder_images`, as a build reads it). A table's
        positions, or a SkyCoord, are fetched from a survey when described; a
        ``SourceCatalog`` gives one cutout per source.
    ids : sequence, optional
        One id per galaxy. Default: an image's objid or file name, ``'img<n>'``, a source's
        ``source<label>``; for positions, None (the survey's objid is taken when they are
        fetched, else the position).
    coords : `~astropy.coordinates.SkyCoord`, optional
        Positions, where the images do not say (NaN where unknown): their WCS centre or meta
        ra/dec fill the unknown ones (a FITS file's header is read, not its pixels).

    Returns
    -------
    items : list or `~astropy.coordinates.SkyCoord`
        The images (NDData, paths or arrays), or the positions to fetch.
    ids : list of str or None
    coords : `~astropy.coordinates.SkyCoord`
        One ICRS position per galaxy.
    geometry : list of (WCS, shape) or None
        The celestial WCS and shape of each image (None, None without a WCS); None for positions.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.ingest import interpret_items
    >>> items, ids, coords, _ = interpret_items([np.zeros((32, 32)), np.zeros((32, 32))])
    >>> ids, bool(np.isnan(coords.ra.deg).all())
    (['img0', 'img1'], True)
    """
    if isinstance(items, (str, Path)) and Path(items).is_dir():
        items, folder_ids, folder_coords = folder_images(items)
        ids = folder_ids if ids is None else ids
        coords = folder_coords if coords is None else coords
    elif isinstance(items, Table):
        items = table_positions(items)
    elif is_source_catalog(items):
        items, positions = source_cutouts(items)
        coords = positions if coords is None else coords
    if coords is not None:
        coords = coords.reshape((1,)) if coords.isscalar else coords
    if isinstance(items, SkyCoord):
        items = items.reshape((1,)) if items.isscalar else items.ravel()
        coords, geometry = (items if coords is None else coords), None
        if len(coords) != len(items):
            raise ValueError(f'coords has {len(coords)} positions for {len(items)} positions to fetch')
    else:
        single = image_items(items, name='images')   # Cutout2D, FITS HDU or HDUList as NDData
        if isinstance(single, (NDData, str, Path, np.ndarray)) and not (
                isinstance(single, np.ndarray) and single.dtype == object):
            items = [single] if not (isinstance(single, np.ndarray) and single.ndim == 4) else list(single)
        items = [image_items(item, name=f'image {i}') for i, item in enumerate(items)]
        for item in items:
            if not isinstance(item, (NDData, str, Path, np.ndarray)):
                raise TypeError(f'cannot use {type(item).__name__} as a galaxy image: give NDData, a file '
                                'path (FITS, JPEG, PNG), a (3, ny, nx) or (ny, nx) array, or SkyCoord positions')
        geometry = [wcs_and_shape(item) for item in items]
        coords = image_positions(items, coords, geometry)
        if ids is None:
            ids = [image_id(item, i) for i, item in enumerate(items)]
    if ids is not None:
        ids = [str(i) for i in (np.atleast_1d(ids) if np.ndim(ids) == 0 else ids)]
        if len(ids) != len(items):
            raise ValueError(f'ids has {len(ids)} entries for {len(items)} galaxies; give one per galaxy')
    return items, ids, coords.icrs, geometry


def describe_items(items, encoder, *, ids=None, coords=None, normalisation=None, selection=None,
                   cutout_options=None, workers=None, progress=None, storable_ids=True):
    """Describe galaxies given in any form as vectors, with one report row each: the describe stage.

    Positions are fetched with `~astro_galsim.retrieval.get_cutouts` (a failed download is a
    rejected row). Images are prepared and encoded by `~astro_galsim.pipeline.describe`, the
    galaxy picked at its position through the image WCS where there is one; a position the
    WCS puts off the image, or on no galaxy, rejects the galaxy with the reason (and says
    whether the image centre holds one, which points to a wrong WCS). An id that a database
    cannot store is a rejected row too. Ids already stored, or repeated, are the caller's to
    refuse (by the one rule of ``utils/_ids.py``), since only it knows the database.

    Parameters
    ----------
    items, ids, coords
        As for `interpret_items`.
    encoder : `~astro_galsim.model.GalaxyEncoder`
        What describes the prepared images.
    normalisation : dict, optional
        Default: the encoder's.
    selection : dict, optional
        Keywords of `~astro_galsim.segmentation.select_galaxy`.
    cutout_options : dict, optional
        Keywords of `~astro_galsim.retrieval.get_cutouts`, for positions.
    workers : int, optional
        Processes of the pipeline. Default: ``conf.workers`` from a hundred images on, else 1.
    progress : bool, optional
        Progress bar (default: ``conf.show_progress`` for more than 50 images).
    storable_ids : bool, optional
        Reject the galaxies whose ids a database cannot store; False where they are only
        labels (query targets).

    Returns
    -------
    `Described`
        ``vectors``, ``report``, ``ids``, ``coords``.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.ingest import describe_items
    >>> from astro_galsim.model import load_pretrained
    >>> y, x = np.mgrid[:81, :81]
    >>> disc = np.exp(-np.hypot((x - 40) / 10, (y - 40) / 5))[None].repeat(3, 0)
    >>> out = describe_items([disc, disc], load_pretrained(), ids=['disc', ' disc'])
    >>> out.vectors.shape, out.report['accepted'].tolist()
    ((2, 64), [True, False])
    >>> str(out.report['reason'][1])
    "id ' disc' starts or ends with white space, which FITS strips"
    """
    from .pipeline import describe  # photutils is imported only when images are prepared
    normalisation = dict(encoder.normalisation if normalisation is None else normalisation)
    items, ids, coords, geometry = interpret_items(items, ids, coords)
    if isinstance(items, SkyCoord):
        from .retrieval import get_cutouts
        images = get_cutouts(items, **dict(cutout_options or {})) if len(items) else []
        if ids is None:   # the survey's objid, else the position
            ids = [str(getattr(c, 'meta', {}).get('objid', coord_id(p))) for c, p in zip(images, items)]
        targets = items
    else:
        images = items
        targets = coords if any(wcs is not None for wcs, _ in geometry) else None
    if len(images) == 0:
        vectors = np.zeros((0, encoder.latent_dim), np.float32)
        table = QTable({'found': np.zeros(0, bool), 'accepted': np.zeros(0, bool), 'reason': np.zeros(0, str)})
    else:
        if workers is None:
            workers = conf.workers if len(images) >= _MANY else 1
        vectors, table = describe(images, encoder, targets, normalisation=normalisation, selection=selection,
                                  workers=workers, progress=progress)
        if targets is not None:
            _check_target_pixels(images, targets, vectors, table, geometry, normalisation, selection)
    report = QTable({'id': np.array(ids, dtype=str)})
    accepted = np.array(table['accepted'], dtype=bool)
    reasons = np.array(table['reason'], dtype=object)
    for i, galaxy_id in enumerate(ids):
        problem = id_problem(galaxy_id) if storable_ids else ''
        if problem and accepted[i]:
            reasons[i], accepted[i] = problem, False
    report['accepted'], report['reason'] = accepted, reasons.astype(str)
    for name in table.colnames:
        if name not in report.colnames:
            report[name] = table[name]
    report.meta['normalisation'] = normalisation
    return Described(vectors, report, list(ids), coords)


def _check_target_pixels(images, targets, vectors, table, geometry, normalisation, selection):
    """Reject galaxies whose WCS puts their position off the image or on no galaxy, saying why.

    A position outside the image cannot be described there (the nearest source would
    be); a position on no galaxy while the image centre holds one points to a wrong WCS.
    """
    from .pipeline import prepare_one
    reasons = table['reason'].astype(object)
    for i, (image, target) in enumerate(zip(images, targets)):
        wcs, shape = wcs_and_shape(image) if geometry is None else geometry[i]
        if wcs is None or not known_positions(target):
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
            centre = prepare_one(image, selection=selection, normalisation=normalisation)[1]['found']
        except Exception:  # noqa: BLE001 - only the explanation depends on it
            centre = False
        if centre:
            where += ('; the image centre holds a galaxy: the WCS is probably wrong. Correct the '
                      'header, or drop the WCS to describe the galaxy at the centre')
        vectors[i] = np.nan
        table['found'][i] = table['accepted'][i] = False
        reasons[i] = where
    table['reason'] = reasons.astype(str)
