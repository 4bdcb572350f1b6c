"""The FITS file format of a galaxy database (``ASTRO_GALSIM_DB``), below `~astro_galsim.database`.

One file, four HDUs that any FITS reader opens: PRIMARY (format keywords, encoder identity,
provenance keywords), GALAXIES (the catalogue table with ``id``, ``ra``, ``dec`` and the
measurements), VECTORS (a float32 image, one row per galaxy) and PROVENANCE (key, value,
type, unit); once an approximate index is built, NEIGHBOURS (its k-NN graph) and SEARCHTREE,
SEARCHORDER, SEARCHPTR and SEARCHEDGES (its search tree and search graph) may follow. Reading
takes data only (no pickle, nothing executed) and checks the FITS checksums, the format name
and version and the consistency of the HDUs.
`~astro_galsim.database.GalaxyDatabase.save` and ``load`` are its users; see
``docs/search.rst`` for the format.
"""
import errno
import numbers
import os
import warnings

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.time import Time
from astropy.table import Column, QTable, Table

from .io import atomic_output
from .utils._coords import sky_coords
from .utils._data import package_version

__all__ = ['FORMAT_NAME', 'FORMAT_VERSION', 'DatabaseError', 'database_hdulist', 'read_database_file',
           'write_database_file']

#: Value of the ``FMTNAME`` keyword that marks an astro_galsim database file.
FORMAT_NAME = 'ASTRO_GALSIM_DB'
#: Version of the file format written by this module (``FMTVERS`` keyword).
FORMAT_VERSION = 1

#: Provenance keys mirrored as primary-header keywords: key -> (keyword, comment).
_HEADER_PROVENANCE = {
    'survey': ('SURVEY', 'survey the images come from'),
    'data_release': ('DATAREL', 'data release of the survey'),
    'bands': ('BANDS', 'bands used, comma-separated'),
    'pixel_scale': ('PIXSCALE', '[arcsec] pixel scale of the images (no WCS)'),
}


class DatabaseError(Exception):
    """A database file or database content that cannot be used as it is."""


def database_hdulist(vectors, table, *, encoder_id, provenance, metric, graph=None, search=None):
    """The FITS representation of a database's vectors, catalogue and identity.

    Parameters
    ----------
    vectors : `~numpy.ndarray`, shape (N, d)
        Latent vectors.
    table : `~astropy.table.QTable`
        The catalogue: ``id``, ``coord`` (SkyCoord), then the other columns.
    encoder_id : dict
        ``{'name', 'sha256'}`` of the encoder.
    provenance : dict
        Checked provenance (str, number, bool, scalar Quantity or list of str values).
    metric : str
        Distance metric of the database.
    graph : `~numpy.ndarray` of int, shape (N, n_neighbors), optional
        The k-NN graph of the vectors built by the pynndescent index
        (`~astro_galsim.index.NeighbourIndex.knn_graph`), stored in a ``NEIGHBOURS`` HDU so that
        a reopened database builds its index without running NN-descent again.
    search : dict, optional
        With ``graph``: that index's search tree and search graph
        (`~astro_galsim.index.NeighbourIndex.search_structure`), stored in SEARCHTREE (table of
        the tree's nodes), SEARCHORDER (the rows in tree order), SEARCHPTR and SEARCHEDGES (the
        graph, compressed rows), so that a reopened database does not build them again.

    Returns
    -------
    `~astropy.io.fits.HDUList`
        PRIMARY (format keywords), GALAXIES (table), VECTORS (image), PROVENANCE, and
        NEIGHBOURS (int32 image) when ``graph`` is given, then the search HDUs.
    """
    primary = fits.PrimaryHDU()
    hdr = primary.header
    _set_card(hdr, 'FMTNAME', FORMAT_NAME, 'file format: astro_galsim galaxy database')
    _set_card(hdr, 'FMTVERS', FORMAT_VERSION, 'version of the file format')
    _set_card(hdr, 'CREATOR', f'astro_galsim {package_version()}'[:68], 'software that wrote the file')
    _set_card(hdr, 'DATE', Time.now().utc.isot[:19], 'UTC date the file was written')
    _set_card(hdr, 'NGALAXY', len(vectors), 'number of galaxies (table rows, vectors)')
    _set_card(hdr, 'NDIM', vectors.shape[1], 'dimension of the latent vectors')
    _set_card(hdr, 'METRIC', metric, 'distance metric for similarity search')
    _set_card(hdr, 'ENCNAME', encoder_id['name'], 'encoder that made the vectors')
    _set_card(hdr, 'ENCSHA', encoder_id['sha256'], 'SHA-256 of the encoder weights')
    for key, (kw, comment) in _HEADER_PROVENANCE.items():
        if key in provenance:
            value = provenance[key]
            if isinstance(value, u.Quantity):
                try:
                    value = value.to_value(u.arcsec)
                except u.UnitsError:
                    continue
            elif isinstance(value, list):
                value = ','.join(value)
            _set_card(hdr, kw, value, comment)

    out = Table()
    out['id'] = Column(np.asarray(table['id']).astype(str), description='galaxy id')
    coord = table['coord']
    out['ra'] = Column(coord.ra.deg, unit='deg', description='ICRS right ascension')
    out['dec'] = Column(coord.dec.deg, unit='deg', description='ICRS declination')
    for name in table.colnames[2:]:
        out[name] = table[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', fits.verify.VerifyWarning)
        galaxies = fits.table_to_hdu(out)
    galaxies.name = 'GALAXIES'

    vector_hdu = fits.ImageHDU(np.ascontiguousarray(vectors, dtype='>f4')
                               if len(vectors) else None, name='VECTORS')
    _set_card(vector_hdu.header, 'NGALAXY', len(vectors), 'rows: one vector per GALAXIES row')
    _set_card(vector_hdu.header, 'NDIM', vectors.shape[1], 'columns: latent dimension')
    _set_card(vector_hdu.header, 'ENCSHA', encoder_id['sha256'], 'SHA-256 of the encoder weights')

    prov = Table(names=('key', 'value', 'type', 'unit'), dtype=('U', 'U', 'U', 'U'))
    for key, value in provenance.items():
        if isinstance(value, u.Quantity):
            prov.add_row((key, repr(float(value.value)), 'quantity', value.unit.to_string()))
        elif isinstance(value, bool):
            prov.add_row((key, str(value), 'bool', ''))
        elif isinstance(value, numbers.Integral):
            prov.add_row((key, str(int(value)), 'int', ''))
        elif isinstance(value, numbers.Real):
            prov.add_row((key, repr(float(value)), 'float', ''))
        elif isinstance(value, list):
            prov.add_row((key, ','.join(value), 'list', ''))
        else:
            prov.add_row((key, value, 'str', ''))
    provenance = fits.table_to_hdu(prov) if len(prov) else fits.BinTableHDU(
        Table(names=('key', 'value', 'type', 'unit'), dtype=('S1', 'S1', 'S1', 'S1')))
    provenance.name = 'PROVENANCE'
    hdus = [primary, galaxies, vector_hdu, provenance]
    if graph is not None:
        neighbours = fits.ImageHDU(np.ascontiguousarray(graph, dtype='>i4'), name='NEIGHBOURS')
        _set_card(neighbours.header, 'NGALAXY', len(vectors), 'rows: one per GALAXIES row')
        _set_card(neighbours.header, 'NNEIGH', graph.shape[1], 'neighbours per galaxy (itself first)')
        _set_card(neighbours.header, 'METRIC', metric, 'distance metric of the graph')
        hdus.append(neighbours)
        if search is not None:
            hdus += _search_hdus(search, len(vectors), metric)
    return fits.HDUList(hdus)


def _search_hdus(search, n, metric):
    """The HDUs of a pynndescent search tree and search graph (see `database_hdulist`)."""
    tree = fits.BinTableHDU(Table({'HYPERPLANE': search['hyperplanes'], 'OFFSET': search['offsets'],
                                   'CHILDREN': search['children']}), name='SEARCHTREE')
    header = tree.header
    _set_card(header, 'NGALAXY', n, 'rows of the index: one per GALAXIES row')
    _set_card(header, 'METRIC', metric, 'distance metric of the index')
    _set_card(header, 'LEAFSIZE', int(search['leaf_size']), 'rows per leaf of the search tree')
    _set_card(header, 'MINDIST', float(search['min_distance']), 'smallest distance in the search graph')
    _set_card(header, 'PYNNDVER', str(search['version']), 'pynndescent version that built the index')
    return [tree, fits.ImageHDU(np.asarray(search['order'], dtype='>i4'), name='SEARCHORDER'),
            fits.ImageHDU(np.asarray(search['indptr'], dtype='>i8'), name='SEARCHPTR'),
            fits.ImageHDU(np.asarray(search['indices'], dtype='>i4'), name='SEARCHEDGES')]


def _read_search(hdul, primary, names):
    """The stored search tree and graph, or None where absent or not of these vectors and metric."""
    if not all(name in names for name in ('SEARCHTREE', 'SEARCHORDER', 'SEARCHPTR', 'SEARCHEDGES')):
        return None
    header, tree = hdul['SEARCHTREE'].header, hdul['SEARCHTREE'].data
    if (tree is None or header.get('NGALAXY') != int(primary['NGALAXY'])
            or header.get('METRIC') != primary['METRIC']):
        return None   # the index builds them again from the k-NN graph

    def values(name, dtype):
        data = hdul[name].data
        return np.zeros(0, dtype) if data is None else np.asarray(data, dtype=dtype).ravel()
    try:
        return {'hyperplanes': np.asarray(tree['HYPERPLANE'], dtype=np.float32),
                'offsets': np.asarray(tree['OFFSET'], dtype=np.float32),
                'children': np.asarray(tree['CHILDREN'], dtype=np.int32),
                'leaf_size': int(header['LEAFSIZE']), 'min_distance': float(header['MINDIST']),
                'version': str(header['PYNNDVER']), 'order': values('SEARCHORDER', np.int32),
                'indptr': values('SEARCHPTR', np.int64), 'indices': values('SEARCHEDGES', np.int32)}
    except (KeyError, ValueError, TypeError):
        return None


def write_database_file(path, hdulist, *, overwrite=False):
    """Write a database HDU list atomically, with FITS checksums.

    The file is written to a temporary file in the same directory, then renamed over
    ``path``: a failed write never leaves a partial file and never damages an existing one.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = os.fspath(path)
    existed = os.path.exists(path)
    if existed and not overwrite:
        raise FileExistsError(f'{path} exists; pass overwrite=True to replace it.')
    try:
        with atomic_output(os.path.abspath(path), sync=True) as fh:
            hdulist.writeto(fh, checksum=True)
    except (OSError, AttributeError) as exc:
        # astropy's own note on a full disk fails on a file object (AttributeError) with the OSError behind it
        cause = exc if isinstance(exc, OSError) else exc.__context__
        # a short write ('65472 requested and 0 written', no errno) is a full disk or a file size limit too
        if not isinstance(cause, OSError) or (cause.errno not in _NO_SPACE and cause.errno is not None):
            raise
        code = cause.errno or errno.ENOSPC
        raise OSError(code, f'cannot write {path}: no space left ({cause}: the disk or '
                      'the quota is full, or the file size limit of ulimit -f was reached); '
                      + (f'the previous {path} is intact' if existed else 'nothing was written')
                      + ': free some space and save again') from cause


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, 'EDQUOT', errno.ENOSPC)}


def read_database_file(path):
    """Read and check a database file.

    Parameters
    ----------
    path : str or path-like
        The FITS file.

    Returns
    -------
    vectors : `~numpy.ndarray`, shape (N, d), float32
    table : `~astropy.table.QTable`
        ``id``, ``coord``, then the stored columns.
    encoder_id : dict
        ``{'name', 'sha256'}`` stored in the file.
    provenance : dict
    metric : str
    graph : `~numpy.ndarray` of int32 or None
        The stored k-NN graph (``NEIGHBOURS`` HDU), if any.
    search : dict or None
        The stored search tree and graph (SEARCH* HDUs), if any; the index checks them before
        use (``astro_galsim.utils._nndescent.search_structure_problem``).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    DatabaseError
        If the file is not FITS, not an astro_galsim database, of an unsupported version or
        damaged (checksum failure, truncation, inconsistent sizes).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no database file at {path}.')
    with open(path, 'rb') as fh:
        start = fh.read(30)
    if not start.startswith(b'SIMPLE  =') or start[29:30] != b'T':
        raise DatabaseError(f'{path} is not a FITS file (it does not start with a '
                            '"SIMPLE = T" card); give the path of a database written by '
                            'GalaxyDatabase.save or `astro_galsim build`.')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            with fits.open(path, checksum=True, memmap=False) as hdul:
                hdul.verify('exception')
                primary = hdul[0].header.copy()
                _check_format(primary, path)
                names = [h.name for h in hdul]
                for needed in ('GALAXIES', 'VECTORS', 'PROVENANCE'):
                    if needed not in names:
                        raise DatabaseError(f'{path} is damaged: HDU {needed!r} is missing '
                                            f'(HDUs: {names}).')
                    if names.count(needed) > 1:
                        raise DatabaseError(f'{path} is not a database written by astro_galsim: '
                                            f'it holds {names.count(needed)} {needed!r} HDUs '
                                            f'(HDUs: {names}); rebuild it or restore a copy.')
                _check_checksums(hdul, path)
                vectors = hdul['VECTORS'].data
                galaxies = Table.read(hdul['GALAXIES'], astropy_native=True, mask_invalid=False)
                prov_table = Table.read(hdul['PROVENANCE'])
                graph = _read_graph(hdul, primary) if 'NEIGHBOURS' in names else None
                search = _read_search(hdul, primary, names) if graph is not None else None
        except DatabaseError:
            raise
        except Exception as exc:
            raise DatabaseError(f'{path} could not be read as an astro_galsim database; it '
                                f'may be damaged or truncated ({type(exc).__name__}: {exc}).'
                                ) from exc
    for warning in caught:
        message = str(warning.message)
        if 'checksum' in message.lower() or 'datasum' in message.lower():
            raise DatabaseError(f'{path} is damaged: FITS checksum verification failed '
                                f'({message}). Rebuild it or restore a copy.')
        if 'truncat' in message.lower():
            raise DatabaseError(f'{path} is damaged (truncated): {message}')
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)

    ngal, ndim = int(primary['NGALAXY']), int(primary['NDIM'])
    if vectors is None:
        vectors = np.zeros((0, ndim), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != ndim:
        raise DatabaseError(f'{path} is damaged: VECTORS has shape {vectors.shape} but NDIM '
                            f'is {ndim}.')
    if vectors.shape[0] != ngal or len(galaxies) != ngal:
        raise DatabaseError(f'{path} is damaged: NGALAXY={ngal} but VECTORS holds '
                            f'{vectors.shape[0]} vectors and GALAXIES {len(galaxies)} rows.')
    stored = {'name': str(primary['ENCNAME']), 'sha256': str(primary['ENCSHA'])}
    table = QTable(galaxies)
    table.meta.clear()
    for col in ('id', 'ra', 'dec'):
        if col not in table.colnames:
            raise DatabaseError(f'{path} is damaged: GALAXIES has no {col!r} column.')
    coord = sky_coords(table['ra'], table['dec'])
    table.remove_columns(['ra', 'dec'])
    ids = np.asarray(table['id']).astype(str)
    table.replace_column('id', Column(ids, name='id'))
    table.add_column(coord, name='coord', index=1)
    return (np.asarray(vectors, dtype=np.float32), table, stored, _read_provenance(prov_table),
            str(primary['METRIC']), graph, search)


def _read_graph(hdul, primary):
    """The stored k-NN graph, or None if it does not belong to these vectors and metric."""
    hdu = hdul['NEIGHBOURS']
    graph = hdu.data
    if (graph is None or graph.ndim != 2 or graph.shape[0] != int(primary['NGALAXY'])
            or hdu.header.get('METRIC') != primary['METRIC']):
        return None   # an index can always be rebuilt from the vectors
    return np.asarray(graph, dtype=np.int32)


def _set_card(header, keyword, value, comment):
    """Set a header card, dropping the comment if the card would exceed 80 characters."""
    if isinstance(value, str):
        width = max(20, len(value.replace("'", "''")) + 2)
    else:
        width = 20
    if 10 + width + 3 + len(comment) > 80:
        comment = ''
    header[keyword] = (value, comment)


def _check_checksums(hdul, path):
    """Every HDU must carry the checksums `write_database_file` writes, or nothing is verified."""
    unsigned = [h.name for h in hdul if 'CHECKSUM' not in h.header or 'DATASUM' not in h.header]
    if unsigned:
        raise DatabaseError(f'{path} has no FITS checksums in HDU(s) {unsigned}, so damage or edits '
                            'cannot be detected; it was not written by astro_galsim (or was edited '
                            'after). Rebuild it, or restore a copy written by GalaxyDatabase.save.')


def _check_format(header, path):
    name = header.get('FMTNAME')
    if name != FORMAT_NAME:
        raise DatabaseError(f'{path} is a FITS file but not an astro_galsim database (FMTNAME is '
                            f'{name!r}, expected {FORMAT_NAME!r}).')
    version = header.get('FMTVERS')
    if not isinstance(version, int) or version < 1:
        raise DatabaseError(f'{path} has an invalid format version FMTVERS={version!r}.')
    if version > FORMAT_VERSION:
        raise DatabaseError(f'{path} uses database format version {version}, newer than this '
                            f'astro_galsim ({package_version()}) reads (version {FORMAT_VERSION}); '
                            'upgrade astro_galsim.')
    for key in ('NGALAXY', 'NDIM', 'METRIC', 'ENCNAME', 'ENCSHA'):
        if key not in header:
            raise DatabaseError(f'{path} is damaged: primary header keyword {key} is missing.')


def _read_provenance(table):
    out = {}
    for row in table:
        key, value, kind, unit = (str(row[c]) for c in ('key', 'value', 'type', 'unit'))
        if kind == 'quantity':
            out[key] = float(value) * u.Unit(unit)
        elif kind == 'bool':
            out[key] = value == 'True'
        elif kind == 'int':
            out[key] = int(value)
        elif kind == 'float':
            out[key] = float(value)
        elif kind == 'list':
            out[key] = value.split(',') if value else []
        else:
            out[key] = value
    return out
