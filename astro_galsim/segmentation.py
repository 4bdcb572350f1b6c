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
import numpy as np
from astropy import units as u
from astropy.stats import sigma_clipped_stats
from astropy.table import QTable
from photutils.segmentation import SegmentationImage, SourceCatalog, detect_sources
from scipy import ndimage

__all__ = ['measure_galaxy', 'normalise_galaxy', 'select_galaxy', 'GalaxyMeasurement',
           'MEASUREMENT_COLUMNS']

#: Columns of the measurement table, with their units.
MEASUREMENT_COLUMNS = {
    'found': None, 'x_centroid': u.pix, 'y_centroid': u.pix, 'r20': u.pix, 'r50': u.pix, 'r80': u.pix,
    'r90': u.pix, 'kron_radius': u.pix, 'semimajor_axis': u.pix, 'semiminor_axis': u.pix,
    'ellipticity': u.dimensionless_unscaled, 'orientation': u.deg, 'area': u.pix ** 2,
    'gini': u.dimensionless_unscaled, 'concentration': u.dimensionless_unscaled,
    'asymmetry': u.dimensionless_unscaled, 'snr': u.dimensionless_unscaled,
    'centre_offset': u.pix,
}

_DETECTION_SIZE = 192     # side of the block-averaged copy used for detection
_N_SIGMA = 1.5            # detection threshold above the sky, in sky noise
_MIN_PIXELS = 8           # smallest segment kept at detection resolution
_MAX_CENTRE_OFFSET = 0.2  # nearest segment farther than this fraction of the image: no galaxy


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
        if unit is None:
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
    """Block-average the last two axes by an integer factor (edges trimmed)."""
    if factor == 1:
        return image
    ny, nx = image.shape[-2] // factor * factor, image.shape[-1] // factor * factor
    trimmed = image[..., :ny, :nx]
    shape = trimmed.shape[:-2] + (ny // factor, factor, nx // factor, factor)
    return trimmed.reshape(shape).mean(axis=(-3, -1))


def _detect(image, n_sigma, mask=None):
    """Sky, noise and segments of a 2-D image; sky from pixels outside the sources."""
    _, sky, noise = sigma_clipped_stats(image, mask=mask, sigma=3.0, maxiters=5)
    if not noise > 0:
        noise = max(float(np.std(image)), 1e-6)
    smoothed = ndimage.gaussian_filter(image, 1.0)
    segm = detect_sources(smoothed, sky + n_sigma * noise, _MIN_PIXELS)
    return sky, noise, segm


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
    sky, noise, segm = _detect(det, n_sigma)
    if segm is not None:
        source_mask = ndimage.binary_dilation(segm.data > 0, iterations=2)
        if (~source_mask).sum() > 50:
            sky, noise, segm = _detect(det, n_sigma, mask=source_mask)
    measurement.update(_sky=sky, _noise=noise)
    if segm is None:
        return measurement

    # the central segment: the one under the target, else the nearest one
    iy, ix = int(np.clip(round(py), 0, det.shape[0] - 1)), int(np.clip(round(px), 0, det.shape[1] - 1))
    distance, (ry, rx) = ndimage.distance_transform_edt(segm.data == 0, return_indices=True)
    if distance[iy, ix] > _MAX_CENTRE_OFFSET * max(det.shape):
        return measurement
    label = int(segm.data[ry[iy, ix], rx[iy, ix]])
    central = segm.data == label

    cat = SourceCatalog(det - sky, SegmentationImage(central.astype(np.int32)))
    galaxy = np.where(central, det - sky, 0.0)
    xc, yc = float(cat.x_centroid[0]), float(cat.y_centroid[0])
    radii = _flux_radii(galaxy, xc, yc, (0.2, 0.5, 0.8, 0.9))
    flux = galaxy.sum()
    measurement.update(
        found=True,
        x_centroid=(xc + 0.5) * block - 0.5, y_centroid=(yc + 0.5) * block - 0.5,
        r20=radii[0] * block, r50=radii[1] * block, r80=radii[2] * block, r90=radii[3] * block,
        kron_radius=float(cat.kron_radius[0].value) * float(cat.semimajor_axis[0].value) * block,
        semimajor_axis=float(cat.semimajor_axis[0].value) * block,
        semiminor_axis=float(cat.semiminor_axis[0].value) * block,
        ellipticity=float(cat.ellipticity[0]), orientation=float(cat.orientation[0].to_value(u.deg)),
        area=float(cat.area[0].value) * block ** 2, gini=float(cat.gini[0]),
        concentration=5 * np.log10(radii[2] / radii[0]) if radii[0] > 0 else np.nan,
        asymmetry=_asymmetry(galaxy, xc, yc),
        snr=float(flux / (noise * np.sqrt(central.sum()))),
        centre_offset=float(np.hypot(xc - px, yc - py)) * block,
        _central=central, _foreign=(segm.data > 0) & ~central,
        _sky_pixels=(segm.data == 0),
    )
    return measurement


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
    if isolate and measurement['_foreign'].any():
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


def _fill_foreign(rgb, measurement, block, seed):
    """Replace pixels of unrelated sources with sky pixels drawn from the same image."""
    foreign = measurement['_foreign']
    # grow the masks a little: faint wings of stars lie outside their segments
    foreign = ndimage.binary_dilation(foreign, iterations=1) & ~measurement['_central']
    full = np.zeros(rgb.shape[1:], dtype=bool)
    up = np.repeat(np.repeat(foreign, block, axis=0), block, axis=1)
    full[:up.shape[0], :up.shape[1]] = up[:full.shape[0], :full.shape[1]]
    sky = np.repeat(np.repeat(measurement['_sky_pixels'], block, axis=0), block, axis=1)
    sky_full = np.zeros_like(full)
    sky_full[:sky.shape[0], :sky.shape[1]] = sky[:full.shape[0], :full.shape[1]]
    sky_idx = np.flatnonzero(sky_full)
    if sky_idx.size == 0:
        return rgb
    rng = np.random.default_rng(seed)
    target = np.flatnonzero(full)
    draw = sky_idx[rng.integers(0, sky_idx.size, target.size)]
    out = rgb.reshape(3, -1).copy()
    out[:, target] = out[:, draw]
    return out.reshape(rgb.shape)


def select_galaxy(measurement, *, min_r50=2.0, min_snr=10.0, max_centre_offset=None):
    """Decide whether a measured galaxy is resolved and bright enough for the database.

    Parameters
    ----------
    measurement : `GalaxyMeasurement`
        From `measure_galaxy`.
    min_r50 : float, optional
        Smallest half-light radius, in pixels of the measured image.
    min_snr : float, optional
        Smallest signal-to-noise ratio of the galaxy's segment.
    max_centre_offset : float, optional
        Largest distance in pixels between the target position and the galaxy's centroid.

    Returns
    -------
    accepted : bool
    reason : str
        Empty when accepted, else what failed, with the measured value.
    """
    if not measurement.get('found'):
        return False, 'no galaxy found near the target position'
    if not measurement['r50'] >= min_r50:
        return False, f'half-light radius {measurement["r50"]:.1f} pix is below the minimum {min_r50} pix'
    if not measurement['snr'] >= min_snr:
        return False, f'signal-to-noise {measurement["snr"]:.1f} is below the minimum {min_snr}'
    if max_centre_offset is not None and measurement['centre_offset'] > max_centre_offset:
        return False, (f'galaxy centroid lies {measurement["centre_offset"]:.1f} pix from the target, '
                       f'more than {max_centre_offset} pix')
    return True, ''
