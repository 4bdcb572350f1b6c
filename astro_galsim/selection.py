"""Selection: whether a measured detection is a galaxy resolved, bright and structured enough.

`select_galaxy` applies limits to the measurements of
`~astro_galsim.segmentation.measure_galaxy` and says, for each test that fails, why;
`SELECTION_DEFAULTS` are set from the real samples (docs/segmentation.rst).
"""
import numpy as np
from astropy import units as u

from .surveys import SURVEYS

__all__ = ['select_galaxy', 'SELECTION_DEFAULTS']

_MIN_SNR = 40.0          # default selection limits, from the mikeedi sample (docs/segmentation.rst)
_MIN_GINI = 0.05

#: Default acceptance criteria of `select_galaxy`, chosen on the 7,505 galaxies of the
#: original work's sample (``sdss_galaxies_mikeedi``; see the segmentation docs); the smallest
#: galaxy is set by the resolution: a half-light radius of one seeing FWHM.
SELECTION_DEFAULTS = {'min_r50': 'seeing', 'min_snr': _MIN_SNR, 'min_gini': _MIN_GINI,
                      'min_smoothness': None, 'max_centre_offset': None, 'max_offset_ratio': 0.6,
                      'max_ellipticity': 0.9, 'max_peak_level': 0.92, 'min_scale_ratio': 0.2,
                      'reject_point_sources': True}


# below this a galaxy covers too few pixels for any structure, whatever the scale
_MIN_R50_PIXELS = 2.0


def _resolution_limit(pixel_scale, seeing):
    """The smallest resolved half-light radius, in pixels, and the scale and seeing it came from."""
    sdss = SURVEYS['sdss']
    scale = sdss.pixel_scale if pixel_scale is None else u.Quantity(pixel_scale)
    if scale.unit.physical_type != 'angle':
        scale = scale * u.pix
    scale = scale.to(u.arcsec)
    if not (np.isfinite(scale.value) and scale.value > 0):
        scale = sdss.pixel_scale
    seeing = sdss.seeing if seeing is None else u.Quantity(seeing, u.arcsec)
    return max(float(seeing / scale), _MIN_R50_PIXELS), scale, seeing


def _as_pixels(value, pixel_scale, name):
    """A length given as a float (pixels) or a Quantity in pixels or angle, in pixels."""
    if value is None:
        return None
    if not isinstance(value, u.Quantity):
        return float(value)
    if value.unit.is_equivalent(u.pix):
        return float(value.to_value(u.pix))
    if value.unit.physical_type == 'angle':
        if pixel_scale is None or not np.all(np.isfinite(u.Quantity(pixel_scale).value)):
            raise ValueError(f'{name}={value} is an angle, but the pixel scale of this image is not '
                             'known: pass pixel_scale (angle per pixel), or give the limit in pixels')
        scale = u.Quantity(pixel_scale)
        scale = scale / u.pix if scale.unit.physical_type == 'angle' else scale
        return float((value / scale).to_value(u.pix))
    raise ValueError(f'{name}={value} must be a number of pixels, a pixel Quantity or an angle')


def select_galaxy(measurement, *, min_r50=SELECTION_DEFAULTS['min_r50'],
                  min_snr=SELECTION_DEFAULTS['min_snr'], min_gini=SELECTION_DEFAULTS['min_gini'],
                  min_smoothness=None, max_centre_offset=None,
                  max_offset_ratio=SELECTION_DEFAULTS['max_offset_ratio'],
                  max_ellipticity=SELECTION_DEFAULTS['max_ellipticity'],
                  max_peak_level=SELECTION_DEFAULTS['max_peak_level'],
                  min_scale_ratio=SELECTION_DEFAULTS['min_scale_ratio'],
                  reject_point_sources=SELECTION_DEFAULTS['reject_point_sources'], pixel_scale=None, seeing=None):
    """Decide whether a measured galaxy is resolved, bright and structured enough.

    The defaults accept about 98% of the original work's sample of galaxies "with
    perceptible structure and large visible radius", and reject the small, faint and
    featureless (or badly segmented) rest.

    Parameters
    ----------
    measurement : `GalaxyMeasurement` or dict
        From `measure_galaxy` (a row of `measurements_table` turned into a dict works too).
    min_r50 : 'seeing', float or `~astropy.units.Quantity`, optional
        Smallest half-light radius. ``'seeing'`` (the default): the galaxy must be resolved,
        its half-light radius at least the seeing FWHM (``seeing``, from ``pixel_scale``
        into pixels; SDSS's 1.4" and 0.396"/px where not given) and at least 2 pixels.
        Else a number or Quantity in pixels of the measured image, or an angle (then
        ``pixel_scale`` is needed). None disables the test.
    min_snr : float, optional
        Smallest signal-to-noise ratio of the galaxy's segment. None disables the test.
    min_gini : float, optional
        Smallest Gini coefficient of the segment's light. Real galaxies concentrate their
        light (Gini 0.3-0.6); a segment of flat sky or of a galaxy larger than the frame
        gives Gini near 0. None disables the test.
    min_smoothness : float, optional
        Smallest clumpiness (``smoothness`` column), to keep only galaxies with visible
        knots or arms. Default None (no test): smooth ellipticals are galaxies too.
    max_centre_offset : float or `~astropy.units.Quantity`, optional
        Largest distance between the target position and the galaxy's centroid, in
        pixels or as an angle.
    max_offset_ratio : float, optional
        Largest distance between the target and the galaxy's centre, in units of its
        ``scale_radius``: a detection beside the target (a neighbour, a trail crossing the
        frame) is not the galaxy asked for.
    max_ellipticity : float, optional
        Largest ellipticity: satellite and aircraft trails are lines (0.92-0.96 measured),
        the flattest edge-on discs of the training sample stay below 0.9.
    max_peak_level : float, optional
        Largest grey level of the core (``peak_level``, in the colour form): stars
        saturate to a white disc, galaxy cores of SDSS colour images stay below 0.9. It
        holds for SDSS's colour stretch only; `~astro_galsim.pipeline.prepare` turns it
        off for images whose bands are not SDSS bands (their stretch is unknown).
    min_scale_ratio : float, optional
        Smallest ``scale_radius / r50``: a segment whose light lies mostly far from a
        faint target (a trail, an artefact, the halo of a bright neighbour) has a tiny
        isophote for its half-light radius (galaxies: 0.5-1.6).
    reject_point_sources : bool, optional
        Reject round (ellipticity under 0.15), concentrated (``concentration`` above 3.3)
        sources with a saturated core (``peak_level`` above 0.9): stars with their halo and
        diffraction spikes, in any colour stretch (none of 839 real SDSS galaxies checked
        is such a source; the Hubble Deep Field's two spiked stars are).
    pixel_scale : `~astropy.units.Quantity`, optional
        Angle per pixel (``arcsec`` or ``arcsec / pix``); needed for angular limits.
    seeing : `~astropy.units.Quantity`, optional
        FWHM of the image's point-spread function, for ``min_r50='seeing'``
        (`~astro_galsim.surveys.resolution_of` finds it for an image).

    Returns
    -------
    accepted : bool
    reason : str
        Empty when accepted, else every test that failed, each with its measured value.

    Raises
    ------
    ValueError
        If a limit is an angle and ``pixel_scale`` is missing.

    Examples
    --------
    >>> from astropy import units as u
    >>> m = {'found': True, 'r50': 4.0, 'snr': 120.0, 'gini': 0.45, 'smoothness': 0.05,
    ...      'centre_offset': 1.0}
    >>> select_galaxy(m, pixel_scale=0.396 * u.arcsec)
    (True, '')
    >>> select_galaxy(m, pixel_scale=0.396 * u.arcsec, seeing=2.0 * u.arcsec)[1]
    'half-light radius 1.58" (4.0 pix) is below the seeing FWHM 2.00" (5.1 pix): the galaxy is not resolved'
    >>> select_galaxy(m, min_r50=1.5 * u.arcsec, pixel_scale=0.396 * u.arcsec)
    (True, '')
    """
    if not measurement.get('found'):
        return False, 'no galaxy found near the target position'
    scale = float(measurement.get('scale_radius', np.nan))
    if 'scale_radius' in measurement and not scale > 0:
        return False, ('the galaxy overflows its cutout: its isophote lies too far beyond the frame '
                       'to be measured; give a wider cutout')
    max_centre_offset = _as_pixels(max_centre_offset, pixel_scale, 'max_centre_offset')
    reasons = []
    r50 = float(measurement['r50'])
    if isinstance(min_r50, str):
        if min_r50 != 'seeing':
            raise ValueError(f"min_r50={min_r50!r}: give 'seeing', a number of pixels, a Quantity or None")
        limit, arcsec_per_pixel, seeing = _resolution_limit(pixel_scale, seeing)
        if not r50 >= limit:
            reasons.append(f'half-light radius {r50 * arcsec_per_pixel.value:.2f}" ({r50:.1f} pix) is below the seeing FWHM '
                           f'{seeing.to_value(u.arcsec):.2f}" ({limit:.1f} pix): the galaxy is not resolved')
    else:
        min_r50 = _as_pixels(min_r50, pixel_scale, 'min_r50')
        if min_r50 is not None and not r50 >= min_r50:
            reasons.append(f'half-light radius {r50:.1f} pix is below the minimum {min_r50:.1f} pix')
    snr = float(measurement['snr'])
    if min_snr is not None and not snr >= min_snr:
        reasons.append(f'signal-to-noise {snr:.1f} is below the minimum {min_snr}')
    gini = float(measurement['gini'])
    if min_gini is not None and not gini >= min_gini:
        reasons.append(f'Gini {gini:.3f} is below the minimum {min_gini}')
    if min_smoothness is not None:
        smoothness = float(measurement.get('smoothness', np.nan))
        if not smoothness >= min_smoothness:
            reasons.append(f'smoothness (clumpiness) {smoothness:.3f} is below the minimum {min_smoothness}')
    if max_centre_offset is not None:
        offset = float(measurement['centre_offset'])
        if not offset <= max_centre_offset:
            reasons.append(f'galaxy centroid lies {offset:.1f} pix from the target, '
                           f'more than {max_centre_offset:.1f} pix')
    if 'scale_radius' in measurement:   # the shape tests need the isophotal measurements
        reasons += _artefact_reasons(measurement, scale, r50, max_offset_ratio, max_ellipticity,
                                     max_peak_level, min_scale_ratio, reject_point_sources)
    return not reasons, '; '.join(reasons)


def _artefact_reasons(m, scale, r50, max_offset_ratio, max_ellipticity, max_peak_level, min_scale_ratio,
                      reject_point_sources):
    """Why a detection is not a galaxy: off the target, a trail, a star or a stray light."""
    reasons = []
    offset = float(m.get('centre_offset', np.nan))
    if max_offset_ratio is not None and offset > max_offset_ratio * scale:
        reasons.append(f'the galaxy found lies {offset:.1f} pix from the target, more than '
                       f'{max_offset_ratio} of its scale radius {scale:.1f} pix (a neighbour, not the target)')
    ellipticity = float(m.get('ellipticity', np.nan))
    if max_ellipticity is not None and ellipticity > max_ellipticity:
        reasons.append(f'ellipticity {ellipticity:.2f} is above {max_ellipticity}: a line (a satellite '
                       'or aircraft trail), not a galaxy')
    peak = float(m.get('peak_level', np.nan))
    if max_peak_level is not None and peak > max_peak_level:
        reasons.append(f'saturated point-like core (peak level {peak:.2f} above {max_peak_level}): a star')
    concentration = float(m.get('concentration', np.nan))
    if reject_point_sources and ellipticity < 0.15 and concentration > 3.3 and peak > 0.9:
        reasons.append(f'a point source (ellipticity {ellipticity:.2f}, concentration {concentration:.2f}, '
                       f'saturated core {peak:.2f}): a star')
    if min_scale_ratio is not None and scale < min_scale_ratio * r50:
        reasons.append(f'scale radius {scale:.1f} pix is under {min_scale_ratio} of the half-light radius '
                       f'{r50:.1f} pix: the light is not at the target (a trail, artefact or halo)')
    return reasons
