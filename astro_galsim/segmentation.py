"""Segmentation-based structure selection with photutils: finding and measuring the central galaxy.

The central galaxy of a cutout is found, isolated from unrelated sources and measured
(`measure_galaxy`), so that it can be brought to a standard frame (centred, scaled to its
isophotal radius and with its major axis horizontal, `normalise_galaxy` in
``normalisation.py``) and accepted or rejected with a reason (`select_galaxy` in
``selection.py``): the encoder then describes the galaxy and not the way the cutout was
framed.

The work is done on a copy block-averaged to at most 192 pixels a side: the central
galaxy of a survey cutout is resolved there, and detection is fast. The sky level and
noise are estimated with the detected sources masked (detect, mask, re-estimate), since
the border of a tight cutout holds galaxy light.
"""
import numpy as np
from astropy import units as u
from astropy.table import QTable
from scipy import ndimage

from ._fastphot import (block_mean, clipped_stats, deblend_segment, dilate, distance_to_segments, label_segments,
                        moment_shape)
# normalising and selecting the measured galaxy live in their own modules; their names are
# importable from here too, where the per-galaxy path has always found them
from .normalisation import normalise_galaxy, segmentation_map
from .selection import SELECTION_DEFAULTS, select_galaxy

__all__ = ['measure_galaxy', 'normalise_galaxy', 'select_galaxy', 'measurements_table', 'isophotal_radius',
           'GalaxyMeasurement', 'GalaxySegmentation', 'MEASUREMENT_COLUMNS', 'SELECTION_DEFAULTS',
           'ISOPHOTE_LEVEL', 'segmentation_map']

#: Columns of the measurement table, with their units.
MEASUREMENT_COLUMNS = {
    'found': None, 'x_centroid': u.pix, 'y_centroid': u.pix, 'scale_radius': u.pix, 'truncated': None,
    'r20': u.pix, 'r50': u.pix, 'r80': u.pix,
    'r90': u.pix, 'kron_radius': u.pix, 'semimajor_axis': u.pix, 'semiminor_axis': u.pix,
    'ellipticity': u.dimensionless_unscaled, 'orientation': u.deg, 'area': u.pix ** 2,
    'gini': u.dimensionless_unscaled, 'concentration': u.dimensionless_unscaled,
    'asymmetry': u.dimensionless_unscaled, 'snr': u.dimensionless_unscaled,
    'centre_offset': u.pix, 'smoothness': u.dimensionless_unscaled, 'peak_level': u.dimensionless_unscaled,
    'n_stars': None,
}

#: Grey level (mean of the colour form's three planes, in [0, 1]) of the isophote whose radius sets a
#: galaxy's scale: 40 of 255. SkyServer colour images have a fixed stretch, so a level is a surface
#: brightness, and the radius where the azimuthally averaged profile falls to it does not depend on how
#: the galaxy was framed or sampled (docs/segmentation.rst).
ISOPHOTE_LEVEL = 40 / 255

_DETECTION_SIZE = 192     # side of the block-averaged copy used for detection
_N_SIGMA = 3.0            # detection threshold above the sky, in the smoothed image's noise
_MIN_PIXELS = 8           # smallest segment kept at detection resolution
# The colour form puts the sky near black (SkyServer JPEGs 2-7 of 255; calibrated frames are
# sky-subtracted): a higher estimate from a frame is galaxy light that fills it, and a detection
# threshold derived from it would segment only the bulge. Both are capped.
_SKY_CEILING = 12 / 255
_DETECT_MARGIN = 15 / 255  # the detection threshold lies at most this far above the sky
_PROFILE_STEP = 0.5       # width of the annuli of the isophotal profile, in detection pixels
_EXTRAPOLATE = 1.5        # an isophote beyond the frame is extrapolated at most this far (x the farthest radius seen)
# scale radius of a galaxy fainter than the isophote, in half-light radii (the median
# scale_radius / r50 of the training and GZ1 galaxies is 1.17-1.22)
_R50_TO_SCALE = 1.2
_STAR_AREA = 0.2          # a deblended child smaller than this fraction of the galaxy...
_STAR_PEAK = 0.5          # ...and brighter at its peak than this fraction of the galaxy's peak is foreign
_MAX_CENTRE_OFFSET = 0.2  # nearest segment farther than this fraction of the image: no galaxy
_DRAG_TOLERANCE = 0.5    # centroid shift (in equivalent radii of the target child) that flags a merged star
_DRAG_AREA = 5.0         # ...and a brighter child smaller than this many times the target child,
_DRAG_COMPACT = 0.2      # with less than this fraction of its pixels above half its peak (a star), is removed


class GalaxySegmentation:
    """What `measure_galaxy` decided about the pixels, at detection resolution.

    Kept beside the measurements for `normalise_galaxy` and `segmentation_map`: the block
    factor of the detection copy and the masks of the central galaxy, of foreign sources, of
    stars on the galaxy and of the sky.
    """

    __slots__ = ('block', 'central', 'foreign', 'stars', 'sky_pixels')

    def __init__(self, block, central=None, foreign=None, stars=None, sky_pixels=None):
        self.block = block
        self.central, self.foreign, self.stars, self.sky_pixels = central, foreign, stars, sky_pixels


class GalaxyMeasurement(dict):
    """Measurements of a central galaxy: a `dict` of the `MEASUREMENT_COLUMNS`, in original pixels.

    ``segmentation`` (a `GalaxySegmentation`) holds the pixel masks that `normalise_galaxy`
    and `segmentation_map` use; it is not one of the measurements.
    """

    def __init__(self, *args, segmentation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.segmentation = segmentation

    def to_table(self, pixel_scale=None):
        """One-row `~astropy.table.QTable` with units; radii also in arcsec when the pixel scale is known."""
        return measurements_table([self], pixel_scale=pixel_scale)


def measurements_table(measurements, pixel_scale=None):
    """Stack measurements into a `~astropy.table.QTable` with units.

    Parameters
    ----------
    measurements : list of `GalaxyMeasurement` or dict
        One per galaxy (missing keys give NaN).
    pixel_scale : `~astropy.units.Quantity` or list of them, optional
        Angular size of an original pixel, per galaxy; adds ``scale_radius_arcsec``,
        ``r50_arcsec`` and ``r90_arcsec``.
    """
    table = QTable()
    for name, unit in MEASUREMENT_COLUMNS.items():
        if name == 'n_stars':
            table[name] = np.array([int(m.get(name, 0)) for m in measurements], dtype=int)
        elif unit is None:
            table[name] = np.array([bool(m.get(name, False)) for m in measurements], dtype=bool)
        else:
            table[name] = np.array([m.get(name, np.nan) for m in measurements], dtype=float) * unit
    if pixel_scale is not None:
        scales = u.Quantity(pixel_scale if np.ndim(pixel_scale) else [pixel_scale] * len(measurements))
        scales = scales.to(u.arcsec / u.pix) if scales.unit.physical_type != 'angle' else scales / u.pix
        for name in ('scale_radius', 'r50', 'r90'):
            table[f'{name}_arcsec'] = (table[name] * scales).to(u.arcsec)
    return table


def _filled(sky, centre):
    """Whether a sky estimate above the colour form's ceiling is the light of a galaxy filling the frame.

    It is when the target is brighter than that "sky" by more than the isophote's level; a uniformly
    bright field is not.
    """
    return sky > _SKY_CEILING and centre > sky + ISOPHOTE_LEVEL


def _sky_noise(image, mask=None, centre=0.0):
    """Sigma-clipped sky level and noise of a 2-D image (the sky capped where a galaxy fills the frame)."""
    sky, noise = clipped_stats(image if mask is None else image[~mask])
    noise = noise if noise > 0 else max(float(np.std(image)), 1e-6)
    return (_SKY_CEILING if _filled(sky, centre) else sky), noise


def _detect(image, smoothed, n_sigma, mask=None, image_noise=None, centre=0.0):
    """Segments of a 2-D image above the sky of its smoothed copy (pixels outside ``mask``).

    The threshold is set on the smoothed image in units of the smoothed image's own
    noise, so that it means the same whatever the pixel noise correlations (JPEG).
    Where a galaxy fills the frame (its light taken for sky, see `_filled`; ``centre`` is
    the smoothed level at the target), the threshold is instead ``_DETECT_MARGIN`` above
    the colour form's sky ceiling, so that the segment still reaches the outskirts.
    ``image_noise`` (a callable giving the noise of ``image``) is the fallback when the
    smoothed image's noise is zero.
    """
    sky_s, noise_s = clipped_stats(smoothed if mask is None else smoothed[~mask])
    if not noise_s > 0:
        noise_s = image_noise() if image_noise is not None else _sky_noise(image, mask)[1]
    if _filled(sky_s, centre):
        return label_segments(smoothed, _SKY_CEILING + min(n_sigma * noise_s, _DETECT_MARGIN), _MIN_PIXELS)
    return label_segments(smoothed, sky_s + n_sigma * noise_s, _MIN_PIXELS)


def isophotal_radius(grey, x, y, level=ISOPHOTE_LEVEL, *, mask=None, step=1.0):
    """Radius where the azimuthally averaged profile of a grey image falls to a level.

    The profile is the mean of the unmasked pixels in annuli of width ``step`` about
    ``(x, y)``; annuli the frame cuts count with the part that is visible, out to the
    farthest corner. Where the profile is still above ``level`` at the last annulus, the
    radius is extrapolated from an exponential fitted to the outer half of the profile,
    at most ``1.5`` times the farthest radius seen.

    Parameters
    ----------
    grey : `~numpy.ndarray`, shape (ny, nx)
        The image (for the package's colour form, the mean of its three planes).
    x, y : float
        Centre, in pixels.
    level : float, optional
        The isophote's level, in the units of ``grey`` (default `ISOPHOTE_LEVEL`).
    mask : `~numpy.ndarray` of bool, optional
        Pixels to leave out (foreign sources).
    step : float, optional
        Width of the annuli, in pixels.

    Returns
    -------
    radius : float
        In pixels; NaN when the profile never reaches ``level`` from above (a source
        fainter than the isophote, or one whose isophote lies too far beyond the frame).
    truncated : bool
        True when the isophote lies beyond the largest circle about the centre that fits
        in the frame (the radius then rests on the visible part of the annuli, or on the
        extrapolation).

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:201, :201]
    >>> disc = np.exp(-np.hypot(x - 100, y - 100) / 20)   # falls to 0.1 at r = 20 ln 10 = 46
    >>> radius, truncated = isophotal_radius(disc, 100, 100, 0.1)
    >>> round(radius), truncated
    (46, False)
    >>> radius, truncated = isophotal_radius(disc[60:141, 60:141], 40, 40, 0.1)   # framed tighter
    >>> round(radius), truncated
    (46, True)
    """
    yy, xx = np.indices(grey.shape)
    return _isophote(grey, np.hypot(xx - x, yy - y), x, y, level, mask, step)


def _isophote(grey, distance, x, y, level, mask, step):
    """`isophotal_radius` given the distance of every pixel from ``(x, y)`` (computed once per centre)."""
    ny, nx = grey.shape
    bins = (distance / step).astype(np.intp)
    values = grey
    if mask is not None and mask.any():
        bins, values = bins[~mask], grey[~mask]
    total = np.bincount(bins.ravel(), values.ravel())
    count = np.bincount(bins.ravel())
    seen = count > 0
    radii = (np.arange(total.size)[seen] + 0.5) * step
    profile = total[seen] / count[seen]
    edge = min(x + 0.5, y + 0.5, nx - 0.5 - x, ny - 0.5 - y)
    below = np.flatnonzero(profile < level)
    if below.size and below[0] == 0:
        return np.nan, False          # fainter than the isophote at its centre
    if below.size:
        i = below[0]
        frac = (profile[i - 1] - level) / (profile[i - 1] - profile[i])
        radius = float(radii[i - 1] + frac * (radii[i] - radii[i - 1]))
        return radius, bool(radius > edge)
    # the isophote lies beyond the farthest corner: extrapolate the outer profile
    outer = (radii >= radii[-1] / 2) & (profile > 0)
    if outer.sum() < 3:
        return np.nan, True
    slope, intercept = np.polyfit(radii[outer], np.log(profile[outer]), 1)
    if not slope < 0:
        return np.nan, True
    radius = float((np.log(level) - intercept) / slope)
    return (radius if radius <= _EXTRAPOLATE * radii[-1] else np.nan), True


def _windowed_centre(image, x, y, level, mask, grid, iterations=3):
    """Centre of the galaxy: its light-weighted centroid within half its isophotal radius.

    Started at the peak nearest the target and iterated with the aperture set by the
    isophotal radius about the current centre, so it follows the galaxy's core whatever
    the framing, neighbours or the extent of its segment (as SourceExtractor's windowed
    positions do). ``grid`` is ``np.ogrid`` over the image.
    """
    yy, xx = grid
    weights = np.where(mask, 0.0, np.clip(image, 0, None))
    for _ in range(iterations):
        distance = np.hypot(xx - x, yy - y)
        radius, _ = _isophote(image, distance, x, y, level, mask, _PROFILE_STEP)
        if not np.isfinite(radius):
            break
        rows, columns = np.nonzero(distance <= max(2.0, 0.5 * radius))
        w = weights[rows, columns]
        total = w.sum()
        if not total > 0:
            break
        x, y = float((w * columns).sum() / total), float((w * rows).sum() / total)
    return x, y


def measure_galaxy(rgb, position=None, *, n_sigma=_N_SIGMA, detection_size=_DETECTION_SIZE):
    """Find, isolate and measure the central galaxy of a colour image.

    Parameters
    ----------
    rgb : `~numpy.ndarray`, shape (3, ny, nx)
        The image in the encoder's colour form (see `~astro_galsim.preprocessing.to_colour`).
    position : tuple of float, optional
        ``(x, y)`` pixel position of the target (for example a `~astropy.coordinates.SkyCoord`
        through the image WCS); default the image centre. The central galaxy is the
        segment at, or nearest to, this position, never simply the brightest.
    n_sigma : float, optional
        Detection threshold above the sky, in units of the sky noise.
    detection_size : int, optional
        Side of the block-averaged copy on which detection runs.

    Returns
    -------
    measurement : `GalaxyMeasurement`
        ``found`` is False when no source lies near the position; then the other
        values are NaN. Lengths are in pixels of ``rgb``.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:101, :101]
    >>> disc = np.exp(-np.hypot((x - 50) / 12, (y - 50) / 6))
    >>> rng = np.random.default_rng(0)
    >>> rgb = np.clip(disc + rng.normal(0, 0.01, disc.shape), 0, 1)[None].repeat(3, 0)
    >>> m = measure_galaxy(rgb)
    >>> bool(m['found']), round(m['x_centroid']), round(m['y_centroid']), bool(m['ellipticity'] > 0.3)
    (True, 50, 50, True)
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f'measure_galaxy needs a (3, ny, nx) colour image, got shape {rgb.shape}')
    ny, nx = rgb.shape[1:]
    block = max(1, int(np.ceil(max(ny, nx) / detection_size)))
    grey = rgb.mean(axis=0)
    det = block_mean(grey, block)
    if position is None:
        position = ((nx - 1) / 2, (ny - 1) / 2)
    # position in detection pixels (block centres sit at block * (i + 0.5) - 0.5)
    px, py = ((position[0] + 0.5) / block - 0.5, (position[1] + 0.5) / block - 0.5)

    segmentation = GalaxySegmentation(block)
    measurement = GalaxyMeasurement(found=False, segmentation=segmentation)
    # detect, mask the sources, re-estimate sky and noise without them, detect again
    smoothed = ndimage.gaussian_filter(det, 1.0)
    # (the sky and noise of det itself are needed only from the pass that is kept)
    iy, ix = int(np.clip(round(py), 0, det.shape[0] - 1)), int(np.clip(round(px), 0, det.shape[1] - 1))
    centre = float(smoothed[iy, ix])
    segm = _detect(det, smoothed, n_sigma, centre=centre)
    source_mask = None if segm is None else dilate(segm > 0, iterations=2)
    if source_mask is not None and (~source_mask).sum() > 50:
        sky, noise = _sky_noise(det, source_mask, centre)
        segm = _detect(det, smoothed, n_sigma, mask=source_mask, image_noise=lambda: noise, centre=centre)
    else:
        sky, noise = _sky_noise(det, centre=centre)
    if segm is None:
        return measurement

    # the central segment: the one under the target, else the nearest one
    if distance_to_segments(segm, iy, ix) > _MAX_CENTRE_OFFSET * max(det.shape):
        return measurement
    label = int(segm[iy, ix])
    if label == 0:
        label = _nearest_segment(segm, px, py, _MAX_CENTRE_OFFSET * max(det.shape))
    if segm[iy, ix] == label:
        anchor = (iy, ix)
    else:
        inside = np.argwhere(segm == label)
        anchor = tuple(inside[np.argmin(np.hypot(inside[:, 0] - py, inside[:, 1] - px))])
    image = det - sky
    # open (rows, columns) grid shared by the centre, radius and shape measurements: distances
    # broadcast from it without full-size coordinate arrays
    grid = np.ogrid[:det.shape[0], :det.shape[1]]
    central, stars = _split_central(image, smoothed - sky, segm == label, anchor)
    foreign = (segm > 0) & (segm != label)

    # centre and scale from the isophote, which the framing does not move (foreign light left out)
    hidden = (dilate(foreign) & ~central) | stars
    # start at the peak under the target (one of a merging pair), or the galaxy's own peak when the target is on the sky
    radius = max(3.0, 0.08 * max(det.shape)) if segm[iy, ix] == label else np.inf
    x0, y0 = _peak_near(smoothed, central, anchor, radius, grid)
    xc, yc = _windowed_centre(det, x0, y0, ISOPHOTE_LEVEL, hidden, grid)
    scale, truncated = _isophote(det, np.hypot(grid[1] - xc, grid[0] - yc), xc, yc, ISOPHOTE_LEVEL, hidden,
                                 _PROFILE_STEP)
    shape = moment_shape(image, central)
    footprint = _isophotal_footprint(smoothed, central, xc, yc)
    if footprint is not None:  # the shape inside the isophote, which the frame does not cut
        shape.update({k: v for k, v in moment_shape(image, footprint, shape_only=True).items()
                      if k in ('semimajor_axis', 'semiminor_axis', 'ellipticity', 'orientation')})
    galaxy = np.where(central, image, 0.0)
    radii = _flux_radii(galaxy, xc, yc, (0.2, 0.5, 0.8, 0.9))
    if not np.isfinite(scale) and not truncated:
        scale = _R50_TO_SCALE * radii[1]   # fainter than the isophote: small, so its half-light radius holds
    flux = galaxy.sum()
    measurement.update(
        found=True,
        x_centroid=(xc + 0.5) * block - 0.5, y_centroid=(yc + 0.5) * block - 0.5,
        scale_radius=scale * block, truncated=truncated,
        r20=radii[0] * block, r50=radii[1] * block, r80=radii[2] * block, r90=radii[3] * block,
        kron_radius=float(shape['kron_radius']) * float(shape['semimajor_axis']) * block,
        semimajor_axis=float(shape['semimajor_axis']) * block,
        semiminor_axis=float(shape['semiminor_axis']) * block,
        ellipticity=float(shape['ellipticity']), orientation=float(shape['orientation']),
        area=float(shape['area']) * block ** 2, gini=float(shape['gini']),
        concentration=5 * np.log10(radii[2] / radii[0]) if radii[0] > 0 else np.nan,
        asymmetry=_asymmetry(galaxy, xc, yc),
        smoothness=_smoothness(galaxy, xc, yc, radii[3], grid),
        n_stars=int(ndimage.label(stars)[1]) if stars.any() else 0,
        snr=float(flux / (noise * np.sqrt(central.sum()))),
        centre_offset=float(np.hypot(xc - px, yc - py)) * block,
        peak_level=_peak_level(grey, (xc + 0.5) * block - 0.5, (yc + 0.5) * block - 0.5),
    )
    segmentation.central, segmentation.foreign, segmentation.stars = central, foreign, stars
    segmentation.sky_pixels = segm == 0
    return measurement


def _peak_level(grey, x, y, half=3):
    """Brightest 3 x 3 mean of the full-resolution grey image within ``half`` pixels of (x, y).

    A star's core saturates the colour form (SkyServer JPEG stars are white discs); the
    cores of the galaxies of the training and evaluation sets stay below 0.9.
    """
    ny, nx = grey.shape
    ix, iy = int(round(x)), int(round(y))
    box = grey[max(0, iy - half - 1):min(ny, iy + half + 2), max(0, ix - half - 1):min(nx, ix + half + 2)]
    if box.size == 0:
        return np.nan
    return float(ndimage.uniform_filter(box, 3, mode='nearest').max())


def _peak_near(smoothed, segment, anchor, radius, grid):
    """(x, y) of the brightest pixel of a segment within ``radius`` of ``anchor`` (row, col)."""
    yy, xx = grid
    near = segment & (np.hypot(yy - anchor[0], xx - anchor[1]) <= radius)
    if not near.any():
        return float(anchor[1]), float(anchor[0])
    iy, ix = np.unravel_index(np.argmax(np.where(near, smoothed, -np.inf)), smoothed.shape)
    return float(ix), float(iy)


def _isophotal_footprint(smoothed, central, xc, yc):
    """The part of the central segment above the isophote that holds the centre (None if too small)."""
    labels, count = ndimage.label(central & (smoothed >= ISOPHOTE_LEVEL))
    if count == 0:
        return None
    iy = int(np.clip(round(yc), 0, labels.shape[0] - 1))
    ix = int(np.clip(round(xc), 0, labels.shape[1] - 1))
    keep = labels[iy, ix] or int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    footprint = labels == keep
    return footprint if footprint.sum() >= _MIN_PIXELS else None


def _nearest_segment(segm, px, py, max_distance):
    """Label of the segment nearest a target that lies on the sky, relative to its size.

    Among the segments whose edge lies within ``max_distance`` of the target, the one
    with the smallest distance from the target to its centre, in units of its equivalent
    radius, wins: a large galaxy whose edge stops just short of the target beats a small
    noise peak or star that happens to be a little closer.
    """
    labels = segm
    yy, xx = np.mgrid[:labels.shape[0], :labels.shape[1]]
    close = np.hypot(yy - py, xx - px) <= max_distance + 1
    near = np.unique(labels[close & (labels > 0)])
    best, best_score = 0, np.inf
    for label in near:
        ly, lx = np.nonzero(labels == label)
        score = np.hypot(ly.mean() - py, lx.mean() - px) / np.sqrt(ly.size / np.pi)
        if score < best_score:
            best, best_score = int(label), score
    return best


def _split_central(image, smoothed, segment, target):
    """Separate bright compact sources (stars, foreground objects) from the central segment.

    The segment is deblended; a child is foreign when it is small next to the child at
    the target and nearly as bright at its peak, as stars are. Fainter knots and
    companions (spiral arms, mergers, tidal features) stay with the galaxy.

    A second rule catches bright stars that are too large for the first one (a saturated
    star with its halo can cover more pixels than a small galaxy): when the kept segment's
    centroid lies far from the target child's own centroid (more than half its equivalent
    radius), children brighter at their peak than the target child and not much larger
    than it, and compact (less than a fifth of their pixels above half their peak, as for a
    star's core and halo, unlike a bulge), are removed, brightest first, until the centroid
    comes back. Galaxies whose
    segment is centred on the target are untouched by it.
    """
    no_stars = np.zeros_like(segment)
    if segment.sum() < 4 * _MIN_PIXELS:
        return segment, no_stars
    try:
        children = deblend_segment(smoothed, segment, _MIN_PIXELS, n_levels=16, contrast=0.01)
    except ValueError:
        return segment, no_stars
    if children is None:
        return segment, no_stars
    main = children[target] or np.bincount(children[segment]).argmax()
    main_pixels = children == main
    main_area = main_pixels.sum()
    main_peak = image[main_pixels].max()
    stars = no_stars.copy()
    others = np.unique(children[segment & ~main_pixels])
    for child in others:
        pixels = children == child
        if pixels.sum() < _STAR_AREA * main_area and image[pixels].max() > _STAR_PEAK * main_peak:
            stars |= pixels
    # second rule: bright, large stars that drag the segment's centroid off the target child
    weights = np.clip(image, 0, None)
    main_centre = _weighted_centre(weights, main_pixels)
    tolerance = max(_DRAG_TOLERANCE * np.sqrt(main_area / np.pi), 2.0)
    candidates = sorted(((image[children == c].max(), c) for c in others
                         if not stars[children == c].any()), reverse=True)
    for peak, child in candidates:
        centre = _weighted_centre(weights, segment & ~stars)
        if np.hypot(*(centre - main_centre)) <= tolerance:
            break
        pixels = children == child
        compact = (image[pixels] > peak / 2).sum() < _DRAG_COMPACT * pixels.sum()
        if peak > main_peak and pixels.sum() < _DRAG_AREA * main_area and compact:
            stars |= pixels
    return segment & ~stars, stars


def _weighted_centre(weights, pixels):
    """Flux-weighted (row, col) centre of the True pixels of a mask."""
    yy, xx = np.nonzero(pixels)
    w = weights[yy, xx]
    total = w.sum()
    if total <= 0:
        return np.array([yy.mean(), xx.mean()])
    return np.array([(w * yy).sum() / total, (w * xx).sum() / total])


def _flux_radii(galaxy, xc, yc, fractions):
    """Radii of circles about (xc, yc) holding the given fractions of the galaxy's flux."""
    yy, xx = np.nonzero(galaxy > 0)
    flux = galaxy[yy, xx]
    r = np.hypot(xx - xc, yy - yc)
    order = np.argsort(r)
    cumulative = np.cumsum(flux[order])
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return [np.nan] * len(fractions)
    # a pixel's light spreads over its area: interpolate the growth curve at r + 0.5
    return [float(np.interp(f * cumulative[-1], cumulative, r[order] + 0.5)) for f in fractions]


def _asymmetry(galaxy, xc, yc):
    """Rotational asymmetry sum|I - I_180| / (2 sum|I|) about the centroid."""
    rows, columns = np.nonzero(galaxy)
    if rows.size == 0:
        return np.nan
    # only the box holding the galaxy and its turned copy (2 pixels wider for the bilinear
    # interpolation) is turned: elsewhere both are zero
    ny, nx = galaxy.shape
    y0 = max(0, int(min(rows.min(), 2 * yc - rows.max())) - 2)
    y1 = min(ny, int(max(rows.max(), 2 * yc - rows.min())) + 3)
    x0 = max(0, int(min(columns.min(), 2 * xc - columns.max())) - 2)
    x1 = min(nx, int(max(columns.max(), 2 * xc - columns.min())) + 3)
    box = galaxy[y0:y1, x0:x1]
    rotated = ndimage.affine_transform(box, [[-1, 0], [0, -1]], offset=(2 * yc - 2 * y0, 2 * xc - 2 * x0),
                                       order=1)
    difference = np.zeros_like(galaxy)   # summed over the whole image, in the same order as ever
    difference[y0:y1, x0:x1] = np.abs(box - rotated)
    total = np.abs(galaxy).sum()
    return float(difference.sum() / (2 * total)) if total > 0 else np.nan


def _smoothness(galaxy, xc, yc, r90, grid):
    """Clumpiness: light left after subtracting a smoothed copy, as a fraction of the total.

    ``S = sum(max(I - I_s, 0)) / sum(I)`` over the galaxy's pixels outside its core
    (``0.25 r90``), with ``I_s`` a boxcar average of width ``0.25 r90`` (Conselice 2003;
    Lotz et al. 2004). Smooth ellipticals give a few per cent, knotty spirals and mergers
    more; sky noise adds a floor for faint galaxies.
    """
    if not np.isfinite(r90) or r90 <= 0:
        return np.nan
    width = max(3, int(round(0.25 * r90)))
    smooth = ndimage.uniform_filter(galaxy, size=width, mode='constant')
    yy, xx = grid
    outside_core = (np.hypot(xx - xc, yy - yc) > 0.25 * r90) & (galaxy != 0)
    total = galaxy[galaxy != 0].sum()
    if total <= 0:
        return np.nan
    return float(np.clip(galaxy - smooth, 0, None)[outside_core].sum() / total)
