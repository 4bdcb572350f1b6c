"""What the package knows of each survey's images: pixel scale, seeing and colour rendering.

An image names its survey in ``meta['survey']`` (`~astro_galsim.read_image` takes
``survey=``; the retrieval sources set it). The survey gives what the image itself does
not say: the pixel scale of a JPEG without a WCS, the seeing that sets the smallest
resolved galaxy (`resolution_of`), and how its colour images turn surface brightness into
grey levels (`Survey.to_sdss_colour`), so that one surface brightness has one grey level
whichever survey an image comes from.
"""
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u

__all__ = ['Survey', 'SURVEYS', 'survey_of', 'resolution_of', 'remove_sky_pedestal']

# The sky of SkyServer colour JPEGs lies at 2 to 7 grey levels of 255 (docs/segmentation.rst); a
# higher pedestal, as the grey sky of HSC or of an unknown rendering, is sky, not galaxy.
_SDSS_SKY = 4 / 255
_PEDESTAL_TOLERANCE = 8 / 255


@dataclass(frozen=True)
class Survey:
    """A survey's imaging, as the per-galaxy path needs it.

    Parameters
    ----------
    name : str
        The name images give in ``meta['survey']``.
    pixel_scale : `~astropy.units.Quantity` or None
        Angle per pixel of its native images (used where an image has no WCS); None where
        it varies (``'unknown'``).
    seeing : `~astropy.units.Quantity`
        Typical FWHM of its point-spread function: galaxies whose half-light radius is
        below it are not resolved (`~astro_galsim.segmentation.select_galaxy`).
    tone_curve : tuple, optional
        The survey's colour images brought to the SkyServer SDSS stretch: for each channel
        (red, green, blue) a pair ``(levels, sdss_levels)``, the SDSS grey level at which SDSS
        shows the surface brightness this survey shows at each level (interpolated linearly
        between them, up to 1 at 1). Empty for surveys whose colour images already have the
        SDSS stretch.
    sky_pedestal : bool, optional
        Whether its colour images may have a grey sky to remove (`remove_sky_pedestal`):
        true for renderings not measured against SDSS's.
    """

    name: str
    pixel_scale: u.Quantity
    seeing: u.Quantity
    tone_curve: tuple = field(default=())
    sky_pedestal: bool = False

    def to_sdss_colour(self, rgb):
        """A display colour image of this survey (``(3, ny, nx)`` in [0, 1]) in SDSS's stretch.

        A survey with a tone curve is mapped through it; one of unmeasured rendering has
        its sky pedestal removed (`remove_sky_pedestal`); SDSS images are returned as they are.
        """
        rgb = np.asarray(rgb, dtype=np.float32)
        if not self.tone_curve:
            return remove_sky_pedestal(rgb) if self.sky_pedestal else rgb
        return np.stack([np.interp(plane, levels, sdss).astype(np.float32)
                         for plane, (levels, sdss) in zip(rgb, self.tone_curve)])


def remove_sky_pedestal(rgb):
    """Move the sky of a colour image of unknown rendering down to where SDSS JPEGs have it.

    The sky is the 20th percentile of each channel (a cutout's faintest fifth is sky even
    where the galaxy nearly fills it); where it lies more than 8 grey levels above the
    SkyServer sky (2 to 7 of 255), the excess is subtracted and the rest stretched back to
    [0, 1]. An image with SDSS's dark sky is returned unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> grey_sky = np.full((3, 20, 20), 0.3, dtype=np.float32); grey_sky[:, 10, 10] = 1.0
    >>> out = remove_sky_pedestal(grey_sky)
    >>> round(float(out[0, 0, 0]) * 255), float(out[0, 10, 10])
    (6, 1.0)
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    sky = np.percentile(rgb.reshape(len(rgb), -1), 20, axis=1)
    excess = np.where(sky > _SDSS_SKY + _PEDESTAL_TOLERANCE, sky - _SDSS_SKY, 0.0).astype(np.float32)
    if not excess.any():
        return rgb
    excess = excess[:, None, None]
    return np.clip((rgb - excess) / (1 - excess), 0, 1).astype(np.float32)


#: The surveys whose images the package knows. The HSC tone curve was measured on the HSC and
#: SDSS images of the 400 first ``train`` galaxies of ``galaxy_cruise_interacting``: the mean
#: level of each channel in rings of 0.5" about the galaxy's centre (the HSC image blurred to
#: SDSS's 1.4" seeing), the median SDSS level per 0.05 of HSC level (docs/preprocessing.rst).
SURVEYS = {
    'sdss': Survey('sdss', 0.396 * u.arcsec, 1.4 * u.arcsec),
    'hsc': Survey(
        'hsc', 0.168 * u.arcsec, 0.7 * u.arcsec,
        tone_curve=(((0.0, 0.075, 0.125, 0.175, 0.225, 0.275, 0.325, 0.375, 0.425, 0.475, 0.525, 0.575, 0.625,
                      0.675, 0.725, 0.775, 0.825, 0.875, 0.925, 0.975, 1.0),
                     (0.0, 0.022, 0.035, 0.049, 0.065, 0.083, 0.105, 0.134, 0.169, 0.214, 0.263, 0.316, 0.369,
                      0.424, 0.483, 0.542, 0.609, 0.690, 0.784, 0.886, 1.0)),
                    ((0.0, 0.075, 0.125, 0.175, 0.225, 0.275, 0.325, 0.375, 0.425, 0.475, 0.525, 0.575, 0.625,
                      0.675, 0.725, 1.0),
                     (0.0, 0.017, 0.031, 0.049, 0.072, 0.104, 0.145, 0.199, 0.259, 0.324, 0.401, 0.503, 0.607,
                      0.691, 0.757, 1.0)),
                    ((0.0, 0.075, 0.125, 0.175, 0.225, 0.275, 0.325, 0.375, 0.425, 1.0),
                     (0.0, 0.017, 0.036, 0.071, 0.127, 0.208, 0.297, 0.387, 0.482, 1.0)))),
    # Legacy Surveys colour JPEGs: not measured against SDSS here (no pairs at hand), so only their sky
    'legacysurvey': Survey('legacysurvey', 0.262 * u.arcsec, 1.3 * u.arcsec, sky_pedestal=True),
    'unknown': Survey('unknown', None, 1.4 * u.arcsec, sky_pedestal=True),
}


def survey_of(meta):
    """The `Survey` an image's ``meta`` names (``'survey'``), SDSS where it names none.

    Raises
    ------
    ValueError
        If the name is not one of `SURVEYS`.
    """
    name = str((meta or {}).get('survey') or 'sdss').lower()
    if name not in SURVEYS:
        raise ValueError(f"meta['survey']={name!r} is not a survey astro_galsim knows; give one of "
                         f"{sorted(SURVEYS)} ('unknown' for a colour image of unknown rendering)")
    return SURVEYS[name]


def _header_arcsec(header, keys):
    for key in keys:
        try:
            value = float((header or {}).get(key, np.nan))
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value * u.arcsec
    return None


def resolution_of(meta, wcs_scale=None):
    """Pixel scale and seeing FWHM of an image: given, from its header, or its survey's.

    Parameters
    ----------
    meta : dict
        The image's ``meta``: ``pixel_scale`` and ``seeing`` (Quantities) when given; else
        the header's ``SEEING``/``PSF_FWHM``/``FWHM`` cards (arcsec); else those of the
        survey it names (``'survey'``). The seeing of an image that names none is SDSS's.
    wcs_scale : `~astropy.units.Quantity`, optional
        The pixel scale the image's WCS gives (takes precedence over the survey's).

    Returns
    -------
    pixel_scale, seeing : `~astropy.units.Quantity`
        In arcsec; the pixel scale is NaN where neither the image nor a named survey gives it.

    Examples
    --------
    >>> pixel_scale, seeing = resolution_of({'survey': 'hsc'})
    >>> pixel_scale, seeing
    (<Quantity 0.168 arcsec>, <Quantity 0.7 arcsec>)
    """
    meta = meta or {}
    survey = survey_of(meta)
    scale = meta.get('pixel_scale')
    if scale is None and wcs_scale is not None and np.isfinite(u.Quantity(wcs_scale).value):
        scale = wcs_scale
    if scale is None and meta.get('survey'):
        scale = survey.pixel_scale
    scale = np.nan * u.arcsec if scale is None else u.Quantity(scale)
    if scale.unit.physical_type != 'angle':
        scale = scale * u.pix
    seeing = meta.get('seeing')
    if seeing is None:
        seeing = _header_arcsec(meta.get('header'), ('SEEING', 'PSF_FWHM', 'FWHM'))
    seeing = survey.seeing if seeing is None else u.Quantity(seeing, u.arcsec)
    return scale.to(u.arcsec), seeing.to(u.arcsec)
