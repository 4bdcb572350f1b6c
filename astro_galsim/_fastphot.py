"""Fast equivalents of the photutils and astropy routines that segmentation calls per galaxy.

Each function computes what the named library routine computes (the equality is tested
against the library on real images in ``tests/test_fastphot.py``) without the overhead
of building general objects for one source. They are shared within the package, not
part of its public face.
"""
import math

import numpy as np
from astropy import units as u
from scipy import ndimage

__all__ = ['block_mean', 'dilate', 'clipped_stats', 'label_segments', 'distance_to_segments', 'moment_shape',
           'deblend_segment']

_DEG_TO_RAD = u.deg.to(u.rad)  # as astropy turns an angle Quantity into radians (value * scale)
_EIGHT = np.ones((3, 3), dtype=int)  # 8-connectivity, photutils' default footprint


def block_mean(image, factor):
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


def dilate(mask, iterations=1):
    """``scipy.ndimage.binary_dilation(mask, iterations=iterations)`` of a 2-D mask (its cross structure).

    Shifted copies or-ed together: the same pixels, without scipy's set-up, which costs
    more than the dilation of a detection-sized mask.
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def clipped_stats(values, sigma=3.0, maxiters=5):
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


def label_segments(data, threshold, n_pixels):
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


def distance_to_segments(labels, iy, ix):
    """Euclidean distance from pixel (iy, ix) to the nearest labelled pixel (0 when on one).

    The value ``ndimage.distance_transform_edt(labels == 0)[iy, ix]`` gives, for one pixel.
    """
    if labels[iy, ix]:
        return 0.0
    yy, xx = np.nonzero(labels)
    return float(np.sqrt(np.min((yy - iy) ** 2 + (xx - ix) ** 2)))


def moment_shape(image, segment, *, shape_only=False):
    """Centroid, shape, area, Gini and Kron radius of one segment, as photutils measures them.

    The same numbers as ``SourceCatalog(image, SegmentationImage(segment.astype(int)))``
    gives for its single source (``x_centroid``, ``y_centroid``, ``semimajor_axis``,
    ``semiminor_axis``, ``ellipticity``, ``orientation`` in degrees, ``area``, ``gini``
    and the unscaled ``kron_radius`` with photutils' default ``kron_params``), computed
    with the same formulae and operations without building a catalogue, which costs more
    than the arithmetic for one source. ``image`` must be finite. ``shape_only`` leaves
    out ``area``, ``gini`` and ``kron_radius``, which cost as much as the rest.
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
    xc, yc = xcen + slc[1].start, ycen + slc[0].start
    shape = dict(x_centroid=xc, y_centroid=yc, semimajor_axis=a, semiminor_axis=b,
                 ellipticity=1.0 - b / a, orientation=orientation)
    if shape_only:
        return shape
    values = image[slc][inside].astype(float)  # photutils' masked cutouts are float64
    return dict(shape, area=float(values.size), gini=float(_gini(values)),
                kron_radius=_kron_radius(image, xc, yc, 6.0 * a, 6.0 * b, theta, cxx, cxy, cyy))


def _gini(values):
    """`photutils.morphology.gini` of a 1-D array, the same operations in the same order (the
    same bits), without importing photutils (0.3-0.7 s) for one galaxy."""
    values = np.abs(values[np.isfinite(values)])
    npix = values.size
    if npix == 0:
        return np.nan
    if npix == 1:
        return 0.0
    normalization = np.mean(values) * npix * (npix - 1)
    if normalization == 0.0:
        return 0.0
    kernel = (2.0 * np.arange(1, npix + 1) - npix - 1) * np.sort(values)
    return np.sum(kernel) / normalization


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


def deblend_segment(data, segment, n_pixels, *, n_levels=32, contrast=0.001):
    """Children of one segment, numbered from 1, or None when it does not split.

    What ``photutils.segmentation.deblend_sources(data, SegmentationImage(segment.astype(int)),
    n_pixels, n_levels=n_levels, contrast=contrast, progress_bar=False).data`` holds when it
    splits the segment (exponential multi-thresholding, then watershed, removing the
    faintest child below ``contrast`` until none is): the same thresholds, marker merging
    and `skimage.segmentation.watershed` calls, without photutils' per-label bookkeeping,
    which costs more than the arithmetic for one segment. Where photutils would change
    mode (a non-positive minimum, more than 200 markers) and warn, photutils itself is
    called.

    Raises
    ------
    ValueError
        Where photutils raises it (the watershed does not cover the segment).
    """
    from skimage.segmentation import watershed

    if segment.sum() < 2 * n_pixels:
        return None
    (slc,) = ndimage.find_objects(segment.astype(np.int8))
    cut, inside = data[slc], segment[slc]
    values = cut[inside]
    source_min, source_max, source_sum = np.nanmin(values), np.nanmax(values), np.nansum(values)
    if source_min == source_max:
        return None
    markers = _markers(cut, inside, source_min, source_max, n_levels, n_pixels) if source_min > 0 else False
    if markers is False or (markers is not None and _labels_of(markers).size > 200):
        return _photutils_deblend(data, segment, n_pixels, n_levels, contrast)
    if markers is None:
        return None
    markers = watershed(-cut, markers, mask=inside, connectivity=_EIGHT)
    while True:
        labels = _labels_of(markers)
        if labels.size == 1:
            break
        flux_frac = ndimage.sum_labels(cut, markers, index=labels) / source_sum
        if not any(flux_frac < contrast):
            break
        _reflood(-cut, markers, inside, markers == labels[np.argmin(flux_frac)])
    if not np.array_equal(inside, markers.astype(bool)):
        raise ValueError('deblending failed: the watershed does not cover the segment')
    if labels.size == 1:
        return None
    relabel = np.zeros(labels[-1] + 1, dtype=markers.dtype)
    relabel[labels] = np.arange(1, labels.size + 1, dtype=markers.dtype)
    children = np.zeros(segment.shape, dtype=markers.dtype)
    children[slc] = relabel[markers]
    return children


def _reflood(surface, markers, inside, gone):
    """Give the pixels of a removed child to its neighbours, in place, as a new watershed would.

    photutils floods the whole segment again from the remaining markers. The other children keep
    their pixels in that flood (their basins are reached from their own markers first); only the
    removed child's pixels are flooded anew, from the children around it, in the same order of
    level. So only a window one pixel around them is flooded, with every other child's pixels
    as markers: a fraction of the segment where most removed children are faint knots.
    """
    from skimage.segmentation import watershed

    (rows, cols), = ndimage.find_objects(gone.astype(np.int8))
    window = (slice(max(rows.start - 1, 0), rows.stop + 1), slice(max(cols.start - 1, 0), cols.stop + 1))
    seeds = markers[window].copy()
    seeds[gone[window]] = 0
    markers[window] = watershed(surface[window], seeds, mask=inside[window], connectivity=_EIGHT)


def _markers(cut, inside, source_min, source_max, n_levels, n_pixels):
    """photutils' watershed markers: segments that split between exponentially spaced levels."""
    linear = np.linspace(source_min, source_max, n_levels + 2)
    normalised = (linear - source_min) / (source_max - source_min)
    thresholds = (source_min * (source_max / source_min) ** normalised)[1:-1]
    lower, box = None, (slice(0, cut.shape[0]), slice(0, cut.shape[1]))
    for threshold in thresholds:
        # each level lies inside the one below: it is labelled within the box around the level
        # below (labels are numbered in raster order, which a box keeps)
        above = cut[box] > threshold
        above &= inside[box]
        if np.count_nonzero(above) < 2 * n_pixels:
            break   # no two segments of n_pixels fit at this level, nor at any higher one
        found = _level_segments(above, n_pixels)
        if found is not None:
            upper = np.zeros(cut.shape, dtype=found.dtype)
            upper[box] = found
        rows, cols = np.flatnonzero(above.any(axis=1)), np.flatnonzero(above.any(axis=0))
        box = (slice(box[0].start + rows[0], box[0].start + rows[-1] + 1),
               slice(box[1].start + cols[0], box[1].start + cols[-1] + 1))
        if found is None:
            continue
        if lower is None:
            lower = upper
            continue
        # the segments of the lower level that hold two or more of the upper level's
        both = (lower > 0) & (upper > 0)
        pairs = np.zeros((lower.max() + 1, upper.max() + 1), dtype=bool)
        pairs[lower[both], upper[both]] = True
        split = pairs.sum(axis=1) >= 2
        if split.any():
            markers = lower.astype(bool)
            region = split[lower]
            markers[region] = upper[region].astype(bool)
            lower = ndimage.label(markers, structure=_EIGHT)[0]
    return lower


def _level_segments(above, n_pixels):
    """Segments of at least ``n_pixels`` pixels of a mask, with their first labels (None unless two or more)."""
    labels, count = ndimage.label(above, structure=_EIGHT)
    small = np.bincount(labels.ravel(), minlength=count + 1) < n_pixels
    small[0] = False
    if small.any():
        labels[small[labels]] = 0
    return labels if count - int(small.sum()) >= 2 else None


def _labels_of(markers):
    """The labels present in a label image, in increasing order (as ``np.unique`` without 0)."""
    present = np.flatnonzero(np.bincount(markers.ravel()))
    return present[present != 0]


def _photutils_deblend(data, segment, n_pixels, n_levels, contrast):
    from photutils.segmentation import SegmentationImage, deblend_sources
    children = deblend_sources(data, SegmentationImage(segment.astype(np.int32)), n_pixels, n_levels=n_levels,
                               contrast=contrast, progress_bar=False).data
    return children if children.max() >= 2 else None
