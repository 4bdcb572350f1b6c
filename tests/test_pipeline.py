"""Tests of astro_galsim.pipeline (prepare_one / prepare) on real SDSS images."""
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.utils.exceptions import AstropyUserWarning

from astro_galsim.pipeline import DEFAULT_NORMALISATION, prepare, prepare_one

FITS = 'sdss_fits_cutouts_pawlikmorph/cutouts/sdsscutout_148.93658+0.8608237_rband.fits'
BAD_WCS = 'sdss_fits_cutouts_pawlikmorph/cutouts/sdsscutout_211.51-0.31_rband.fits'


def _read(path):
    from astro_galsim.io import read_image
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return read_image(path)


def test_prepare_one_fits_with_sky_target(shared_data):
    image = _read(shared_data / FITS)
    target = SkyCoord(148.93658 * u.deg, 0.8608237 * u.deg)
    array, record = prepare_one(image, target)
    x, y = image.wcs.world_to_pixel(target)
    size = DEFAULT_NORMALISATION['size']
    assert array.shape == (3, size, size)
    assert np.hypot(record['x_centroid'] - x, record['y_centroid'] - y) < 3
    assert record['pixel_scale'].to_value(u.arcsec) == pytest.approx(0.396, abs=0.002)
    assert record['found'] and 0 <= array.min() and array.max() <= 1 and array.max() > 0.9


def test_prepare_one_known_wrong_wcs_misses_the_target(shared_data):
    # this file's WCS puts the name's coordinates hundreds of arcsec off the galaxy
    # made by the older IDL cutout code: its pixels are also offset from the header's SKY
    image = _read(shared_data / BAD_WCS)
    with pytest.warns(AstropyUserWarning, match='header SKY'):
        array, record = prepare_one(image, SkyCoord(211.51 * u.deg, -0.31 * u.deg))
    with pytest.warns(AstropyUserWarning, match='header SKY'):
        centred, centred_record = prepare_one(image)
    assert centred_record['found'] and centred_record['accepted'] and centred.shape == (3, 64, 64)
    assert array is None and not record['found'] and not record['accepted']
    assert record['reason'] == 'no galaxy found near the target position'


def test_prepare_keeps_order_and_reports_failures(shared_data, tmp_path):
    jpeg = shared_data / 'sdss_gz1_eggochi/images/587722982271615079.jpg'
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg')
    arrays, table = prepare([jpeg, broken, jpeg])
    assert arrays.shape == (3, 3, 64, 64)
    assert table['accepted'][0] and not table['accepted'][1]
    assert 'broken.jpg' in table['reason'][1]
    assert np.array_equal(arrays[0], arrays[2]) and not arrays[1].any()
    assert table['r50'].unit == u.pix and table['centre_offset'][0].value < 10


def test_describe_in_workers_matches_prepare_then_encode(shared_data, tmp_path):
    # the vectors workers compute beside preparation are those of prepare + encode, in input order
    from astro_galsim.model import load_pretrained
    from astro_galsim.pipeline import describe
    paths = sorted((shared_data / 'sdss_gz1_eggochi/images').glob('*.jpg'))[:12]
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg')
    images = paths[:5] + [broken] + paths[5:]
    from astro_galsim import conf
    encoder = load_pretrained()
    arrays, table = prepare(images, normalisation=encoder.normalisation)
    # in float32 the arithmetic does not depend on the number of torch threads (bfloat16 on CPUs with
    # native support does, by up to about 1e-4: one thread in a worker, all of them here)
    with conf.set_temp('encoder_precision', 'float32'):
        expected = encoder.encode(arrays)
        one, table_one = describe(images, encoder)
        two, table_two = describe(images, encoder, workers=2)
    found = np.asarray(table['found'], bool)
    assert not found[5] and found.sum() >= 11
    assert np.isnan(one[5]).all() and np.isnan(two[5]).all()
    np.testing.assert_allclose(one[found], expected[found], atol=1e-6)
    np.testing.assert_allclose(two[found], expected[found], atol=1e-6)
    # in the default precision the vectors agree within bfloat16's rounding
    default, _ = describe(images, encoder, workers=2)
    np.testing.assert_allclose(default[found], expected[found], atol=2e-3)
    assert list(table_two['reason']) == list(table['reason'])
    assert np.array_equal(table_one['r50'], table['r50'], equal_nan=True)


def test_tiny_image_is_refused_as_too_small():
    # a 10 x 10 image cannot hold a galaxy and its sky: the reason says so, not "no galaxy found"
    array, record = _prepare_tiny()
    assert array is None and not record['accepted']
    assert 'too small' in record['reason'] and '10 x 10' in record['reason']


def _prepare_tiny():
    from astro_galsim.pipeline import prepare
    arrays, table = prepare([np.ones((10, 10), np.float32)])
    return (None if not arrays[0].any() else arrays[0]), {'accepted': bool(table['accepted'][0]),
                                                          'reason': str(table['reason'][0])}


def _worker_state():
    from astro_galsim import conf
    from astro_galsim.utils._encoders import encoder_loads
    return conf.num_threads, encoder_loads()


def test_pipeline_workers_keep_their_encoder_and_write_no_configuration():
    # a worker of the pipeline's pool keeps its encoder in the one per-process cache and runs
    # torch on one thread without writing the package configuration (it used to set conf.num_threads)
    from concurrent.futures import ProcessPoolExecutor
    from astro_galsim import conf, pipeline
    from astro_galsim.model import load_pretrained
    from astro_galsim.utils._encoders import encoder_key
    encoder = load_pretrained()
    with ProcessPoolExecutor(1, initializer=pipeline._start_worker, initargs=(encoder,)) as pool:
        threads, loads = pool.submit(_worker_state).result()
    assert threads == conf.num_threads == 0
    assert encoder_key(encoder) in loads
