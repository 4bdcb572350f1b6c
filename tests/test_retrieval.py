# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_galsim.retrieval.

Offline tests serve SDSS answers in the real formats from real DR7 r-band images
(``../shared/data/sdss_fits_cutouts_pawlikmorph``): the catalogue cross-match as the
SkyServer CSV, frames as bz2-compressed DR17-style ``frame-*.fits`` files
(nanomaggies, the real WCS, HDU1 calibration vector, HDU2 sky table), and JPEGs for
SkyServer and hips2fits. They are served by replacing the lowest request layer of
astroquery, ``astroquery.query.BaseQuery._request``, so astroquery's own SDSS and
hips2fits code (payload building, CSV parsing) runs unchanged.
"""
import bz2
import io
import json
import re
import threading
from collections import Counter

import numpy as np
import pytest
import requests
import astropy.units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area, proj_plane_pixel_scales

from astro_galsim.retrieval import sdss
from astro_galsim.config import conf
from astro_galsim.retrieval import (RetrievalError, RetrievalWarning, get_cutout, get_cutouts,
                                    nanomaggy, query_sdss_objects)

FOLDER = 'sdss_fits_cutouts_pawlikmorph'
# Three real r-band galaxies (large cutouts, 231x231 px) whose WCS agrees with their names.
GALAXIES = {
    'A': '153.69121-0.3393402',
    'B': '150.10153+0.704594',
    'C': '152.19923-0.2698308',
}
# Only r was observed in the test set; g and i frames are the r frame scaled (fake colours).
BAND_FACTOR = {'g': 0.55, 'r': 1.0, 'i': 1.35}
RERUN = 301
SPLIT_FIELD = 900  # field numbers of the two halves of galaxy A's frame: 900 and 901


# --------------------------------------------------------------------------------------
# Real-format fixtures
# --------------------------------------------------------------------------------------

def load_real_galaxy(shared_data, name):
    """A real DR7 r-band image converted to calibrated nanomaggies, and its WCS and ids."""
    folder = shared_data / FOLDER
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    std = index[index['path'] == f'cutouts/sdsscutout_{name}_rband.fits']
    assert len(std) == 1
    std = std[0]
    with fits.open(folder / 'large_cutouts' / f'sdsslcutout_{name}_rband.fits.gz') as hdul:
        counts = hdul[0].data.astype(float)
        header = hdul[0].header.copy()
    # DR7 fpC: DN with SOFTBIAS; FLUX20 DN for a 20th-magnitude source.
    nmgy = (counts - float(std['softbias']) - float(std['sky'])) / float(std['flux20']) \
        * 10 ** ((22.5 - 20) / 2.5)
    wcs = WCS(header)
    ra, dec = re.match(r'([\d.]+)([+-][\d.]+)', name).groups()
    return {'data': nmgy.astype(np.float32), 'wcs': wcs, 'run': int(std['run']),
            'camcol': int(std['camcol']), 'field': int(std['field']),
            'flux20': float(std['flux20']), 'coord': SkyCoord(float(ra), float(dec), unit='deg')}


def frame_hdulist(data, wcs, *, band, run, camcol, field, flux20=2000.0):
    """An HDUList in the layout of a DR17 ``frame-{band}-{run}-{camcol}-{field}.fits``."""
    ny, nx = data.shape
    primary = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    h = primary.header
    cd = wcs.wcs.get_pc() * wcs.wcs.get_cdelt()[:, None]
    cards = [('TAI', 4.43e9, '1st row - TAI seconds since Nov 17 1858'),
             ('RA', wcs.wcs.crval[0], '1st row - RA of telescope boresight'),
             ('DEC', wcs.wcs.crval[1], '1st row - Dec of telescope boresight'),
             ('SPA', 90.0, 'Camera col position angle wrt north'),
             ('IPA', 0.0, 'Instrument rotator position angle'),
             ('EXPTIME', 53.907456, 'Exposure time (seconds)'),
             ('ORIGIN', 'SDSS', ''), ('TELESCOP', '2.5m', ''), ('TIMESYS', 'TAI', ''),
             ('RUN', run, 'Run number'), ('FRAME', field, 'Frame sequence number within the run'),
             ('RERUN', str(RERUN), 'Rerun'), ('FILTER', band, 'filter used'),
             ('CAMCOL', camcol, 'column in the imaging camera'),
             ('CTYPE1', 'RA---TAN', ''), ('CTYPE2', 'DEC--TAN', ''),
             ('CUNIT1', 'deg', ''), ('CUNIT2', 'deg', ''),
             ('CRPIX1', wcs.wcs.crpix[0], ''), ('CRPIX2', wcs.wcs.crpix[1], ''),
             ('CRVAL1', wcs.wcs.crval[0], ''), ('CRVAL2', wcs.wcs.crval[1], ''),
             ('CD1_1', cd[0, 0], ''), ('CD1_2', cd[0, 1], ''),
             ('CD2_1', cd[1, 0], ''), ('CD2_2', cd[1, 1], ''),
             ('RADECSYS', 'ICRS', 'ICRS'),
             ('EQUINOX', 2000.0, ''),
             ('BUNIT', 'nanomaggy', '1 nanomaggy = 3.631e-6 Jy'),
             ('NMGY', 10 / flux20, 'Calibration factor [nMgy per count]'),
             ('NMGYIVAR', 1e6, 'Calibration inverse variance'),
             ('VERSIDL', '7.7', ''), ('PHOT_VER', 'v1_12_0', ''), ('PSKY', 'v5_7_2', '')]
    for key, value, comment in cards:
        h[key] = (value, comment)
    calib = fits.ImageHDU(np.full(nx, 10 / flux20, dtype=np.float32))          # HDU1
    sky = fits.BinTableHDU.from_columns([                                        # HDU2
        fits.Column(name='ALLSKY', format=f'{(ny // 8 + 1) * (nx // 8 + 1)}E',
                    dim=f'({nx // 8 + 1},{ny // 8 + 1})',
                    array=np.full((1, ny // 8 + 1, nx // 8 + 1), 120.0, np.float32)),
        fits.Column(name='XINTERP', format=f'{nx}E', array=np.linspace(0, nx / 8, nx)[None]),
        fits.Column(name='YINTERP', format=f'{ny}E', array=np.linspace(0, ny / 8, ny)[None])])
    return fits.HDUList([primary, calib, sky])


def frame_bytes(hdulist):
    """The bz2-compressed bytes the SAS serves."""
    buffer = io.BytesIO()
    hdulist.writeto(buffer)
    return bz2.compress(buffer.getvalue(), compresslevel=1)


def fake_rgb(real):
    """An 8-bit colour image (image orientation: north at the top) of a real galaxy."""
    from astropy.visualization import make_lupton_rgb
    d = real['data']
    rgb = make_lupton_rgb(d * BAND_FACTOR['i'], d, d * BAND_FACTOR['g'], stretch=5, Q=8)
    return rgb


def jpeg_bytes(rgb):
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format='JPEG', quality=95)
    return buffer.getvalue()


class FakeArchive:
    """Plays SkyServer (cross-match CSV, ImgCutout), the SAS (frames) and hips2fits."""

    CSV_FIELDS = ['objid', 'ra', 'dec', 'run', 'rerun', 'camcol', 'field', 'type', 'mode',
                  'petroRad_r', 'petroR50_r', 'petroR90_r']

    def __init__(self):
        self.catalogue = []   # dicts with CSV_FIELDS
        self.frames = {}      # (run, camcol, field, band) -> bytes
        self.jpeg = None      # bytes served by ImgCutout and hips2fits
        self.calls = Counter()
        self.requests = []
        self.behaviour = {}   # kind -> callable(url, kwargs) returning a response or raising
        self._lock = threading.Lock()

    def add_galaxy(self, real, *, objid, field=None, ra=None, dec=None):
        self.catalogue.append({
            'objid': objid, 'ra': real['coord'].ra.deg if ra is None else ra,
            'dec': real['coord'].dec.deg if dec is None else dec, 'run': real['run'], 'rerun': RERUN,
            'camcol': real['camcol'], 'field': real['field'] if field is None else field,
            'type': 3, 'mode': 1, 'petroRad_r': 6.1, 'petroR50_r': 2.9, 'petroR90_r': 7.8})

    def add_frame(self, real, *, field=None, data=None, wcs=None, bands='gri'):
        for band in bands:
            d = (real['data'] if data is None else data) * BAND_FACTOR[band]
            hdul = frame_hdulist(d, real['wcs'] if wcs is None else wcs, band=band, run=real['run'],
                                 camcol=real['camcol'],
                                 field=real['field'] if field is None else field,
                                 flux20=real['flux20'])
            self.frames[(real['run'], real['camcol'], real['field'] if field is None else field,
                         band)] = frame_bytes(hdul)

    # --- the patched astroquery.query.BaseQuery._request ------------------------------
    def request(self, query, method, url, params=None, data=None, files=None, **kwargs):
        from astroquery.utils.mocks import MockResponse
        kind = self._kind(url, params, data)
        with self._lock:
            self.calls[kind] += 1
            self.requests.append((kind, url, params, data))
        if kind in self.behaviour:
            return self.behaviour[kind](url, params=params, data=data, files=files)
        if kind == 'fields':
            # astroquery asks the server for the PhotoObjAll column list; a non-JSON answer
            # from a MockResponse makes it use its built-in list.
            return MockResponse(b'not json', url=url)
        if kind == 'crossid':
            return MockResponse(self.crossid_csv(data, files).encode(), url=url)
        if kind == 'frame':
            band, run, camcol, field = re.search(
                r'frame-([ugriz])-(\d{6})-(\d)-(\d{4})\.fits\.bz2$', url).groups()
            content = self.frames.get((int(run), int(camcol), int(field), band))
            if content is None:
                return MockResponse(b'<html>404 Not Found</html>', url=url, status_code=404)
            return MockResponse(content, url=url)
        if kind in ('skyserver', 'hips2fits'):
            return MockResponse(self.jpeg, url=url, content_type='image/jpeg')
        raise AssertionError(f'unexpected request {method} {url}')

    @staticmethod
    def _kind(url, params, data):
        if '/frames/' in url:
            return 'frame'
        if 'ImgCutout' in url:
            return 'skyserver'
        if 'hips2fits' in url:
            return 'hips2fits'
        if data and 'uquery' in data:
            return 'crossid'
        if params and 'fDocColumns' in params.get('cmd', ''):
            return 'fields'
        return 'other'

    def crossid_csv(self, data, files):
        assert data['photoScope'] == 'allObj' and data['format'] == 'csv'
        radius = float(data['radius']) * u.arcmin
        lines = files['upload'][1].strip().split('\n')[1:]
        ups = np.array([[float(v) for v in line.split()] for line in lines])
        ups = SkyCoord(ups[:, 0], ups[:, 1], unit='deg')
        out = ['#Table1', ','.join(self.CSV_FIELDS)]
        for obj in self.catalogue:
            c = SkyCoord(obj['ra'], obj['dec'], unit='deg')
            if (c.separation(ups) <= radius).any():
                out.append(','.join(str(obj[f]) for f in self.CSV_FIELDS))
        return '\n'.join(out) + '\n'


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def reals(shared_data):
    return {key: load_real_galaxy(shared_data, name) for key, name in GALAXIES.items()}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache, no progress bars, fast retries."""
    with conf.set_temp('cache_dir', str(tmp_path / 'cache')), conf.set_temp('retry_backoff', 0.0), \
            conf.set_temp('show_progress', False), conf.set_temp('max_retries', 2), \
            conf.set_temp('download_workers', 2):
        yield tmp_path / 'cache'


@pytest.fixture
def archive(reals, monkeypatch):
    from astroquery.query import BaseQuery
    fake = FakeArchive()
    for objid, key in enumerate(['A', 'B', 'C'], start=1237648720693755000):
        fake.add_galaxy(reals[key], objid=objid)
        fake.add_frame(reals[key])
    a = reals['A']['coord']
    # A star 4 arcsec from galaxy A and a secondary (mode 2) duplicate of galaxy A.
    star = dict(fake.catalogue[0], objid=1, ra=a.ra.deg + 4 / 3600, type=6)
    secondary = dict(fake.catalogue[0], objid=2, ra=a.ra.deg + 0.2 / 3600, mode=2, run=9999)
    # A lone star, away from every galaxy.
    lone = dict(fake.catalogue[0], objid=3, ra=a.ra.deg + 0.1, type=6)
    fake.catalogue += [star, secondary, lone]
    monkeypatch.setattr(BaseQuery, '_request',
                        lambda query, *args, **kwargs: fake.request(query, *args, **kwargs))
    return fake


def centroid(image, x, y, half=5):
    """Gaussian-fit centroid (photutils) in a box around (x, y)."""
    from photutils.centroids import centroid_2dg
    x0, y0 = int(round(x)) - half, int(round(y)) - half
    cx, cy = centroid_2dg(image[y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1])
    return cx + x0, cy + y0


def aperture_flux(image, wcs, coord, radius):
    from photutils.aperture import SkyCircularAperture
    flux, _ = SkyCircularAperture(coord, r=radius).to_pixel(wcs).do_photometry(image)
    return float(flux[0])


# --------------------------------------------------------------------------------------
# Catalogue cross-match
# --------------------------------------------------------------------------------------

def test_query_objects_batch(reals, archive):
    a, b = reals['A']['coord'], reals['B']['coord']
    lone = SkyCoord(a.ra + 0.1 * u.deg, a.dec)
    far = SkyCoord(10, 60, unit='deg')
    coords = SkyCoord([a, b, lone, far])
    table = query_sdss_objects(coords, radius=5 * u.arcsec)
    # One request for all four positions (plus astroquery's column-list request).
    assert archive.calls['crossid'] == 1
    assert list(table['index']) == [0, 1, 2, 3]
    assert list(table['found']) == [True, True, False, False]
    # The primary galaxy, not the nearby star or the secondary duplicate.
    assert table['objid'][0] == 1237648720693755000
    assert table['run'][0] == reals['A']['run'] and table['rerun'][0] == RERUN
    assert table['field'][1] == reals['B']['field']
    assert table['petroR90_r'].unit == u.arcsec and table['petroR90_r'][0] == 7.8 * u.arcsec
    assert table['separation'][0] < 0.01 * u.arcsec
    assert 'STAR' in table['reason'][2]
    assert 'outside the SDSS imaging footprint' in table['reason'][3]
    assert np.isnan(table['ra'][3]) and table['run'][3] == -1
    # A second call is answered from the cache.
    archive.calls.clear()
    again = query_sdss_objects(coords, radius=5 * u.arcsec)
    assert sum(archive.calls.values()) == 0
    assert list(again['objid']) == list(table['objid'])


def test_query_objects_bad_input(archive):
    with pytest.raises(ValueError, match='3 arcmin'):
        query_sdss_objects(SkyCoord(1, 1, unit='deg'), radius=10 * u.arcmin)
    with pytest.raises(TypeError, match='SkyCoord'):
        query_sdss_objects('not a position')
    with pytest.raises(ValueError, match='DR8'):
        query_sdss_objects(SkyCoord(1, 1, unit='deg'), data_release=7)


def test_query_garbage_answer(reals, archive):
    from astroquery.utils.mocks import MockResponse
    archive.behaviour['crossid'] = lambda url, **kw: MockResponse(
        b'<html><body>Server Error in "/" Application.</body></html>', url=url)
    with pytest.raises(RetrievalError, match='not a CSV table'):
        query_sdss_objects(reals['A']['coord'])
    # Nothing was cached: once the service recovers the answer is right.
    del archive.behaviour['crossid']
    assert query_sdss_objects(reals['A']['coord'])['found'][0]


def test_query_timeout_retries(reals, archive, monkeypatch):
    import time
    delays = []
    monkeypatch.setattr(time, 'sleep', delays.append)

    def slow(url, **kwargs):
        raise requests.exceptions.ReadTimeout('read timed out')

    archive.behaviour['crossid'] = slow
    base = 0.25
    with conf.set_temp('max_retries', 3), conf.set_temp('retry_backoff', base), \
            pytest.raises(RetrievalError, match='timed out in all 4'):
        query_sdss_objects(reals['A']['coord'])
    assert archive.calls['crossid'] == 4
    assert delays == [base, 2 * base, 4 * base]  # exponential backoff


# --------------------------------------------------------------------------------------
# Calibrated cutouts
# --------------------------------------------------------------------------------------

def test_cutout_wcs_and_photometry(reals, archive):
    real = reals['A']
    cutout = get_cutout(real['coord'], size=96)
    assert isinstance(cutout, NDData)
    assert cutout.data.shape == (3, 96, 96) and cutout.data.dtype == np.float32
    assert cutout.unit == nanomaggy and nanomaggy.to(u.Jy) == pytest.approx(3.631e-6)
    assert cutout.meta['bands'] == ['i', 'r', 'g']
    for key, value in [('objid', 1237648720693755000), ('run', real['run']), ('rerun', RERUN),
                       ('camcol', real['camcol']), ('field', real['field']), ('data_release', 17),
                       ('source', 'sdss')]:
        assert cutout.meta[key] == value
    assert cutout.meta['pixel_scale'] == 0.396 * u.arcsec
    assert not cutout.mask.any()
    # North up, east left, 0.396"/px, centred on the galaxy.
    wcs = cutout.wcs
    assert wcs.wcs.cdelt[0] < 0 < wcs.wcs.cdelt[1]
    assert np.allclose(proj_plane_pixel_scales(wcs) * 3600, 0.396)
    centre = wcs.pixel_to_world(47.5, 47.5)
    assert centre.separation(real['coord']) < 1 * u.mas
    north = wcs.pixel_to_world(47.5, 57.5)
    assert north.dec > centre.dec and abs(north.ra - centre.ra) < 1e-7 * u.deg
    # The galaxy lands within a pixel of the cutout centre (r band).
    x_in, y_in = real['wcs'].world_to_pixel(real['coord'])
    cx, cy = centroid(cutout.data[1], 47.5, 47.5)
    gx, gy = centroid(real['data'], float(x_in), float(y_in))
    moved = real['wcs'].pixel_to_world(gx, gy)   # the centroid measured in the frame
    ex, ey = wcs.world_to_pixel(moved)           # where it should land in the cutout
    assert np.hypot(cx - 47.5, cy - 47.5) < 0.5  # measured 0.09-0.25 px
    assert np.hypot(cx - ex, cy - ey) < 0.2
    # Aperture photometry before and after resampling agrees to 0.5% in every band
    # (measured: 0.01-0.07% for the three test galaxies).
    for k, band in enumerate(['i', 'r', 'g']):
        before = aperture_flux(real['data'] * BAND_FACTOR[band], real['wcs'], real['coord'],
                               8 * u.arcsec)
        after = aperture_flux(cutout.data[k], wcs, real['coord'], 8 * u.arcsec)
        assert after == pytest.approx(before, rel=0.005)
    # Every pixel is the frame interpolated at the position the cutout WCS gives it
    # (an independent bilinear interpolation): registration and orientation everywhere.
    from astropy.wcs.utils import pixel_to_pixel
    from scipy.ndimage import map_coordinates
    yy, xx = np.mgrid[:96, :96]
    xin, yin = pixel_to_pixel(wcs, real['wcs'], xx, yy)
    expected = map_coordinates(real['data'].astype(float), [yin, xin], order=1)
    expected *= (0.396 / 3600) ** 2 / proj_plane_pixel_area(real['wcs'])  # nmgy per pixel
    np.testing.assert_allclose(cutout.data[1], expected, rtol=1e-5, atol=1e-5)
    # Band order: i / r / g follow the frames served for each band.
    ratio = cutout.data[:, 40:56, 40:56].sum(axis=(1, 2)) / cutout.data[1, 40:56, 40:56].sum()
    assert ratio == pytest.approx([BAND_FACTOR['i'], 1.0, BAND_FACTOR['g']], rel=1e-5)


def test_cutout_coarser_pixels_conserve_flux(reals, archive):
    real = reals['B']
    size = 40 * u.arcsec
    fine = get_cutout(real['coord'], size=size)
    coarse = get_cutout(real['coord'], size=size, pixel_scale=0.792 * u.arcsec)
    assert fine.data.shape == (3, 101, 101) and coarse.data.shape == (3, 51, 51)
    assert coarse.meta['pixel_scale'] == 0.792 * u.arcsec
    # Nanomaggies per pixel: a coarser grid has larger values and the same total flux.
    before = aperture_flux(real['data'], real['wcs'], real['coord'], 10 * u.arcsec)
    after = aperture_flux(coarse.data[1], coarse.wcs, real['coord'], 10 * u.arcsec)
    assert after == pytest.approx(before, rel=0.02)
    assert coarse.data[1].max() > 2 * fine.data[1].max()


def test_cache_second_call_makes_no_request(reals, archive, isolated):
    coords = SkyCoord([reals['A']['coord'], reals['B']['coord']])
    first = get_cutouts(coords, size=64)
    assert archive.calls['crossid'] == 1 and archive.calls['frame'] == 6
    frames = sorted(p.name for p in isolated.rglob('frame-*.fits'))
    assert len(frames) == 6 and not list(isolated.rglob('*.part'))
    archive.calls.clear()
    second = get_cutouts(coords, size=64)
    assert sum(archive.calls.values()) == 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.meta == b.meta and a.unit == b.unit
        assert a.wcs.pixel_to_world(3, 5).separation(b.wcs.pixel_to_world(3, 5)) < 1e-3 * u.mas
    # Another size re-uses the cached frames and the cached cross-match.
    other = get_cutouts(coords, size=32 * u.arcsec)
    assert sum(archive.calls.values()) == 0
    assert other[0].data.shape == (3, 81, 81)


def test_shared_frames_downloaded_once(reals, archive):
    a = reals['A']['coord']
    # Two positions 1 arcsec apart: the same galaxy, the same frames.
    coords = SkyCoord([a, SkyCoord(a.ra, a.dec + 1 * u.arcsec)])
    cutouts = get_cutouts(coords, size=48)
    assert archive.calls['frame'] == 3
    assert cutouts[0].meta['objid'] == cutouts[1].meta['objid']
    np.testing.assert_allclose(cutouts[0].data, cutouts[1].data)


def test_galaxy_across_frame_edge(reals, archive, isolated):
    real = reals['A']
    whole = get_cutout(real['coord'], size=96)
    # Split the real frame into two overlapping frames along the scan (rows), as
    # consecutive SDSS fields are; the galaxy's catalogue entry is in the first.
    data, wcs = real['data'], real['wcs']
    cut, overlap_start = 140, 100
    archive.add_frame(real, field=SPLIT_FIELD, data=data[:cut], wcs=wcs[:cut, :])
    archive.add_frame(real, field=SPLIT_FIELD + 1, data=data[overlap_start:],
                      wcs=wcs[overlap_start:, :])
    archive.catalogue[0]['field'] = SPLIT_FIELD
    archive.calls.clear()
    split = get_cutout(real['coord'], size=96, radius=4 * u.arcsec)
    assert archive.calls['frame'] == 6  # both fields, three bands each
    assert split.meta['field'] == SPLIT_FIELD
    assert split.meta['frames'] == [(real['run'], real['camcol'], SPLIT_FIELD),
                                    (real['run'], real['camcol'], SPLIT_FIELD + 1)]
    assert not split.mask.any()
    np.testing.assert_allclose(split.data, whole.data, rtol=1e-5, atol=1e-6)
    # Without the second field the far side is missing: masked, zero, and warned about.
    archive.frames = {k: v for k, v in archive.frames.items() if k[2] != SPLIT_FIELD + 1}
    for path in isolated.rglob(f'frame-*-{SPLIT_FIELD + 1:04d}.fits'):
        path.unlink()
    with pytest.warns(RetrievalWarning, match='no SDSS data'):
        partial = get_cutout(real['coord'], size=96, radius=3 * u.arcsec)
    assert 0.05 < partial.mask.mean() < 0.6
    assert (partial.data[partial.mask] == 0).all()
    good = ~partial.mask
    np.testing.assert_allclose(partial.data[good], whole.data[good], rtol=1e-5, atol=1e-6)


def test_cutout_beyond_camcol_edge_is_masked(reals, archive):
    with pytest.warns(RetrievalWarning, match='beyond the edge'):
        big = get_cutout(reals['C']['coord'], size=300)
    assert big.data.shape == (3, 300, 300)
    assert big.mask[:, 150, 150].sum() == 0 and big.mask[:, 0, 0].all()
    assert (big.data[big.mask] == 0).all()


def test_batch_errors_do_not_stop_the_batch(reals, archive):
    a = reals['A']['coord']
    lone = SkyCoord(a.ra + 0.1 * u.deg, a.dec)
    coords = SkyCoord([reals['B']['coord'], SkyCoord(10, 60, unit='deg'), lone, reals['C']['coord']])
    # Galaxy C's field has no g-band frame.
    c = reals['C']
    del archive.frames[(c['run'], c['camcol'], c['field'], 'g')]
    out = get_cutouts(coords, size=48)
    assert isinstance(out[0], NDData) and out[0].meta['objid'] == 1237648720693755001
    assert isinstance(out[1], RetrievalError) and 'outside the SDSS imaging footprint' in str(out[1])
    assert isinstance(out[2], RetrievalError) and 'STAR' in str(out[2])
    assert isinstance(out[3], RetrievalError)
    assert 'g-band' in str(out[3]) and 'missing' in str(out[3])
    # The same failure from get_cutout is raised.
    with pytest.raises(RetrievalError, match='g-band frame'):
        get_cutout(c['coord'], size=48)
    with pytest.raises(RetrievalError, match='outside the SDSS imaging footprint'):
        get_cutout(SkyCoord(10, 60, unit='deg'))


def test_frame_timeout_and_garbage_leave_no_file(reals, archive, isolated):
    def slow(url, **kwargs):
        raise requests.exceptions.ConnectTimeout('connect timed out')

    archive.behaviour['frame'] = slow
    with pytest.raises(RetrievalError, match='timed out in all 3'):
        get_cutout(reals['A']['coord'], size=32)
    assert archive.calls['frame'] == 3 * 3  # 3 bands x (1 + 2 retries)
    from astroquery.utils.mocks import MockResponse
    good = archive.frames[(reals['A']['run'], reals['A']['camcol'], reals['A']['field'], 'r')]
    answers = {
        'html': b'<!DOCTYPE html><html><body>Service Unavailable</body></html>',
        'truncated bz2': good[:len(good) // 2],
        'truncated fits': bz2.compress(bz2.decompress(good)[:20000]),
    }
    for label, content in answers.items():
        archive.behaviour['frame'] = lambda url, content=content, **kw: MockResponse(content, url=url)
        with pytest.raises(RetrievalError, match='not a valid'):
            get_cutout(reals['A']['coord'], size=32)
        assert not list(isolated.rglob('frame-*')), label
        assert not list(isolated.rglob('*.part')), label
    # A server error is retried and then reported.
    archive.behaviour['frame'] = lambda url, **kw: MockResponse(b'oops', url=url, status_code=503)
    archive.calls.clear()
    with pytest.raises(RetrievalError, match='HTTP 503'):
        get_cutout(reals['A']['coord'], size=32)
    assert archive.calls['frame'] == 9
    # A failure while writing leaves neither the file nor its temporary.
    del archive.behaviour['frame']

    def broken_replace(src, dst):
        raise OSError('disk full')

    import os
    real_replace = os.replace
    os.replace = broken_replace
    try:
        out = get_cutouts(reals['A']['coord'], size=32)
    finally:
        os.replace = real_replace
    assert isinstance(out[0], RetrievalError) and 'disk full' in str(out[0])
    assert not list(isolated.rglob('frame-*')) and not list(isolated.rglob('*.part'))


def test_uncalibrated_frame_is_refused(reals, archive):
    real = reals['A']
    hdul = frame_hdulist(real['data'], real['wcs'], band='r', run=real['run'],
                         camcol=real['camcol'], field=real['field'])
    hdul[0].header['BUNIT'] = 'DN'
    archive.frames[(real['run'], real['camcol'], real['field'], 'r')] = frame_bytes(hdul)
    with pytest.raises(RetrievalError, match='not nanomaggy'):
        get_cutout(real['coord'], size=32)


def test_size_and_argument_checks(reals, archive):
    c = reals['A']['coord']
    assert get_cutout(c, size=(40, 60)).data.shape == (3, 40, 60)
    assert get_cutout(c, size=(20 * u.arcsec, 30 * u.pix)).data.shape == (3, 51, 30)
    with pytest.raises(ValueError, match='between 1 and 2048'):
        get_cutout(c, size=0)
    with pytest.raises(TypeError, match='pixels or an angle'):
        get_cutout(c, size=3 * u.kg)
    with pytest.raises(ValueError, match='positive'):
        get_cutout(c, pixel_scale=-1 * u.arcsec)
    with pytest.raises(ValueError, match="source must be one of"):
        get_cutout(c, source='dss')
    with pytest.raises(ValueError, match='get_cutouts'):
        get_cutout(SkyCoord([c, c]))


def test_data_release_in_urls(reals, archive):
    with sdss.conf.set_temp('data_release', 16):
        cutout = get_cutout(reals['A']['coord'], size=32)
    assert cutout.meta['data_release'] == 16
    urls = [url for kind, url, _, _ in archive.requests if kind in ('frame', 'crossid')]
    assert urls and all('/dr16/' in url for url in urls)
    frame_url = next(url for kind, url, _, _ in archive.requests if kind == 'frame')
    real = reals['A']
    assert frame_url.startswith('https://data.sdss.org/sas/dr16/eboss/photoObj/frames/301/')
    assert frame_url.endswith(f"{real['run']:06d}-{real['camcol']}-{real['field']:04d}.fits.bz2")
    # The setting's old home still works, with a deprecation warning.
    from astropy.utils.exceptions import AstropyDeprecationWarning
    archive.requests.clear()
    with conf.set_temp('data_release', 15), pytest.warns(AstropyDeprecationWarning, match='sdss.conf'):
        assert get_cutout(reals['A']['coord'], size=32).meta['data_release'] == 15
    assert all('/dr15/' in url for kind, url, _, _ in archive.requests if kind in ('frame', 'crossid'))


# --------------------------------------------------------------------------------------
# Colour JPEG routes
# --------------------------------------------------------------------------------------

def test_skyserver_jpeg(reals, archive, isolated):
    real = reals['A']
    rgb = fake_rgb(real)[60:160, 50:170]  # 100 x 120, north at the top
    archive.jpeg = jpeg_bytes(rgb)
    cutout = get_cutout(real['coord'], size=(100, 120), pixel_scale=0.5 * u.arcsec,
                        source='skyserver')
    assert cutout.data.shape == (3, 100, 120) and cutout.data.dtype == np.uint8
    assert cutout.meta['bands'] == ['i', 'r', 'g'] and cutout.meta['source'] == 'skyserver'
    assert cutout.meta['data_release'] == 17 and cutout.unit is None
    # SkyServer's own rendering: the colour form takes it as it is (astro_galsim.surveys)
    assert cutout.meta['survey'] == 'sdss'
    # no identifiers of an SDSS object: an id taken from meta would be 'None' for every galaxy
    assert not {'objid', 'run', 'field'} & set(cutout.meta)
    # Rows flipped into FITS order (row 0 = south), channels R, G, B.
    served = np.moveaxis(rgb[::-1], 2, 0).astype(float)
    assert np.abs(cutout.data - served).mean() < 3
    (kind, url, params, _), = [r for r in archive.requests if r[0] == 'skyserver']
    assert url == 'https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout/getjpeg'
    assert params['width'] == 120 and params['height'] == 100 and params['scale'] == 0.5
    assert params['ra'] == pytest.approx(real['coord'].ra.deg)
    assert cutout.wcs.pixel_to_world(59.5, 49.5).separation(real['coord']) < 1 * u.mas
    assert archive.calls['crossid'] == 0 and archive.calls['frame'] == 0
    archive.calls.clear()
    get_cutout(real['coord'], size=(100, 120), pixel_scale=0.5 * u.arcsec, source='skyserver')
    assert sum(archive.calls.values()) == 0


def test_skyserver_black_or_garbage(reals, archive):
    archive.jpeg = jpeg_bytes(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(RetrievalError, match='black'):
        get_cutout(reals['A']['coord'], size=32, source='skyserver')
    archive.jpeg = b'<html>Internal error</html>'
    with pytest.raises(RetrievalError, match='not an image'):
        get_cutout(reals['A']['coord'], size=32, source='skyserver')
    archive.jpeg = jpeg_bytes(fake_rgb(reals['A'])[:50, :40])
    with pytest.raises(RetrievalError, match='expected a 32x32'):
        get_cutout(reals['A']['coord'], size=32, source='skyserver')


def test_hips2fits_jpeg(reals, archive):
    real = reals['B']
    rgb = fake_rgb(real)[50:114, 60:124]
    archive.jpeg = jpeg_bytes(rgb)
    coords = SkyCoord([real['coord'], reals['C']['coord']])
    out = get_cutouts(coords, size=64, source='hips2fits')
    assert all(isinstance(c, NDData) for c in out)
    assert out[0].data.shape == (3, 64, 64) and out[0].meta['source'] == 'hips2fits'
    assert out[0].meta['hips'] == 'CDS/P/SDSS9/color'
    assert out[0].meta['survey'] == 'unknown'   # a linear grey stretch: its sky is measured, not assumed
    assert np.abs(out[0].data - np.moveaxis(rgb[::-1], 2, 0).astype(float)).mean() < 3
    sent = [params for kind, _, params, _ in archive.requests if kind == 'hips2fits']
    assert len(sent) == 2
    for params in sent:
        assert params['hips'] == 'CDS/P/SDSS9/color' and params['format'] == 'jpg'
        header = json.loads(params['wcs'])
        assert header['NAXIS1'] == 64 and header['CTYPE1'] == 'RA---TAN'
        assert header['CDELT2'] == pytest.approx(0.396 / 3600)
    centres = sorted(json.loads(p['wcs'])['CRVAL1'] for p in sent)
    assert centres == pytest.approx(sorted(coords.ra.deg))


# --------------------------------------------------------------------------------------
# Survey sources: the registry and the DESI Legacy Surveys
# --------------------------------------------------------------------------------------

def test_legacysurvey_dr10_colour_cutouts(reals, archive, isolated):
    from astro_galsim.retrieval import legacysurvey
    real = reals['C']
    rgb = fake_rgb(real)[40:120, 70:150]  # 80 x 80, north at the top
    archive.jpeg = jpeg_bytes(rgb)
    cutout = get_cutout(real['coord'], size=80, source='legacysurvey')
    assert cutout.data.shape == (3, 80, 80) and cutout.data.dtype == np.uint8 and cutout.unit is None
    assert cutout.meta['bands'] == ['z', 'r', 'g'] and cutout.meta['source'] == 'legacysurvey'
    assert cutout.meta['hips'] == 'CDS/P/DESI-Legacy-Surveys/DR10/color'
    assert cutout.meta['data_release'] == 10 and cutout.meta['pixel_scale'] == 0.262 * u.arcsec
    assert 'objid' not in cutout.meta  # no SDSS identifiers on another survey's images
    # its colour rendering and resolution are the Legacy Surveys', not SDSS's
    assert cutout.meta['survey'] == 'legacysurvey'
    from astro_galsim.surveys import resolution_of
    assert resolution_of(cutout.meta) == (0.262 * u.arcsec, 1.3 * u.arcsec)
    assert np.abs(cutout.data - np.moveaxis(rgb[::-1], 2, 0).astype(float)).mean() < 3
    # The request: the survey's HiPS on a TAN grid at its native 0.262"/px, centred on the position;
    # no SDSS catalogue or frame request.
    (params,) = [p for kind, _, p, _ in archive.requests if kind == 'hips2fits']
    assert params['hips'] == 'CDS/P/DESI-Legacy-Surveys/DR10/color' and params['format'] == 'jpg'
    header = json.loads(params['wcs'])
    assert header['NAXIS1'] == 80 and header['CDELT2'] == pytest.approx(0.262 / 3600)
    assert header['CRVAL1'] == pytest.approx(real['coord'].ra.deg)
    assert archive.calls['crossid'] == 0 and archive.calls['frame'] == 0
    assert cutout.wcs.pixel_to_world(39.5, 39.5).separation(real['coord']) < 1 * u.mas
    # Cached: a second call makes no request; another HiPS (the source's own setting) is another entry.
    archive.calls.clear()
    get_cutout(real['coord'], size=80, source='legacysurvey')
    assert sum(archive.calls.values()) == 0
    with legacysurvey.conf.set_temp('hips', 'CDS/P/DESI-Legacy-Surveys/DR10/g'):
        other = get_cutout(real['coord'], size=80, source='legacysurvey')
    assert archive.calls['hips2fits'] == 1 and other.meta['hips'].endswith('/g')
    # SDSS rules do not run for it: no data release check, and SDSS options are refused by name.
    with sdss.conf.set_temp('data_release', 3):
        get_cutout(real['coord'], size=80, source='legacysurvey')
    with pytest.raises(TypeError, match="source 'legacysurvey' takes no option 'radius'"):
        get_cutout(real['coord'], size=80, source='legacysurvey', radius=3 * u.arcsec)


def test_legacysurvey_outside_footprint_and_service_errors(reals, archive):
    from astroquery.utils.mocks import MockResponse
    coord = reals['A']['coord']
    archive.jpeg = jpeg_bytes(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(RetrievalError, match='no Legacy Surveys DR10 imaging at this position'):
        get_cutout(coord, size=32, source='legacysurvey')
    # hips2fits explains a refused request in JSON; the message carries it.
    archive.behaviour['hips2fits'] = lambda url, **kw: MockResponse(
        json.dumps({'title': 'Bad request', 'description': 'HiPS not found'}).encode(), url=url,
        status_code=400)
    with pytest.raises(RetrievalError, match='HTTP 400: Bad request: HiPS not found'):
        get_cutout(coord, size=33, source='legacysurvey')


def test_a_survey_is_one_registered_class(reals, isolated):
    """The plug-in interface: a new source is found by name, cached and isolated per position."""
    from astro_galsim.retrieval import CutoutSource, get_source, register_source
    from astro_galsim.retrieval.core import rgb_cutout

    class Painted(CutoutSource):
        name = 'painted-test'
        bands = ('z', 'r', 'g')
        pixel_scale = 1 * u.arcsec
        options = {'shade': 100}
        calls = 0

        def fetch_one(self, coord, shape, scale, options):
            Painted.calls += 1
            if coord.dec.deg > 80:
                raise RetrievalError('outside the painted sky')
            rgb = np.full(tuple(shape) + (3,), options['shade'], np.uint8)
            return rgb_cutout(rgb, coord, shape, scale, 'painted', bands=self.bands, survey='painted',
                              meta={'source': self.name})

    register_source(Painted())
    try:
        coords = SkyCoord([10, 20], [0, 85], unit='deg')
        out = get_cutouts(coords, size=8, source='painted-test', shade=120)
        assert isinstance(out[0], NDData) and out[0].data.max() == 120
        assert out[0].meta['pixel_scale'] == 1 * u.arcsec
        assert isinstance(out[1], RetrievalError) and str(out[1]) == 'coordinate 1 (20 85): outside the painted sky'
        get_cutouts(coords, size=8, source='painted-test', shade=120)
        assert Painted.calls == 3  # the good cutout came from the cache, the failure was retried
        assert get_cutouts(coords[:1], size=8, source='painted-test')[0].data.max() == 100
        with pytest.raises(ValueError, match='already registered'):
            register_source(Painted())
        with pytest.raises(ValueError, match='three bands'):
            register_source(type('Bad', (CutoutSource,), {'name': 'bad', 'bands': ('r',),
                                                          'pixel_scale': 1 * u.arcsec})())
    finally:
        from astro_galsim.retrieval import core
        core._REGISTRY.pop('painted-test', None)
    with pytest.raises(ValueError, match="source must be one of .*'legacysurvey'"):
        get_source('painted-test')


# --------------------------------------------------------------------------------------
# Real services
# --------------------------------------------------------------------------------------

@pytest.mark.remote_data
def test_remote_query_and_cutout():
    # A galaxy of the Pawlik et al. sample (Stripe 82) and a position outside SDSS.
    galaxy = SkyCoord(153.69121, -0.3393402, unit='deg')
    table = query_sdss_objects(SkyCoord([galaxy, SkyCoord(0, 89, unit='deg')]), radius=5 * u.arcsec)
    assert table['found'].tolist() == [True, False]
    cutout = get_cutout(galaxy, size=64)
    assert cutout.data.shape == (3, 64, 64) and cutout.unit == nanomaggy
    assert cutout.meta['objid'] == table['objid'][0]
    assert np.nansum(cutout.data[1, 24:40, 24:40]) > 0


@pytest.mark.remote_data
def test_remote_skyserver():
    galaxy = SkyCoord(153.69121, -0.3393402, unit='deg')
    cutout = get_cutout(galaxy, size=64, source='skyserver')
    assert cutout.data.shape == (3, 64, 64) and cutout.data.max() > 50
