"""The second robustness campaign: concurrency, hostile servers, huge and strange inputs, full disks.

One test (or a few) per finding; real images from ``../shared/data`` where the behaviour
depends on them, among them a real SkyServer error page saved as a JPEG.
"""
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import MaskedColumn, QTable, Table
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS

from astro_galsim import SimilaritySearch, conf, read_image
from astro_galsim.cli import main
from astro_galsim.database import GalaxyDatabase

ENCODER = {'name': 'test', 'sha256': '3f' * 32}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def frames(shared_data):
    """Standard pawlikmorph cutouts with a good WCS that the default selection accepts."""
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    good = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')]
    return folder, good[1:4]


@pytest.fixture(scope='module')
def search():
    return SimilaritySearch()


@pytest.fixture(scope='module')
def error_page(shared_data):
    return shared_data / 'bad_inputs' / 'skyserver_error_page.jpg'


def one_galaxy_search():
    s = SimilaritySearch()
    s.database.add(np.ones((1, s.encoder.latent_dim), np.float32) / np.sqrt(s.encoder.latent_dim),
                   QTable({'id': ['g0']}))
    return s


def discs(n, seed=0):
    y, x = np.mgrid[:72, :72]
    rng = np.random.default_rng(seed)
    return [np.exp(-np.hypot((x - 36) / (6 + a), (y - 36) / (4 + b)))[None].repeat(3, 0) + rng.normal(0, 1e-3, (3, 72, 72))
            for a, b in rng.uniform(0, 6, (n, 2))]


# ------------------------------------------------------------------ concurrency
def test_threads_adding_at_once_never_misalign_rows_and_vectors(tmp_path):
    db = GalaxyDatabase(dim=4, encoder_id=ENCODER, index_options={'method': 'exact'})
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible: races show at once
    saved = []

    def work(t):
        for r in range(40):
            number = t * 1000 + r
            db.add(np.full((1, 4), number, np.float32), QTable({'id': [f'g{number}']}))
            if t == 0 and r % 10 == 0:   # saves while the others add
                saved.append(tmp_path / f'db{r}.fits')
                db.save(saved[-1])
    try:
        pool = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(db.table) == len(db.vectors) == 320
    assert (db.vectors[:, 0] == [float(i[1:]) for i in db.ids]).all()   # each id beside its own vector
    for path in saved:
        copy = GalaxyDatabase.load(path)
        assert (copy.vectors[:, 0] == [float(i[1:]) for i in copy.ids]).all()


def test_threads_adding_to_one_search_store_each_galaxy_once(tmp_path):
    s, serial = SimilaritySearch(), SimilaritySearch()
    images = discs(16)
    serial.add(images, ids=[f'd{i}' for i in range(16)])   # the same calls one after another
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    errors, reports = [], []

    def work(t):
        try:   # two threads offer each id: one stores it, the other is told it is stored
            reports.append(s.add(images[2 * (t % 8):2 * (t % 8) + 2], ids=[f'd{2 * (t % 8)}', f'd{2 * (t % 8) + 1}']))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    try:
        pool = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors
    assert len(serial) >= 12
    assert len(s.table) == len(s.vectors) == len(set(s.ids)) == len(serial)
    assert sorted(s.ids) == sorted(serial.ids)
    np.testing.assert_allclose(s.vectors[s.database.lookup_ids(serial.ids)], serial.vectors, atol=1e-6)
    s.save(tmp_path / 'db.fits')
    assert len(GalaxyDatabase.load(tmp_path / 'db.fits')) == len(serial)
    assert len(s.query('d0', k=3)) == 3


# ------------------------------------------------------------------ positions that are not positions
def _with_cards(source, tmp_path, name, cards):
    """A copy of a FITS file with header cards replaced by raw 80-character images."""
    raw = source.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AstropyUserWarning)   # the fpC cards astropy does not know
        header = fits.getheader(source)
    for keyword, text in cards.items():
        old = next(c for c in header.cards if c.keyword == keyword).image
        raw = raw.replace(old.encode(), f'{keyword:8s}= {text:>20s}'.ljust(80).encode())
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_fits_with_nan_crval_stores_no_made_up_position(frames, tmp_path):
    from astro_galsim.io import fits_geometry
    folder, good = frames
    path = _with_cards(folder / good['path'][0], tmp_path, 'nan.fits', {'CRVAL1': 'NAN', 'CRVAL2': 'NAN'})
    assert fits_geometry(path)[0] is None
    with pytest.warns(AstropyUserWarning, match=r'WCS has unusable values \(CRVAL1 = NAN'):
        image = read_image(path)
    assert image.wcs is None
    s = SimilaritySearch()
    with pytest.warns(AstropyUserWarning, match='read without it'):
        s.add([path])
    assert len(s) == 1 and not np.isfinite(s.table['coord'].ra.deg).any()   # unknown, never (0.05, -0.08)


def test_zero_pixel_scale_is_named_not_called_damaged(frames, tmp_path):
    folder, good = frames
    data = read_image(folder / good['path'][0]).data
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [70, 70]
    wcs.wcs.cdelt = [-1.1e-4, 1.1e-4]
    header = wcs.to_header()
    header['CDELT1'] = 0.0
    fits.PrimaryHDU(data, header).writeto(tmp_path / 'flat.fits')
    with pytest.warns(AstropyUserWarning, match='zero or undefined pixel scale'):
        image = read_image(tmp_path / 'flat.fits')
    assert image.wcs is None and image.data.shape == data.shape


def test_query_refuses_nan_coords(search, frames):
    folder, good = frames
    s = one_galaxy_search()
    with pytest.raises(ValueError, match='not valid .NaN or masked'):
        s.query(folder / good['path'][0], coords=SkyCoord(np.nan, np.nan, unit='deg'), k=1)


def test_nan_positions_are_invalid_before_any_request(monkeypatch, tmp_path):
    from astro_galsim.retrieval import get_source
    asked = []
    source = get_source('sdss')
    monkeypatch.setattr(source, 'fetch', lambda coords, *a: asked.append(coords) or
                        [ValueError('network') for _ in coords])
    s = SimilaritySearch()
    with conf.set_temp('cache_dir', str(tmp_path)):
        report = s.add(SkyCoord([np.nan], [np.nan], unit='deg'))
        table = Table({'ra': MaskedColumn([150.0], mask=[True]), 'dec': MaskedColumn([2.0], mask=[True])})
        masked = s.add(table)
    assert asked == []
    for reason in (report['reason'][0], masked['reason'][0]):
        assert 'not a valid position' in reason and 'nothing was requested' in reason


def test_nddata_with_a_nan_or_non_celestial_wcs_is_one_rejected_row(frames):
    folder, good = frames
    image = read_image(folder / good['path'][0])
    nan_wcs = image.wcs.deepcopy()
    nan_wcs.wcs.crval = [np.nan, np.nan]
    s = SimilaritySearch()
    report = s.add([NDData(image.data, wcs=nan_wcs), NDData(image.data, wcs=WCS(naxis=2)), image],
                   ids=['nan', 'linear', 'good'])
    assert list(report['accepted']) == [False, False, True]
    assert 'WCS has a non-finite reference position' in report['reason'][0]
    assert 'WCS is not celestial' in report['reason'][1]
    assert list(s.ids) == ['good']


# ------------------------------------------------------------------ not a galaxy image
def test_error_page_blank_and_text_images_are_not_galaxy_images(error_page, shared_data, tmp_path, search):
    from PIL import Image, ImageDraw
    text = Image.new('RGB', (200, 200))
    ImageDraw.Draw(text).multiline_text((10, 60), 'Exception Message:\nParameter is not valid.\n' * 2,
                                        fill=(255, 255, 255))
    text.save(tmp_path / 'text.png')
    Image.new('RGB', (128, 128), (40, 40, 40)).save(tmp_path / 'blank.png')
    jpeg = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[0]
    s = SimilaritySearch()
    report = s.add([error_page, tmp_path / 'text.png', tmp_path / 'blank.png', jpeg])
    assert list(report['accepted']) == [False, False, False, True]
    for reason in report['reason'][:3]:
        assert 'not a galaxy image' in reason and 'trail' not in reason
    assert 'text' in report['reason'][0] and 'blank' in report['reason'][2]
    assert np.isnan(search.embed(error_page)).all()
    with pytest.raises(ValueError, match='not a galaxy image'):
        one_galaxy_search().query(error_page, k=1)


def test_build_calls_the_error_page_not_a_galaxy_image(error_page, tmp_path, capsys):
    from astro_galsim.build import build_database
    folder = tmp_path / 'images'
    folder.mkdir()
    (folder / 'IC896.jpg').symlink_to(error_page)
    with pytest.raises(ValueError, match='no galaxy was stored'):
        main_raising(['build', str(folder), '--output', str(tmp_path / 'db.fits')])
    built, report = build_database(folder, tmp_path / 'db2.fits')
    assert len(built) == 0 and 'not a galaxy image' in report['reason'][0]
    assert 'not a galaxy image' in Table.read(tmp_path / 'db2.fits.rejected.ecsv')['reason'][0]


def main_raising(argv):
    """Run the CLI; its one-line error as a ValueError (so pytest.raises can match it)."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    if code:
        raise ValueError(err.getvalue())
    return code


def test_real_galaxy_images_are_galaxy_images(shared_data):
    from astro_galsim.utils._checks import image_content_problem
    sets = {'sdss_gz1_eggochi': '*.jpg', 'sdss_ngc_ic_kavehsayeh': '*.jpg', 'sdss_gz2_kaggle_sample': '*.jpg',
            'sdss_fits_cutouts_pawlikmorph': '*.fits'}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AstropyUserWarning)
        for name, pattern in sets.items():
            for path in sorted((shared_data / name).rglob(pattern))[:40]:
                assert image_content_problem(read_image(path).data) is None, path


def test_byte_images_are_judged_from_their_histogram_as_any_other(shared_data):
    # 8-bit planes are judged from 256 counts: the verdict must be the one the general path gives
    from astro_galsim.utils._checks import image_content_problem
    paths = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:10] + [
        shared_data / 'bad_inputs' / 'skyserver_error_page.jpg']
    rng = np.random.default_rng(1)
    for path in paths:
        data = read_image(path).data
        assert data.dtype == np.uint8
        for image, mask in ((data, None), (data, rng.random(data.shape[1:]) < 0.3),
                            (np.full((3, 20, 20), 7, np.uint8), None)):
            assert image_content_problem(image, mask) == image_content_problem(image.astype(np.int16), mask), path
    assert image_content_problem(data) is not None   # the error page is still refused


# ------------------------------------------------------------------ strange and huge inputs
def test_four_plane_cube_says_how_to_name_bands(frames, tmp_path, search):
    folder, good = frames
    data = read_image(folder / good['path'][0]).data
    fits.PrimaryHDU(np.stack([data] * 4)).writeto(tmp_path / 'cube.fits')
    report = search.add([tmp_path / 'cube.fits'], ids=['cube'])
    assert not report['accepted'][0]
    assert 'a cube of 4 planes' in report['reason'][0] and "meta={'bands'" in report['reason'][0]


def test_huge_fits_is_refused_before_reading_or_read_as_a_section(frames, tmp_path):
    from astro_galsim.io import ImageSizeError, read_fits_near
    folder, good = frames
    path = folder / good['path'][0]
    centre = SkyCoord(good['center_ra'][0], good['center_dec'][0], unit='deg')
    with conf.set_temp('max_image_pixels', 10_000):   # the 141 x 141 cutout stands for a huge frame
        with pytest.raises(ImageSizeError, match=r'141 x 141 image \(19,881 pixels\), more than '
                           r'astro_galsim.conf.max_image_pixels = 10,000'):
            read_image(path)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', AstropyUserWarning)
            fits.PrimaryHDU(fits.getdata(path)).writeto(tmp_path / 'no_wcs.fits')   # nowhere to cut a section
        report = SimilaritySearch().add([tmp_path / 'no_wcs.fits'], ids=['huge'])
        assert 'conf.max_image_pixels' in report['reason'][0] and not report['accepted'][0]
        section = read_fits_near(path, centre)
        assert section.data.shape == (99, 99)
        assert section.wcs.pixel_to_world(49, 49).separation(centre) < 1 * u.arcsec
        s = SimilaritySearch()
        placed = s.add([path, path], coords=SkyCoord([centre, SkyCoord(np.nan, np.nan, unit='deg')]),
                       ids=['placed', 'at the WCS centre'])
        assert not any('max_image_pixels' in r for r in placed['reason'])
        arrays = s.add([np.zeros((3, 80, 80))], ids=['big array'])   # arrays in memory are checked too
        assert 'conf.max_image_pixels' in arrays['reason'][0], list(arrays['reason'])


def test_decompression_bomb_is_called_too_large_not_a_selection_matter(shared_data, monkeypatch):
    from PIL import Image
    jpeg = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[0]
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)   # Pillow's own guard, met first
    with pytest.raises(ValueError) as error:
        one_galaxy_search().query(jpeg, k=1)
    message = str(error.value)
    assert 'too large to be a galaxy cutout' in message and 'relax' not in message


def test_cli_where_with_a_word_for_a_number(tmp_path, capsys):
    path = tmp_path / 'db.fits'
    one_galaxy_search().save(path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')   # no deprecation warning on the way
        code = main(['query', 'g0', '--database', str(path), '--where', 'r50>abc'])
    err = capsys.readouterr().err
    assert code == 1 and "'abc' is not a number" in err and len(err.strip().splitlines()) == 1


def test_fifo_in_a_build_folder_is_skipped_with_a_reason(shared_data, tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    os.mkfifo(folder / 'pipe.fits')
    jpeg = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[0]
    (folder / jpeg.name).symlink_to(jpeg)
    run = subprocess.run([sys.executable, '-m', 'astro_galsim.cli', 'build', str(folder), '--output',
                          str(tmp_path / 'db.fits')], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr
    assert 'pipe.fits' in run.stderr and 'not a regular file (a FIFO (named pipe))' in run.stderr
    assert len(GalaxyDatabase.load(tmp_path / 'db.fits')) == 1
    with pytest.raises(ValueError, match='not a regular file'):
        read_image(folder / 'pipe.fits')


# ------------------------------------------------------------------ full disks
_SAVE_WITH_A_LIMIT = '''
import resource, sys, numpy as np
from astropy.table import QTable
from astro_galsim.database import GalaxyDatabase
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))   # a disk that fills at 200 kB
db = GalaxyDatabase(np.ones((20000, 8), np.float32), QTable({'id': [f'g{i}' for i in range(20000)]}),
                    encoder_id={'name': 'test', 'sha256': '3f' * 32})
try:
    db.save(sys.argv[1], overwrite=True)
except OSError as exc:
    print(exc)
'''


def test_a_full_disk_during_save_says_so_and_keeps_the_old_file(tmp_path):
    path = tmp_path / 'db.fits'
    GalaxyDatabase(np.zeros((2, 8), np.float32), QTable({'id': ['a', 'b']}), encoder_id=ENCODER).save(path)
    run = subprocess.run([sys.executable, '-c', _SAVE_WITH_A_LIMIT, str(path)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert 'no space left' in run.stdout and f'the previous {path} is intact' in run.stdout, run.stderr
    assert len(GalaxyDatabase.load(path)) == 2
    assert os.listdir(tmp_path) == ['db.fits']


def test_a_full_disk_during_a_cli_build_is_one_line(shared_data, tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    for jpeg in sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:2]:
        (folder / jpeg.name).symlink_to(jpeg)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000, 4_000))
    run = subprocess.run([sys.executable, '-m', 'astro_galsim.cli', 'build', str(folder), '--output',
                          str(tmp_path / 'db.fits')], capture_output=True, text=True, timeout=300,
                         preexec_fn=limit, env=dict(os.environ, PYTHONPATH=ROOT))
    lines = re.findall('astro-galsim build: error: .*', run.stderr)   # beside the progress bar
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr
    assert len(lines) == 1 and 'no space left' in lines[0], run.stderr


# ------------------------------------------------------------------ corrupt encoder weights
@pytest.mark.parametrize('damage, expected', [
    ('random', 'is not a torch weights file'),
    ('missing', "missing tensors ['features.0.weight']"),
    ('nan', 'hold NaN or infinite values'),
])
def test_corrupt_encoder_weights_are_named(damage, expected, tmp_path):
    import torch
    from importlib import resources
    from astro_galsim.model import file_sha256, load_pretrained
    shipped = resources.files('astro_galsim') / 'data'
    weights = tmp_path / 'weights.pt'
    if damage == 'random':
        weights.write_bytes(np.random.default_rng(0).bytes(50_000))
    else:
        state = torch.load(str(shipped / 'encoder.pt'), weights_only=True)
        if damage == 'missing':
            state.pop('features.0.weight')
        else:
            state = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v for k, v in state.items()}
        torch.save(state, weights)
    card = json.loads((shipped / 'encoder.json').read_text())
    card['sha256'] = file_sha256(weights)
    weights.with_suffix('.json').write_text(json.dumps(card))
    with pytest.raises(ValueError, match=re.escape(expected)) as error:
        load_pretrained(weights).encode(np.zeros((1, 3, 64, 64), np.float32))
    assert str(weights) in str(error.value)


# ------------------------------------------------------------------ hostile servers
@pytest.fixture
def trickling_server():
    """A server on 127.0.0.1 that sends its headers, then one byte every 0.2 s; it stops by itself after 15 s."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = time.monotonic() + 15
    served = []

    def serve():
        connections = []
        while time.monotonic() < stop:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n')
            connections.append(conn)
            served.append(time.monotonic())
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()
        server.close()

    def trickle(conn):
        try:
            while time.monotonic() < stop:
                conn.sendall(b'x')
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.getsockname()[1]}', served
    stop = time.monotonic()


def test_the_total_deadline_holds_during_a_slow_read(trickling_server):
    from astro_galsim.retrieval import RetrievalError
    from astro_galsim.retrieval._http import get
    url, served = trickling_server
    started = time.perf_counter()
    with conf.set_temp('timeout', 1.0), conf.set_temp('total_timeout', 2.0), conf.set_temp('max_retries', 0), \
            pytest.raises(RetrievalError, match='timed out') as error:
        get(url + '/frame.fits', 'a trickling service')
    assert time.perf_counter() - started < 4
    assert 'still arriving after conf.total_timeout' in str(error.value.__cause__)


def test_the_total_deadline_holds_for_the_sdss_cross_match(trickling_server, tmp_path):
    from astroquery.sdss import conf as sdss_conf
    from astro_galsim.retrieval import RetrievalError, query_sdss_objects
    url, _ = trickling_server
    started = time.perf_counter()
    with sdss_conf.set_temp('skyserver_baseurl', url), conf.set_temp('cache_dir', str(tmp_path)), \
            conf.set_temp('timeout', 1.0), conf.set_temp('total_timeout', 2.0), \
            pytest.raises(RetrievalError, match='timed out'):
        query_sdss_objects(SkyCoord(150.1, 2.2, unit='deg'))
    assert time.perf_counter() - started < 4


def test_offline_build_fails_and_its_failed_downloads_are_retried(frames, shared_data, tmp_path, monkeypatch, capsys):
    from astro_galsim.retrieval import RetrievalError, get_source
    from astro_galsim.retrieval.core import tan_wcs
    folder, good = frames
    catalogue = tmp_path / 'catalogue.csv'
    Table({'ra': good['center_ra'][:2], 'dec': good['center_dec'][:2]}).write(catalogue)
    output = str(tmp_path / 'db.fits')
    source = get_source('sdss')
    offline = [RetrievalError('could not connect to skyserver.sdss.org (Connection refused). There is no network '
                              'connection or the service is down: check the connection and try again later')]
    monkeypatch.setattr(source, 'fetch', lambda coords, *a: offline * len(coords))
    with conf.set_temp('cache_dir', str(tmp_path / 'cache')):
        assert main(['build', str(catalogue), '--output', output]) == 1
        assert 'no galaxy was stored' in capsys.readouterr().err
        # the network is back: the same command fetches what failed, without --restart
        jpegs = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:2]
        monkeypatch.setattr(source, 'fetch', lambda coords, *a: [
            NDData(read_image(j).data, wcs=tan_wcs(c, (423, 423), 0.396 * u.arcsec), meta={'bands': ('i', 'r', 'g')})
            for j, c in zip(jpegs, coords)])
        assert main(['build', str(catalogue), '--output', output]) == 0
    assert len(GalaxyDatabase.load(output)) == 2


@pytest.mark.parametrize('encoding', ['identity', 'gzip'])
def test_bounded_reads_read_a_whole_answer(encoding):
    import gzip
    from astro_galsim.retrieval._http import get
    body = np.random.default_rng(1).bytes(3_000_000)
    sent = gzip.compress(body) if encoding == 'gzip' else body
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    server.settimeout(10)

    def serve():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(f'HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(sent)}\r\n\r\n'.encode())
        for start in range(0, len(sent), 100_000):   # in pieces, as a network delivers it
            conn.sendall(sent[start:start + 100_000])
            time.sleep(0.01)
        conn.close()
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    response = get(f'http://127.0.0.1:{server.getsockname()[1]}/x', 'a local service')
    assert response.content == body
