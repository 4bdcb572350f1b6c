"""Photometric preprocessing: from any supported image to the colour form the encoder sees.

The pretrained encoder learned from SDSS SkyServer colour JPEG cutouts: asinh-stretched
gri composites with the sky clipped to black. Every route into the package is brought to
that same form, a ``(3, ny, nx)`` float array in [0, 1] with the i, r, g bands in the
red, green and blue planes:

* colour JPEG/PNG cutouts are already in it (scaled to [0, 1]);
* calibrated SDSS frames in nanomaggies get the SDSS colour-composite asinh stretch
  (Lupton et al. 2004, with the band weights used for SDSS imaging);
* single-band images (such as DR7 ``fpC`` frames in raw counts) are calibrated to
  nanomaggies where the header allows, stretched the same way and shown in grey.
"""
import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import NDData
from astropy.stats import sigma_clipped_stats
from astropy.wcs.utils import proj_plane_pixel_scales
from astropy.utils.exceptions import AstropyUserWarning
from scipy import ndimage

from .io import COLOUR_IMAGE_BANDS, nanomaggy
from .surveys import survey_of

__all__ = ['to_colour', 'shown_bands', 'sdss_asinh_rgb', 'calibrate_counts', 'sky_level', 'SDSS_BAND_WEIGHTS',
           'ASINH_NONLINEARITY', 'SDSS_PIXEL_SCALE']

#: Scale applied to each SDSS band (flux in nanomaggies per 0.396" pixel) before the asinh stretch,
#: as in the SDSS colour-image maker (``djs_rgb_make``); i, r, g measured against SkyServer DR14 JPEGs
#: of 12 galaxies that are also DR7 r-band frames in the test data (docs/preprocessing.rst). u and z keep
#: the ratios of the earlier weights to g and i: no u or z images were available to check them.
SDSS_BAND_WEIGHTS = {'u': 2.53, 'g': 4.22, 'r': 3.05, 'i': 2.34, 'z': 0.94}
#: Nonlinearity of the asinh stretch, measured the same way (SDSS quotes 2.25 for its frame JPEGs;
#: the SkyServer DR14 cutouts follow 2.82).
ASINH_NONLINEARITY = 2.82
#: Pixel scale of SDSS frames, in which the stretch's scales are defined.
SDSS_PIXEL_SCALE = 0.396 * u.arcsec
# a single band is shown in the grey a gri image of a galaxy of typical colours would have:
# the scaled i + r + g of such a galaxy is this many times its scaled r (measured on the same 12)
_GRI_PER_R = 8.57 / 3.05
# SDSS r-band sky noise is about 0.027 nmgy per 0.396" pixel (median of the 123 DR7 test frames); an image of unknown
# calibration is scaled so that its noise matches, so that faint light looks the same.
_REFERENCE_NOISE_NMGY = 0.027


def sdss_asinh_rgb(planes, bands, *, pixel_scale=SDSS_PIXEL_SCALE):
    """The SkyServer colour-image stretch of calibrated SDSS planes (Lupton et al. 2004).

    Each band is scaled (`SDSS_BAND_WEIGHTS`), and all are multiplied by
    ``asinh(N * S) / (N * S)`` with ``S`` the sum of the scaled planes and ``N`` the
    nonlinearity, as SDSS makes its colour JPEGs; the grey level (the mean of the three
    output planes) is then ``asinh(N * S) / (3 N)``, a function of surface brightness
    alone, so that the isophotes of a frame and of a SkyServer JPEG of the same galaxy
    coincide (grey level 40 of 255 is about 23.25 r mag / arcsec^2). Fluxes are turned
    into surface brightness with ``pixel_scale``, so that resampled images look the same.

    Parameters
    ----------
    planes : array-like, shape (n, ny, nx)
        Sky-subtracted fluxes in nanomaggies per pixel, one plane per band.
    bands : sequence of str
        The SDSS band of each plane, in the order of the output channels (for SDSS
        colour images ``('i', 'r', 'g')`` for red, green, blue). A single band gives a
        grey image with the brightness a gri image of a galaxy of typical colours has.
    pixel_scale : `~astropy.units.Quantity`, optional
        Angular size of a pixel (default the SDSS 0.396 arcsec).

    Returns
    -------
    rgb : `~numpy.ndarray`, shape (3, ny, nx), float32
        The composite in [0, 1]; the intensity is stretched, the colour ratios kept.

    Examples
    --------
    >>> import numpy as np
    >>> flux = np.zeros((3, 5, 5)); flux[:, 2, 2] = [3.0, 2.0, 1.0]
    >>> rgb = sdss_asinh_rgb(flux, ('i', 'r', 'g'))
    >>> rgb.shape, float(rgb[:, 0, 0].max()), bool(rgb[0, 2, 2] > 0.5)
    ((3, 5, 5), 0.0, True)
    """
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim != 3 or planes.shape[0] != len(bands):
        raise ValueError(f'planes of shape {planes.shape} do not match bands {tuple(bands)}: '
                         'give one (ny, nx) plane per band')
    unknown = [b for b in bands if b not in SDSS_BAND_WEIGHTS]
    if unknown:
        raise ValueError(f'unknown SDSS band(s) {unknown}; use names from {sorted(SDSS_BAND_WEIGHTS)}')
    area = float((SDSS_PIXEL_SCALE / u.Quantity(pixel_scale, u.arcsec)) ** 2)
    scaled = np.stack([np.maximum(p, 0) * (SDSS_BAND_WEIGHTS[b] * area) for p, b in zip(planes, bands)])
    if len(bands) == 1:
        scaled = np.repeat(scaled * (_GRI_PER_R / 3), 3, axis=0)
    total = ASINH_NONLINEARITY * scaled.sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        gain = np.where(total > 0, np.arcsinh(total) / total, 0)
    # SDSS writes floor(256 x) into a byte: one 255th is 1/256 of the stretched value
    rgb = np.clip(scaled * gain * (256 / 255), 0, 1)
    return rgb.astype(np.float32)


def calibrate_counts(data, header):
    """Convert a DR7 ``fpC`` frame in raw counts to sky-subtracted nanomaggies.

    Uses ``SOFTBIAS``, ``SKY`` and ``FLUX20`` from the header (mag = 20 - 2.5 log10(counts /
    FLUX20)). The photometric pipeline's ``SKY`` is measured over the whole frame, so a galaxy
    that fills the cutout cannot bias it; an estimate from the cutout itself did (0.6 to 22
    counts above ``SKY``, median 7.5, for the 12 test galaxies that are also SkyServer JPEGs),
    which shrank the isophotal radius by up to 40% against the JPEG of the same galaxy (with
    ``SKY``, 12 of 12 agree within 10%).
    Without ``SKY``, or where it disagrees with the image's own sky (`sky_level`) by more than
    five times the noise (a cutout whose pixel values were offset after the header was
    written), the image's own sky is used, with a warning in the second case.

    Parameters
    ----------
    data : `~numpy.ndarray`
        The frame in DN.
    header : `~astropy.io.fits.Header`
        Its header, with ``FLUX20``.

    Returns
    -------
    flux : `~numpy.ndarray`
        Sky-subtracted flux in nanomaggies.
    """
    flux20 = float(header['FLUX20'])
    if not flux20 > 0:
        raise ValueError(f'header FLUX20 = {flux20!r} is not a positive count rate; cannot calibrate')
    counts = np.asarray(data, dtype=np.float32) - float(header.get('SOFTBIAS', 0))
    sky, noise = sky_level(counts)
    header_sky = _header_float(header, 'SKY')
    if header_sky is not None and abs(header_sky - sky) <= 5 * noise:
        sky = header_sky
    elif header_sky is not None:
        warnings.warn(f'header SKY = {header_sky:g} counts is {abs(header_sky - sky) / noise:.0f} sigma from '
                      f'the sky of the pixels ({sky:g} above SOFTBIAS): the pixel values do not follow '
                      'the header, so the pixels\' own sky is used; check the file', AstropyUserWarning)
    # a 20th-magnitude source gives FLUX20 counts, and 20 mag is 10**(0.4 * 2.5) = 10 nanomaggies
    return (counts - sky) * (10.0 / flux20)


def _header_float(header, key):
    """A finite number from a header card, else None."""
    try:
        value = float(header[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def sky_level(data, *, min_sky_fraction=0.15):
    """Sky level and noise of an image, from the pixels that no source covers.

    Sources are found on a smoothed copy (2 sigma above a first sigma-clipped estimate)
    and each is masked out to 1.5 times its own radius beyond its edge (at least 4 pixels):
    a galaxy's faint wings reach far beyond its detected footprint, and a fixed margin
    left enough of them to raise the sky of a galaxy filling its cutout by several
    sigma. Where that leaves too little sky the margin shrinks (1x, then 4 pixels).
    The sky is the sigma-clipped median of the rest; where sources cover all but
    ``min_sky_fraction`` of the image even with the smallest margin, that of the whole image.

    Parameters
    ----------
    data : `~numpy.ndarray`
        The image (2-D).
    min_sky_fraction : float, optional
        Smallest fraction of unmasked pixels for a local estimate.

    Returns
    -------
    sky, noise : float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y, x = np.mgrid[:101, :101]
    >>> image = 100 + rng.normal(0, 5, (101, 101)) + 400 * np.exp(-np.hypot(x - 50, y - 50) / 4)
    >>> sky, noise = sky_level(image)
    >>> round(sky), round(noise)
    (100, 5)
    """
    data = np.asarray(data, dtype=np.float32)
    _, median, std = sigma_clipped_stats(data, sigma=3, maxiters=5)
    smoothed = ndimage.gaussian_filter(np.nan_to_num(data, nan=median), 1.5)
    _, median_s, std_s = sigma_clipped_stats(smoothed, sigma=3, maxiters=5)
    detected = smoothed > median_s + 2 * std_s
    labels, n = ndimage.label(detected)
    # distance of every pixel to the nearest detected pixel, and which source that is
    distance, (iy, ix) = ndimage.distance_transform_edt(~detected, return_indices=True)
    radius = np.sqrt(np.bincount(labels.ravel(), minlength=n + 1) / np.pi)
    radius[0] = 0
    nearest_radius = radius[labels[iy, ix]]
    for margin in (1.5, 1.0, 0.0):
        sources = distance <= np.maximum(margin * nearest_radius, 4)
        if (~sources).mean() >= min_sky_fraction:
            _, sky, noise = sigma_clipped_stats(data, mask=sources, sigma=3, maxiters=5)
            return float(sky), float(noise)
    return float(median), float(std)


def to_colour(image):
    """Bring any supported galaxy image to the encoder's colour form.

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or `~numpy.ndarray`
        A colour cutout (``(3, ny, nx)`` uint8, as from `~astro_galsim.read_image`, or any
        three-plane array without ``meta['bands']``, taken as already stretched), a
        calibrated cube in nanomaggies with ``meta['bands']``, or a single-band image
        (raw ``fpC`` counts are calibrated with their header; an image of unknown
        calibration is background-subtracted and scaled by its noise).

    Returns
    -------
    rgb : `~numpy.ndarray`, shape (3, ny, nx), float32
        Values in [0, 1]; pixels flagged in the image's mask are set to 0 (clipped sky).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import NDData
    >>> jpeg = NDData(np.full((3, 4, 4), 255, dtype=np.uint8), meta={'bands': ('i', 'r', 'g')})
    >>> float(to_colour(jpeg).max())
    1.0
    """
    if not isinstance(image, NDData):
        image = NDData(np.asarray(image))
    data = np.asarray(image.data)
    meta = image.meta or {}
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 3 and data.shape[0] == 3 and _display_colour(data, meta):
        rgb = data.astype(np.float32) / (255.0 if data.dtype == np.uint8 else max(float(data.max()), 1.0))
        # another survey's colour rendering brought to SDSS's: one surface brightness, one grey level
        rgb = survey_of(meta).to_sdss_colour(rgb)
    elif data.ndim == 3 and 'bands' not in meta:
        # a FITS cube holds fluxes, not display values: each plane as a single-band image
        warnings.warn(f'{meta.get("path", "a FITS cube")}: the bands of its {data.shape[0]} planes are not '
                      'named, so each is calibrated like a single-band image and the colour is not '
                      'SDSS-balanced; set meta["bands"] (e.g. ("i", "r", "g")) for colour',
                      AstropyUserWarning)
        flux = np.stack([_single_band_flux(plane, image.unit, meta.get('header')) for plane in data])
        rgb = sdss_asinh_rgb(np.nan_to_num(flux), ('r',) * data.shape[0], pixel_scale=_pixel_scale(image))
    elif data.ndim == 3:
        bands = tuple(meta.get('bands', ()))
        if len(bands) != data.shape[0]:
            raise ValueError(f'a multi-band image of shape {data.shape} needs meta["bands"] naming its '
                             f'{data.shape[0]} SDSS bands (got {bands!r})')
        flux = _as_nanomaggies(data, image.unit)
        rgb = sdss_asinh_rgb(np.nan_to_num(flux), bands, pixel_scale=_pixel_scale(image))
    elif data.ndim == 2:
        flux = _single_band_flux(data, image.unit, meta.get('header'))
        rgb = sdss_asinh_rgb(np.nan_to_num(flux)[None], (_single_band(meta),), pixel_scale=_pixel_scale(image))
    else:
        raise ValueError(f'image of shape {data.shape} is not a galaxy image: give a 2-D image or a '
                         '(3, ny, nx) colour cube')
    if image.mask is not None:
        mask = np.asarray(image.mask, dtype=bool)
        rgb[..., mask if mask.ndim == 2 else mask.any(axis=0)] = 0
    return rgb


def shown_bands(image):
    """The bands `to_colour` makes an image's colour form from, as a short text.

    Colour images give their bands in wavelength order (``'gri'`` for SkyServer JPEGs),
    a single-band image its band (``'r'``, the band assumed where the image does not
    name one); say which comparison a query made (a single band against colour images).

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or `~numpy.ndarray`
        An image `to_colour` accepts.

    Returns
    -------
    bands : str
        Band names, joined without a separator when all are one letter, else with ``+``.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import NDData
    >>> shown_bands(NDData(np.zeros((3, 8, 8), np.uint8), meta={'bands': ('i', 'r', 'g')}))
    'gri'
    >>> shown_bands(np.zeros((8, 8)))
    'r'
    """
    if not isinstance(image, NDData):
        image = NDData(np.asarray(image))
    data, meta = np.asarray(image.data), image.meta or {}
    planes = data.shape[0] if data.ndim == 3 else 1
    bands = tuple(str(b) for b in meta.get('bands', ()))
    if planes == 1:
        bands = (_single_band(meta),)
    elif len(bands) != planes:
        # unnamed planes: SkyServer's bands for a display-form colour image, else unknown
        bands = COLOUR_IMAGE_BANDS if planes == 3 and _display_colour(data, meta) else ('?',) * planes
    order = 'ugriz'
    bands = sorted(bands, key=lambda b: order.index(b) if b in order else len(order))
    return ''.join(bands) if all(len(b) == 1 for b in bands) else '+'.join(bands)


def _display_colour(data, meta):
    """Whether three planes are a colour image in display form: bytes, said to be, or no bands named
    and not read from FITS (a FITS cube holds fluxes)."""
    return data.dtype == np.uint8 or meta.get('kind') == 'colour' or (
        'bands' not in meta and meta.get('kind') != 'fits')


def _single_band(meta):
    """The SDSS band a single-band image is shown as: its own, or r where it names none of them."""
    band = (tuple(meta.get('bands', ())) or ('r',))[0]
    return band if band in SDSS_BAND_WEIGHTS else 'r'


def _pixel_scale(image):
    """Angular pixel size from the image's celestial WCS, else the SDSS one."""
    wcs = getattr(image, 'wcs', None)
    if wcs is None or not getattr(wcs, 'has_celestial', False):
        return SDSS_PIXEL_SCALE
    return (proj_plane_pixel_scales(wcs.celestial).mean() * u.deg).to(u.arcsec)


def _single_band_flux(data, unit, header):
    """One plane in nanomaggies: calibrated with an fpC header, converted from a flux unit, or
    background-subtracted and scaled by its noise."""
    if header is not None and 'FLUX20' in header:
        return calibrate_counts(data, header)
    if _is_flux_unit(unit):
        return _as_nanomaggies(data, unit)
    return _noise_scaled(data)


def _is_flux_unit(unit):
    return unit is not None and unit.is_equivalent(u.Jy)


def _as_nanomaggies(data, unit):
    data = np.asarray(data, dtype=np.float32)
    if unit is None or not unit.is_equivalent(u.Jy):
        return data  # assume nanomaggies, SDSS frames' unit, when nothing else is said
    return (data * unit).to_value(nanomaggy).astype(np.float32)


def _noise_scaled(data):
    data = np.asarray(data, dtype=np.float32)
    sky, noise = sky_level(data)
    return (data - sky) * (_REFERENCE_NOISE_NMGY / noise if noise > 0 else 1.0)
