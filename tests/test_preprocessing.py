import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import NDData

from astro_galsim import read_image
from astro_galsim.preprocessing import SDSS_BAND_WEIGHTS, calibrate_counts, sdss_asinh_rgb, to_colour


def test_jpeg_is_scaled_not_restretched(shared_data):
    img = read_image(shared_data / 'sdss_gz1_eggochi' / 'images' / '587722952767439450.jpg')
    rgb = to_colour(img)
    np.testing.assert_allclose(rgb, img.data / 255.0, atol=1e-6)


def test_calibrate_counts_twentieth_magnitude():
    # a source of FLUX20 counts is 20 mag, i.e. 10 nanomaggies, above a flat sky
    header = fits.Header({'FLUX20': 2000.0, 'SOFTBIAS': 1000})
    data = np.full((51, 51), 1000 + 150.0)
    data[25, 25] += 2000.0
    flux = calibrate_counts(data, header)
    assert flux.sum() == pytest.approx(10.0, rel=1e-3)
    assert np.median(flux) == pytest.approx(0.0, abs=1e-6)


def test_calibrate_rejects_bad_flux20():
    with pytest.raises(ValueError, match='FLUX20'):
        calibrate_counts(np.ones((5, 5)), fits.Header({'FLUX20': 0.0}))


def test_asinh_keeps_colour_ratios_and_order():
    flux = np.zeros((3, 1, 4), dtype=np.float32)
    flux[:, 0, :] = np.array([[0.01, 0.1, 0.2, 0.4]]) * np.array([[2.0], [1.0], [0.5]])
    rgb = sdss_asinh_rgb(flux, ('i', 'r', 'g'))
    weighted = flux[:, 0, :2] * np.array([[SDSS_BAND_WEIGHTS[b]] for b in 'irg'])
    # below saturation the ratio of the channels is the ratio of the weighted fluxes
    np.testing.assert_allclose(rgb[0, 0, :2] / rgb[1, 0, :2], weighted[0] / weighted[1], rtol=1e-4)
    assert np.all(np.diff(rgb.mean(axis=0)[0]) > 0)
    assert rgb.max() <= 1 and rgb.min() >= 0


def test_asinh_rejects_mismatched_bands():
    with pytest.raises(ValueError, match='do not match bands'):
        sdss_asinh_rgb(np.zeros((2, 3, 3)), ('i', 'r', 'g'))
    with pytest.raises(ValueError, match='unknown SDSS band'):
        sdss_asinh_rgb(np.zeros((1, 3, 3)), ('y',))


def test_raw_fpc_frame_becomes_grey_with_dark_sky(shared_data):
    path = next((shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'cutouts').glob('*.fits'))
    rgb = to_colour(read_image(path))
    assert rgb.shape[0] == 3
    np.testing.assert_array_equal(rgb[0], rgb[1])  # one band: grey
    ny, nx = rgb.shape[1:]
    centre = rgb[0, ny // 2 - 3:ny // 2 + 4, nx // 2 - 3:nx // 2 + 4].mean()
    assert np.median(rgb[0]) < 0.25 < centre


def test_calibrated_cube_in_janskys_matches_nanomaggies():
    rng = np.random.default_rng(1)
    flux = rng.uniform(0, 2, (3, 8, 8)).astype(np.float32)
    nmgy = u.def_unit('nmgy_test', 3.631e-6 * u.Jy)
    a = to_colour(NDData(flux, unit=nmgy, meta={'bands': ('i', 'r', 'g')}))
    b = to_colour(NDData(flux * 3.631e-6, unit=u.Jy, meta={'bands': ('i', 'r', 'g')}))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_mask_and_missing_bands():
    cube = np.ones((3, 4, 4), dtype=np.float32)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    rgb = to_colour(NDData(cube, mask=mask, meta={'bands': ('i', 'r', 'g')}))
    assert rgb[:, 0, 0].max() == 0 and rgb[:, 1, 1].min() > 0
    with pytest.raises(ValueError, match='meta\\["bands"\\]'):
        to_colour(NDData(np.ones((2, 4, 4)), meta={'bands': ('i',)}))
    # three planes with no bands named are a colour image in display form
    np.testing.assert_allclose(to_colour(NDData(cube * 0.5)), 0.5)


def _cross_format_pairs(shared_data):
    import csv
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    with open(folder / 'same_galaxy_in_mikeedi.csv') as f:
        rows = [r for r in csv.DictReader(f) if r['kind'] == 'standard']
    return ([folder / r['fits_path'] for r in rows],
            [shared_data / 'sdss_galaxies_mikeedi' / r['mikeedi_path'] for r in rows])


def test_fpc_frame_and_its_jpeg_share_the_isophote(shared_data):
    # the 12 galaxies that are both a raw r-band frame and a SkyServer JPEG: with the header's SKY
    # the frame's isophotal radius is the JPEG's (a sky measured in the cutout, which the
    # galaxy fills, was too high and shrank it by up to 40%: 5 of 12 agreed)
    from astro_galsim.pipeline import prepare
    fits_paths, jpeg_paths = _cross_format_pairs(shared_data)
    _, from_fits = prepare(fits_paths)
    _, from_jpeg = prepare(jpeg_paths)
    fits_radius = from_fits['scale_radius'].value * 0.396  # SDSS frames
    jpeg_radius = from_jpeg['scale_radius'].value * 0.400  # all 12 JPEGs measured at 0.400"/px
    agree = np.abs(fits_radius / jpeg_radius - 1) < 0.10
    assert agree.sum() >= 11, np.c_[fits_radius, jpeg_radius]


def test_header_sky_contradicted_by_the_pixels_warns(shared_data):
    # the older IDL cutouts keep SKY in the header but their pixels are offset by 32768 counts
    from astropy.utils.exceptions import AstropyUserWarning
    from astro_galsim.pipeline import prepare_one
    path = (shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'pawlikmorph_testsample1'
            / 'sdsscutout_168.37-0.90_rband.fits')
    with pytest.warns(AstropyUserWarning, match='header SKY .* pixels'):
        array, record = prepare_one(path)
    assert record['found'] and array is not None


def test_shown_bands_says_what_to_colour_made():
    from astro_galsim.preprocessing import shown_bands
    jpeg = NDData(np.zeros((3, 8, 8), np.uint8), meta={'bands': ('i', 'r', 'g')})
    assert shown_bands(jpeg) == 'gri' and shown_bands(np.zeros((3, 8, 8))) == 'gri'
    # a FITS cube without band names is calibrated plane by plane, not as SkyServer's gri
    assert shown_bands(NDData(np.zeros((3, 8, 8), np.float32), meta={'kind': 'fits'})) == '???'
    assert shown_bands(NDData(np.zeros((8, 8)), meta={'bands': ('g',)})) == 'g'
    assert shown_bands(NDData(np.zeros((8, 8)), meta={'bands': ('F814W',)})) == 'r'   # shown as r
