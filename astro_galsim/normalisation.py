"""Normalisation: the measured central galaxy on a fixed grid, and what the segmentation decided.

`normalise_galaxy` centres, scales (to the isophotal ``scale_radius`` that
`~astro_galsim.segmentation.measure_galaxy` measured) and turns the galaxy, with unrelated
sources replaced by sky; `segmentation_map` shows which pixels were which.
"""
import numpy as np
from scipy import ndimage

from ._fastphot import block_mean, dilate

__all__ = ['normalise_galaxy', 'segmentation_map']


def normalise_galaxy(rgb, measurement, *, size=64, radius_scale=1.5, scale='scale_radius', rotate=True,
                     isolate=True, seed=0):
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
        Half the output's side, in units of the radius named by ``scale``: that radius spans
        ``size / (2 * radius_scale)`` output pixels whatever the input's framing and pixel scale.
    scale : {'scale_radius', 'r50'}, optional
        The radius the galaxy is scaled to: its isophotal ``scale_radius`` (the default,
        which does not depend on the framing), or the half-light radius ``r50`` of the
        segment (how encoders before ``astro_galsim-ae-v3`` were trained; it shrinks to
        the bulge when a galaxy overflows its cutout).
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

    Raises
    ------
    ValueError
        If no galaxy was found, ``scale`` is unknown or the galaxy has no such radius.

    Examples
    --------
    An elongated disc off the centre of its cutout comes out centred, with its major axis
    along x:

    >>> import numpy as np
    >>> from astro_galsim.segmentation import measure_galaxy
    >>> y, x = np.mgrid[:121, :121]
    >>> rgb = np.exp(-np.hypot((x - 50) / 6, (y - 70) / 14))[None].repeat(3, 0)
    >>> out = normalise_galaxy(rgb, measure_galaxy(rgb, (50, 70)))
    >>> from scipy import ndimage
    >>> grey = out.mean(axis=0)
    >>> [round(float(c), 1) for c in ndimage.center_of_mass(grey)], bool(grey[32].sum() > grey[:, 32].sum())
    ([31.5, 31.5], True)
    """
    if not measurement.get('found'):
        raise ValueError('no central galaxy was found in this image; nothing to normalise '
                         '(check the position, or the measurement "found" flag before normalising)')
    if scale not in ('scale_radius', 'r50'):
        raise ValueError(f"scale={scale!r}: give 'scale_radius' (isophotal) or 'r50' (half-light)")
    radius = float(measurement[scale])
    if not radius > 0:
        raise ValueError(f'the galaxy has no {scale} to scale to ({radius}): it overflows its cutout '
                         'too far to be measured; give a wider cutout')
    rgb = np.asarray(rgb, dtype=np.float32)
    if isolate:
        rgb = _fill_foreign(rgb, measurement.segmentation, measurement, seed)
    # output pixel size in input pixels; average blocks first so the resampling never skips pixels
    step = 2 * radius_scale * radius / size
    reduce = max(1, int(step))
    work = block_mean(rgb, reduce)
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
    # where the field runs off the frame, continue the galaxy's mean profile rather than leave it
    # black: a tighter cutout of the same galaxy then gets the same description as a wider one
    inside = ndimage.affine_transform(np.ones(work.shape[1:], np.float32), matrix, offset=offset,
                                      output_shape=(size, size), order=1, mode='constant', cval=0.0)
    if inside.min() < 0.999:
        ellipticity = measurement['ellipticity'] if np.isfinite(measurement['ellipticity']) else 0.0
        model = _outskirts(work, xc, yc, ellipticity, theta, matrix, offset, size)
        out += (1 - np.clip(inside, 0, 1)) * model
    peak = np.percentile(out.mean(axis=0), 99.5)
    if peak > 0:
        out /= peak
    return np.clip(out, 0, 1).astype(np.float32)


def _outskirts(work, xc, yc, ellipticity, theta, matrix, offset, size):
    """The galaxy's mean profile in each band, on the output grid, by elliptical radius.

    Measured in elliptical annuli of the visible pixels; beyond the farthest annulus with
    enough pixels, the outer profile continues as an exponential (or stays flat if rising).
    """
    axis_ratio = max(1 - float(ellipticity), 0.1)
    c, s = np.cos(theta), np.sin(theta)

    def radius(rows, cols):
        dy, dx = rows - yc, cols - xc
        return np.hypot(dx * c + dy * s, (-dx * s + dy * c) / axis_ratio)

    rows, cols = np.indices(work.shape[1:], dtype=np.float32)
    bins = radius(rows, cols).astype(np.int64).ravel()
    counts = np.bincount(bins)
    profile = np.stack([np.bincount(bins, weights=plane.ravel(), minlength=len(counts)) for plane in work])
    good = np.flatnonzero(counts >= 8)
    if len(good) < 2:   # too few pixels for a profile: leave the field beyond the frame black
        return np.zeros((len(work), size, size), np.float32)
    profile = profile[:, good] / counts[good]
    radii = good + 0.5
    # an exponential fitted to the outer third of the grey profile carries it further
    grey = np.maximum(profile.mean(axis=0), 1e-4)
    outer = radii >= radii[-1] * 2 / 3
    slope = np.polyfit(radii[outer], np.log(grey[outer]), 1)[0] if outer.sum() >= 3 else 0.0
    slope = min(slope, 0.0)
    out_rows, out_cols = np.indices((size, size), dtype=np.float32)
    grid = matrix @ np.stack([out_rows.ravel(), out_cols.ravel()]) + np.asarray(offset)[:, None]
    r = radius(grid[0], grid[1])
    beyond = np.exp(slope * np.maximum(r - radii[-1], 0))
    model = np.stack([np.interp(r, radii, band) for band in profile]) * beyond
    return np.clip(model, 0, None).reshape(len(work), size, size).astype(np.float32)


def _upsample(mask, block, shape):
    """Nearest-neighbour copy of a detection-resolution mask onto the full grid."""
    if block == 1 and mask.shape == tuple(shape):
        return mask.copy()
    up = mask.repeat(block, axis=0).repeat(block, axis=1)   # (a third of the time of a broadcast reshape)
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
    >>> from astro_galsim.segmentation import measure_galaxy
    >>> y, x = np.mgrid[:81, :81]
    >>> rgb = np.exp(-np.hypot(x - 40, y - 40) / 6)[None].repeat(3, 0)
    >>> labels = segmentation_map(measure_galaxy(rgb), rgb.shape[1:])
    >>> int(labels[40, 40]), int(labels[0, 0])
    (1, 0)
    """
    if not measurement.get('found'):
        raise ValueError('no central galaxy was found; there is no segmentation to show')
    seg = measurement.segmentation
    labels = np.zeros(shape, dtype=np.uint8)
    labels[_upsample(seg.central, seg.block, shape)] = 1
    labels[_upsample(seg.foreign, seg.block, shape)] = 2
    labels[_upsample(seg.stars, seg.block, shape)] = 3
    return labels


def _fill_foreign(rgb, seg, measurement, seed):
    """Remove foreign sources: separate ones become sky drawn from the same image, stars
    on the galaxy take the galaxy's light from the point-symmetric position."""
    shape, block = rgb.shape[1:], seg.block
    foreign = dilate(seg.foreign) & ~seg.central
    stars = seg.stars
    if not foreign.any() and not stars.any():
        return rgb
    out = rgb.reshape(3, -1).copy()
    target = np.flatnonzero(_upsample(foreign, block, shape)) if foreign.any() else np.empty(0, int)
    if target.size:
        sky_idx = np.flatnonzero(_upsample(seg.sky_pixels, block, shape))
        if sky_idx.size:
            draw = sky_idx[np.random.default_rng(seed).integers(0, sky_idx.size, target.size)]
            out[:, target] = out[:, draw]
    if stars.any():
        stars = _upsample(dilate(stars), block, shape)
        yy, xx = np.nonzero(stars)
        my = np.clip(np.round(2 * measurement['y_centroid'] - yy).astype(int), 0, shape[0] - 1)
        mx = np.clip(np.round(2 * measurement['x_centroid'] - xx).astype(int), 0, shape[1] - 1)
        mirror_ok = ~stars[my, mx]
        src = my[mirror_ok] * shape[1] + mx[mirror_ok]
        out[:, yy[mirror_ok] * shape[1] + xx[mirror_ok]] = out[:, src]
    return out.reshape(rgb.shape)
