"""Degrading a galaxy image physically: as a survey of poorer seeing, coarser pixels or less depth sees it.

`degrade` turns an SDSS-stretched colour image back into flux (the inverse of
`~astro_galsim.preprocessing.sdss_asinh_rgb`), blurs it to a broader seeing (never
sharpens), moves the galaxy further away (smaller on coarser pixels), adds sky noise and
stretches it again, possibly with another nonlinearity and colour balance, as another
rendering would. The benchmarks compare such copies with their originals, and the
training uses them as views of one galaxy.
"""
import numpy as np
from astropy import units as u
from astropy.nddata import NDData
from scipy import ndimage

from .preprocessing import ASINH_NONLINEARITY

__all__ = ['degrade', 'colour_to_flux', 'flux_to_colour']

_FWHM_PER_SIGMA = 2.3548


def colour_to_flux(rgb, nonlinearity=ASINH_NONLINEARITY):
    """The scaled band fluxes behind an SDSS-stretched colour image (``(3, ny, nx)`` in [0, 1]).

    Inverts ``grey = asinh(N S) / (3 N)`` (the mean of the planes), keeping each plane's
    share of the light; saturated pixels stay at the flux of their clipped value.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.array([0.2, 0.1, 0.05], dtype=np.float32)[:, None, None] * np.ones((3, 2, 2))
    >>> np.allclose(flux_to_colour(colour_to_flux(rgb)), rgb, atol=1e-6)
    True
    """
    rgb = np.clip(np.asarray(rgb, dtype=np.float64), 0, 1)
    total_rgb = rgb.sum(axis=0)
    total = np.sinh(nonlinearity * total_rgb * 255 / 256) / nonlinearity
    with np.errstate(invalid='ignore', divide='ignore'):
        share = np.where(total_rgb > 0, rgb / total_rgb, 0.0)
    return share * total


def flux_to_colour(flux, nonlinearity=ASINH_NONLINEARITY):
    """The SDSS colour stretch of scaled band fluxes (the inverse of `colour_to_flux`)."""
    flux = np.maximum(np.asarray(flux, dtype=np.float64), 0)
    total = nonlinearity * flux.sum(axis=0)
    with np.errstate(invalid='ignore', divide='ignore'):
        gain = np.where(total > 0, np.arcsinh(total) / total, 0.0)
    return np.clip(flux * gain * 256 / 255, 0, 1).astype(np.float32)


def degrade(image, *, shrink=1.0, seeing=1.4 * u.arcsec, pixel_scale=0.396 * u.arcsec,
            source_pixel_scale=None, source_seeing=None, noise=0.012, nonlinearity=ASINH_NONLINEARITY,
            colour_balance=(1.0, 1.0, 1.0), brightness=1.0, seed=0):
    """A copy of a galaxy image as a survey with another resolution, depth or rendering shows it.

    Parameters
    ----------
    image : `~astropy.nddata.NDData` or `~numpy.ndarray`
        A colour image in SDSS's stretch, ``(3, ny, nx)``: bytes (as `~astro_galsim.read_image`
        gives a JPEG) or floats in [0, 1].
    shrink : float, optional
        How many times smaller the galaxy appears (as if that many times further away);
        1 keeps its size.
    seeing, pixel_scale : `~astropy.units.Quantity`, optional
        FWHM of the point-spread function and pixel scale of the survey that sees the copy.
    source_pixel_scale, source_seeing : `~astropy.units.Quantity`, optional
        Those of ``image`` (default: its ``meta['pixel_scale']``, else ``pixel_scale``; and
        SDSS's 1.4"). A copy is never sharper than its source: the blur added is only the
        difference.
    noise : float, optional
        Standard deviation of the sky noise added to each band's scaled flux (0.012 gives
        the sky of SDSS JPEGs, about 3 grey levels of 255).
    nonlinearity, colour_balance, brightness : optional
        The rendering of the copy: the asinh nonlinearity, a factor per channel (red, green,
        blue) and an overall factor applied to the flux before the stretch.
    seed : int, optional
        Seed of the noise.

    Returns
    -------
    copy : `~astropy.nddata.NDData`
        ``(3, ny', nx')`` bytes with ``meta`` ``bands`` (i, r, g), ``survey`` ``'sdss'`` and
        ``pixel_scale``.

    Examples
    --------
    A disc 60 pixels wide, seen three times further away at SDSS's resolution:

    >>> import numpy as np
    >>> y, x = np.mgrid[:120, :120]
    >>> disc = (0.8 * np.exp(-np.hypot(x - 60, y - 60) / 12))[None].repeat(3, 0)
    >>> copy = degrade(disc, shrink=3, source_pixel_scale=0.396 * u.arcsec)
    >>> copy.data.shape, copy.data.dtype.name
    ((3, 40, 40), 'uint8')
    """
    meta = getattr(image, 'meta', None) or {}
    data = np.asarray(getattr(image, 'data', image))
    rgb = data.astype(np.float64) / 255 if data.dtype == np.uint8 else data.astype(np.float64)
    source_scale = u.Quantity(source_pixel_scale if source_pixel_scale is not None
                              else meta.get('pixel_scale', pixel_scale), u.arcsec)
    source_seeing = u.Quantity(1.4 * u.arcsec if source_seeing is None else source_seeing, u.arcsec)
    flux = colour_to_flux(rgb)
    # in the source's own angles, the copy's seeing and pixels are `shrink` times larger
    target_seeing = float((seeing * shrink / source_scale).decompose())
    have = float((source_seeing / source_scale).decompose())
    blur = np.sqrt(max(target_seeing ** 2 - have ** 2, 0.0)) / _FWHM_PER_SIGMA
    if blur > 0:
        flux = np.stack([ndimage.gaussian_filter(plane, blur, mode='nearest') for plane in flux])
    factor = float((source_scale / (pixel_scale * shrink)).decompose())
    if not np.isclose(factor, 1.0):
        flux = np.stack([ndimage.zoom(plane, factor, order=1, grid_mode=True, mode='nearest') for plane in flux])
    flux = flux * brightness * np.asarray(colour_balance, dtype=np.float64)[:, None, None]
    if noise:
        flux = flux + np.random.default_rng(seed).normal(0.0, noise, flux.shape)
    out = np.round(flux_to_colour(flux, nonlinearity) * 255).astype(np.uint8)
    return NDData(out, meta={'bands': ('i', 'r', 'g'), 'survey': 'sdss', 'pixel_scale': u.Quantity(pixel_scale)})
