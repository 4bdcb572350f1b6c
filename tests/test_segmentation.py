"""Tests of astro_galsim.segmentation on synthetic and real SDSS images."""
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import NDData
from astropy.table import Table
from scipy import ndimage

from astro_galsim.io import read_image
from astro_galsim.preprocessing import to_colour
from astro_galsim.segmentation import (MEASUREMENT_COLUMNS, SELECTION_DEFAULTS, measure_galaxy,
                                       measurements_table, normalise_galaxy, select_galaxy)


def _disc(n=121, h=8.0, q=0.5, angle=0.0, centre=None, noise=0.01, seed=0):
    """A noisy exponential disc as a (3, n, n) colour image in [0, 1]."""
    y, x = np.mgrid[:n, :n]
    xc, yc = centre if centre is not None else ((n - 1) / 2, (n - 1) / 2)
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    u_, v_ = (x - xc) * c + (y - yc) * s, -(x - xc) * s + (y - yc) * c
    image = np.exp(-np.hypot(u_ / h, v_ / (h * q)))
    image = image + np.random.default_rng(seed).normal(0, noise, image.shape)
    return np.clip(image, 0, 1)[None].repeat(3, 0).astype(np.float32)


def _crop(rgb, frac):
    n = rgb.shape[1]
    k = int(round(n * frac))
    o = (n - k) // 2
    return rgb[:, o:o + k, o:o + k]


def _colour(path):
    return to_colour(read_image(path))


def _min_dihedral_difference(a, b):
    """Smallest mean |a - b| over the 8 flips / quarter turns of a."""
    views = [np.rot90(v, q, axes=(1, 2)) for v in (a, a[:, :, ::-1]) for q in range(4)]
    return min(float(np.abs(v - b).mean()) for v in views)


# ---------------------------------------------------------------- synthetic galaxies

def test_exponential_disc_radii_and_shape():
    # face-on exponential disc: r50 = 1.678 h; an inclined one keeps its orientation
    m = measure_galaxy(_disc(h=6.0, q=1.0, noise=0.003))
    assert m['found']
    assert m['r50'] == pytest.approx(1.678 * 6.0, rel=0.08)
    assert m['ellipticity'] < 0.1
    tilted = measure_galaxy(_disc(h=6.0, q=0.4, angle=30.0, noise=0.003))
    assert tilted['ellipticity'] == pytest.approx(0.6, abs=0.1)
    assert tilted['orientation'] % 180 == pytest.approx(30.0, abs=3.0)
    assert tilted['gini'] > 0.3 and tilted['asymmetry'] < 0.1


def test_empty_field_finds_nothing_without_warning():
    rgb = np.random.default_rng(1).normal(0.1, 0.01, (3, 80, 80)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        m = measure_galaxy(rgb)
    assert not m['found']
    assert select_galaxy(m) == (False, 'no galaxy found near the target position')
    with pytest.raises(ValueError, match='no central galaxy'):
        normalise_galaxy(rgb, m)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r'\(3, ny, nx\)'):
        measure_galaxy(np.zeros((50, 50)))


def test_target_position_chooses_the_galaxy_not_the_brightest():
    rgb = np.maximum(_disc(n=161, h=5.0, q=1.0, centre=(50, 80)), _disc(n=161, h=5.0, q=1.0, centre=(115, 80)) * 0.5)
    left = measure_galaxy(rgb, (50, 80))
    right = measure_galaxy(rgb, (115, 80))
    assert left['x_centroid'] == pytest.approx(50, abs=2)
    assert right['x_centroid'] == pytest.approx(115, abs=2)


def test_target_on_sky_prefers_large_galaxy_over_nearer_speck():
    rgb = _disc(n=161, h=7.0, q=1.0, centre=(60, 80), noise=0.005)
    rgb[:, 78:81, 106:109] = 0.6  # a small bright speck nearer the target than the galaxy's edge
    m = measure_galaxy(rgb, (101, 80))
    assert m['found']
    assert m['x_centroid'] == pytest.approx(60, abs=3)


def test_normalisation_scales_to_half_light_radius():
    rgb = _disc(h=5.0, q=1.0, noise=0.003)
    m = measure_galaxy(rgb)
    out = normalise_galaxy(rgb, m, size=64, radius_scale=3.0, rotate=False)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    # r50 spans size / (2 * radius_scale) = 10.7 output pixels; the frame cuts the disc at
    # 3 r50 (the outer 10% of its light), which brings the measured r50 down by about 15%
    m_out = measure_galaxy(out)
    assert 0.75 * 64 / 6 < m_out['r50'] < 64 / 6
    assert m_out['x_centroid'] == pytest.approx(31.5, abs=0.5)


# ---------------------------------------------------------------- real failure cases

def test_bright_stars_merged_with_small_galaxy_are_split_off(shared_data):
    # a small edge-on galaxy whose segment joins two saturated stars: the stars once
    # pulled the centroid 126 px off the galaxy
    rgb = _colour(shared_data / 'sdss_gz1_eggochi/images/587722982271615079.jpg')
    m = measure_galaxy(rgb)
    assert m['found']
    assert m['centre_offset'] < 10
    assert m['r50'] < 40 and m['n_stars'] >= 1
    assert m['ellipticity'] > 0.5  # the edge-on galaxy, not a round star


@pytest.mark.parametrize('objid', ['587732771051274364', '587727865646415929', '587739505010999352'])
def test_bright_star_next_to_galaxy_does_not_drag_centroid(shared_data, objid):
    path = next((shared_data / 'sdss_galaxies_mikeedi/images').glob(f'*/{objid}.jpg'))
    m = measure_galaxy(_colour(path))
    assert m['found'] and m['n_stars'] >= 1
    assert m['centre_offset'] < 0.5 * m['r50']


def test_star_next_to_galaxy_is_gone_after_isolation(shared_data):
    path = next((shared_data / 'sdss_galaxies_mikeedi/images').glob('*/587727865646415929.jpg'))
    rgb = _colour(path)
    m = measure_galaxy(rgb)
    # the saturated star: the brightest pixel under the star mask, at full resolution
    block = m.segmentation.block
    stars = np.repeat(np.repeat(m.segmentation.stars, block, 0), block, 1)[:rgb.shape[1], :rgb.shape[2]]
    grey = rgb.mean(axis=0)[:stars.shape[0], :stars.shape[1]]
    sy, sx = np.unravel_index(np.argmax(np.where(stars, grey, 0)), grey.shape)
    assert grey[sy, sx] > 0.8
    size, scale = 128, 8.0
    step = 2 * scale * m['r50'] / size
    ox = int(round((sx - m['x_centroid']) / step + (size - 1) / 2))
    oy = int(round((sy - m['y_centroid']) / step + (size - 1) / 2))
    assert 2 <= ox < size - 2 and 2 <= oy < size - 2
    kept = normalise_galaxy(rgb, m, size=size, radius_scale=scale, scale='r50', rotate=False, isolate=False)
    cleaned = normalise_galaxy(rgb, m, size=size, radius_scale=scale, scale='r50', rotate=False, isolate=True)
    assert kept[:, oy - 1:oy + 2, ox - 1:ox + 2].mean() > 0.5
    assert cleaned[:, oy - 1:oy + 2, ox - 1:ox + 2].mean() < 0.15


# ---------------------------------------------------------------- normalisation invariance on real galaxies

# GZ1 galaxies (423 px cutouts) small enough to survive the tightest crop below
_GZ1_INVARIANCE = ['587727179002871969', '587727180620562518', '587727212269601769', '587727213881918027',
                   '587727220861960231', '587727225158041793', '587727225694715964', '587727227842068523']


@pytest.fixture(scope='module')
def invariance_set(shared_data):
    """(full image, reference crop, reference normalisation, reference measurement) per galaxy."""
    out = []
    for objid in _GZ1_INVARIANCE:
        full = _colour(shared_data / f'sdss_gz1_eggochi/images/{objid}.jpg')
        ref_rgb = _crop(full, 2 / 3)
        m = measure_galaxy(ref_rgb)
        out.append((full, ref_rgb, normalise_galaxy(ref_rgb, m), m))
    return out


def _check(invariance_set, transform, factor, tolerance, scale_tolerance=0.10):
    """Normalised inputs (mean |difference| relative to the reference's mean level) and scale radii."""
    differences, scale_changes = [], []
    for full, ref_rgb, ref, m_ref in invariance_set:
        rgb = transform(full, ref_rgb)
        m = measure_galaxy(rgb)
        assert m['found']
        differences.append(_min_dihedral_difference(normalise_galaxy(rgb, m), ref) / ref.mean())
        scale_changes.append(abs(m['scale_radius'] / factor / m_ref['scale_radius'] - 1))
    assert np.mean(differences) < tolerance, differences
    # all but one within the tolerance (the target: 95% within 10%), none wildly off
    assert sorted(scale_changes)[-2] < scale_tolerance and max(scale_changes) < 2 * scale_tolerance, scale_changes
    return differences, scale_changes


# the relative tolerances: the r50 normalisation of earlier versions measured 0.26 (wider), 0.39
# (tighter) and 0.16 (x0.7) here, the isophotal scale 0.12-0.15, 0.11-0.14 and 0.08-0.10

def test_wider_field_normalises_the_same(invariance_set):
    # 150% of the field: the full 423 px cutout against its central two thirds
    _check(invariance_set, lambda full, ref: full, 1.0, tolerance=0.2)


def test_tighter_field_normalises_the_same(invariance_set):
    # 60% of the field
    _check(invariance_set, lambda full, ref: _crop(ref, 0.6), 1.0, tolerance=0.2)


@pytest.mark.parametrize('factor', [0.7, 1.5])
def test_resampled_image_normalises_the_same(invariance_set, factor):
    def zoom(full, ref):
        return np.clip(ndimage.zoom(ref, (1, factor, factor), order=1), 0, 1)
    _check(invariance_set, zoom, factor, tolerance=0.13)


def test_rotated_galaxy_normalises_the_same_up_to_flips(invariance_set):
    def rotate(full, ref):
        turned = ndimage.rotate(full, 30, axes=(2, 1), reshape=False, order=1)
        return _crop(np.clip(turned, 0, 1), 2 / 3)
    differences, _ = _check(invariance_set, rotate, 1.0, tolerance=0.12)
    assert max(differences) < 0.25


# ---------------------------------------------------------------- the hard real case: galaxies that fill their frame

# training-sample galaxies (tight cutouts of large galaxies) chosen by a fixed stride, not by result
_FILLING = 12


@pytest.fixture(scope='module')
def filling_set(shared_data):
    paths = sorted((shared_data / 'sdss_galaxies_mikeedi/images/train').glob('*.jpg'))[::500][:_FILLING]
    return [_colour(path) for path in paths]


@pytest.mark.parametrize('fraction', [0.8, 0.6])
def test_galaxy_overflowing_its_cutout_is_scaled_like_its_wider_cutout(filling_set, fraction):
    # the training sample's own cutouts are tight: cut to 80% and 60% of the side, the galaxy
    # overflows the frame, and its scale must still be that of the whole cutout (the half-light
    # radius of the segment shrinks towards the bulge: it is measured beside as the contrast)
    scale_ok, r50_ok, differences = 0, 0, []
    for rgb in filling_set:
        m_full = measure_galaxy(rgb)
        tight = _crop(rgb, fraction)
        m = measure_galaxy(tight)
        assert m['found']
        scale_ok += abs(m['scale_radius'] / m_full['scale_radius'] - 1) < 0.1
        r50_ok += abs(m['r50'] / m_full['r50'] - 1) < 0.1
        ref = normalise_galaxy(rgb, m_full)
        differences.append(_min_dihedral_difference(normalise_galaxy(tight, m), ref) / ref.mean())
    assert scale_ok >= _FILLING - 1, scale_ok
    assert np.median(differences) < 0.15, differences
    if fraction == 0.6:
        assert r50_ok < scale_ok   # what the half-light radius would have done


@pytest.mark.parametrize('fraction', [0.6, 0.45])
def test_field_beyond_the_frame_continues_the_galaxy(filling_set, fraction):
    # cut again, the 1.5-scale-radius field runs off the frame; left black it made the
    # normalised input of the worst of the 12 differ by 0.34 (60%) and 0.52 (45%) of its mean
    # level from the whole cutout's; continued with the galaxy's mean profile, by 0.16 and 0.17
    differences = []
    for rgb in filling_set:
        tight = _crop(rgb, fraction)
        m = measure_galaxy(tight)
        if np.isfinite(m['scale_radius']):
            ref = normalise_galaxy(rgb, measure_galaxy(rgb))
            differences.append(_min_dihedral_difference(normalise_galaxy(tight, m), ref) / ref.mean())
    assert len(differences) >= _FILLING - 1
    assert max(differences) < 0.2, differences


def test_galaxy_far_beyond_its_cutout_is_rejected_with_the_reason(filling_set):
    rgb = _crop(filling_set[0], 0.2)     # a fifth of the side: mostly the bulge
    m = measure_galaxy(rgb)
    accepted, reason = select_galaxy(m)
    assert m['truncated']
    if not np.isfinite(m['scale_radius']):
        assert not accepted and 'overflows its cutout' in reason
        with pytest.raises(ValueError, match='overflows its cutout'):
            normalise_galaxy(rgb, m)
    else:   # extrapolated: the scale still near that of the whole galaxy, not that of its bulge
        full = measure_galaxy(filling_set[0])
        assert m['scale_radius'] > 0.75 * full['scale_radius'] and m['r50'] < 0.6 * full['r50']


@pytest.mark.filterwarnings('ignore:The following header keyword is invalid')
# the older IDL cutouts among the pairs have pixels offset from their header's SKY, which
# warns (test_preprocessing.py checks that warning)
@pytest.mark.filterwarnings('ignore:header SKY:astropy.utils.exceptions.AstropyUserWarning')
def test_fits_standard_and_large_cutouts_agree_on_the_scale(shared_data):
    # real framing pairs: DR7 r-band cutouts of 141 px and up to 231 px of the same galaxy;
    # the large ones carry no calibration (scaled by their noise), the standard ones FLUX20
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    std = {row['name_ra']: row['path'] for row in index if row['kind'] == 'standard'}
    pairs = [(folder / std[row['name_ra']], folder / row['path']) for row in index
             if row['kind'] == 'large' and row['name_ra'] in std][::6]
    agree = 0
    for paths in pairs:
        radii = []
        for path in paths:
            image = read_image(path)
            m = measure_galaxy(to_colour(image))
            radii.append(m['scale_radius'] * abs(image.wcs.pixel_scale_matrix[0, 0]))
        agree += abs(radii[1] / radii[0] - 1) < 0.1
    assert agree >= 0.8 * len(pairs), (agree, len(pairs))


@pytest.mark.filterwarnings('ignore:The following header keyword is invalid')
@pytest.mark.filterwarnings('ignore:header SKY:astropy.utils.exceptions.AstropyUserWarning')
def test_fits_pairs_with_one_calibration_agree_on_the_scale(shared_data):
    # the large cutouts are cut from the standard ones' fpC frames (the same counts) but their
    # header lost SOFTBIAS, SKY and FLUX20; given those back, only the framing differs, and the
    # isophotal scale must not depend on it (measured: 114 of 119 within 10 per cent; 106 as given)
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    std = {row['name_ra']: row['path'] for row in index
           if row['kind'] == 'standard' and row['path'].startswith('cutouts/')}
    pairs = [(folder / std[row['name_ra']], folder / row['path']) for row in index
             if row['kind'] == 'large' and row['name_ra'] in std]
    assert len(pairs) == 119
    agree = 0
    for standard_path, large_path in pairs:
        standard, large = read_image(standard_path), read_image(large_path)
        header = large.meta['header'].copy()
        for key in ('SOFTBIAS', 'SKY', 'FLUX20', 'FILTER'):
            header[key] = standard.meta['header'][key]
        large = NDData(large.data, wcs=large.wcs, meta={**large.meta, 'header': header})
        radii = [measure_galaxy(to_colour(image))['scale_radius'] * abs(image.wcs.pixel_scale_matrix[0, 0])
                 for image in (standard, large)]
        agree += abs(radii[0] / radii[1] - 1) <= 0.1
    assert agree >= 0.93 * len(pairs), agree


@pytest.mark.parametrize('objid, why', [
    ('588017702384238681', 'star'),                 # a saturated star with spikes, offset from the centre
    ('587726033861148751', 'star'),
    ('587737825678590186', 'trail'),                # a satellite trail across an empty frame
    ('587741709421903888', 'trail'),
])
def test_stars_and_trails_are_rejected_with_their_reason(shared_data, objid, why):
    from astro_galsim.pipeline import prepare_one
    _, record = prepare_one(shared_data / f'sdss_gz1_eggochi/images/{objid}.jpg')
    assert record['found'] and not record['accepted']
    assert why in record['reason']


# ---------------------------------------------------------------- found fractions on real sets

@pytest.mark.filterwarnings('ignore:The following header keyword is invalid')
def test_central_galaxy_found_in_fits_cutouts(shared_data):
    from astropy.coordinates import SkyCoord
    index = Table.read(shared_data / 'sdss_fits_cutouts_pawlikmorph/index.csv', format='ascii.csv')
    index = index[np.asarray(index['wcs_consistent_with_name']).astype(str) == 'True']
    rows = index[::3]  # 80 of the 239 files with a good WCS
    found = 0
    for row in rows:
        image = read_image(shared_data / 'sdss_fits_cutouts_pawlikmorph' / row['path'])
        x, y = image.wcs.world_to_pixel(SkyCoord(row['name_ra'] * u.deg, row['name_dec'] * u.deg))
        m = measure_galaxy(to_colour(image), (float(x), float(y)))
        found += bool(m['found'] and m['centre_offset'] < max(5.0, m['r50']))
    assert found / len(rows) >= 0.95


def test_central_galaxy_found_in_jpeg_cutouts(shared_data):
    paths = sorted((shared_data / 'sdss_gz1_eggochi/images').glob('*.jpg'))[::25][:100]
    found = [measure_galaxy(_colour(p)) for p in paths]
    ok = [m['found'] and m['centre_offset'] < max(5.0, m['r50']) for m in found]
    assert len(paths) == 100 and np.mean(ok) >= 0.95


# ---------------------------------------------------------------- table and selection

def test_measurements_table_units_and_arcsec():
    m = measure_galaxy(_disc(h=5.0))
    table = measurements_table([m, {'found': False}], pixel_scale=[0.396, 0.396] * u.arcsec)
    assert set(MEASUREMENT_COLUMNS) <= set(table.colnames)
    assert table['r50'].unit == u.pix and table['orientation'].unit == u.deg
    assert table['r50_arcsec'][0].to_value(u.arcsec) == pytest.approx(m['r50'] * 0.396)
    assert bool(table['found'][0]) and not table['found'][1] and np.isnan(table['r50'][1].value)
    assert table['n_stars'].dtype.kind == 'i'


def test_smoothness_is_higher_for_clumpy_galaxy():
    smooth = _disc(h=8.0, q=1.0, noise=0.003)
    clumpy = smooth.copy()
    rng = np.random.default_rng(3)
    for _ in range(12):
        y, x = rng.integers(40, 80, 2)
        clumpy[:, y - 1:y + 2, x - 1:x + 2] += 0.3
    s0 = measure_galaxy(smooth)['smoothness']
    s1 = measure_galaxy(np.clip(clumpy, 0, 1))['smoothness']
    assert s1 > s0 + 0.02


def test_select_galaxy_reports_every_failed_test_with_values():
    m = {'found': True, 'r50': 3.2, 'snr': 8.5, 'gini': 0.03, 'smoothness': 0.01, 'centre_offset': 30.0}
    accepted, reason = select_galaxy(m, min_smoothness=0.02, max_centre_offset=10)
    assert not accepted
    for text in ('3.2 pix', '8.5', '0.030', '0.010', '30.0 pix'):
        assert text in reason
    assert select_galaxy(m, min_r50=None, min_snr=None, min_gini=None) == (True, '')


def test_select_galaxy_angular_limits():
    m = {'found': True, 'r50': 5.0, 'snr': 100.0, 'gini': 0.4, 'centre_offset': 0.0}
    assert select_galaxy(m, min_r50=1.9 * u.arcsec, pixel_scale=0.396 * u.arcsec / u.pix)[0]
    assert not select_galaxy(m, min_r50=2.1 * u.arcsec, pixel_scale=0.396 * u.arcsec)[0]
    with pytest.raises(ValueError, match='pixel scale'):
        select_galaxy(m, min_r50=2 * u.arcsec)
    with pytest.raises(ValueError, match='min_r50'):
        select_galaxy(m, min_r50=2 * u.kg)


def test_selection_defaults_accept_most_of_the_training_sample(shared_data):
    # the original work's sample was chosen for large visible radius and perceptible structure
    index = Table.read(shared_data / 'sdss_galaxies_mikeedi/index.csv', format='ascii.csv')
    paths = [shared_data / 'sdss_galaxies_mikeedi' / p for p in index['path'][::75]]
    accepted = [select_galaxy(measure_galaxy(_colour(p)))[0] for p in paths]
    assert len(paths) == 101 and np.mean(accepted) >= 0.93
    # the smallest accepted galaxy is set by the resolution, not by the training sample's pixels
    assert SELECTION_DEFAULTS['min_r50'] == 'seeing'


def test_resolution_limit_is_the_seeing_in_arcsec():
    m = {'found': True, 'r50': 3.0, 'snr': 100.0, 'gini': 0.4, 'centre_offset': 0.0}
    # SDSS: 3 px at 0.396"/px is 1.19", below the 1.4" seeing
    accepted, reason = select_galaxy(m, pixel_scale=0.396 * u.arcsec)
    assert not accepted and '1.19"' in reason and 'seeing FWHM 1.40"' in reason and 'not resolved' in reason
    # at HSC's 0.168"/px and 0.7" seeing, 3 px (0.50") are not resolved and 4.5 px (0.76") are
    assert not select_galaxy(m, pixel_scale=0.168 * u.arcsec, seeing=0.7 * u.arcsec)[0]
    assert select_galaxy(dict(m, r50=4.5), pixel_scale=0.168 * u.arcsec, seeing=0.7 * u.arcsec)[0]
    # and 8.6 px at SDSS's scale (refused by the old 10-pixel minimum) is well resolved
    assert select_galaxy(dict(m, r50=8.6), pixel_scale=0.396 * u.arcsec)[0]
    # never fewer than 2 pixels, whatever the scale
    assert not select_galaxy(dict(m, r50=1.9), pixel_scale=2 * u.arcsec, seeing=1 * u.arcsec)[0]
    with pytest.raises(ValueError, match="'seeing'"):
        select_galaxy(m, min_r50='psf')


def test_native_resolution_sdss_images_are_accepted(shared_data):
    # 96-pixel SkyServer JPEGs at SDSS's native 0.396"/px: ordinary galaxies a position query fetches
    folder = shared_data / 'galaxy_cruise_interacting'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    index = index[index['split'] == 'test'][::2]
    from astro_galsim.pipeline import prepare
    _, table = prepare([read_image(folder / p, survey='sdss') for p in index['sdss_file']])
    assert len(table) == 104 and np.mean(table['accepted']) >= 0.95, list(table['reason'])
    assert np.allclose(table['r50_arcsec'].to_value(u.arcsec), table['r50'].value * 0.396, equal_nan=True)


def test_hsc_and_sdss_images_of_a_galaxy_agree_on_its_scale(shared_data):
    # HSC colour images render a surface brightness much brighter than SDSS's: its tone curve
    # brings them to SDSS's, so that the isophotal scale is the galaxy's, not the survey's
    folder = shared_data / 'galaxy_cruise_interacting'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    index = index[index['split'] == 'test'][1::4]
    from astro_galsim.pipeline import prepare
    _, sdss = prepare([read_image(folder / p, survey='sdss') for p in index['sdss_file']])
    _, hsc = prepare([read_image(folder / p, survey='hsc') for p in index['hsc_file']])
    ratio = (hsc['scale_radius_arcsec'] / sdss['scale_radius_arcsec']).value
    assert len(ratio) == 52 and np.mean(np.abs(np.log(ratio)) < np.log(1.2)) >= 0.9
    # as SDSS-rendered images they disagree (the old behaviour): the survey matters
    _, untoned = prepare([read_image(folder / p) for p in index['hsc_file']])
    ratio = untoned['scale_radius'].value * 0.168 / sdss['scale_radius_arcsec'].value
    assert np.median(ratio) > 1.5


def test_spiked_stars_of_the_hubble_deep_field_are_rejected_in_its_own_stretch():
    # HST colour stretch: galaxy cores saturate too, so the SDSS peak test is off; the round,
    # concentrated, saturated point sources (HDF-3 and HDF-18, stars with diffraction spikes) are not galaxies
    from astro_galsim.demo import hubble_deep_field_cutouts
    from astro_galsim.pipeline import prepare
    cutouts = hubble_deep_field_cutouts(n=20)
    _, table = prepare(cutouts, selection={'min_r50': 4 * u.pix})
    reason = {c.meta['objid']: str(r) for c, r in zip(cutouts, table['reason'])}
    assert 'a star' in reason['HDF-3'] and 'point source' in reason['HDF-3']
    assert reason['HDF-1'] == ''      # a giant elliptical with a saturated core stays


def test_beyond_the_frame_too_few_pixels_for_a_profile_stays_black():
    # a tiny, very elongated block-averaged image has no annulus of 8 pixels: nothing to continue
    from astro_galsim.normalisation import _outskirts
    model = _outskirts(np.ones((3, 4, 4), np.float32), 1.5, 1.5, 0.95, 0.3, np.eye(2) * 0.1, np.zeros(2), 8)
    assert model.shape == (3, 8, 8) and not model.any()
