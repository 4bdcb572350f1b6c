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
from astropy.utils.exceptions import AstropyUserWarning

from .io import nanomaggy

__all__ = ['to_colour', 'sdss_asinh_rgb', 'calibrate_counts', 'SDSS_BAND_WEIGHTS']

#: Weights applied to each SDSS band (in nanomaggies) before the asinh stretch.
#: They balance the bands the way SDSS colour images do (g is faint, i bright).
SDSS_BAND_WEIGHTS = {'u': 1.5, 'g': 2.5, 'r': 1.5, 'i': 1.0, 'z': 0.4}
#: Softening of the asinh stretch (Lupton et al. 2004): larger Q shows fainter light.
ASINH_Q = 20.0
# SDSS r-band sky noise is about 0.03 nmgy per 0.396" pixel; an image of unknown
# calibration is scaled so that its noise matches, so that faint light looks the same.
_REFERENCE_NOISE_NMGY = 0.03


def sdss_asinh_rgb(planes, bands, *, q=ASINH_Q):
    """Asinh colour composite of calibrated SDSS planes (Lupton et al. 2004).

    Parameters
    ----------
    planes : array-like, shape (n, ny, nx)
        Sky-subtracted fluxes in nanomaggies, one plane per band.
    bands : sequence of str
        The SDSS band of each plane, in the order of the output channels (for SDSS
        colour images ``('i', 'r', 'g')`` for red, green, blue). A single band gives a
        grey image.
    q : float, optional
        Asinh softening.

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
    weighted = np.stack([np.maximum(p * SDSS_BAND_WEIGHTS[b], 0) for p, b in zip(planes, bands)])
    intensity = weighted.mean(axis=0)
    stretched = np.arcsinh(q * intensity) / np.sqrt(q)
    with np.errstate(invalid='ignore', divide='ignore'):
        gain = np.where(intensity > 0, stretched / intensity, 0)
    rgb = np.clip(weighted * gain, 0, 1)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return rgb.astype(np.float32)


def calibrate_counts(data, header):
    """Convert a DR7 ``fpC`` frame in raw counts to sky-subtracted nanomaggies.

    Uses ``SOFTBIAS`` and ``FLUX20`` from the header (mag = 20 - 2.5 log10(counts / FLUX20))
    and a sigma-clipped median for the sky.

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
    _, sky, _ = sigma_clipped_stats(counts, sigma=3, maxiters=5)
    # a 20th-magnitude source gives FLUX20 counts, and 20 mag is 10**(0.4 * 2.5) = 10 nanomaggies
    return (counts - sky) * (10.0 / flux20)


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
    # three planes with no bands named are a display-form colour image, unless read from FITS
    colour = data.dtype == np.uint8 or meta.get('kind') == 'colour' or (
        'bands' not in meta and meta.get('kind') != 'fits')
    if data.ndim == 3 and data.shape[0] == 3 and colour:
        rgb = data.astype(np.float32) / (255.0 if data.dtype == np.uint8 else max(float(data.max()), 1.0))
    elif data.ndim == 3 and 'bands' not in meta:
        # a FITS cube holds fluxes, not display values: each plane as a single-band image
        warnings.warn(f'{meta.get("path", "a FITS cube")}: the bands of its {data.shape[0]} planes are not '
                      'named, so each is calibrated like a single-band image and the colour is not '
                      'SDSS-balanced; set meta["bands"] (e.g. ("i", "r", "g")) for colour',
                      AstropyUserWarning)
        flux = np.stack([_single_band_flux(plane, image.unit, meta.get('header')) for plane in data])
        rgb = sdss_asinh_rgb(np.nan_to_num(flux), ('r',) * data.shape[0])
    elif data.ndim == 3:
        bands = tuple(meta.get('bands', ()))
        if len(bands) != data.shape[0]:
            raise ValueError(f'a multi-band image of shape {data.shape} needs meta["bands"] naming its '
                             f'{data.shape[0]} SDSS bands (got {bands!r})')
        flux = _as_nanomaggies(data, image.unit)
        rgb = sdss_asinh_rgb(np.nan_to_num(flux), bands)
    elif data.ndim == 2:
        band = (tuple(meta.get('bands', ())) or ('r',))[0]
        band = band if band in SDSS_BAND_WEIGHTS else 'r'
        flux = _single_band_flux(data, image.unit, meta.get('header'))
        rgb = sdss_asinh_rgb(np.nan_to_num(flux)[None], (band,))
    else:
        raise ValueError(f'image of shape {data.shape} is not a galaxy image: give a 2-D image or a '
                         '(3, ny, nx) colour cube')
    if image.mask is not None:
        mask = np.asarray(image.mask, dtype=bool)
        rgb[..., mask if mask.ndim == 2 else mask.any(axis=0)] = 0
    return rgb


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
    _, median, std = sigma_clipped_stats(data, sigma=3, maxiters=5)
    return (data - median) * (_REFERENCE_NOISE_NMGY / std if std > 0 else 1.0)
