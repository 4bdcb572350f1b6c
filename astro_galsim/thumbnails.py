"""SDSS colour thumbnails of result galaxies, fetched once and cached, for looking at results.

The demo database holds no images; these thumbnails (SkyServer ``ImgCutout`` JPEGs at the
stored positions) let a result be looked at without local images. They are for the eye
only: the pipeline describes galaxies from calibrated cutouts (`~astro_galsim.retrieval`).
"""
import numpy as np
from astropy import units as u
from astropy.nddata import NDData

from .config import conf
from .io import atomic_output
from .retrieval import RetrievalError, cache_directory

__all__ = ['get_thumbnail', 'result_thumbnails', 'thumbnail_gallery']

#: SkyServer image cutout service, under ``astroquery.sdss.conf.skyserver_baseurl``.
_SERVICE = '/dr{dr}/SkyServerWS/ImgCutout/getjpeg'


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
        SDSS data release (default ``astro_galsim.conf.data_release``).

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
    import requests
    from astroquery.sdss import conf as sdss_conf
    coord = coord.icrs
    if not (np.isfinite(coord.ra.deg) and np.isfinite(coord.dec.deg)):
        raise RetrievalError('no position is stored for this galaxy, so there is no thumbnail to fetch')
    dr = int(data_release or conf.data_release)
    arcsec = float(u.Quantity(scale, u.arcsec).value)
    path = cache_directory() / 'thumbnails' / f'dr{dr}_{coord.ra.deg:.5f}{coord.dec.deg:+.5f}_{size}_{arcsec:g}.jpg'
    if not path.is_file():
        url = sdss_conf.skyserver_baseurl.rstrip('/') + _SERVICE.format(dr=dr)
        params = {'ra': f'{coord.ra.deg:.6f}', 'dec': f'{coord.dec.deg:.6f}', 'scale': arcsec,
                  'width': size, 'height': size}
        try:
            response = requests.get(url, params=params, timeout=conf.timeout)
        except requests.exceptions.RequestException as exc:
            raise RetrievalError(f'cannot reach SkyServer for a thumbnail at {coord.to_string("decimal")} '
                                 f'({type(exc).__name__}): thumbnails need the network the first time; '
                                 f'cached ones (in {path.parent}) are used offline') from None
        if response.status_code != 200 or not response.content.startswith(b'\xff\xd8'):
            raise RetrievalError(f'SkyServer answered HTTP {response.status_code} with '
                                 f'{response.headers.get("Content-Type", "no content type")} for a '
                                 f'thumbnail at {coord.to_string("decimal")}, not a JPEG: it begins '
                                 f'{response.content[:60]!r}')
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as handle:
            handle.write(response.content)
    from PIL import Image
    with Image.open(path) as image:
        rgb = np.asarray(image.convert('RGB'))
    return NDData(np.ascontiguousarray(np.moveaxis(rgb, -1, 0)),
                  meta={'ra': coord.ra.deg, 'dec': coord.dec.deg, 'kind': 'colour', 'path': str(path),
                        'bands': ('i', 'r', 'g')})


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
            if key not in thumbnails and np.isfinite(coord.ra.deg):
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
