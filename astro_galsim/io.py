"""Reading galaxy images from disk into `~astropy.nddata.NDData`."""
import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import NDData
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from .utils._checks import header_wcs_problem, wcs_problem
from .utils._files import atomic_output  # noqa: F401 - where it lived; its home is utils/_files.py

__all__ = ['read_image', 'read_fits_near', 'image_from_hdu', 'celestial_wcs', 'check_image_size', 'ImageSizeError',
           'fits_meta', 'file_kind', 'image_stem', 'nanomaggy', 'COLOUR_IMAGE_BANDS', 'FITS_SUFFIXES', 'COLOUR_SUFFIXES']

#: SDSS bands behind the red, green and blue channels of SkyServer colour cutouts.
COLOUR_IMAGE_BANDS = ('i', 'r', 'g')
FITS_SUFFIXES = ('.fits', '.fit', '.fts', '.fits.gz', '.fit.gz', '.fits.fz')
COLOUR_SUFFIXES = ('.jpg', '.jpeg', '.png')

# BUNIT spellings met in SDSS files that astropy's unit parser does not know
#: The SDSS linear flux unit: 1 nanomaggy = 3.631e-6 Jy (m = 22.5 - 2.5 log10 f).
nanomaggy = u.def_unit('nanomaggy', 3.631e-6 * u.Jy,
                       doc='SDSS nanomaggy: 1e-9 of the flux of a 0 mag (AB) source')

_UNIT_ALIASES = {'dns': u.adu, 'dn': u.adu, 'counts': u.count,
                 'nmgy': nanomaggy, 'nanomaggy': nanomaggy, 'nanomaggies': nanomaggy}


def file_kind(path):
    """What a path that is not a regular file is, in words ('a FIFO (named pipe)', 'a folder'...)."""
    mode = os.stat(path).st_mode
    kinds = [(stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISDIR, 'a folder'), (stat.S_ISSOCK, 'a socket'),
             (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device')]
    return next((name for test, name in kinds if test(mode)), 'not a regular file')


def image_stem(path):
    """File name of an image without its image suffix (``.fits.gz``, ``.jpg``...), as an id.

    >>> image_stem('cutouts/sdsscutout_149.00575+0.3580208_rband.fits.gz')
    'sdsscutout_149.00575+0.3580208_rband'
    """
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES + COLOUR_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def read_image(path, survey=None):
    """Read a galaxy image (FITS, JPEG or PNG) into an `~astropy.nddata.NDData`.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        A FITS file (the first HDU holding a 2-D or 3-D image is read), or a colour
        JPEG/PNG cutout such as the SDSS SkyServer ones.
    survey : str, optional
        The survey the image comes from, one of `~astro_galsim.surveys.SURVEYS` (for
        example ``'hsc'``), stored in ``meta['survey']``: its pixel scale, seeing and colour
        rendering are then known (`~astro_galsim.surveys.resolution_of`). Default: SDSS's
        seeing and colour rendering, the pixel scale from the WCS only.

    Returns
    -------
    image : `~astropy.nddata.NDData`
        For FITS: the image with its celestial WCS, its unit (from ``BUNIT``) and
        its header in ``meta['header']``; ``meta['bands']`` holds ``FILTER`` when present.
        For colour images: a ``(3, ny, nx)`` ``uint8`` array (red, green, blue planes,
        top row first as displayed) with ``meta['bands'] = ('i', 'r', 'g')``, the SDSS
        bands behind the channels of SkyServer cutouts. ``meta['path']`` always
        holds the path and ``meta['kind']`` is ``'fits'`` or ``'colour'``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable image of a supported format.

    Examples
    --------
    >>> from astro_galsim import read_image
    >>> img = read_image('galaxy.jpg')  # doctest: +SKIP
    >>> img.data.shape, img.meta['bands']  # doctest: +SKIP
    ((3, 195, 195), ('i', 'r', 'g'))
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():   # a FIFO, a device or a folder: reading it could wait for ever
            raise ValueError(f'{str(path)!r} is not a regular file ({file_kind(path)}): give an image file')
        raise FileNotFoundError(f'image file {str(path)!r} does not exist')
    if survey is not None:
        from .surveys import survey_of
        survey = survey_of({'survey': survey}).name   # an unknown name fails before the file is read
    name = path.name.lower()
    image = (_read_fits(path) if name.endswith(FITS_SUFFIXES)
             else _read_colour(path) if name.endswith(COLOUR_SUFFIXES) else None)
    if image is not None:
        if survey is not None:
            image.meta['survey'] = survey
        return image
    raise ValueError(f'cannot read {str(path)!r}: unsupported file type; give a FITS '
                     f'({", ".join(FITS_SUFFIXES)}) or colour ({", ".join(COLOUR_SUFFIXES)}) image')


@contextmanager
def _quiet_header_warnings():
    """Silence astropy's notes on the non-standard cards of DR7 fpC headers (read correctly)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', VerifyWarning)
        warnings.simplefilter('ignore', FITSFixedWarning)
        warnings.filterwarnings('ignore', message='The following header keyword is invalid',
                                category=AstropyUserWarning)
        yield


def _read_fits(path):
    try:
        with _quiet_header_warnings():
            # a truncated image fails when its data are read, below, with the file named
            warnings.filterwarnings('ignore', message='File may have been truncated', category=AstropyUserWarning)
            with fits.open(path, memmap=False) as hdul:
                # the header first: an image over conf.max_image_pixels is refused before its pixels are read
                hdu = next((h for h in hdul if h.is_image and _holds_image(h.header)), None)
                image = None if hdu is None else image_from_hdu(hdu, str(path))
    except ImageSizeError:
        raise
    except (OSError, ValueError, TypeError) as exc:  # a truncated file fails in numpy's reshape
        raise ValueError(f'cannot read {str(path)!r} as FITS: it is damaged or truncated ({exc})') from exc
    if hdu is None:
        raise ValueError(f'FITS file {str(path)!r} holds no 2-D or 3-D image HDU')
    return image


class ImageSizeError(ValueError):
    """An image larger than ``conf.max_image_pixels``."""


def _holds_image(header):
    naxis = header.get('NAXIS')
    return naxis in (2, 3) and all((header.get(f'NAXIS{i}') or 0) > 0 for i in range(1, naxis + 1))


def read_fits_near(path, target, side=2048):
    """Read a FITS image, or only a section around ``target`` when it exceeds ``conf.max_image_pixels``.

    The section is at most ``side`` pixels a side (less where the limit is lower), centred
    on the target through the header's WCS, so that a galaxy at a known position in a huge
    frame is described without reading the frame. Other files are read by `read_image`.
    """
    from .config import conf
    path = Path(path)
    if target is None or not path.name.lower().endswith(FITS_SUFFIXES) or not path.is_file():
        return read_image(path)
    limit = int(conf.max_image_pixels)
    if limit <= 0 or (path.stat().st_size < limit and not path.name.lower().endswith(('.gz', '.fz'))):
        return read_image(path)   # fewer bytes than the limit has pixels: no header to look at first
    wcs, shape = fits_geometry(path)
    if np.prod(shape) <= limit or wcs is None:
        return read_image(path)   # small enough, or no WCS to place the target: the whole file (or its error)
    half = (min(int(side), math.isqrt(limit // (shape[0] if len(shape) == 3 else 1))) - 1) // 2   # within the limit
    x, y = (int(round(float(v))) for v in wcs.world_to_pixel(target))
    ny, nx = shape[-2:]
    if not (0 <= x < nx and 0 <= y < ny):
        raise ValueError(f'{str(path)!r}: its WCS puts {target.to_string("decimal")} at pixel ({x}, {y}), '
                         f'outside the {nx} x {ny} image')
    x0, x1, y0, y1 = max(x - half, 0), min(x + half + 1, nx), max(y - half, 0), min(y + half + 1, ny)
    with _quiet_header_warnings(), fits.open(path, memmap=False) as hdul:   # section reads only its rows
        hdu = next(h for h in hdul if h.is_image and _holds_image(h.header))
        data = np.array(hdu.section[..., y0:y1, x0:x1])
        header = hdu.header.copy()
    header['NAXIS1'], header['NAXIS2'] = x1 - x0, y1 - y0
    header['CRPIX1'] = header.get('CRPIX1', 0.0) - x0
    header['CRPIX2'] = header.get('CRPIX2', 0.0) - y0
    meta = fits_meta(header, path)
    meta['section'] = (slice(y0, y1), slice(x0, x1))
    return NDData(data, wcs=wcs[y0:y1, x0:x1], unit=_parse_unit(header.get('BUNIT'), path), meta=meta)


def image_from_hdu(hdu, path=None):
    """The NDData `read_image` makes of a FITS image HDU: data, celestial WCS, unit, header.

    Parameters
    ----------
    hdu : `~astropy.io.fits.PrimaryHDU`, `~astropy.io.fits.ImageHDU` or `~astropy.io.fits.CompImageHDU`
        An HDU holding a 2-D or 3-D image.
    path : str, optional
        The file it came from, kept in ``meta['path']``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> from astro_galsim.io import image_from_hdu
    >>> hdu = fits.PrimaryHDU(np.zeros((4, 5)))
    >>> hdu.header['BUNIT'] = 'DN'
    >>> image = image_from_hdu(hdu)
    >>> image.data.shape, image.unit, image.wcs
    ((4, 5), Unit("adu"), None)
    """
    with _quiet_header_warnings():
        header = hdu.header.copy()
        check_image_size(header, path or 'the HDU')
        data = np.array(hdu.data)
        wcs = celestial_wcs(header, path or 'the HDU')
    unit = _parse_unit(header.get('BUNIT'), path or 'the HDU')
    return NDData(data, wcs=wcs, unit=unit, meta=fits_meta(header, path))


def fits_meta(header, path=None):
    """The ``meta`` `read_image` gives a FITS image: its header, kind, bands (``FILTER``) and path."""
    meta = {'header': header, 'kind': 'fits'}
    if path is not None:
        meta['path'] = str(path)
    if 'FILTER' in header:
        meta['bands'] = (str(header['FILTER']).strip(),)
    return meta


# the cards a celestial WCS is made of (primary description, with TPV and SIP distortions):
# building the WCS from these alone is several times faster than from a long fpC header
_WCS_CARD = re.compile(r'^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d|'
                       r'PV\d_\d+|RADE?C?SYS|EQUINOX|EPOCH|LONPOLE|LATPOLE|MJD-OBS|DATE-OBS|NAXIS\d?|'
                       r'A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d+_\d+|B_\d+_\d+|AP_\d+_\d+|BP_\d+_\d+)$')


def fits_geometry(path):
    """Celestial WCS and data shape of the image `read_image` would read, from its header only.

    Returns ``(None, shape)`` without a celestial WCS; raises ValueError for a file with
    no 2-D or 3-D image.
    """
    with _quiet_header_warnings():
        with fits.open(path) as hdul:
            header = next((h.header for h in hdul if h.is_image and h.header.get('NAXIS') in (2, 3)
                           and all(h.header.get(f'NAXIS{i}', 0) > 0 for i in range(1, h.header['NAXIS'] + 1))),
                          None)
        if header is None:
            raise ValueError(f'FITS file {str(path)!r} holds no 2-D or 3-D image HDU')
        wcs = celestial_wcs(fits.Header([card for card in header.cards if _WCS_CARD.match(card.keyword)]), path,
                            warn=False)
    shape = tuple(header[f'NAXIS{i}'] for i in range(header['NAXIS'], 0, -1))
    return wcs, shape


def celestial_wcs(header, path, *, warn=True):
    """The celestial WCS of a FITS header, or None without one or with an unusable one (warned).

    A WCS whose values cannot be read or are not finite (``CRVAL1 = NAN``), or whose pixel
    scale is zero (``CDELT1 = 0``), would put the image at a made-up position: the image is
    read without it, its position unknown, with an `~astropy.utils.exceptions.AstropyUserWarning`.
    """
    problem = header_wcs_problem(header)
    wcs = None
    if problem is None:
        try:
            wcs = WCS(header).celestial
        except Exception as exc:  # noqa: BLE001 - wcslib refuses a singular matrix and the like
            problem = wcs_problem(None, exc)
    if wcs is not None and not wcs.has_celestial:
        return None
    if problem is None:
        problem = wcs_problem(wcs)
    if problem is None:
        return wcs
    if warn:
        warnings.warn(f'{str(path)!r}: the FITS WCS {problem}; the image is read without it, its sky '
                      'position unknown: correct the header, or give the position (coords=)', AstropyUserWarning)
    return None


def check_image_size(header, path):
    """Refuse, before its pixels are read, an image larger than ``conf.max_image_pixels``."""
    from .config import conf
    if not isinstance(header, fits.Header):
        return
    naxis = int(header.get('NAXIS', 0) or 0)
    pixels = int(np.prod([int(header.get(f'NAXIS{i}', 0) or 0) for i in range(1, naxis + 1)])) if naxis else 0
    limit = int(conf.max_image_pixels)
    if limit > 0 and pixels > limit:
        shape = ' x '.join(str(header.get(f'NAXIS{i}')) for i in range(naxis, 0, -1))
        raise ImageSizeError(f'{str(path)!r} holds a {shape} image ({pixels:,} pixels), more than '
                             f'astro_galsim.conf.max_image_pixels = {limit:,}: a galaxy cutout is far smaller. '
                             'Cut out the galaxy (astropy.nddata.Cutout2D), give a WCS or position to describe '
                             'it from a section of the file, or raise conf.max_image_pixels')


def _parse_unit(bunit, path):
    if bunit is None or not str(bunit).strip():
        return None
    text = str(bunit).strip()
    if text.lower() in _UNIT_ALIASES:
        return _UNIT_ALIASES[text.lower()]
    try:
        return u.Unit(text)
    except ValueError:
        warnings.warn(f'{str(path)!r}: BUNIT {text!r} is not a unit astropy knows; the image is read '
                      'without a unit', AstropyUserWarning)
        return None


def _read_colour(path):
    from PIL import Image, UnidentifiedImageError

    from .config import conf
    limit = int(conf.max_image_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)   # the limit below says it
            with Image.open(path) as im:
                if limit > 0 and im.size[0] * im.size[1] > limit:
                    raise Image.DecompressionBombError(f'{im.size[0]} x {im.size[1]} pixels')
                rgb, alpha = _display_planes(im)
    except Image.DecompressionBombError as exc:
        raise ImageSizeError(f'{str(path)!r} is too large to be a galaxy cutout ({exc}; more than '
                             f'astro_galsim.conf.max_image_pixels = {limit:,} pixels, or than '
                             'the decompression-bomb limit of Pillow): cut out the galaxy, or raise '
                             'conf.max_image_pixels if the image is genuine') from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f'cannot read {str(path)!r} as a colour image: {exc}') from exc
    # fully transparent pixels hold no image: they are masked (and shown as clipped sky)
    mask = None if alpha is None or alpha.all() else alpha == 0
    if mask is not None and mask.all():
        raise ValueError(f'{str(path)!r} is fully transparent: its alpha channel hides every pixel')
    return NDData(np.ascontiguousarray(rgb.transpose(2, 0, 1)), mask=mask,
                  meta={'bands': COLOUR_IMAGE_BANDS, 'path': str(path), 'kind': 'colour'})


def _display_planes(im):
    """The 8-bit (ny, nx, 3) RGB planes of a PIL image and its alpha (None when opaque).

    Pillow's RGB conversion clips 16-bit grey to 255; such images are scaled to 8 bits.
    """
    alpha = None
    if 'A' in im.getbands() or 'transparency' in im.info:
        alpha = np.asarray(im.convert('RGBA'))[..., 3]
    if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        grey = np.asarray(im, dtype=np.float64)
        if im.mode == 'I' and (grey.min() < 0 or grey.max() > 65535):
            raise OSError(f'{im.mode} pixels outside 0-65535 are not a display image')
        grey = np.round(grey / 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), alpha
    return np.asarray(im if im.mode == 'RGB' else im.convert('RGB')), alpha   # (convert copies even RGB)
