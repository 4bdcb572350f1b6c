"""Measure the figures behind the promises of ``docs/reliability.rst``.

Not a speed benchmark: each section tries the package under one kind of trouble and
prints what happened, as counts and times.

* positions: the WCS position stored for every FITS cutout of
  ``../shared/data/sdss_fits_cutouts_pawlikmorph`` given as a path, against the WCS centre
  in its ``index.csv``; the seven files with a wrong WCS given with their true position;
* kills during saves: ``kill -9`` of a process saving a large database over an existing one,
  at random moments; whether the file still loads (FITS checksums verified) and whether the
  temporary file is gone after the next save;
* kills during builds: ``kill -9`` of ``astro-galsim build`` after its first saved partition, then
  the same command again, against an uninterrupted build;
* concurrency: threads querying and embedding one `SimilaritySearch` at once, against the
  same calls made one after another; two processes saving the same file at once;
* network: a position query against a port on 127.0.0.1 that refuses connections and one that
  never answers, with the default timeouts;
* adding: threads adding galaxies to one `SimilaritySearch` at once, against the same adds made
  one after another (rows, vectors, ids), with the time and peak memory of each;
* slow server: a server on 127.0.0.1 that sends its headers, then one byte every 2 s, asked for a
  frame and for the SDSS cross-match with ``conf.total_timeout = 30``;
* huge image: a 10000 x 10000 int16 FITS frame (200 MB) with a WCS, read without a position
  (refused before its pixels are read) and described at a position (from a section), each in a
  fresh process whose peak memory is reported.

Usage::

    python benchmarks/reliability.py                 # all sections (about 5 minutes)
    python benchmarks/reliability.py --only network
    python benchmarks/reliability.py --only adding slow_server huge_image
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from astropy import units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.table import QTable, Table  # noqa: E402

from astro_galsim import SimilaritySearch, conf, read_image  # noqa: E402
from astro_galsim.database import GalaxyDatabase  # noqa: E402
from astro_galsim.ingest import interpret_items  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
ENCODER = {'name': 'benchmark', 'sha256': '3f' * 32}


def positions():
    folder = DATA / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    good = index[index['wcs_consistent_with_name'] == 'True']
    search = SimilaritySearch()
    coords = interpret_items([folder / p for p in good['path']])[2]
    sep = coords.separation(SkyCoord(good['center_ra'], good['center_dec'], unit='deg')).to(u.arcsec)
    print(f'FITS paths with a WCS: {int(np.isfinite(sep).sum())} of {len(good)} positions stored; '
          f'largest offset from the WCS centre {np.nanmax(sep):.3f}')
    wrong = index[index['wcs_consistent_with_name'] == 'False']
    report = search.add([folder / p for p in wrong['path']],
                        coords=SkyCoord(wrong['name_ra'], wrong['name_dec'], unit='deg'))
    said = ['WCS' in r for r in report['reason']]
    centre = ['centre holds a galaxy' in r for r in report['reason']]
    print(f'wrong WCS, true position given: {int(np.sum(~report["accepted"]))} of {len(wrong)} rejected, '
          f'{sum(said)} saying the WCS puts the position off the galaxy, {sum(centre)} that the centre '
          'holds one')


_SAVER = '''
import sys, numpy as np
from astropy.table import QTable
from astro_galsim.database import GalaxyDatabase
n = int(sys.argv[2])
db = GalaxyDatabase(np.random.default_rng(1).normal(size=(n, 64)).astype(np.float32),
                    QTable({'id': [f'g{i}' for i in range(n)]}), encoder_id={'name': 'benchmark', 'sha256': '3f' * 32},
                    index_options={'method': 'exact'})
print('ready', flush=True)
while True:
    db.save(sys.argv[1], overwrite=True)
'''


def kills_during_saves(trials=10, n=230_000):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'db.fits'
        started = time.perf_counter()
        subprocess.run([sys.executable, '-c', _SAVER.replace('while True:', 'if True:'), str(path), str(n)],
                       check=True, capture_output=True)
        size = path.stat().st_size / 1e6
        rng = np.random.default_rng(0)
        intact = left = 0
        for _ in range(trials):
            with subprocess.Popen([sys.executable, '-c', _SAVER, str(path), str(n)], stdout=subprocess.PIPE,
                                  text=True) as saver:
                saver.stdout.readline()
                time.sleep(rng.uniform(0.05, 1.5))
                os.kill(saver.pid, signal.SIGKILL)
                saver.wait()
            intact += len(GalaxyDatabase.load(path, index_options={'method': 'exact'})) == n
            left += len(os.listdir(tmp)) - 1
        GalaxyDatabase(np.zeros((1, 64), np.float32), QTable({'id': ['x']}), encoder_id=ENCODER).save(
            path, overwrite=True)
        print(f'kill -9 during saves of a {size:.0f} MB database: {trials} kills, the file loaded with '
              f'valid checksums after {intact}; {left} temporary files were left by the kills and '
              f'{len(os.listdir(tmp)) - 1} remained after the next save '
              f'({time.perf_counter() - started:.0f} s)')


def kills_during_builds(n=30, chunk=10):
    from astro_galsim.shards import read_shard
    labels = Table.read(DATA / 'sdss_gz1_eggochi' / 'labels.csv', format='ascii.csv')
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / 'images'
        source.mkdir()
        for p in labels['path'][:n]:
            (source / Path(p).name).symlink_to(DATA / 'sdss_gz1_eggochi' / p)
        command = [sys.executable, '-m', 'astro_galsim.cli', 'build', str(source), '--partition-size', str(chunk),
                   '--output']
        killed = Path(tmp) / 'killed.fits'
        shards = Path(f'{killed}.shards')
        with subprocess.Popen(command + [str(killed)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) as build:
            while not list(shards.glob('part-*.parquet')):
                time.sleep(0.05)
            os.kill(build.pid, signal.SIGKILL)
            build.wait()
        # the build's record is its shards: the database file is written when the build ends or stops
        saved = sum(len(read_shard(path)[0]) for path in shards.glob('part-*.parquet'))
        database_left = killed.exists()
        subprocess.run(command + [str(killed)], check=True, capture_output=True)
        fresh = Path(tmp) / 'fresh.fits'
        subprocess.run(command + [str(fresh)], check=True, capture_output=True)
        a, b = GalaxyDatabase.load(killed), GalaxyDatabase.load(fresh)
        rows = b.lookup_ids(a.ids)
        print(f'kill -9 of a build of {n} images after its first saved partition: {saved} galaxies kept in '
              f'its shards (a database file left: {database_left}); the rerun '
              f'ended with {len(a)} galaxies against {len(b)} for an uninterrupted build, same ids: '
              f'{sorted(a.ids) == sorted(b.ids)}, largest vector difference '
              f'{np.abs(a.vectors - b.vectors[rows]).max():.1e}')


def concurrency(threads=8):
    demo = SimilaritySearch.load_demo()
    ids = list(demo.ids[:200])
    images = [read_image(DATA / 'sdss_gz1_eggochi' / p)
              for p in Table.read(DATA / 'sdss_gz1_eggochi' / 'labels.csv', format='ascii.csv')['path'][:4]]
    serial_q = demo.query(ids, k=10)
    serial_e = demo.embed(images)
    results = [None] * threads

    def work(i):
        results[i] = (demo.query(ids, k=10), demo.embed(images))
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    same = sum(list(q['id']) == list(serial_q['id']) and np.array_equal(q['distance'], serial_q['distance'])
               and np.array_equal(e, serial_e) for q, e in results)
    print(f'{threads} threads each querying 200 ids and embedding 4 images on one search: {same} of {threads} '
          'bit-identical to the same calls made serially')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'db.fits'
        code = _SAVER.replace('while True:', 'for _ in range(20):')
        savers = [subprocess.Popen([sys.executable, '-c', code, str(path), '20000'], stdout=subprocess.DEVNULL)
                  for _ in range(2)]
        codes = [s.wait() for s in savers]
        print(f'2 processes saving one file 20 times each at once: exit codes {codes}, the file loads with '
              f'{len(GalaxyDatabase.load(path))} galaxies, {len(os.listdir(tmp)) - 1} temporary files left')


def network():
    from astroquery.sdss import conf as sdss_conf
    demo = SimilaritySearch.load_demo()
    for kind in ('refusing', 'silent'):
        server = socket.socket()
        server.bind(('127.0.0.1', 0))
        port = server.getsockname()[1]
        if kind == 'refusing':
            server.close()
        else:
            server.listen(8)
        with tempfile.TemporaryDirectory() as tmp, conf.set_temp('cache_dir', tmp), \
                sdss_conf.set_temp('skyserver_baseurl', f'http://127.0.0.1:{port}'):
            started = time.perf_counter()
            try:
                demo.query(SkyCoord(150.1, 2.2, unit='deg'), k=5)
            except ValueError as exc:
                message = str(exc)
        server.close()
        print(f'position query, service {kind}: failed after {time.perf_counter() - started:.1f} s '
              f'(conf.timeout {conf.timeout} s, connect_timeout {conf.connect_timeout} s, total_timeout '
              f'{conf.total_timeout} s): {message.split(": ", 3)[-1][:160]}...')


def adding(threads=8, per_thread=2, rounds=3):
    labels = Table.read(DATA / 'sdss_gz1_eggochi' / 'labels.csv', format='ascii.csv')
    paths = [DATA / 'sdss_gz1_eggochi' / p for p in labels['path'][:threads * per_thread]]
    images = [read_image(p) for p in paths]
    ids = [p.stem for p in paths]
    SimilaritySearch().embed(images[:1])   # the encoder's weights loaded once, outside the timings
    started = time.perf_counter()
    serial = SimilaritySearch()
    for t in range(threads):   # the same calls, one after another
        serial.add(images[t * per_thread:(t + 1) * per_thread], ids=ids[t * per_thread:(t + 1) * per_thread])
    serial_time = time.perf_counter() - started
    aligned, times, largest = 0, [], 0.0
    for _ in range(rounds):
        search = SimilaritySearch()

        def work(t):
            part = slice(t * per_thread, (t + 1) * per_thread)
            search.add(images[part], ids=ids[part])
        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        started = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        times.append(time.perf_counter() - started)
        rows = search.database.lookup_ids(serial.ids)
        same = len(search.table) == len(search.vectors) == len(serial) and (rows >= 0).all()
        if same:
            largest = max(largest, float(np.abs(search.vectors[rows] - serial.vectors).max()))
        aligned += bool(same and np.array_equal(search.vectors[rows], serial.vectors))
    print(f'{threads} threads each adding {per_thread} JPEGs to one search, {rounds} times: the rows, ids and '
          f'vectors of the same adds made one after another in {aligned} of {rounds} (bit-identical; largest '
          f'difference {largest:.1e}; {len(serial)} galaxies stored); {np.median(times):.1f} s per round against '
          f'{serial_time:.1f} s one after another; peak memory of this process {_peak_mb():.0f} MB')


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trickling_server(interval):
    """A server on 127.0.0.1 that sends headers, then one byte every ``interval`` s; stops after 120 s."""
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(8)
    server.settimeout(0.5)
    stop = time.monotonic() + 120

    def trickle(conn):
        try:
            conn.recv(65536)
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n')
            while time.monotonic() < stop:
                conn.sendall(b'x')
                time.sleep(interval)
        except OSError:
            pass
        finally:
            conn.close()

    def serve():
        while time.monotonic() < stop:
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    return f'http://127.0.0.1:{server.getsockname()[1]}'


def slow_server(interval=2.0, total=30.0):
    from astroquery.sdss import conf as sdss_conf
    from astro_galsim.retrieval import RetrievalError, query_sdss_objects
    from astro_galsim.retrieval._http import get
    url = _trickling_server(interval)
    with tempfile.TemporaryDirectory() as tmp, conf.set_temp('cache_dir', tmp), \
            conf.set_temp('total_timeout', total), sdss_conf.set_temp('skyserver_baseurl', url):
        for what, call in (('a frame download', lambda: get(url + '/frame.fits.bz2', 'a frame download')),
                           ('the SDSS cross-match', lambda: query_sdss_objects(SkyCoord(150.1, 2.2, unit='deg')))):
            started = time.perf_counter()
            try:
                call()
                outcome = 'answered (unexpected)'
            except RetrievalError as exc:
                outcome = str(exc).split(': ', 1)[-1][:90]
            print(f'slow server (one byte every {interval:g} s), {what}, conf.total_timeout {total:g} s: '
                  f'ended after {time.perf_counter() - started:.1f} s: {outcome}...')


_HUGE_READ = '''
import sys, time
from astropy.coordinates import SkyCoord
from astro_galsim import SimilaritySearch, read_image
start = time.perf_counter()
if sys.argv[2] == 'read':
    try:
        read_image(sys.argv[1])
        outcome = 'read'
    except ValueError as exc:
        outcome = 'refused: ' + str(exc).split("' ", 1)[-1][:105]
else:
    search = SimilaritySearch()
    report = search.add([sys.argv[1]], coords=SkyCoord(150.0, 2.0, unit='deg'), ids=['huge'])
    outcome = 'described from a section, ' + ('accepted' if report['accepted'][0] else report['reason'][0][:60])
# the high-water mark of this process (ru_maxrss would include the parent's, kept across exec)
peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')) / 1024
print(f'{time.perf_counter() - start:.1f} s, peak memory {peak:.0f} MB: ' + outcome)
'''


def huge_image(side=10_000):
    from astropy.io import fits
    from astropy.wcs import WCS
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [side / 2 + 0.5, side / 2 + 0.5]
    wcs.wcs.cdelt = [-0.396 / 3600, 0.396 / 3600]
    rng = np.random.default_rng(0)
    y, x = np.mgrid[-200:201, -200:201]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'huge.fits'
        data = rng.integers(990, 1011, (side, side), dtype=np.int16)   # sky noise, 200 MB in memory
        data[side // 2 - 200:side // 2 + 201, side // 2 - 200:side // 2 + 201] += (
            400 * np.exp(-np.hypot(x / 12, y / 7))).astype(np.int16)   # a galaxy at the centre
        fits.PrimaryHDU(data, wcs.to_header()).writeto(path)
        del data
        size = path.stat().st_size / 1e6
        baseline = subprocess.run([sys.executable, '-c', 'import astro_galsim; print(next(int(line.split()[1]) for line '
                                   "in open('/proc/self/status') if line.startswith('VmHWM')) / 1024)"],
                                  capture_output=True, text=True)
        print(f'huge image: {side} x {side} int16 FITS, {size:.0f} MB on disk (conf.max_image_pixels '
              f'{conf.max_image_pixels:,}); importing the package alone peaks at {float(baseline.stdout):.0f} MB')
        for mode in ('read', 'describe'):
            run = subprocess.run([sys.executable, '-c', _HUGE_READ, str(path), mode], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
            print(f'  {mode}: {run.stdout.strip() or run.stderr.strip()[-300:]}')


SECTIONS = {'positions': positions, 'saves': kills_during_saves, 'builds': kills_during_builds,
            'concurrency': concurrency, 'network': network, 'adding': adding, 'slow_server': slow_server,
            'huge_image': huge_image}

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', choices=sorted(SECTIONS), nargs='+', default=list(SECTIONS))
    args = parser.parse_args()
    print(f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    with conf.set_temp('show_progress', False):
        for name in args.only:
            SECTIONS[name]()
