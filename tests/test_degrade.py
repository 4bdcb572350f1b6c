"""Physical degradation of galaxy images (astro_galsim.degrade)."""
import numpy as np
from astropy import units as u
from astropy.table import Table

from astro_galsim.degrade import colour_to_flux, degrade, flux_to_colour
from astro_galsim.io import read_image
from astro_galsim.pipeline import prepare_one
from astro_galsim.preprocessing import sdss_asinh_rgb


def test_colour_to_flux_inverts_the_sdss_stretch():
    rng = np.random.default_rng(1)
    flux = rng.uniform(0, 0.5, (3, 8, 8))
    rgb = sdss_asinh_rgb(flux, ('i', 'r', 'g'))
    weights = np.array([2.34, 3.05, 4.22])[:, None, None]   # SDSS_BAND_WEIGHTS of i, r, g
    assert np.allclose(colour_to_flux(rgb), flux * weights, rtol=2e-3, atol=1e-5)
    assert np.allclose(flux_to_colour(colour_to_flux(rgb)), rgb, atol=1e-5)


def test_a_copy_is_never_sharper_than_its_source():
    point = np.zeros((3, 64, 64))
    point[:, 32, 32] = 0.9
    same = degrade(point, seeing=0.7 * u.arcsec, source_seeing=1.4 * u.arcsec, noise=0)
    assert np.array_equal(same.data, np.round(np.clip(point, 0, 1) * 255).astype(np.uint8))
    wider = degrade(point, seeing=2.8 * u.arcsec, source_seeing=1.4 * u.arcsec, noise=0)
    assert wider.data[:, 32, 32].max() < 200 and wider.data[:, 32, 34].max() > 0


def test_a_galaxy_moved_three_times_further_keeps_its_scale(shared_data):
    # the isophotal scale radius of the copy, in the source's angles, is the source's
    folder = shared_data / 'sdss_galaxies_mikeedi'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    ratios = []
    for path in index['path'][:12]:
        image = read_image(folder / path)
        copy = degrade(image, shrink=3, source_pixel_scale=0.4 * u.arcsec)
        _, source = prepare_one(image)
        _, seen = prepare_one(copy)
        assert seen['accepted'], seen['reason']
        ratios.append(seen['scale_radius'] * 0.396 * 3 / (source['scale_radius'] * 0.4))
    assert np.all(np.abs(np.log(ratios)) < np.log(1.15)), ratios
