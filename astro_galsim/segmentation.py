"""Segmentation-based structure selection with photutils.

The central galaxy of a cutout is found, isolated from unrelated sources, measured and
brought to a standard frame (centred, scaled to its half-light radius and, optionally,
with its major axis horizontal), so that the encoder describes the galaxy and not the
way the cutout was framed.

The work is done on a copy block-averaged to at most ``conf.detection_size`` pixels a
side: the central galaxy of a survey cutout is resolved there, and detection is fast.
The sky level and noise are estimated with the detected sources masked (detect, mask,
re-estimate), since the border of a tight cutout holds galaxy light.
"""
import math

import numpy as np
from astropy import units as u
from astropy.table import QTable
from photutils.morphology import gini as _photutils_gini
from photutils.segmentation import SegmentationImage, deblend_sources
from scipy import ndimage

__all__ = ['measure_galaxy', 'normalise_galaxy', 'select_galaxy', 'measurements_table', 'GalaxyMeasurement',
           'MEASUREMENT_COLUMNS', 'SELECTION_DEFAULTS', 'segmentation_map']

#: Columns of the measurement table, with their units.
MEASUREMENT_COLUMNS = {
    'found': None, 'x_centroid': u.pix, 'y_centroid': u.pix, 'r20': u.pix, 'r50': u.pix, 'r80': u.pix,
    'r90': u.pix, 'kron_radius': u.pix, 'semimajor_axis': u.pix, 'semiminor_axis': u.pix,
    'ellipticity': u.dimensionless_unscaled, 'orientation': u.deg, 'area': u.pix ** 2,
    'gini': u.dimensionless_unscaled, 'concentration': u.dimensionless_unscaled,
    'asymmetry': u.dimensionless_unscaled, 'snr': u.dimensionless_unscaled,
    'centre_offset': u.pix, 'smoothness': u.dimensionless_unscaled, 'n_stars': None,
}

_DETECTION_SIZE = 192     # side of the block-averaged copy used for detection
_N_SIGMA = 3.0            # detection threshold above the sky, in the smoothed image's noise
_MIN_PIXELS = 8           # smallest segment kept at detection resolution
_STAR_AREA = 0.2          # a deblended child smaller than this fraction of the galaxy...
_STAR_PEAK = 0.5          # ...and brighter at its peak than this fraction of the galaxy's peak is foreign
_MIN_R50 = 10.0          # default selection limits, from the mikeedi sample (docs/segmentation.rst)
_MIN_SNR = 40.0
_MIN_GINI = 0.05
_MAX_CENTRE_OFFSET = 0.2  # nearest segment farther than this fraction of the image: no galaxy
_DRAG_TOLERANCE = 0.5    # centroid shift (in equivalent radii of the target child) that flags a merged star
_DRAG_AREA = 5.0         # ...and a brighter child smaller than this many times the target child,
_DRAG_COMPACT = 0.2      # with less than this fraction of its pixels above half its peak (a star), is removed
_DEG_TO_RAD = u.deg.to(u.rad)  # as astropy turns an angle Quantity into radians (value * scale)


class GalaxyMeasurement(dict):
    """Measurements of a central galaxy (a `dict` of plain floats in original pixels).

    Besides the `MEASUREMENT_COLUMNS` it carries, under private keys, what
    `normalise_galaxy` needs: the label image at detection resolution, the block factor
    and the sky pixels used to fill masked neighbours.
    """

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
        Angular size of an original pixel, per galaxy; adds ``r50_arcsec`` and ``r90_arcsec``.
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
        table['r50_arcsec'] = (table['r50'] * scales).to(u.arcsec)
        table['r90_arcsec'] = (table['r90'] * scales).to(u.arcsec)
    return table


def _block_mean(image, factor):
    """Block-average the last two axes by an integer factor (edges trimmed).

    For factors up to 7 the blocks are summed as strided views, in the order in which
    numpy's ``mean(axis=(-3, -1))`` of the reshaped array adds them (each block row left
    to right, then the rows top to bottom), which gives bit-identical results about ten
    times faster; larger factors use the reshape directly.
    """
    if factor == 1:
        return image
    ny, nx = image.shape[-2] // factor * factor, image.shape[-1] // factor * factor
    trimmed = image[..., :ny, :nx]
    if factor > 7 or trimmed.dtype != np.float32:
        shape = trimmed.shape[:-2] + (ny // factor, factor, nx // factor, factor)
        return trimmed.reshape(shape).mean(axis=(-3, -1))
    total = None
    for i in range(factor):
        row = trimmed[..., i::factor, 0::factor] + trimmed[..., i::factor, 1::factor]
        for j in range(2, factor):
            row += trimmed[..., i::factor, j::factor]
        if total is None:
            total = row
        else:
            total += row
    total /= np.float32(factor * factor)
    return total


def _clipped_stats(values, sigma=3.0, maxiters=5):
    """Median and standard deviation of sigma-clipped values.

    The same statistics as ``astropy.stats.sigma_clipped_stats(values, sigma=sigma,
    maxiters=maxiters)`` (median centre, standard deviation, clipping until nothing changes
    or ``maxiters`` rounds), computed on one sorted copy: each round's kept values are a
    contiguous range of it, so the median is read off and only the final standard
    deviation is computed from the values themselves. The bounds of each round use a
    float64 standard deviation, unless a change within float32 rounding of it could move a
    bound past a value, in which case the float32 standard deviation that astropy uses
    decides. The results are bit-identical to astropy's on float32 input.

    Parameters
    ----------
    values : `~numpy.ndarray`
        The values (any shape; non-finite values are dropped).

    Returns
    -------
    median, std : `numpy.float32`
    """
    values = np.asarray(values, dtype=np.float32).ravel()
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if values.size == 0:
        return np.float32(np.nan), np.float32(np.nan)
    ordered = np.sort(values)
    size = ordered.size
    sigma32 = np.float32(sigma)
    # (no np.dot: BLAS threads stall on a busy machine)
    ordered64 = ordered.astype(np.float64)
    total1, total2 = float(ordered64.sum()), float(np.square(ordered64).sum())
    lo, hi = 0, size
    sum1, sum2 = total1, total2

    def median(lo, hi):
        n, k = hi - lo, lo + (hi - lo) // 2
        return ordered[k] if n % 2 else (ordered[k - 1] + ordered[k]) / np.float32(2)

    def kept(lo, hi):  # the kept values in their original order, as astropy holds them
        if lo == 0 and hi == size:
            return values
        return values[(values >= ordered[lo]) & (values <= ordered[hi - 1])]

    def bounds(centre, std):
        return (max(lo, int(np.searchsorted(ordered, centre - std * sigma32, 'left'))),
                min(hi, int(np.searchsorted(ordered, centre + std * sigma32, 'right'))))

    for _ in range(maxiters):
        n = hi - lo
        centre = median(lo, hi)
        mean = sum1 / n
        std = np.sqrt(max(sum2 / n - mean * mean, 0.0))
        new = bounds(centre, np.float32(std * (1 - 1e-5)))
        if new != bounds(centre, np.float32(std * (1 + 1e-5))):
            new = bounds(centre, np.nanstd(kept(lo, hi)))
        if new == (lo, hi):
            break
        cut_lo, cut_hi = ordered64[lo:new[0]], ordered64[new[1]:hi]
        sum1 -= cut_lo.sum() + cut_hi.sum()
        sum2 -= np.square(cut_lo).sum() + np.square(cut_hi).sum()
        lo, hi = new
        if lo >= hi:
            return np.float32(np.nan), np.float32(np.nan)
    return median(lo, hi), np.nanstd(kept(lo, hi))


def _sky_noise(image, mask=None):
    """Sigma-clipped sky level and noise of a 2-D image, from the pixels outside ``mask``."""
    sky, noise = _clipped_stats(image if mask is None else image[~mask])
    return sky, (noise if noise > 0 else max(float(np.std(image)), 1e-6))


def _detect(image, smoothed, n_sigma, mask=None, image_noise=None):
    """Segments of a 2-D image above the sky of its smoothed copy (pixels outside ``mask``).

    The threshold is set on the smoothed image in units of the smoothed image's own
    noise, so that it means the same whatever the pixel noise correlations (JPEG).
    ``image_noise`` (a callable giving the noise of ``image``) is the fallback when the
    smoothed image's noise is zero.
    """
    sky_s, noise_s = _clipped_stats(smoothed if mask is None else smoothed[~mask])
    if not noise_s > 0:
        noise_s = image_noise() if image_noise is not None else _sky_noise(image, mask)[1]
    return _segments(smoothed, sky_s + n_sigma * noise_s, _MIN_PIXELS)


def _segments(data, threshold, n_pixels):
    """Label image of the 8-connected groups of at least ``n_pixels`` pixels above ``threshold``.

    What ``photutils.segmentation.detect_sources(data, threshold, n_pixels).data`` holds
    (labels numbered in raster order of first appearance, consecutively after the small
    groups are dropped), or None when there is no such group (an empty field is an
    answer here, not something to warn about).
    """
    labels, count = ndimage.label(data > threshold, structure=np.ones((3, 3), dtype=int))
    if count == 0:
        return None
    keep = np.bincount(labels.ravel(), minlength=count + 1) >= n_pixels
    keep[0] = False
    kept = int(keep.sum())
    if kept == 0:
        return None
    if kept < count:
        relabel = np.zeros(count + 1, dtype=labels.dtype)
        relabel[keep] = np.arange(1, kept + 1, dtype=labels.dtype)
        labels = relabel[labels]
    return labels


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
    det = _block_mean(rgb.mean(axis=0), block)
    if position is None:
        position = ((nx - 1) / 2, (ny - 1) / 2)
    # position in detection pixels (block centres sit at block * (i + 0.5) - 0.5)
    px, py = ((position[0] + 0.5) / block - 0.5, (position[1] + 0.5) / block - 0.5)

    measurement = GalaxyMeasurement(found=False, _block=block)
    # detect, mask the sources, re-estimate sky and noise without them, detect again
    smoothed = ndimage.gaussian_filter(det, 1.0)
    # (the sky and noise of det itself are needed only from the pass that is kept)
    segm = _detect(det, smoothed, n_sigma)
    source_mask = None if segm is None else ndimage.binary_dilation(segm > 0, iterations=2)
    if source_mask is not None and (~source_mask).sum() > 50:
        sky, noise = _sky_noise(det, source_mask)
        segm = _detect(det, smoothed, n_sigma, mask=source_mask, image_noise=lambda: noise)
    else:
        sky, noise = _sky_noise(det)
    measurement.update(_sky=sky, _noise=noise)
    if segm is None:
        return measurement

    # the central segment: the one under the target, else the nearest one
    iy, ix = int(np.clip(round(py), 0, det.shape[0] - 1)), int(np.clip(round(px), 0, det.shape[1] - 1))
    if _distance_to_segments(segm, iy, ix) > _MAX_CENTRE_OFFSET * max(det.shape):
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
    central, stars = _split_central(image, smoothed - sky, segm == label, anchor)

    shape = _moment_shape(image, central)
    galaxy = np.where(central, image, 0.0)
    xc, yc = float(shape['x_centroid']), float(shape['y_centroid'])
    radii = _flux_radii(galaxy, xc, yc, (0.2, 0.5, 0.8, 0.9))
    flux = galaxy.sum()
    measurement.update(
        found=True,
        x_centroid=(xc + 0.5) * block - 0.5, y_centroid=(yc + 0.5) * block - 0.5,
        r20=radii[0] * block, r50=radii[1] * block, r80=radii[2] * block, r90=radii[3] * block,
        kron_radius=float(shape['kron_radius']) * float(shape['semimajor_axis']) * block,
        semimajor_axis=float(shape['semimajor_axis']) * block,
        semiminor_axis=float(shape['semiminor_axis']) * block,
        ellipticity=float(shape['ellipticity']), orientation=float(shape['orientation']),
        area=float(shape['area']) * block ** 2, gini=float(shape['gini']),
        concentration=5 * np.log10(radii[2] / radii[0]) if radii[0] > 0 else np.nan,
        asymmetry=_asymmetry(galaxy, xc, yc),
        smoothness=_smoothness(galaxy, xc, yc, radii[3]),
        n_stars=int(ndimage.label(stars)[1]) if stars.any() else 0,
        snr=float(flux / (noise * np.sqrt(central.sum()))),
        centre_offset=float(np.hypot(xc - px, yc - py)) * block,
        _central=central, _foreign=(segm > 0) & (segm != label), _stars=stars,
        _sky_pixels=(segm == 0),
    )
    return measurement


def _distance_to_segments(labels, iy, ix):
    """Euclidean distance from pixel (iy, ix) to the nearest labelled pixel (0 when on one).

    The value ``ndimage.distance_transform_edt(labels == 0)[iy, ix]`` gives, for one pixel.
    """
    if labels[iy, ix]:
        return 0.0
    yy, xx = np.nonzero(labels)
    return float(np.sqrt(np.min((yy - iy) ** 2 + (xx - ix) ** 2)))


def _moment_shape(image, segment):
    """Centroid, shape, area, Gini and Kron radius of one segment, as photutils measures them.

    The same numbers as ``SourceCatalog(image, SegmentationImage(segment.astype(int)))``
    gives for its single source (``x_centroid``, ``y_centroid``, ``semimajor_axis``,
    ``semiminor_axis``, ``ellipticity``, ``orientation`` in degrees, ``area``, ``gini``
    and the unscaled ``kron_radius`` with photutils' default ``kron_params``), computed
    with the same formulae and operations without building a catalogue, which costs more
    than the arithmetic for one source. ``image`` must be finite.
    """
    (slc,) = ndimage.find_objects(segment.astype(np.int8))
    inside = segment[slc]
    cutout = image[slc].copy()
    cutout[~inside | (cutout < 0)] = 0.0
    ny, nx = cutout.shape
    y, x = np.arange(ny, dtype=float), np.arange(nx, dtype=float)
    powers = lambda v: np.column_stack([np.ones(v.size), v, v * v, v ** 3])  # noqa: E731
    moments = powers(y).T @ cutout @ powers(x)
    xcen, ycen = moments[0, 1] / moments[0, 0], moments[1, 0] / moments[0, 0]
    central = powers(y - ycen).T @ cutout @ powers(x - xcen)
    mu = central / central[0, 0]
    covar = np.array([[mu[0, 2], mu[1, 1]], [mu[1, 1], mu[2, 0]]])
    # photutils' (SourceExtractor's) guard against infinitely thin sources
    if np.linalg.det(covar) < 0:
        covar[:] = np.nan
    while np.linalg.det(covar) < (1.0 / 12) ** 2:
        covar[0, 0] += 1.0 / 12
        covar[1, 1] += 1.0 / 12
    eigvals = np.full(2, np.nan)
    if np.isfinite(covar).all():
        eigvals = np.linalg.eigvalsh(covar[None])[0][::-1]
        if (eigvals < 0).any():
            eigvals[:] = np.nan
    a, b = np.sqrt(eigvals[0]), np.sqrt(eigvals[1])
    orientation = np.rad2deg(0.5 * np.arctan2(2.0 * covar[0, 1], covar[0, 0] - covar[1, 1])) % 360
    theta = orientation * _DEG_TO_RAD
    cos, sin = np.cos(theta), np.sin(theta)
    cxx = (cos / a) ** 2 + (sin / b) ** 2
    cyy = (sin / a) ** 2 + (cos / b) ** 2
    cxy = 2.0 * cos * sin * ((1.0 / a ** 2) - (1.0 / b ** 2))
    values = image[slc][inside].astype(float)  # photutils' masked cutouts are float64
    xc, yc = xcen + slc[1].start, ycen + slc[0].start
    return dict(x_centroid=xc, y_centroid=yc, semimajor_axis=a, semiminor_axis=b,
                ellipticity=1.0 - b / a, orientation=orientation, area=float(values.size),
                gini=float(_photutils_gini(values)),
                kron_radius=_kron_radius(image, xc, yc, 6.0 * a, 6.0 * b, theta, cxx, cxy, cyy))


def _kron_radius(data_full, xc, yc, a, b, theta, cxx, cxy, cyy, scale=6.0, kron_min=1.4):
    """photutils' first-moment Kron radius of one source (no neighbours, default kron_params)."""
    if not all(math.isfinite(v) for v in (xc, yc, a, b, theta)):
        return np.nan
    if a == 0 and b == 0:
        return np.nan
    half_w = math.sqrt(a * a * math.cos(theta) ** 2 + b * b * math.sin(theta) ** 2)
    half_h = math.sqrt(a * a * math.sin(theta) ** 2 + b * b * math.cos(theta) ** 2)
    ixmin, ixmax = math.floor(xc - half_w + 0.5), math.floor(xc + half_w + 0.5) + 1
    iymin, iymax = math.floor(yc - half_h + 0.5), math.floor(yc + half_h + 0.5) + 1
    ny, nx = data_full.shape
    if (ixmax - ixmin) * (iymax - iymin) > max(data_full.size, 1_000_000):
        return np.nan
    x0, x1 = max(ixmin, 0), min(ixmax, nx)
    y0, y1 = max(iymin, 0), min(iymax, ny)
    if x0 >= x1 or y0 >= y1:
        return np.nan
    data = data_full[y0:y1, x0:x1].astype(float)
    xx = (np.arange(x1 - x0) - (xc - x0))[np.newaxis, :]
    yy = (np.arange(y1 - y0) - (yc - y0))[:, np.newaxis]
    rr = np.sqrt(np.maximum(cxx * xx * xx + cxy * xx * yy + cyy * yy * yy, 0.0))
    inside = rr <= scale
    numerator, denominator = np.sum(data[inside] * rr[inside]), np.sum(data[inside])
    radius = kron_min if numerator <= 0 or denominator <= 0 else numerator / denominator
    if radius > scale:
        return np.nan
    return max(radius, kron_min)


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
    segm = SegmentationImage(segment.astype(np.int32))
    try:
        children = deblend_sources(smoothed, segm, _MIN_PIXELS, n_levels=16, contrast=0.01,
                                   progress_bar=False).data
    except ValueError:
        return segment, no_stars
    if children.max() < 2:
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
    rotated = ndimage.affine_transform(galaxy, [[-1, 0], [0, -1]], offset=(2 * yc, 2 * xc), order=1)
    total = np.abs(galaxy).sum()
    return float(np.abs(galaxy - rotated).sum() / (2 * total)) if total > 0 else np.nan


def _smoothness(galaxy, xc, yc, r90):
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
    yy, xx = np.indices(galaxy.shape)
    outside_core = (np.hypot(xx - xc, yy - yc) > 0.25 * r90) & (galaxy != 0)
    total = galaxy[galaxy != 0].sum()
    if total <= 0:
        return np.nan
    return float(np.clip(galaxy - smooth, 0, None)[outside_core].sum() / total)


def normalise_galaxy(rgb, measurement, *, size=64, radius_scale=3.0, rotate=True, isolate=True,
                     seed=0):
    """Centre, scale and orient the measured central galaxy onto a fixed grid.

    Parameters
    ----------
    rgb : `~numpy.ndarray`, shape (3, ny, nx)
        The colour image that was measured.
    measurement : `GalaxyMeasurement`
        From `measure_galaxy` on ``rgb``.
    size : int, optional
        Side of the output in pixels.
    radius_scale : float, optional
        Half the output's side, in half-light radii: the galaxy's ``r50`` spans
        ``size / (2 * radius_scale)`` output pixels whatever the input's framing and pixel scale.
    rotate : bool, optional
        Turn the galaxy so that its major axis lies along the output's x axis.
    isolate : bool, optional
        Replace the pixels of unrelated sources (segments not connected to the central
        galaxy) with sky drawn from the image itself, keeping companions that touch it.
    seed : int, optional
        Seed of the sky draw, so that the result is a pure function of the inputs.

    Returns
    -------
    normalised : `~numpy.ndarray`, shape (3, size, size), float32
        In [0, 1], scaled so that the brightest part of the galaxy reaches 1.
    """
    if not measurement.get('found'):
        raise ValueError('no central galaxy was found in this image; nothing to normalise '
                         '(check the position, or the measurement "found" flag before normalising)')
    rgb = np.asarray(rgb, dtype=np.float32)
    block = measurement['_block']
    if isolate:
        rgb = _fill_foreign(rgb, measurement, block, seed)
    # output pixel size in input pixels; average blocks first so the resampling never skips pixels
    step = 2 * radius_scale * measurement['r50'] / size
    reduce = max(1, int(step))
    work = _block_mean(rgb, reduce)
    step /= reduce
    xc = (measurement['x_centroid'] + 0.5) / reduce - 0.5
    yc = (measurement['y_centroid'] + 0.5) / reduce - 0.5
    theta = np.deg2rad(measurement['orientation']) if rotate else 0.0
    c, s = np.cos(theta), np.sin(theta)
    # output (row, col) offsets from the centre map to input (row, col) = centre + matrix @ offsets,
    # so that the output x axis runs along the galaxy's major axis
    matrix = step * np.array([[c, s], [-s, c]])
    half = (size - 1) / 2
    offset = np.array([yc, xc]) - matrix @ np.array([half, half])
    out = np.stack([ndimage.affine_transform(plane, matrix, offset=offset, output_shape=(size, size),
                                             order=1, mode='constant', cval=0.0) for plane in work])
    peak = np.percentile(out.mean(axis=0), 99.5)
    if peak > 0:
        out /= peak
    return np.clip(out, 0, 1).astype(np.float32)


def _upsample(mask, block, shape):
    """Nearest-neighbour copy of a detection-resolution mask onto the full grid."""
    if block == 1 and mask.shape == tuple(shape):
        return mask.copy()
    h, w = mask.shape
    up = np.broadcast_to(mask[:, None, :, None], (h, block, w, block)).reshape(h * block, w * block)
    full = np.zeros(shape, dtype=bool)
    ny, nx = min(shape[0], up.shape[0]), min(shape[1], up.shape[1])
    full[:ny, :nx] = up[:ny, :nx]
    return full


def segmentation_map(measurement, shape):
    """Label image of what `measure_galaxy` decided, at the resolution of the measured image.

    For figures (see ``docs/figures/segmentation_examples.py``): 0 sky, 1 the central
    galaxy, 2 foreign sources (replaced by sky when isolating), 3 stars on the galaxy
    (replaced by the point-symmetric pixels).

    Parameters
    ----------
    measurement : `GalaxyMeasurement`
        From `measure_galaxy`, with ``found`` True.
    shape : tuple of int
        ``(ny, nx)`` of the measured image.

    Returns
    -------
    labels : `~numpy.ndarray` of uint8, shape ``shape``

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:81, :81]
    >>> rgb = np.exp(-np.hypot(x - 40, y - 40) / 6)[None].repeat(3, 0)
    >>> labels = segmentation_map(measure_galaxy(rgb), rgb.shape[1:])
    >>> int(labels[40, 40]), int(labels[0, 0])
    (1, 0)
    """
    if not measurement.get('found'):
        raise ValueError('no central galaxy was found; there is no segmentation to show')
    block = measurement['_block']
    labels = np.zeros(shape, dtype=np.uint8)
    labels[_upsample(measurement['_central'], block, shape)] = 1
    labels[_upsample(measurement['_foreign'], block, shape)] = 2
    labels[_upsample(measurement['_stars'], block, shape)] = 3
    return labels


def _fill_foreign(rgb, measurement, block, seed):
    """Remove foreign sources: separate ones become sky drawn from the same image, stars
    on the galaxy take the galaxy's light from the point-symmetric position."""
    shape = rgb.shape[1:]
    foreign = ndimage.binary_dilation(measurement['_foreign'], iterations=1) & ~measurement['_central']
    stars = measurement['_stars']
    if not foreign.any() and not stars.any():
        return rgb
    out = rgb.reshape(3, -1).copy()
    target = np.flatnonzero(_upsample(foreign, block, shape)) if foreign.any() else np.empty(0, int)
    if target.size:
        sky_idx = np.flatnonzero(_upsample(measurement['_sky_pixels'], block, shape))
        if sky_idx.size:
            draw = sky_idx[np.random.default_rng(seed).integers(0, sky_idx.size, target.size)]
            out[:, target] = out[:, draw]
    if stars.any():
        stars = _upsample(ndimage.binary_dilation(stars, iterations=1), block, shape)
        yy, xx = np.nonzero(stars)
        my = np.clip(np.round(2 * measurement['y_centroid'] - yy).astype(int), 0, shape[0] - 1)
        mx = np.clip(np.round(2 * measurement['x_centroid'] - xx).astype(int), 0, shape[1] - 1)
        mirror_ok = ~stars[my, mx]
        src = my[mirror_ok] * shape[1] + mx[mirror_ok]
        out[:, yy[mirror_ok] * shape[1] + xx[mirror_ok]] = out[:, src]
    return out.reshape(rgb.shape)


#: Default acceptance criteria of `select_galaxy`, chosen on the 7,505 galaxies of the
#: original work's sample (``sdss_galaxies_mikeedi``; see the segmentation docs).
SELECTION_DEFAULTS = {'min_r50': _MIN_R50 * u.pix, 'min_snr': _MIN_SNR, 'min_gini': _MIN_GINI,
                      'min_smoothness': None, 'max_centre_offset': None}


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
                  min_smoothness=None, max_centre_offset=None, pixel_scale=None):
    """Decide whether a measured galaxy is resolved, bright and structured enough.

    The defaults accept about 98% of the original work's sample of galaxies "with
    perceptible structure and large visible radius", and reject the small, faint and
    featureless (or badly segmented) rest.

    Parameters
    ----------
    measurement : `GalaxyMeasurement` or dict
        From `measure_galaxy` (a row of `measurements_table` turned into a dict works too).
    min_r50 : float or `~astropy.units.Quantity`, optional
        Smallest half-light radius: a number or Quantity in pixels of the measured image,
        or an angle (then ``pixel_scale`` is needed). None disables the test.
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
    pixel_scale : `~astropy.units.Quantity`, optional
        Angle per pixel (``arcsec`` or ``arcsec / pix``); needed only for angular limits.

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
    >>> select_galaxy(m)
    (False, 'half-light radius 4.0 pix is below the minimum 10.0 pix')
    >>> select_galaxy(m, min_r50=1.5 * u.arcsec, pixel_scale=0.396 * u.arcsec)
    (True, '')
    """
    if not measurement.get('found'):
        return False, 'no galaxy found near the target position'
    min_r50 = _as_pixels(min_r50, pixel_scale, 'min_r50')
    max_centre_offset = _as_pixels(max_centre_offset, pixel_scale, 'max_centre_offset')
    reasons = []
    r50 = float(measurement['r50'])
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
    return not reasons, '; '.join(reasons)
