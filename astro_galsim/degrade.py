"""Physically degraded and re-rendered copies of an SDSS colour image of a galaxy.

A SkyServer colour JPEG is an asinh stretch of the i, r, g fluxes (`~astro_galsim.preprocessing.sdss_asinh_rgb`),
so its grey level gives back the surface brightness: the grey level is ``asinh(N S) / (3 N)``
with ``S`` the sum of the band-weighted surface brightnesses and ``N`` the nonlinearity, and
each channel keeps its band's share of ``S``. `sdss_surface_brightness` inverts the stretch
(saturated pixels stay at the brightest level the image can show); `degrade` then does what
a worse observation of the same galaxy would: it moves the galaxy further away (smaller at
the same surface brightness), convolves it to a broader seeing, resamples it to coarser
pixels, adds sky noise, and stretches it again. `rerender` changes only the rendering: another
asinh nonlinearity and colour balance, as later SkyServer JPEGs of the same galaxies differ.

Each step adds only the difference to its target: an image is blurred to the target seeing,
never sharpened, and noise is added only above the noise the image already has. Both return
images in the form `~astro_galsim.read_image` gives colour JPEGs, so the benchmarks query with
them and training can use them as views of one galaxy.
"""
import numpy as np
from astropy import units as u
from astropy.nddata import NDData
from scipy import ndimage

from .io import COLOUR_IMAGE_BANDS
from .preprocessing import ASINH_NONLINEARITY, SDSS_BAND_WEIGHTS, SDSS_PIXEL_SCALE
from .surveys import SURVEYS, resolution_of, survey_of

__all__ = ['sdss_surface_brightness', 'stretch', 'degrade', 'rerender', 'SDSS_SKY_NOISE']

#: Sky noise of SDSS colour JPEGs in nanomaggies per 0.396" pixel in each band, as this stretch model
#: reads it: the 96 px native-resolution SDSS JPEGs of ``galaxy_cruise_interacting`` have their sky at
#: grey level 4 (median) and 9 (90th percentile) of 255, and 30 training-sample images degraded with
#: 0.004 (shrunk 3x) get 4.3 and 9.5 (0.003: 4.2 / 9.2; 0.005: 4.7 / 10.0). It is well below the r-band frames'
#: 0.027: the JPEGs' sky is clipped at black and smoothed, so they show less noise than the frames hold.
SDSS_SKY_NOISE = 0.004
_FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
# SDSS writes floor(256 x) into a byte: one 255th of the JPEG is 1/256 of the stretched value
_BYTE = 256 / 255


def _weights(bands):
    unknown = [b for b in bands if b not in SDSS_BAND_WEIGHTS]
    if unknown:
        raise ValueError(f'bands {tuple(bands)}: {unknown} are not SDSS bands; give names from '
                         f'{sorted(SDSS_BAND_WEIGHTS)}, one per colour plane')
    return np.array([SDSS_BAND_WEIGHTS[b] for b in bands], dtype=np.float64)[:, None, None]


def _as_rgb(image):
    """Display values in [0, 1] (float64) and meta of a colour image, in SDSS's rendering."""
    meta = dict(image.meta or {}) if isinstance(image, NDData) else {}
    data = np.asarray(image.data if isinstance(image, NDData) else image)
    if data.ndim != 3 or data.shape[0] != 3:
        raise ValueError(f'image of shape {data.shape} is not a colour image: give a (3, ny, nx) array of '
                         'display values (uint8, or floats in [0, 1]), colour planes first')
    if data.dtype == np.uint8:
        rgb = data / 255.0
    elif np.issubdtype(data.dtype, np.floating) and np.nanmin(data) >= 0 and np.nanmax(data) <= 1:
        rgb = np.nan_to_num(data.astype(np.float64))
    else:
        raise ValueError(f'image values of type {data.dtype} in [{np.nanmin(data):g}, {np.nanmax(data):g}] '
                         'are not display values: give uint8, or floats in [0, 1]')
    # another survey's colour rendering is first brought to SDSS's stretch
    rgb = survey_of(meta).to_sdss_colour(rgb).astype(np.float64)
    return rgb, meta


def sdss_surface_brightness(rgb, bands=COLOUR_IMAGE_BANDS, *, nonlinearity=ASINH_NONLINEARITY):
    """Invert the SDSS colour stretch: surface brightness per band from display values.

    Parameters
    ----------
    rgb : array-like, shape (3, ny, nx)
        Display values in [0, 1] in the SkyServer stretch (`~astro_galsim.preprocessing.sdss_asinh_rgb`).
    bands : sequence of str, optional
        The SDSS band of each plane (default ``('i', 'r', 'g')``, as SkyServer JPEGs).
    nonlinearity : float, optional
        The stretch's ``N`` (default `~astro_galsim.preprocessing.ASINH_NONLINEARITY`).

    Returns
    -------
    flux : `~numpy.ndarray`, shape (3, ny, nx), float64
        Nanomaggies per SDSS 0.396" pixel (a surface brightness, whatever the image's own
        pixel scale). Saturated pixels give the brightest level the image shows, a lower limit.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.preprocessing import sdss_asinh_rgb
    >>> flux = np.zeros((3, 4, 4)); flux[:, 1, 1] = [0.3, 0.2, 0.1]
    >>> np.allclose(sdss_surface_brightness(sdss_asinh_rgb(flux, ('i', 'r', 'g'))), flux, atol=1e-6)
    True
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    total = rgb.sum(axis=0)
    stretched = total / _BYTE   # = asinh(N S) / N
    weighted_sum = np.sinh(nonlinearity * stretched) / nonlinearity
    with np.errstate(invalid='ignore', divide='ignore'):
        share = np.where(total > 0, rgb / total, 0.0)
    return share * weighted_sum / _weights(bands)


def stretch(flux, bands=COLOUR_IMAGE_BANDS, *, nonlinearity=ASINH_NONLINEARITY):
    """The SDSS colour stretch of surface brightnesses (nanomaggies per 0.396" pixel).

    The same as `~astro_galsim.preprocessing.sdss_asinh_rgb` at SDSS's pixel scale, with the
    nonlinearity as a parameter; returns float display values in [0, 1], shape (3, ny, nx).

    Examples
    --------
    >>> import numpy as np
    >>> flux = np.zeros((3, 4, 4)); flux[:, 1, 1] = [0.3, 0.2, 0.1]
    >>> rgb = stretch(flux)
    >>> bool(rgb[:, 1, 1].mean() > rgb[:, 0, 0].mean()), float(rgb.max()) <= 1.0
    (True, True)
    """
    scaled = np.maximum(np.asarray(flux, dtype=np.float64), 0) * _weights(bands)
    total = nonlinearity * scaled.sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        gain = np.where(total > 0, np.arcsinh(total) / total, 0.0)
    return np.clip(scaled * gain * _BYTE, 0, 1)


def _noise_of(flux):
    """Per-band pixel noise from differences of neighbouring pixels (robust; correlated noise reads low)."""
    diff = np.diff(flux, axis=-1)
    mad = np.median(np.abs(diff - np.median(diff, axis=(1, 2), keepdims=True)), axis=(1, 2))
    return 1.4826 * mad / np.sqrt(2)


def _fit(flux, shape):
    """Centre-crop or pad (with each band's sky, the median of its border) to ``shape``."""
    out = flux
    for axis, size in ((1, shape[0]), (2, shape[1])):
        n = out.shape[axis]
        if n > size:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif n < size:
            border = np.concatenate([flux[:, 0], flux[:, -1], flux[:, :, 0], flux[:, :, -1]], axis=1)
            sky = np.median(border, axis=1)
            before = (size - n) // 2
            widths = [(0, 0), (0, 0), (0, 0)]
            widths[axis] = (before, size - n - before)
            out = np.concatenate([np.pad(out[i:i + 1], widths, constant_values=s) for i, s in enumerate(sky)])
    return out


def _colour_image(rgb, meta, pixel_scale, seeing, quantise):
    data = np.floor(rgb * 255 + 0.5).clip(0, 255).astype(np.uint8) if quantise else rgb.astype(np.float32)
    out = {k: v for k, v in meta.items() if k in ('path', 'objid', 'name')}
    out.update(bands=COLOUR_IMAGE_BANDS, kind='colour', survey='sdss', seeing=seeing)
    if np.isfinite(u.Quantity(pixel_scale).value):   # a scale nobody knows stays unknown
        out['pixel_scale'] = pixel_scale
    return NDData(data, meta=out)


def degrade(image, *, seeing=1.4 * u.arcsec, pixel_scale=SDSS_PIXEL_SCALE, shrink=1.0, noise=SDSS_SKY_NOISE,
            shape=None, input_pixel_scale=None, input_seeing=None, quantise=True, rng=None):
    """A worse observation of the galaxy in a colour image: further away, blurrier, coarser, noisier.

    The display values are turned back into surface brightness (`sdss_surface_brightness`;
    images of other surveys, named in ``meta['survey']``, first go through their tone curve
    onto SDSS's stretch); the galaxy is made ``shrink`` times smaller at the same surface
    brightness (as if further away); it is convolved with the Gaussian that brings the
    seeing to ``seeing`` (the input's own seeing shrinks with the galaxy; nothing is
    sharpened); resampled to ``pixel_scale``; cut or padded with its sky to ``shape``; given
    Gaussian sky noise up to ``noise``; and stretched again as SDSS does.

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or array-like, shape (3, ny, nx)
        A colour image in display values (uint8, or floats in [0, 1]), as
        `~astro_galsim.read_image` gives JPEGs; its ``meta`` may give ``pixel_scale``,
        ``seeing`` and ``survey`` (`~astro_galsim.surveys.resolution_of`).
    seeing : `~astropy.units.Quantity`, optional
        FWHM of the target point-spread function (default SDSS's 1.4").
    pixel_scale : `~astropy.units.Quantity`, optional
        Target angle per pixel (default SDSS's 0.396").
    shrink : float, optional
        How many times smaller the galaxy appears (at least 1; 3 puts it three times further away).
    noise : float or None, optional
        Target sky noise in nanomaggies per 0.396" pixel in each band (default `SDSS_SKY_NOISE`,
        what SDSS JPEGs show; larger is shallower); noise the image already has (measured after
        resampling) is subtracted in quadrature. None adds none.
    shape : tuple of int, optional
        Output ``(ny, nx)``: the degraded image is cut about its centre or padded with its sky
        (before the noise). Default: the resampled size.
    input_pixel_scale, input_seeing : `~astropy.units.Quantity`, optional
        The image's own; default from its ``meta`` or survey, else SDSS's (an SDSS JPEG of
        unknown scale is taken to be at the native 0.396"/px).
    quantise : bool, optional
        Round to bytes as a JPEG holds them (default); else float32 in [0, 1].
    rng : `numpy.random.Generator` or int, optional
        Source of the noise.

    Returns
    -------
    degraded : `~astropy.nddata.NDData`
        ``(3, ny, nx)`` display values with ``meta`` ``bands``, ``kind='colour'``,
        ``survey='sdss'`` and the new ``pixel_scale`` and ``seeing``.

    Raises
    ------
    ValueError
        If the image is not a colour image in display values, or a parameter is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy import units as u
    >>> y, x = np.mgrid[:120, :120]
    >>> galaxy = np.exp(-np.hypot(x - 60, y - 60) / 8)[None] * np.array([0.6, 0.5, 0.4])[:, None, None]
    >>> far = degrade(galaxy, shrink=3, input_pixel_scale=0.396 * u.arcsec, rng=0)
    >>> far.data.shape, far.data.dtype.name, far.meta['pixel_scale']
    ((3, 40, 40), 'uint8', <Quantity 0.396 arcsec>)
    """
    rgb, meta = _as_rgb(image)
    own_scale, own_seeing = resolution_of(meta)
    scale_in = u.Quantity(input_pixel_scale if input_pixel_scale is not None else own_scale, u.arcsec)
    if not np.isfinite(scale_in.value):
        scale_in = SURVEYS['sdss'].pixel_scale
    seeing_in = u.Quantity(input_seeing if input_seeing is not None else own_seeing, u.arcsec)
    seeing, pixel_scale = u.Quantity(seeing, u.arcsec), u.Quantity(pixel_scale, u.arcsec)
    if not shrink >= 1:
        raise ValueError(f'shrink={shrink!r}: give a factor of at least 1 (the galaxy made that many times smaller)')
    if not (seeing.value > 0 and pixel_scale.value > 0 and scale_in.value > 0):
        raise ValueError(f'seeing={seeing}, pixel_scale={pixel_scale} and the input pixel scale {scale_in} '
                         'must be positive angles')
    if noise is not None and not noise >= 0:
        raise ValueError(f'noise={noise!r}: give a sky noise in nanomaggies per 0.396" pixel (>= 0), or None')
    rng = np.random.default_rng(rng)
    flux = sdss_surface_brightness(rgb)
    # the galaxy made shrink times smaller: each input pixel covers shrink times less sky, and its seeing shrinks
    scale_far = (scale_in / shrink).to_value(u.arcsec)
    added = np.sqrt(max(seeing.to_value(u.arcsec) ** 2 - (seeing_in.to_value(u.arcsec) / shrink) ** 2, 0.0))
    zoom = scale_far / pixel_scale.to_value(u.arcsec)
    # the added seeing, and the coarser pixels' own window (a box of 1 / zoom input pixels), in input pixels
    sigma = np.sqrt((added / _FWHM_PER_SIGMA / scale_far) ** 2 + max(1 / zoom ** 2 - 1, 0) / 12)
    if sigma > 0:
        flux = ndimage.gaussian_filter(flux, (0, sigma, sigma), mode='nearest')
    out_shape = [max(1, int(round(n * zoom))) for n in flux.shape[1:]]
    coords = [(np.arange(n) + 0.5) / zoom_axis - 0.5
              for n, zoom_axis in zip(out_shape, (out_shape[0] / flux.shape[1], out_shape[1] / flux.shape[2]))]
    yy, xx = np.meshgrid(*coords, indexing='ij')
    flux = np.stack([ndimage.map_coordinates(plane, [yy, xx], order=1, mode='nearest') for plane in flux])
    if shape is not None:
        flux = _fit(flux, tuple(int(s) for s in shape))
    if noise is not None and noise > 0:
        # noise in surface brightness: per-pixel flux noise grows with the pixel side, SB noise falls with it
        target = noise * SDSS_PIXEL_SCALE.to_value(u.arcsec) / pixel_scale.to_value(u.arcsec)
        extra = np.sqrt(np.maximum(target ** 2 - _noise_of(flux) ** 2, 0.0))
        flux = flux + rng.normal(size=flux.shape) * extra[:, None, None]
    return _colour_image(stretch(flux), meta, pixel_scale, max(seeing, seeing_in / shrink), quantise)


def rerender(image, *, nonlinearity=ASINH_NONLINEARITY, band_gains=(1.0, 1.0, 1.0), quantise=True):
    """The same galaxy in another rendering: another asinh nonlinearity and colour balance.

    The display values are turned back into surface brightness (`sdss_surface_brightness`),
    each band multiplied by its gain and stretched again with ``nonlinearity``. Later SkyServer
    JPEGs of the training sample's galaxies differ so: their central 6" is 16 % brighter in
    grey and 44 % brighter in blue.

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or array-like, shape (3, ny, nx)
        A colour image in display values (uint8, or floats in [0, 1]).
    nonlinearity : float, optional
        The new stretch's ``N`` (SDSS's frame JPEGs use 2.25; SkyServer cutouts follow 2.82).
    band_gains : sequence of 3 float, optional
        Factors on the surface brightness of the red, green and blue planes (i, r, g bands).
    quantise : bool, optional
        Round to bytes (default); else float32 in [0, 1].

    Returns
    -------
    rendered : `~astropy.nddata.NDData`
        ``(3, ny, nx)`` display values; ``meta`` keeps the image's ``pixel_scale`` (where known)
        and ``seeing``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:64, :64]
    >>> galaxy = np.exp(-np.hypot(x - 32, y - 32) / 6)[None] * np.array([0.6, 0.5, 0.4])[:, None, None]
    >>> bluer = rerender(galaxy, band_gains=(1.0, 1.1, 1.6))
    >>> bool(bluer.data[2, 32, 32] > round(0.4 * 255))
    True
    """
    rgb, meta = _as_rgb(image)
    gains = np.asarray(band_gains, dtype=np.float64)
    if gains.shape != (3,) or not np.all(gains > 0) or not nonlinearity > 0:
        raise ValueError(f'band_gains={tuple(np.ravel(band_gains))} and nonlinearity={nonlinearity!r}: give three '
                         'positive gains (red, green, blue) and a positive nonlinearity')
    flux = sdss_surface_brightness(rgb) * gains[:, None, None]
    scale, seeing = resolution_of(meta)
    return _colour_image(stretch(flux, nonlinearity=nonlinearity), meta, scale, seeing, quantise)
