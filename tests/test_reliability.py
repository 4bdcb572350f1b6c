"""Bad input, faults and killed processes: no silent wrong answer, no lost work.

One test (or a few) per finding of the robustness review; where the behaviour depends on
real images they are the SDSS frames and JPEGs in ``../shared/data``, including the seven
frames of ``sdss_fits_cutouts_pawlikmorph`` whose WCS is known to be wrong.
"""
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.table import QTable, Table
from astropy.utils.exceptions import AstropyUserWarning

from astro_galsim import SimilaritySearch, read_image
from astro_galsim.build import build_database
from astro_galsim.cli import main
from astro_galsim.database import DatabaseError, GalaxyDatabase
from astro_galsim.io import atomic_output
from astro_galsim.pipeline import prepare_one

ENCODER = {'name': 'test', 'sha256': '3f' * 32}


@pytest.fixture(scope='module')
def frames(shared_data):
    """The pawlikmorph index: standard cutouts with a good WCS, and the wrong-WCS ones."""
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    good = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')]
    wrong = index[index['wcs_consistent_with_name'] == 'False']
    return folder, good, wrong


@pytest.fixture(scope='module')
def search():
    return SimilaritySearch()


def small_db(n=30, d=8):
    rng = np.random.default_rng(1)
    table = QTable({'id': [f'g{i}' for i in range(n)],
                    'coord': SkyCoord(rng.uniform(150, 151, n) * u.deg, rng.uniform(0, 1, n) * u.deg)})
    return GalaxyDatabase(rng.normal(size=(n, d)).astype(np.float32), table, encoder_id=ENCODER,
                          index_options={'method': 'exact'})


# ------------------------------------------------------------------ 1. positions of FITS files
def test_fits_paths_store_their_wcs_positions(frames, tmp_path):
    folder, good, _ = frames
    rows = good[1:4]
    s = SimilaritySearch()
    s.add([folder / p for p in rows['path']])
    expected = SkyCoord(rows['center_ra'], rows['center_dec'], unit='deg')
    stored = s.database.coords[s.database.lookup_ids([p.split('/')[-1][:-5] for p in rows['path']])]
    assert (stored.separation(expected) < 1 * u.arcsec).all()
    # so exclude_radius excludes the stored neighbours of a position
    result = s.query(s.ids[0], k=2, exclude_radius=1 * u.deg)
    assert len(result) == 0

    # a build from a folder without positions takes them from the files too
    source = tmp_path / 'frames'
    source.mkdir()
    for p in rows['path']:
        (source / p.split('/')[-1]).symlink_to(folder / p)
    built, _ = build_database(source, tmp_path / 'db.fits', partition_size=2)
    assert np.isfinite(built.database.coords.ra.deg).all()


def test_header_only_geometry_matches_read_image(frames):
    from astro_galsim.io import fits_geometry
    folder, _, _ = frames
    for path in sorted(folder.rglob('*.fits*')):
        wcs, shape = fits_geometry(path)
        image = read_image(path)
        assert shape == image.data.shape
        corners = [(0, 0), (shape[-1] / 2, shape[-2] / 2), (shape[-1] - 1, shape[-2] - 1)]
        for x, y in corners:
            assert wcs.pixel_to_world(x, y).separation(image.wcs.pixel_to_world(x, y)) < 1e-6 * u.arcsec


# ------------------------------------------------------------------ 2. a wrong WCS is reported
def test_position_a_wrong_wcs_puts_off_its_galaxy_is_explained(frames, search):
    folder, _, wrong = frames
    row = wrong[wrong['path'] == 'pawlikmorph_testsample1/sdsscutout_169.18-0.21_rband.fits'][0]
    image = read_image(folder / row['path'])
    true = SkyCoord(row['name_ra'], row['name_dec'], unit='deg')
    # the WCS puts the galaxy's own position 850" away, far outside the 56" image (the older
    # IDL cutouts' pixels also contradict their header's SKY, which warns)
    with pytest.warns(AstropyUserWarning, match='header SKY'):
        report = search.add([image], coords=true, ids=['wrong-wcs'])
    assert not report['accepted'][0]
    assert 'outside the 141 x 141 image' in report['reason'][0]
    assert 'the image centre holds a galaxy: the WCS is probably wrong' in report['reason'][0]
    assert 'wrong-wcs' not in search.ids
    # the same image without its WCS is described at its centre
    with pytest.warns(AstropyUserWarning, match='header SKY'):
        vector = search.embed(NDData(image.data, meta={'header': image.meta['header']}))
    assert np.isfinite(vector).all()


# ------------------------------------------------------------------ 3. PNG depth and alpha, FITS cubes
def test_sixteen_bit_and_transparent_png(shared_data, tmp_path):
    from PIL import Image
    jpeg = next((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))
    grey8 = np.asarray(Image.open(jpeg).convert('L'))
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / 'deep.png')
    deep = read_image(tmp_path / 'deep.png')
    assert (deep.data == grey8).all()            # not clipped to 255
    rgba = np.asarray(Image.open(jpeg).convert('RGBA')).copy()
    rgba[:40, :, 3] = 0                          # a transparent strip
    Image.fromarray(rgba).save(tmp_path / 'alpha.png')
    image = read_image(tmp_path / 'alpha.png')
    assert image.mask is not None and image.mask[:40].all() and not image.mask[40:].any()


def test_fits_cube_of_counts_is_not_a_display_image(frames, tmp_path):
    folder, good, _ = frames
    data = read_image(folder / good['path'][1]).data.astype(np.float32) - 1000
    fits.PrimaryHDU(data).writeto(tmp_path / 'plane.fits')
    fits.PrimaryHDU(np.stack([data] * 3)).writeto(tmp_path / 'cube.fits')
    _, plane = prepare_one(tmp_path / 'plane.fits')
    with pytest.warns(AstropyUserWarning, match='bands of its 3 planes are not named'):
        _, cube = prepare_one(tmp_path / 'cube.fits')
    assert cube['r50'] == pytest.approx(plane['r50'], rel=0.02)


# ------------------------------------------------------------------ 4. query checks the galaxy
def test_query_refuses_what_add_rejects(frames, shared_data):
    folder, good, _ = frames
    # a search that keeps only galaxies of 10 pixels or more (the default limit is the resolution)
    search = SimilaritySearch(selection={'min_r50': 10 * u.pix})
    search.add(sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:3])
    small = folder / good['path'][0]     # r50 9.3 pix: below that 10 pix
    assert not search.add([small])['accepted'][0]
    with pytest.raises(ValueError, match='half-light radius .* below the minimum'):
        search.query(small, k=2)


# ------------------------------------------------------------------ 5. k and exclude_radius
@pytest.mark.parametrize('k', [2.7, None, float('nan'), True, 0, '3'])
def test_k_must_be_a_whole_number(k):
    with pytest.raises(ValueError, match='k must be a whole number'):
        small_db().search(np.zeros(8), k=k)


def test_negative_exclude_radius_is_refused():
    db = small_db()
    with pytest.raises(ValueError, match='non-negative'):
        db.search(db.vectors[0], k=3, query_coords=db.coords[:1], exclude_radius=-5 * u.arcsec)


# ------------------------------------------------------------------ 6. unsigned and decoy files
def test_database_without_checksums_or_with_a_decoy_is_refused(tmp_path):
    db = small_db()
    path = tmp_path / 'db.fits'
    db.save(path)
    with fits.open(path) as hdul:
        hdul['VECTORS'].data[0] += 1              # altered, then written without checksums
        for hdu in hdul:
            for keyword in ('CHECKSUM', 'DATASUM'):
                hdu.header.remove(keyword, ignore_missing=True)
        hdul.writeto(tmp_path / 'unsigned.fits')
        decoy = fits.ImageHDU(np.zeros_like(hdul['VECTORS'].data), name='VECTORS')
        fits.HDUList([h.copy() for h in hdul] + [decoy]).writeto(tmp_path / 'decoy.fits', checksum=True)
    with pytest.raises(DatabaseError, match='no FITS checksums'):
        GalaxyDatabase.load(tmp_path / 'unsigned.fits')
    with pytest.raises(DatabaseError, match="2 'VECTORS' HDUs"):
        GalaxyDatabase.load(tmp_path / 'decoy.fits')


# ------------------------------------------------------------------ 7. file modes
def test_saving_keeps_the_file_mode(tmp_path):
    db = small_db()
    path = tmp_path / 'db.fits'
    db.save(path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    os.chmod(path, 0o644)
    db.save(path, overwrite=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# ------------------------------------------------------------------ 8. nothing done is an error
@pytest.mark.parametrize('size', ['-1', '0'])
def test_build_refuses_a_chunk_size_below_one(shared_data, tmp_path, size, capsys):
    output = tmp_path / 'db.fits'
    assert main(['build', str(shared_data / 'sdss_gz1_eggochi'), '--output', str(output),
                 '--chunk-size', size]) == 1
    err = capsys.readouterr().err   # the deprecated name still works, and says what replaces it
    assert 'partition_size must be a whole number' in err and '--chunk-size is deprecated' in err
    assert not output.exists()


def test_query_on_an_empty_database_is_an_error(tmp_path, capsys):
    path = tmp_path / 'empty.fits'
    SimilaritySearch().save(path)
    assert main(['query', '180.4819 -1.0693', '--database', str(path)]) == 1
    assert 'the database is empty' in capsys.readouterr().err


# ------------------------------------------------------------------ 9. one bad item, not the batch
def test_bad_items_are_rejected_rows_and_the_rest_is_stored(shared_data):
    paths = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:3]
    good = read_image(paths[0])
    infinite = good.data.astype(np.float32)
    infinite[0, 5, 5] = np.inf
    bad_mask = NDData(good.data, mask=np.zeros((5, 5), bool), meta={'bands': ('i', 'r', 'g')})
    s = SimilaritySearch()
    report = s.add([paths[0], infinite, bad_mask, paths[1], paths[2]],
                   ids=['a', 'inf', 'mask', 'b', ' c'])
    assert list(report['accepted']) == [True, False, False, True, False]
    assert '1 infinite pixel' in report['reason'][1]
    assert 'the mask has shape (5, 5)' in report['reason'][2]
    assert 'white space' in report['reason'][4]
    assert sorted(s.ids) == ['a', 'b'] and len(s) == 2
    # a column of the wrong length is refused before any image is described; nothing changes
    with pytest.raises(ValueError, match="column 'z' has 1 values for 2 images"):
        s.add(paths[1:3], ids=['d', 'e'], columns={'z': [1.0]})
    assert sorted(s.ids) == ['a', 'b'] and len(s) == 2


def test_refused_database_add_changes_nothing():
    db = GalaxyDatabase(encoder_id=ENCODER, dim=8)
    with pytest.raises(ValueError):
        db.add(np.zeros((2, 5)), QTable({'id': ['a', 'b']}))   # vectors of the wrong dimension
    assert len(db) == 0 and len(db.ids) == 0


# ------------------------------------------------------------------ 10. killed saves
def test_a_killed_save_leaves_no_lasting_temporary(tmp_path):
    path = tmp_path / 'db.fits'
    path.write_bytes(b'old')
    with subprocess.Popen([sys.executable, '-c', (
            'import time\n'
            'from astro_galsim.io import atomic_output\n'
            f'with atomic_output({str(path)!r}) as fh:\n'
            '    fh.write(b"x" * 1000000); fh.flush(); print("writing", flush=True); time.sleep(60)\n')],
            stdout=subprocess.PIPE, text=True) as writer:
        assert writer.stdout.readline().strip() == 'writing'
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    left = [p for p in tmp_path.iterdir() if p != path]
    assert len(left) == 1 and left[0].stat().st_size == 1000000   # what a kill -9 leaves
    assert path.read_bytes() == b'old'
    with atomic_output(path) as fh:                                # the next save clears it up
        fh.write(b'new')
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == b'new'


def test_temporaries_of_running_writers_are_kept(tmp_path):
    path = tmp_path / 'db.fits'
    alive = tmp_path / f'.db.fits.{os.getpid()}-0123abcd.tmp'   # this process is writing it
    alive.write_bytes(b'partial')
    with atomic_output(path) as fh:
        fh.write(b'new')
    assert alive.exists()


# ------------------------------------------------------------------ 11. why galaxies were rejected
def test_build_writes_the_reasons_for_rejections(frames, tmp_path, capsys):
    folder, good, _ = frames
    source = tmp_path / 'frames'
    source.mkdir()
    for p in good['path'][:3]:          # the first is too small for a 10-pixel minimum
        (source / p.split('/')[-1]).symlink_to(folder / p)
    output = tmp_path / 'db.fits'
    _, report = build_database(source, output, search=SimilaritySearch(selection={'min_r50': 10 * u.pix}))
    out = capsys.readouterr().out
    assert '2 added now, 1 rejected' in out
    assert '1 rejected: half-light radius' in out
    rejected = Table.read(f'{output}.rejected.ecsv')
    assert list(rejected['id']) == [good['path'][0].split('/')[-1][:-5]]
    assert 'below the minimum 10.0 pix' in rejected['reason'][0]


# ------------------------------------------------------------------ 12. no network
@pytest.fixture
def local_sdss(tmp_path):
    """Point the SDSS services at 127.0.0.1: a port that refuses and one that never answers."""
    import socket
    from astroquery.sdss import conf as sdss_conf
    from astro_galsim import conf
    closed = socket.socket()
    closed.bind(('127.0.0.1', 0))
    refusing = closed.getsockname()[1]
    closed.close()                     # nothing listens there: connections are refused
    silent = socket.socket()
    silent.bind(('127.0.0.1', 0))
    silent.listen(8)                   # connections are accepted by the kernel, never answered
    ports = {'refusing': refusing, 'silent': silent.getsockname()[1]}

    def use(kind):
        return sdss_conf.set_temp('skyserver_baseurl', f'http://127.0.0.1:{ports[kind]}')
    with conf.set_temp('cache_dir', str(tmp_path / 'cache')), conf.set_temp('show_progress', False):
        yield use, ports
    silent.close()


def test_offline_query_fails_fast_and_says_why(local_sdss, shared_data):
    use, ports = local_sdss
    s = SimilaritySearch()
    s.add(sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[:1])
    started = time.perf_counter()
    with use('refusing'), pytest.raises(ValueError) as error:
        s.query(SkyCoord(150.1, 2.2, unit='deg'), k=1)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert f'could not connect to 127.0.0.1:{ports["refusing"]}' in message
    assert 'Connection refused' in message and 'check the connection' in message
    assert 'SDSS DR17 catalogue cross-match' in message


def test_a_silent_service_is_abandoned_within_the_total_time(local_sdss):
    from astropy import log
    from astro_galsim import conf
    from astro_galsim.retrieval import RetrievalError, query_sdss_objects
    use, _ = local_sdss
    started = time.perf_counter()
    with use('silent'), conf.set_temp('timeout', 0.5), conf.set_temp('total_timeout', 2.0), \
            log.log_to_list() as messages, pytest.raises(RetrievalError, match='timed out') as error:
        query_sdss_objects(SkyCoord(150.1, 2.2, unit='deg'))
    assert time.perf_counter() - started < 3
    assert 'conf.total_timeout = 2.0 s' in str(error.value)
    assert any('retrying in 1 s' in m.getMessage() for m in messages)


# ------------------------------------------------------------------ 13. the command line
@pytest.mark.parametrize('target, expected', [
    ('400 100', 'RA must be in [0, 360) degrees and Dec in [-90, 90]'),
    ('12 -95', 'RA must be in [0, 360) degrees and Dec in [-90, 90]'),
    ('missing.fits', "image file 'missing.fits' does not exist"),
    ('no/such/folder', "image file 'no/such/folder' does not exist"),
])
def test_cli_bad_targets_say_what_is_wrong(target, expected, tmp_path, capsys):
    path = tmp_path / 'db.fits'
    s = SimilaritySearch()
    s.database.add(np.ones((1, s.encoder.latent_dim), np.float32) / np.sqrt(s.encoder.latent_dim),
                   QTable({'id': ['g0']}))
    s.save(path)
    assert main(['query', target, '--database', str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_cli_expected_failures_are_one_line(tmp_path, capsys, shared_data):
    damaged = tmp_path / 'damaged.fits'
    small_db().save(damaged)
    damaged.write_bytes(damaged.read_bytes()[:-2000])
    folder = tmp_path / 'folder'
    folder.mkdir()
    s = SimilaritySearch()
    s.database.add(np.ones((1, s.encoder.latent_dim), np.float32) / np.sqrt(s.encoder.latent_dim),
                   QTable({'id': ['g0']}))
    good = tmp_path / 'db.fits'
    s.save(good)
    # weights whose card matches but which hold a pickled call: refused, nothing run
    import json
    import pickle
    from importlib import resources
    from astro_galsim.model import file_sha256
    weights = tmp_path / 'weights.pt'
    weights.write_bytes(pickle.dumps(os.system, protocol=2))
    card = json.loads((resources.files('astro_galsim') / 'data' / 'encoder.json').read_text())
    card['sha256'] = file_sha256(weights)
    weights.with_suffix('.json').write_text(json.dumps(card))
    jpeg = sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[0]
    (folder / 'g.jpg').symlink_to(jpeg)
    Table({'path': ['g.jpg'], 'similarity_group': ['a']}).write(folder / 'labels.csv')
    runs = [(['info', str(damaged)], 'damaged'),
            (['query', 'g0', '--database', str(damaged)], 'damaged'),
            (['query', str(folder), '--database', str(good)], 'is a directory'),
            (['evaluate', str(folder), '--encoder', str(weights)], 'the encoder weights were refused')]
    for argv, expected in runs:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code, err = exit_.code, str(exit_)
        else:
            err = capsys.readouterr().err
        assert code not in (0, None), argv
        assert expected in err and len(err.strip().splitlines()) == 1, (argv, err)


# ------------------------------------------------------------------ 14. errors that say what is wrong
def test_truncated_fits_is_named(frames, tmp_path):
    folder, good, _ = frames
    raw = (folder / good['path'][0]).read_bytes()
    (tmp_path / 'cut.fits').write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match=r"cannot read '.*cut.fits' as FITS: it is damaged or truncated"):
        read_image(tmp_path / 'cut.fits')


def test_unusable_images_and_empty_inputs(search, shared_data):
    jpeg = read_image(sorted((shared_data / 'sdss_gz1_eggochi').rglob('*.jpg'))[0])
    assert search.embed([]).shape == (0, search.encoder.latent_dim)
    assert len(SimilaritySearch().add([])) == 0
    report = SimilaritySearch().add([np.full((64, 64), np.nan), np.moveaxis(jpeg.data, 0, -1)])
    assert 'no finite, unmasked pixel' in report['reason'][0]
    assert 'has its colour planes last' in report['reason'][1]


def test_tables_with_text_positions(search):
    stored = QTable({'id': ['m87'], 'coord': SkyCoord([187.70593] * u.deg, [12.39112] * u.deg)})
    database = GalaxyDatabase(np.zeros((1, search.encoder.latent_dim), np.float32), stored,
                              encoder_id=search.encoder.identity)
    m87 = SimilaritySearch(search.encoder, database)
    table = Table({'ra': ['12:30:49.4'], 'dec': ['+12:23:28']})
    result = m87.query(table, k=1, exclude_self=False)   # the sexagesimal text is the stored galaxy's position
    assert list(result['query_id']) == ['m87']
    assert result['query_coord'][0].ra.deg == pytest.approx(187.7058, abs=1e-3)
    with pytest.raises(ValueError, match="the ra/dec columns 'ra', 'dec' are not positions"):
        m87.query(Table({'ra': ['north'], 'dec': ['up']}))


def test_index_of_another_format_is_explained(tmp_path):
    from astro_galsim.build import read_source
    (tmp_path / 'index.csv').write_text('file,label\na.jpg,1\n')
    with pytest.raises(ValueError, match='has no path column'):
        read_source(tmp_path)


def test_crafted_database_errors_name_the_file(tmp_path):
    path = tmp_path / 'db.fits'
    small_db().save(path)
    with fits.open(path) as hdul:
        hdul[0].header['NGALAXY'] = 'many'
        hdul.writeto(tmp_path / 'crafted.fits', checksum=True)
    with pytest.raises(DatabaseError, match='crafted.fits'):
        GalaxyDatabase.load(tmp_path / 'crafted.fits')


def test_database_of_another_dimension_is_refused_at_load(tmp_path):
    s = SimilaritySearch()
    db = GalaxyDatabase(np.ones((2, 8), np.float32), QTable({'id': ['a', 'b']}),
                        encoder_id=s.encoder.identity)
    db.save(tmp_path / 'db.fits')
    with pytest.raises(DatabaseError, match='vectors of 8 dimensions but the encoder'):
        SimilaritySearch.load(tmp_path / 'db.fits')
