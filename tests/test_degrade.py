"""Degraded and re-rendered copies of real SDSS and HSC colour images (`astro_galsim.degrade`)."""
import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import NDData

from astro_galsim import read_image
from astro_galsim.degrade import degrade, rerender, sdss_surface_brightness, stretch
from astro_galsim.preprocessing import sdss_asinh_rgb

TRAINING_IMAGE = 'sdss_galaxies_mikeedi/images/train/587722981740314629.jpg'
CRUISE = 'galaxy_cruise_interacting/{}/343.59856426_2.44226511.jpg'


def _grey_border(data, width=6):
    grey = np.asarray(data, dtype=float).mean(axis=0)
    return np.concatenate([grey[:width].ravel(), grey[-width:].ravel(), grey[:, :width].ravel(),
                           grey[:, -width:].ravel()])


def test_surface_brightness_inverts_the_sdss_stretch():
    rng = np.random.default_rng(1)
    flux = rng.gamma(0.5, 0.3, size=(3, 20, 20))
    rgb = sdss_asinh_rgb(flux, ('i', 'r', 'g'))
    unsaturated = (rgb < 1).all(axis=0)
    assert np.allclose(sdss_surface_brightness(rgb)[:, unsaturated], flux[:, unsaturated], rtol=1e-4, atol=1e-6)
    assert np.allclose(stretch(flux), rgb, atol=1e-6)


def test_degrade_moves_a_real_galaxy_three_times_further(shared_data):
    image = read_image(shared_data / TRAINING_IMAGE)
    far = degrade(image, shrink=3, noise=None, rng=0)
    assert far.data.dtype == np.uint8
    assert far.data.shape[1:] == tuple(round(n / 3) for n in image.data.shape[1:])
    assert far.meta['pixel_scale'] == 0.396 * u.arcsec and far.meta['seeing'] == 1.4 * u.arcsec
    assert far.meta['survey'] == 'sdss' and far.meta['kind'] == 'colour'
    # the same surface brightness on a third of the side: the summed brightness falls ninefold
    before = sdss_surface_brightness(image.data / 255).sum()
    after = sdss_surface_brightness(far.data / 255).sum()
    assert after * 9 == pytest.approx(before, rel=0.1)


def test_degrade_never_sharpens_and_adds_noise_only_up_to_the_target(shared_data):
    image = read_image(shared_data / CRUISE.format('sdss'), survey='sdss')
    # the target seeing and pixels are the image's own: nothing to add, the image comes back
    same = degrade(image, seeing=0.8 * u.arcsec, noise=None)
    assert np.abs(same.data.astype(int) - image.data).max() <= 1
    assert same.meta['seeing'] == 1.4 * u.arcsec
    quiet = degrade(image, rng=0)
    noisy = degrade(image, noise=0.05, rng=0)
    assert np.percentile(_grey_border(noisy.data), 90) > np.percentile(_grey_border(quiet.data), 90) + 5
    # the default noise is what the SDSS JPEGs show: the sky keeps their grey levels
    assert np.median(_grey_border(quiet.data)) == pytest.approx(np.median(_grey_border(image.data)), abs=3)


def test_degrade_brings_an_hsc_image_to_sdss_resolution(shared_data):
    hsc = read_image(shared_data / CRUISE.format('hsc'), survey='hsc')
    sdss = read_image(shared_data / CRUISE.format('sdss'), survey='sdss')
    degraded = degrade(hsc, shape=(96, 96), rng=0)
    assert degraded.data.shape == sdss.data.shape
    # HSC's grey sky is gone (its tone curve maps it onto SDSS's stretch)
    assert np.median(_grey_border(degraded.data)) < np.median(_grey_border(hsc.data)) - 10


def test_degrade_pads_with_the_sky():
    galaxy = np.zeros((3, 40, 40))
    galaxy[:, 18:22, 18:22] = 0.5
    padded = degrade(galaxy, shape=(64, 50), noise=None)
    assert padded.data.shape == (3, 64, 50)
    assert padded.data[:, 0, 0].max() == 0 and padded.data[:, 32, 25].min() > 0


def test_rerender_changes_only_the_rendering(shared_data):
    image = read_image(shared_data / TRAINING_IMAGE)
    assert np.abs(rerender(image).data.astype(int) - image.data).max() <= 1
    bluer = rerender(image, nonlinearity=2.25, band_gains=(1.1, 1.1, 1.6))
    centre = (slice(None), slice(90, 105), slice(90, 105))
    ratio = bluer.data[centre].astype(float).mean(axis=(1, 2)) / image.data[centre].astype(float).mean(axis=(1, 2))
    assert ratio[2] > ratio[0] > 1


@pytest.mark.parametrize('kwargs, message', [({'shrink': 0.5}, 'shrink=0.5'),
                                             ({'noise': -1}, 'noise=-1'),
                                             ({'seeing': -1 * u.arcsec}, 'must be positive')])
def test_degrade_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        degrade(np.zeros((3, 32, 32)), **kwargs)


def test_degrade_refuses_what_is_not_a_colour_image():
    with pytest.raises(ValueError, match='not a colour image'):
        degrade(np.zeros((32, 32)))
    with pytest.raises(ValueError, match='not display values'):
        degrade(NDData(np.full((3, 32, 32), 300.0)))
    with pytest.raises(ValueError, match='three'):
        rerender(np.zeros((3, 32, 32)), band_gains=(1, 2))


def test_rerender_leaves_an_unknown_pixel_scale_unknown(shared_data):
    image = read_image(shared_data / TRAINING_IMAGE)
    assert 'pixel_scale' not in rerender(image).meta
    # a survey's scale is known, and kept
    assert rerender(read_image(shared_data / CRUISE.format('sdss'), survey='sdss')).meta['pixel_scale'] == 0.396 * u.arcsec
