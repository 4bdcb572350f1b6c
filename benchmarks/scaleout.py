"""Benchmark of the distributed build (`astro_galsim.scaleout.build_distributed`).

Real SDSS JPEGs already on disk (``../shared/data/sdss_galaxies_mikeedi/images``) are
prepared and embedded

* serially in this process (`SimilaritySearch.add`, the baseline, measured in the same run),
* on a `astro_galsim.scaleout.local_cluster` of 1 and of 2 worker processes (one thread
  each, as `build_distributed` starts by default).

For every run the script prints galaxies per second and the ratio to the serial baseline,
the peak resident memory of each worker process (``VmHWM``), the CPU time per galaxy and
the share of the cores the workers actually got (their CPU time over wall time x workers;
other jobs on the machine lower it). The serial baseline is run before and after the
cluster runs (the machine may be shared) and the mean is used. Cluster start-up and the
workers' first imports are timed separately and not counted in the build time (the
encoder load, once per worker, is counted).

Then it measures the cost of an interruption: a 2-worker build is stopped after half of
its partitions are saved (the remaining tasks are cancelled) and started again; it reports
how many partitions were started more than once (work redone) and the total time of the
two runs against an uninterrupted build.

Finally the memory sizing of a database: bytes per galaxy of the FITS file and of the
loaded `GalaxyDatabase` (vectors + catalogue, no index) for a database with the real
columns, tiled to ``--sizing-n`` galaxies.

Usage::

    python benchmarks/scaleout.py                    # 1000 images, partitions of 25
    python benchmarks/scaleout.py --n 400
"""
import argparse
import functools
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'sdss_galaxies_mikeedi' / 'images'


def _warm():
    """Import the heavy modules in a worker (not counted as build time)."""
    import astro_galsim.model  # noqa: F401
    import astro_galsim.pipeline  # noqa: F401
    import astro_galsim.scaleout  # noqa: F401
    return os.getpid()


def _peak_rss():
    """Peak resident memory of this process (VmHWM; ru_maxrss is inherited across fork/exec)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu():
    return time.process_time()


def _rss():
    import psutil
    return psutil.Process().memory_info().rss


def run_cluster(files, n_workers, partition_size, workdir):
    import distributed
    from astro_galsim.scaleout import build_distributed, local_cluster
    t0 = time.perf_counter()
    cluster = local_cluster(n_workers, dashboard_address='127.0.0.1:0')
    client = distributed.Client(cluster)
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.run(_warm)
    t_warm = time.perf_counter() - t0
    try:
        cpu0 = client.run(_cpu)
        t0 = time.perf_counter()
        db, report = build_distributed(files, client=client, partition_size=partition_size,
                                       shard_dir=workdir / f'shards-{n_workers}', progress=False)
        t_build = time.perf_counter() - t0
        cpu = sum(c - cpu0[w] for w, c in client.run(_cpu).items())
        peaks = client.run(_peak_rss)
        interrupt = None
        if n_workers == 2:
            interrupt = run_interruption(files, client, partition_size, workdir, t_build)
    finally:
        client.close()
        cluster.close()
    return dict(workers=n_workers, start=t_start, warm=t_warm, build=t_build, db=db, cpu=cpu,
                peak_rss=sorted(peaks.values()), interrupt=interrupt)


def record_start(marker_dir, number):
    """Worker hook of `build_distributed`: append the partition number to calls.txt."""
    with open(Path(marker_dir) / 'calls.txt', 'a') as f:
        f.write(f'{number}\n')


def len_calls(marker_dir):
    path = Path(marker_dir) / 'calls.txt'
    return len(path.read_text().split()) if path.exists() else 0


def run_interruption(files, client, partition_size, workdir, t_full):
    from astro_galsim.scaleout import BuildIncomplete, build_distributed
    shard_dir, marks = workdir / 'shards-interrupt', workdir / 'marks'
    marks.mkdir()
    hook = functools.partial(record_start, str(marks))   # records every partition a worker starts
    n_parts = -(-len(files) // partition_size)
    t0 = time.perf_counter()
    try:
        build_distributed(files, client=client, partition_size=partition_size, shard_dir=shard_dir,
                          progress=False, before_partition=hook,
                          stop_when=lambda saved: saved >= n_parts // 2)
    except BuildIncomplete as exc:
        saved = exc.done
    t_first = time.perf_counter() - t0
    started_first = len_calls(marks)
    t0 = time.perf_counter()
    _, report = build_distributed(files, client=client, partition_size=partition_size, shard_dir=shard_dir,
                                  progress=False, before_partition=hook)
    t_second = time.perf_counter() - t0
    started = len_calls(marks)
    return dict(partitions=n_parts, saved=saved, started_first=started_first,
                computed_restart=report.meta['partitions_computed'], started_total=started,
                redone=started - n_parts, t_first=t_first, t_second=t_second, t_full=t_full)


def sizing(db, n_target, workdir):
    """Bytes per galaxy of the file and of the loaded database, real columns tiled to n_target."""
    from astropy.table import QTable
    from astro_galsim.database import GalaxyDatabase
    reps = -(-n_target // len(db))
    table = QTable(db.table, copy=True)
    tiled = QTable({name: np.concatenate([table[name]] * reps)[:n_target] if name != 'coord'
                    else None for name in table.colnames if name != 'coord'})
    tiled['id'] = np.array([f'{1237650000000000000 + i}' for i in range(n_target)])
    tiled['ra'] = np.random.default_rng(0).uniform(0, 360, n_target)
    tiled['dec'] = np.random.default_rng(1).uniform(-10, 60, n_target)
    vectors = np.concatenate([db.vectors] * reps)[:n_target]
    big = GalaxyDatabase(vectors, tiled, encoder_id=db.encoder_id, provenance=db.provenance)
    path = workdir / 'sizing.fits'
    big.save(path)
    file_bytes = os.path.getsize(path) / n_target
    del big, tiled, vectors
    gc.collect()
    before = _rss()
    loaded = GalaxyDatabase.load(path)
    gc.collect()
    memory = (_rss() - before) / n_target
    table = loaded.table
    arrays = loaded.vectors.nbytes + sum(np.asarray(table[c]).nbytes for c in table.colnames if c != 'coord')
    arrays += table['coord'].ra.nbytes + table['coord'].dec.nbytes
    return dict(n=n_target, file=file_bytes, memory=memory, arrays=arrays / n_target,
                columns=len(table.colnames))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=1000, help='images (default 1000)')
    parser.add_argument('--partition-size', type=int, default=25)
    parser.add_argument('--sizing-n', type=int, default=100_000)
    args = parser.parse_args()

    from astro_galsim import SimilaritySearch, conf
    files = sorted(str(p) for p in (DATA / 'train').glob('*.jpg'))[:args.n]
    if len(files) < args.n:
        sys.exit(f'need {args.n} images in {DATA}, found {len(files)}')
    print(f'{len(files)} real SDSS JPEGs from {DATA}, partitions of {args.partition_size}, '
          f'{os.cpu_count()} cores; load average now {os.getloadavg()[0]:.1f}')
    print('NOTE: the CPU may be shared with other jobs; compare ratios measured in the same run.')
    workdir = Path(tempfile.mkdtemp(prefix='astro_galsim_bench_'))
    try:
        serial_times = []

        serial_cpu = []

        def serial():
            t0, c0 = time.perf_counter(), time.process_time()
            search = SimilaritySearch()
            search.add(files)
            serial_times.append(time.perf_counter() - t0)
            serial_cpu.append(time.process_time() - c0)
            return search

        with conf.set_temp('show_progress', False):
            search = serial()
            serial_peak = _peak_rss()
            runs = [run_cluster(files, w, args.partition_size, workdir) for w in (1, 2)]
            serial()
        t_serial = float(np.mean(serial_times))
        size = sizing(runs[-1]['db'], args.sizing_n, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    n = len(files)
    print(f'\nThroughput (stored {len(search)} of {n}; start-up and worker imports not counted)')
    print(f"{'path':<26} {'build s':>8} {'gal/s':>7} {'vs serial':>9} {'vs 1 worker':>11} "
          f"{'peak RSS/worker MB':>19} {'start s':>8} {'imports s':>9} {'max |dv|':>9} {'CPU share':>9} "
          f"{'CPU ms/gal':>10}")
    print(f"{'serial runs (before/after)':<26} {' / '.join(f'{t:.1f}' for t in serial_times):>8}")
    print(f"{'serial, in process (mean)':<26} {t_serial:>8.2f} {n / t_serial:>7.1f} {1:>9.2f} {'':>11} "
          f"{serial_peak / 2**20:>19.0f} {'':>8} {'':>9} {'':>9} {'':>9} "
          f"{1000 * np.mean(serial_cpu) / n:>10.1f}")
    for r in runs:
        same = list(r['db'].ids) == list(search.ids)
        dv = float(np.max(np.abs(r['db'].vectors - search.vectors))) if same else float('nan')
        label = f"LocalCluster, {r['workers']} worker(s)"
        print(f"{label:<26} {r['build']:>8.2f} {n / r['build']:>7.1f} "
              f"{t_serial / r['build']:>9.2f} {runs[0]['build'] / r['build']:>11.2f} "
              f"{' / '.join(f'{p / 2**20:.0f}' for p in r['peak_rss']):>19} {r['start']:>8.1f} "
              f"{r['warm']:>9.1f} {dv:>9.1e} {r['cpu'] / (r['build'] * r['workers']):>9.2f} "
              f"{1000 * r['cpu'] / n:>10.1f}")
    print('CPU share: CPU time the workers got during the build / (build time x workers); below 1 when '
          'other jobs take the cores.')
    it = runs[-1]['interrupt']
    print(f"\nInterruption (2 workers, {it['partitions']} partitions of {args.partition_size}): "
          f"stopped after {it['saved']} saved ({it['started_first']} started), "
          f"restart computed {it['computed_restart']}")
    print(f"{'':<34} {'seconds':>8} {'vs uninterrupted':>16}")
    print(f"{'uninterrupted build':<34} {it['t_full']:>8.2f} {1:>16.2f}")
    print(f"{'stopped run + restart':<34} {it['t_first'] + it['t_second']:>8.2f} "
          f"{(it['t_first'] + it['t_second']) / it['t_full']:>16.2f}")
    print(f"partitions started more than once (work redone): {it['redone']} of {it['partitions']} "
          f"({100 * it['redone'] / it['partitions']:.0f}%)")
    print(f"\nDatabase sizing ({size['n']:,} galaxies, {size['columns']} catalogue columns, 64-d vectors, "
          f"no index): file {size['file']:.0f} B/galaxy; loaded: {size['arrays']:.0f} B/galaxy in arrays "
          f"(vectors {4 * 64} B), {size['memory']:.0f} B/galaxy resident (RSS growth of the load)")


if __name__ == '__main__':
    main()
