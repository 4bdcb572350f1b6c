"""Reading galaxy images from disk into `~astropy.nddata.NDData`."""
import contextlib
import os
import re
import secrets
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

__all__ = ['read_image', 'image_from_hdu', 'fits_meta', 'image_stem', 'nanomaggy', 'COLOUR_IMAGE_BANDS',
           'FITS_SUFFIXES', 'COLOUR_SUFFIXES']

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


@contextmanager
def atomic_output(path, *, suffix='.tmp', sync=False):
    """A binary file to write that takes the place of ``path`` only once it is complete.

    Yields a file opened on a temporary name in the same directory
    (``.<name>.<pid>-<random><suffix>``); when the block ends without error the file is
    closed (and flushed to disk with ``sync``) and renamed over ``path``, else it is
    removed. Readers never see a half-written ``path``. The new file keeps the permissions
    of the file it replaces (or gets the usual ones for a new file, as the umask allows),
    and temporary files left by killed writers of the same ``path`` on this machine are
    removed.
    """
    path = Path(path)
    _remove_stale_temporaries(path, suffix)
    tmp, fd = _create_temporary(path, suffix)
    try:
        with os.fdopen(fd, 'wb') as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # collaborators keep their access
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(path, suffix):
    """A new file ``.<name>.<pid>-<random><suffix>`` beside ``path``, mode 0666 less the umask."""
    while True:
        tmp = path.with_name(f'.{path.name}.{os.getpid()}-{secrets.token_hex(4)}{suffix}')
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _remove_stale_temporaries(path, suffix):
    """Remove the temporary files of writers of ``path`` whose process no longer runs."""
    pattern = re.compile(rf'^\.{re.escape(path.name)}\.(\d+)-[0-9a-f]{{8}}{re.escape(suffix)}$')
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.match(entry.name)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by another user
        return True
    return True


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
                hdu = next((h for h in hdul if h.is_image and h.data is not None and h.data.ndim in (2, 3)),
                           None)
                image = None if hdu is None else image_from_hdu(hdu, str(path))
    except (OSError, ValueError, TypeError) as exc:  # a truncated file fails in numpy's reshape
        raise ValueError(f'cannot read {str(path)!r} as FITS: it is damaged or truncated ({exc})') from exc
    if hdu is None:
        raise ValueError(f'FITS file {str(path)!r} holds no 2-D or 3-D image HDU')
    return image


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
        data = np.array(hdu.data)
        wcs = WCS(header).celestial
    if not wcs.has_celestial:
        wcs = None
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
        wcs = WCS(fits.Header([card for card in header.cards if _WCS_CARD.match(card.keyword)])).celestial
    shape = tuple(header[f'NAXIS{i}'] for i in range(header['NAXIS'], 0, -1))
    return (wcs if wcs.has_celestial else None), shape


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
    try:
        with Image.open(path) as im:
            rgb, alpha = _display_planes(im)
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
    return np.asarray(im.convert('RGB')), alpha
