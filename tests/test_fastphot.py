"""The fast equivalents in astro_galsim._fastphot give what photutils and astropy give, on real images."""
import numpy as np
import pytest
from astropy import units as u
from scipy import ndimage

from astro_galsim._fastphot import block_mean, clipped_stats, deblend_segment, dilate, label_segments, moment_shape
from astro_galsim.io import read_image
from astro_galsim.preprocessing import to_colour

MIN_PIXELS = 8  # the smallest segment measure_galaxy keeps


def _colour(path):
    return to_colour(read_image(path))


def _real_detection_images(shared_data, n=12):
    """(det, smoothed) pairs of real cutouts at detection resolution, as measure_galaxy makes them."""
    paths = sorted((shared_data / 'sdss_gz1_eggochi/images').glob('*.jpg'))[::200][:n]
    out = []
    for path in paths:
        rgb = _colour(path)
        block = max(1, int(np.ceil(max(rgb.shape[1:]) / 192)))
        det = block_mean(rgb.mean(axis=0), block)
        out.append((det, ndimage.gaussian_filter(det, 1.0)))
    return out


def test_clipped_stats_are_astropys_sigma_clipped_stats(shared_data):
    from astropy.stats import sigma_clipped_stats
    checked = 0
    for det, smoothed in _real_detection_images(shared_data):
        mask = ndimage.binary_dilation(smoothed > np.percentile(smoothed, 80), iterations=2)
        for image, m in ((det, None), (smoothed, None), (det, mask), (smoothed, mask)):
            _, median, std = sigma_clipped_stats(image, mask=m, sigma=3.0, maxiters=5)
            assert clipped_stats(image if m is None else image[~m]) == (median, std)
            checked += 1
    # heavy tails and few iterations, where the clipping stops at maxiters
    values = np.random.default_rng(2).standard_cauchy(5000).astype(np.float32)
    for maxiters in (1, 2, 5, 10):
        _, median, std = sigma_clipped_stats(values, sigma=2.5, maxiters=maxiters)
        assert clipped_stats(values, sigma=2.5, maxiters=maxiters) == (median, std)
    assert checked == 48


def test_block_mean_is_the_reshaped_mean():
    rgb = (np.random.default_rng(4).integers(0, 256, (3, 101, 97)) / 255).astype(np.float32)
    for factor in range(1, 10):
        ny, nx = 101 // factor * factor, 97 // factor * factor
        shape = (3, ny // factor, factor, nx // factor, factor)
        expected = rgb[:, :ny, :nx].reshape(shape).mean(axis=(-3, -1))
        assert np.array_equal(block_mean(rgb, factor), expected), factor
        assert np.array_equal(block_mean(rgb[0], factor), expected[0]), factor


def test_dilate_is_scipys_binary_dilation(shared_data):
    rng = np.random.default_rng(5)
    masks = [rng.random((40, 33)) < p for p in (0.01, 0.2, 0.6)] + [np.ones((5, 7), bool), np.zeros((9, 9), bool)]
    masks += [smoothed > np.percentile(smoothed, 85) for _, smoothed in _real_detection_images(shared_data, n=4)]
    edge = np.zeros((6, 6), bool)
    edge[0, 0] = edge[5, 3] = True   # pixels on the border grow only inwards
    for mask in masks + [edge]:
        for iterations in (1, 2, 3):
            assert np.array_equal(dilate(mask, iterations), ndimage.binary_dilation(mask, iterations=iterations))


def test_segments_and_shape_are_photutils_detect_sources_and_catalog(shared_data):
    from photutils.segmentation import SegmentationImage, SourceCatalog, detect_sources
    for det, smoothed in _real_detection_images(shared_data, n=8):
        threshold = np.float32(np.median(smoothed) + 3 * smoothed.std())
        labels = label_segments(smoothed, threshold, MIN_PIXELS)
        assert np.array_equal(labels, detect_sources(smoothed, threshold, MIN_PIXELS).data)
        central = labels == labels[labels.shape[0] // 2, labels.shape[1] // 2]
        image = det - np.median(det)
        cat = SourceCatalog(image, SegmentationImage(central.astype(np.int32)))
        shape = moment_shape(image, central)
        for name in ('x_centroid', 'y_centroid', 'semimajor_axis', 'semiminor_axis', 'ellipticity',
                     'orientation', 'area', 'gini', 'kron_radius'):
            value = float(np.ravel(u.Quantity(getattr(cat, name)).value)[0])
            assert shape[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
        only = moment_shape(image, central, shape_only=True)
        assert set(only) == set(shape) - {'area', 'gini', 'kron_radius'}
        assert all(only[name] == shape[name] for name in only)
    assert label_segments(np.zeros((20, 20), np.float32), 0.5, MIN_PIXELS) is None


def test_deblend_segment_is_photutils_deblend_sources(shared_data):
    from astropy.utils.exceptions import AstropyUserWarning
    from photutils.segmentation import SegmentationImage, deblend_sources

    def photutils_children(data, segment, **kwargs):
        return deblend_sources(data, SegmentationImage(segment.astype(np.int32)), MIN_PIXELS,
                               progress_bar=False, **kwargs).data

    # training-sample cutouts: large galaxies with knots, neighbours and stars on them
    paths = sorted((shared_data / 'sdss_galaxies_mikeedi').rglob('*.jpg'))[::500][:10]
    split = checked = 0
    for path in paths:
        rgb = _colour(path)
        det = block_mean(rgb.mean(axis=0), max(1, int(np.ceil(max(rgb.shape[1:]) / 192))))
        smoothed = ndimage.gaussian_filter(det, 1.0)
        sky, noise = clipped_stats(smoothed)
        labels = label_segments(smoothed, sky + 3 * noise, MIN_PIXELS)
        data = smoothed - clipped_stats(det)[0]   # positive on the segments, as measure_galaxy passes it
        areas = np.bincount(labels.ravel())
        for label in np.argsort(areas[1:])[::-1][:3] + 1:   # the three largest segments
            segment = labels == label
            for kwargs in (dict(n_levels=16, contrast=0.01), dict(n_levels=32, contrast=0.001)):
                expected = photutils_children(data, segment, **kwargs)
                children = deblend_segment(data, segment, MIN_PIXELS, **kwargs)
                if expected.max() < 2:
                    assert children is None
                else:
                    assert np.array_equal(children, expected)
                    split += 1
                checked += 1
    assert checked >= 40 and split >= 10, (checked, split)
    # a non-positive minimum: photutils changes mode and warns, and so does the equivalent
    segment = labels == np.argmax(areas[1:]) + 1
    low = smoothed - np.median(smoothed[segment])
    with pytest.warns(AstropyUserWarning, match='linear'):
        children = deblend_segment(low, segment, MIN_PIXELS)
    with pytest.warns(AstropyUserWarning, match='linear'):
        expected = photutils_children(low, segment)
    assert (children is None and expected.max() < 2) or np.array_equal(children, expected)
    flat = np.ones((20, 20), np.float32)
    assert deblend_segment(flat, flat > 0, MIN_PIXELS) is None


def test_gini_is_photutils_gini_without_importing_it():
    from photutils.morphology import gini
    from astro_galsim._fastphot import _gini
    rng = np.random.default_rng(5)
    for values in (rng.gamma(0.5, size=4000), rng.normal(size=333), np.array([np.nan, 2.0, np.inf, -1.0]),
                   np.array([3.0]), np.zeros(4), np.array([np.nan])):
        assert _gini(values) == gini(values) or (np.isnan(_gini(values)) and np.isnan(gini(values)))
