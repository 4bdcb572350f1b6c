"""SDSS colour thumbnails of result galaxies, fetched once and cached, for looking at results.

The demo database holds no images; these thumbnails (SkyServer ``ImgCutout`` JPEGs at the
stored positions, fetched by `~astro_galsim.retrieval` with ``source='skyserver'``, so with its
timeouts, retries and cache) let a result be looked at without local images. They are for the eye
only: the pipeline describes galaxies from calibrated cutouts (`~astro_galsim.retrieval`).
"""
import numpy as np
from astropy import units as u
from astropy.nddata import NDData

from .retrieval import RetrievalError, cache_directory
from .utils._coords import known_positions

__all__ = ['get_thumbnail', 'result_thumbnails', 'thumbnail_gallery']


def get_thumbnail(coord, *, size=96, scale=0.4 * u.arcsec, data_release=None):
    """The SDSS gri colour JPEG around a position, from the cache or SkyServer.

    Parameters
    ----------
    coord : `~astropy.coordinates.SkyCoord`
        Centre of the thumbnail.
    size : int, optional
        Width and height in pixels.
    scale : `~astropy.units.Quantity`, optional
        Pixel scale.
    data_release : int, optional
        SDSS data release (default ``astro_galsim.retrieval.sdss.conf.data_release``).

    Returns
    -------
    thumbnail : `~astropy.nddata.NDData`
        ``(3, size, size)`` uint8 colour planes, top row first, as
        `~astro_galsim.read_image` reads JPEGs; ``meta`` holds ``ra``, ``dec`` and ``kind``.

    Raises
    ------
    RetrievalError
        If the position is unknown, SkyServer cannot be reached (offline: only cached
        thumbnails are at hand) or answers with something that is not an image.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.thumbnails import get_thumbnail
    >>> image = get_thumbnail(SkyCoord(180.4819, -1.0693, unit='deg'))  # doctest: +REMOTE_DATA
    >>> image.data.shape  # doctest: +REMOTE_DATA
    (3, 96, 96)
    """
    from .retrieval import get_cutout
    coord = coord.icrs
    if not known_positions(coord):
        raise RetrievalError('no position is stored for this galaxy, so there is no thumbnail to fetch')
    try:
        cutout = get_cutout(coord, size=int(size), pixel_scale=u.Quantity(scale, u.arcsec), source='skyserver',
                            data_release=data_release)
    except RetrievalError as exc:
        raise RetrievalError(f'no SkyServer thumbnail at {coord.to_string("decimal")}: {exc} Thumbnails need '
                             f'the network the first time; cached ones (in {cache_directory()}) are used '
                             'offline') from exc
    # the cutout runs from the southern row up (FITS order); a thumbnail is shown as a JPEG is read
    return NDData(np.ascontiguousarray(cutout.data[:, ::-1]),
                  meta={'ra': coord.ra.deg, 'dec': coord.dec.deg, 'kind': 'colour',
                        'bands': tuple(cutout.meta['bands'])})


def result_thumbnails(result, **kwargs):
    """Thumbnails of the galaxies of a result table, by id, at their stored positions.

    Parameters
    ----------
    result : `~astropy.table.Table`
        A table of `~astro_galsim.SimilaritySearch.query` (``id`` and ``coord``; the
        queries through ``query_id`` and ``query_coord``).
    **kwargs
        Passed to `get_thumbnail`.

    Returns
    -------
    thumbnails : dict
        Id to `~astropy.nddata.NDData`, for every galaxy with a position; galaxies without
        one are left out (they show as blank panels in a gallery).

    Raises
    ------
    ValueError
        If the table has no ``coord`` column (its database stores no positions).
    RetrievalError
        If a thumbnail cannot be fetched (offline and not cached).
    """
    if 'coord' not in result.colnames:
        raise ValueError('the result has no coord column: its database stores no positions, so '
                         'thumbnails cannot be fetched; give images to result_gallery instead')
    pairs = [(result['id'], result['coord'])]
    if 'query_coord' in result.colnames and 'query_id' in result.colnames:
        pairs.append((result['query_id'], result['query_coord']))
    thumbnails = {}
    for ids, coords in pairs:
        for galaxy_id, coord in zip(ids, coords):
            key = str(galaxy_id)
            if key not in thumbnails and known_positions(coord):
                thumbnails[key] = get_thumbnail(coord, **kwargs)
    return thumbnails


def thumbnail_gallery(result, *, max_queries=10, size=1.6, **kwargs):
    """`~astro_galsim.visualization.result_gallery` of a result with SDSS thumbnails, captioned with RA/Dec.

    Parameters
    ----------
    result : `~astropy.table.Table`
        A table of `~astro_galsim.SimilaritySearch.query`.
    max_queries, size
        As for `~astro_galsim.visualization.result_gallery`.
    **kwargs
        Passed to `get_thumbnail`.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
    """
    from .visualization import result_gallery
    shown = result
    if 'query_id' in result.colnames:
        queries = list(dict.fromkeys(str(q) for q in result['query_id']))[:max_queries]
        shown = result[np.isin(np.asarray(result['query_id']).astype(str), queries)]
    return result_gallery(shown, result_thumbnails(shown, **kwargs), max_queries=max_queries, size=size)
