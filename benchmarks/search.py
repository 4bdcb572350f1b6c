"""Benchmark of neighbour search and the database file, against exact search in the same run.

For each size N (and dimension d) the script makes synthetic clustered latent vectors,
measures exact brute-force search (`astro_galsim.index.exact_knn`, the baseline and the
ground truth), then the pynndescent index of `NeighbourIndex` (build time, queries per
second, recall@10), memory per galaxy, and the save/load time of a `GalaxyDatabase`.
Ratios are relative to exact search measured in the same run.

Synthetic data: N/1000 clusters (at least 10) with centres drawn from N(0, 1) in d
dimensions; each cluster is an 8-dimensional Gaussian sheet (random orientation,
scale 0.6) plus isotropic noise of 0.1 per dimension, like an autoencoder latent space
where each kind of galaxy varies along a few directions. ``--intrinsic d`` gives
isotropic blobs instead (harder for any approximate index). Queries are 1000 held-out
vectors from the same distribution.

``--reopen N`` measures what a user of a large saved database waits for: open the file
and answer a batch of queries (``--reopen-queries``, 10,000) with the pynndescent index, in
a fresh Python process (so both paths pay numba's compilation), once from a file without
the stored neighbour graph (the index is rebuilt: NN-descent runs) and once from the same
database saved with its index (``NEIGHBOURS``: the k-NN graph, and the ``SEARCH*`` HDUs: the
search tree and search graph, installed as they are; only their distances and the search
function are set up). Recall@10 of both is measured on the first 1000 queries against exact search.
Each child prints where its seconds go: imports, loading the file, building the index (and
the part of it numba spends compiling rather than loading its disk cache), the first query,
all queries, and the time from its launch to its first answer. Before them a fresh process
opens a small database with a stored graph, which fills numba's on-disk cache once (the
one-time warm-up a new installation pays; NN-descent itself cannot be cached).

Usage::

    python benchmarks/search.py                 # N = 10k, 100k; d = 64
    python benchmarks/search.py --full          # adds N = 1M (minutes)
    python benchmarks/search.py --dims 64 128 --sizes 10000
    python benchmarks/search.py --sizes --reopen 1000000   # reopen + 10,000 queries at 1M
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

_STARTED = time.perf_counter()
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import astropy.units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.table import QTable  # noqa: E402

from astro_galsim.database import GalaxyDatabase  # noqa: E402
from astro_galsim.database_file import database_hdulist, write_database_file  # noqa: E402
from astro_galsim.index import NeighbourIndex, exact_knn, recall  # noqa: E402

_IMPORTS_S = time.perf_counter() - _STARTED


def clustered_vectors(n, d, *, intrinsic=8, noise=0.1, seed=0):
    """Synthetic clustered latent vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 1000)
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    basis = (rng.normal(size=(n_clusters, intrinsic, d)) * (0.6 / np.sqrt(intrinsic))).astype(np.float32)
    labels = rng.integers(n_clusters, size=n)
    out = rng.normal(scale=noise, size=(n, d)).astype(np.float32)
    z = rng.normal(size=(n, intrinsic)).astype(np.float32)
    order = np.argsort(labels, kind='stable')
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    for c in range(n_clusters):
        rows = order[bounds[c]:bounds[c + 1]]
        out[rows] += centres[c] + z[rows] @ basis[c]
    return out


def nbytes(obj, seen=None, depth=0):
    """Bytes held in numpy arrays (and sparse matrices) reachable from ``obj``."""
    from scipy import sparse
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 4:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes if obj.base is None or id(obj.base) not in seen else 0
    if sparse.issparse(obj):
        return sum(nbytes(getattr(obj, a), seen, depth + 1) for a in ('data', 'indices', 'indptr'))
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v, seen, depth + 1) for v in obj)
    if isinstance(obj, dict):
        return sum(nbytes(v, seen, depth + 1) for v in obj.values())
    if hasattr(obj, '__dict__') and depth < 3:
        return sum(nbytes(v, seen, depth + 1) for v in vars(obj).values())
    return 0


def timed(func, *args, repeat=1, **kwargs):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def bench(n, d, args):
    x = clustered_vectors(n + args.queries, d, intrinsic=min(args.intrinsic, d), seed=args.seed)
    data, queries = x[:n], x[n:]
    row = {'N': n, 'd': d}

    # Baseline: exact search, batched, and one query at a time.
    t_exact, (true_i, _) = timed(exact_knn, data, queries, args.k)
    row['exact_qps'] = args.queries / t_exact
    n_single = 20
    start = time.perf_counter()
    for q in queries[:n_single]:
        exact_knn(data, q, args.k)
    row['exact_ms_single'] = (time.perf_counter() - start) / n_single * 1e3

    # pynndescent through NeighbourIndex
    gc.collect()
    t_build, index = timed(NeighbourIndex, data, method='nndescent', random_state=args.seed,
                           n_jobs=args.n_jobs)
    # arrays held by the index: our float32 vectors + pynndescent's data copy, graphs, trees
    row['index_bytes_per_galaxy'] = nbytes(index) / n
    row['build_s'] = t_build
    index.query(queries[:10], args.k)  # warm
    results = {}
    for eps in args.epsilons:
        t_q, (ann_i, _) = timed(index.query, queries, args.k, epsilon=eps, repeat=3)
        results[eps] = (args.queries / t_q, recall(ann_i, true_i))
    row['ann'] = results
    start = time.perf_counter()
    for q in queries[:200]:
        index.query(q, args.k)
    row['ann_ms_single'] = (time.perf_counter() - start) / 200 * 1e3
    del index
    gc.collect()

    # Database file
    rng = np.random.default_rng(args.seed)
    table = QTable({
        'id': np.char.add('SDSS J', np.arange(n).astype(str)),
        'coord': SkyCoord(rng.uniform(0, 360, n) * u.deg, rng.uniform(-10, 60, n) * u.deg),
        'area': rng.uniform(50, 3000, n) * u.pix**2,
        'r_mag': rng.uniform(13, 18, n) * u.mag,
        'accepted': rng.random(n) > 0.1,
    })
    db = GalaxyDatabase(data, table, encoder_id={'name': 'bench', 'sha256': '0' * 64},
                        provenance={'survey': 'SDSS', 'data_release': 17, 'bands': 'gri',
                                    'pixel_scale': 0.396 * u.arcsec})
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = os.path.join(tmp, 'db.fits')
        row['save_s'], _ = timed(db.save, path)
        row['file_bytes_per_galaxy'] = os.path.getsize(path) / n
        del db, table
        gc.collect()
        row['load_s'], loaded = timed(GalaxyDatabase.load, path)
        assert len(loaded) == n
        # First search right after loading: what a user waits for (exact below the threshold).
        row['first_search_s'], _ = timed(loaded.search, queries[0], k=args.k)
        row['load_method'] = loaded.index.method
    return row


def reopen_and_query(path, queries_path, k, started):
    """Child process: open a database, answer the queries with its pynndescent index.

    Prints the seconds of each step: imports (astro_galsim and pynndescent), numba's
    compilation (within the index build), loading the file, building the index, the first
    query and all queries, and ``first_answer_s``: from the launch of the process to its
    first answer.
    """
    t0 = time.perf_counter()
    import pynndescent  # noqa: F401  (imported by the first index build otherwise)
    from numba.core import event
    times = {'import_s': _IMPORTS_S + time.perf_counter() - t0}
    with event.install_recorder('numba:compile') as recorder:   # compiling, not loading the cache
        t0 = time.perf_counter()
        db = GalaxyDatabase.load(path, index_options={'method': 'nndescent'})
        times['load_s'] = time.perf_counter() - t0
        queries = np.load(queries_path)
        t0 = time.perf_counter()
        db.index.prepare()
        times['index_s'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.index.query(queries[:1], k)
        times['first_query_s'] = time.perf_counter() - t0
        times['first_answer_s'] = time.time() - started
        t0 = time.perf_counter()
        indices, _ = db.index.query(queries, k)
        times['query_s'] = time.perf_counter() - t0
    times['compile_s'] = _outermost_seconds(recorder.buffer)
    np.save(queries_path + '.result.npy', indices[:1000])
    print(json.dumps(times))


def _outermost_seconds(buffer):
    """Seconds spent in outermost numba compilations (nested ones are inside them)."""
    total, depth, start = 0.0, 0, None
    for timestamp, data in buffer:
        if data.is_start:
            if depth == 0:
                start = timestamp
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                total += timestamp - start
    return total


def warm_cache(d, args):
    """Open a small database with a stored graph in a fresh process: fills numba's disk cache."""
    x = clustered_vectors(3000, d, seed=args.seed)
    db = GalaxyDatabase(x[:2000], QTable({'id': np.char.add('g', np.arange(2000).astype(str))}),
                        encoder_id={'name': 'bench', 'sha256': '0' * 64},
                        index_options={'method': 'nndescent'})
    db.index.prepare()
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path, qpath = os.path.join(tmp, 'warm.fits'), os.path.join(tmp, 'queries.npy')
        db.save(path)
        np.save(qpath, x[2000:])
        return _child(path, qpath, args)


def _child(path, qpath, args):
    start = time.perf_counter()
    child = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', path, qpath,
                            '--k', str(args.k), '--started', repr(time.time())],
                           capture_output=True, text=True, check=True)
    times = json.loads(child.stdout.strip().splitlines()[-1])
    return dict(times, total_s=time.perf_counter() - start)


def bench_reopen(n, d, args):
    """Reopen + queries from a file without and with the stored index, each in a fresh process."""
    x = clustered_vectors(n + args.reopen_queries, d, intrinsic=min(args.intrinsic, d), seed=args.seed)
    data, queries = x[:n], x[n:]
    db = GalaxyDatabase(data, QTable({'id': np.char.add('g', np.arange(n).astype(str))}),
                        encoder_id={'name': 'bench', 'sha256': '0' * 64},
                        index_options={'method': 'nndescent'})
    t0 = time.perf_counter()
    db.index.prepare()
    t_build = time.perf_counter() - t0
    true_i, _ = exact_knn(data, queries[:1000], args.k)
    out = {'N': n, 'd': d, 'build_here_s': t_build}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        plain, stored = os.path.join(tmp, 'plain.fits'), os.path.join(tmp, 'graph.fits')
        write_database_file(plain, database_hdulist(db.vectors, db.table, encoder_id=db.encoder_id,
                                                    provenance={}, metric=db.metric))
        t0 = time.perf_counter()
        db.save(stored)
        out['save_with_graph_s'] = time.perf_counter() - t0
        out['file_mb'] = (os.path.getsize(plain) / 2**20, os.path.getsize(stored) / 2**20)
        del db
        gc.collect()
        qpath = os.path.join(tmp, 'queries.npy')
        np.save(qpath, queries)
        for name, path in (('rebuild', plain), ('stored index', stored)):
            out[name] = _child(path, qpath, args)
            out[name]['recall'] = recall(np.load(qpath + '.result.npy'), true_i)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='*', default=[10_000, 100_000])
    parser.add_argument('--full', action='store_true', help='add N = 1,000,000 (minutes)')
    parser.add_argument('--dims', type=int, nargs='+', default=[64])
    parser.add_argument('--queries', type=int, default=1000)
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--epsilons', type=float, nargs='+', default=[0.1, 0.2])
    parser.add_argument('--intrinsic', type=int, default=8,
                        help='dimension of each cluster (use d for isotropic blobs)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--n-jobs', type=int, default=None)
    parser.add_argument('--tmpdir', default=None)
    parser.add_argument('--reopen', type=int, nargs='*', default=[], metavar='N',
                        help='sizes for the reopen + queries measurement (e.g. 1000000)')
    parser.add_argument('--reopen-queries', type=int, default=10_000)
    parser.add_argument('--child', nargs=2, metavar=('DATABASE', 'QUERIES'), help=argparse.SUPPRESS)
    parser.add_argument('--started', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return reopen_and_query(args.child[0], args.child[1], args.k, args.started)
    sizes = list(args.sizes) + ([1_000_000] if args.full else [])

    print(f'cpus: {os.cpu_count()}, queries: {args.queries}, k: {args.k}, '
          f'cluster dimension: {args.intrinsic}')
    if sizes:
        start = time.perf_counter()
        warm = NeighbourIndex(clustered_vectors(2000, args.dims[0]), method='nndescent')
        warm.query(warm.vectors[:2], 5)
        print(f'pynndescent numba compilation (once per process): {time.perf_counter() - start:.1f} s')
        rows = []
        for d in args.dims:
            for n in sizes:
                rows.append(bench(n, d, args))
                print(f'  done N={n} d={d}', flush=True)
        print_search_tables(rows)
    reopened = []
    if args.reopen:
        warm = warm_cache(args.dims[0], args)
        print(f'numba disk-cache warm-up (a fresh process opens a 2,000-galaxy database with its graph): '
              f'{warm["total_s"]:.1f} s, of which compiling {warm["compile_s"]:.1f} s', flush=True)
    for n in args.reopen:
        reopened.append(bench_reopen(n, args.dims[0], args))
        print(f'  done reopen N={n}', flush=True)
    if reopened:
        print_reopen_table(reopened, args)


def print_search_tables(rows):
    print()
    print('Search (batched queries; ratio = pynndescent QPS / exact QPS in the same run)')
    head = (f"{'N':>9} {'d':>4} {'exact QPS':>10} {'build s':>8} {'eps':>5} {'ANN QPS':>9} "
            f"{'ratio':>7} {'recall@10':>9} {'exact ms/q':>10} {'ANN ms/q':>9} {'index B/gal':>11}")
    print(head)
    for r in rows:
        for eps, (qps, rec) in r['ann'].items():
            print(f"{r['N']:>9} {r['d']:>4} {r['exact_qps']:>10.0f} {r['build_s']:>8.1f} {eps:>5.2f} "
                  f"{qps:>9.0f} {qps / r['exact_qps']:>6.1f}x {rec:>9.4f} "
                  f"{r['exact_ms_single']:>10.2f} {r['ann_ms_single']:>9.3f} "
                  f"{r['index_bytes_per_galaxy']:>11.0f}")
    print()
    print('Database file (FITS, with checksums)')
    print(f"{'N':>9} {'d':>4} {'save s':>7} {'load s':>7} {'B/galaxy':>9} "
          f"{'first search s':>14} {'method':>9}")
    for r in rows:
        print(f"{r['N']:>9} {r['d']:>4} {r['save_s']:>7.2f} {r['load_s']:>7.2f} "
              f"{r['file_bytes_per_galaxy']:>9.0f} {r['first_search_s']:>14.3f} "
              f"{r['load_method']:>9}")
    print('\nexact ms/q and ANN ms/q: one query per call (latency). index B/gal: bytes of the '
          'arrays held by the pynndescent NeighbourIndex (vectors, pynndescent copy, graphs, '
          'trees) per galaxy; the vectors alone take 4*d bytes.')


def print_reopen_table(reopened, args):
    print()
    print(f'Reopen a saved database + {args.reopen_queries} queries (k={args.k}), fresh process each; '
          'ratio = rebuild total / stored-index total')
    print(f"{'N':>9} {'d':>4} {'path':>13} {'import s':>8} {'load s':>7} {'index s':>8} "
          f"{'(compile s)':>11} {'1st query s':>11} {'queries s':>9} {'1st answer s':>12} "
          f"{'total s':>8} {'recall@10':>9} {'file MB':>8} {'ratio':>6}")
    for r in reopened:
        for i, name in enumerate(('rebuild', 'stored index')):
            m = r[name]
            ratio = r['rebuild']['total_s'] / m['total_s']
            print(f"{r['N']:>9} {r['d']:>4} {name:>13} {m['import_s']:>8.1f} {m['load_s']:>7.1f} "
                  f"{m['index_s']:>8.1f} {m['compile_s']:>11.1f} {m['first_query_s']:>11.3f} "
                  f"{m['query_s']:>9.2f} {m['first_answer_s']:>12.1f} {m['total_s']:>8.1f} "
                  f"{m['recall']:>9.4f} {r['file_mb'][i]:>8.0f} {ratio:>5.1f}x")
    print('import: astro_galsim and pynndescent; index: NN-descent, or the stored k-NN graph, search tree '
          'and search graph set up (compile: numba compiling within it, not loading its disk cache); '
          '1st answer: from the launch of the process to its first answer; total includes Python '
          f'start-up. Index build in the parent process: {reopened[-1]["build_here_s"]:.1f} s.')


if __name__ == '__main__':
    main()
