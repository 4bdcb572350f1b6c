import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from PIL import Image

from astro_galsim import read_image


def test_colour_jpeg_planes_and_bands(shared_data):
    path = shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'train' / '587722981740314629.jpg'
    img = read_image(path)
    assert img.data.shape == (3, 195, 195) and img.data.dtype == np.uint8
    assert img.meta['bands'] == ('i', 'r', 'g')
    assert img.meta['kind'] == 'colour'
    rgb = np.asarray(Image.open(path).convert('RGB'))
    # channel c of the NDData is the image's R, G or B plane, top row first
    np.testing.assert_array_equal(img.data[0], rgb[..., 0])
    np.testing.assert_array_equal(img.data[2], rgb[..., 2])


def test_fits_frame_keeps_wcs_unit_and_header(shared_data):
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    row = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')][0]
    img = read_image(folder / row['path'])
    assert img.data.shape == (row['ny'], row['nx'])
    assert img.unit == u.adu
    assert img.meta['bands'] == ('r',)
    assert img.meta['header']['FLUX20'] == pytest.approx(row['flux20'])
    ny, nx = img.data.shape
    centre = img.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
    expected = SkyCoord(row['center_ra'], row['center_dec'], unit='deg')
    assert centre.separation(expected) < 0.5 * u.arcsec


def test_gzipped_fits(shared_data):
    path = next((shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'large_cutouts').glob('*.fits.gz'))
    img = read_image(path)
    assert img.data.ndim == 2 and img.wcs is not None and img.wcs.has_celestial


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_image(tmp_path / 'nothing.fits')


def test_unsupported_type(tmp_path):
    path = tmp_path / 'galaxy.txt'
    path.write_text('not an image')
    with pytest.raises(ValueError, match='unsupported file type'):
        read_image(path)


def test_corrupt_files_are_named(tmp_path):
    jpeg = tmp_path / 'broken.jpg'
    jpeg.write_bytes(b'\xff\xd8 this is not a jpeg')
    with pytest.raises(ValueError, match='broken.jpg'):
        read_image(jpeg)
    fits_file = tmp_path / 'broken.fits'
    fits_file.write_bytes(b'SIMPLE  = nonsense' + b' ' * 100)
    with pytest.raises(ValueError, match='broken.fits'):
        read_image(fits_file)


def test_nanomaggy_bunit_is_read(tmp_path):
    # calibrated SDSS frames say BUNIT = 'nanomaggy'; it reads back as the package's unit
    from astropy.io import fits
    from astro_galsim.io import nanomaggy
    path = tmp_path / 'frame.fits'
    fits.PrimaryHDU(np.ones((4, 4), dtype=np.float32), header=fits.Header({'BUNIT': 'nanomaggy'})).writeto(path)
    img = read_image(path)
    assert img.unit == nanomaggy and img.unit.to(u.Jy) == pytest.approx(3.631e-6)


def test_atomic_output_replaces_only_when_complete(tmp_path):
    from astro_galsim.io import atomic_output
    path = tmp_path / 'table.fits'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with atomic_output(path) as fh:
            fh.write(b'half of the new')
            raise RuntimeError('interrupted')
    assert path.read_bytes() == b'old' and sorted(tmp_path.iterdir()) == [path]
    with atomic_output(path, sync=True) as fh:
        fh.write(b'new')
    assert path.read_bytes() == b'new' and sorted(tmp_path.iterdir()) == [path]
