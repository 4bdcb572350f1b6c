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

Usage::

    python benchmarks/search.py                 # N = 10k, 100k; d = 64
    python benchmarks/search.py --full          # adds N = 1M (minutes)
    python benchmarks/search.py --dims 64 128 --sizes 10000
"""
import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import astropy.units as u  # noqa: E402
from astropy.coordinates import SkyCoord  # noqa: E402
from astropy.table import QTable  # noqa: E402

from astro_galsim.database import GalaxyDatabase  # noqa: E402
from astro_galsim.index import NeighbourIndex, exact_knn, recall  # noqa: E402


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
    args = parser.parse_args(argv)
    sizes = list(args.sizes) + ([1_000_000] if args.full else [])

    print(f'cpus: {os.cpu_count()}, queries: {args.queries}, k: {args.k}, '
          f'cluster dimension: {args.intrinsic}')
    start = time.perf_counter()
    warm = NeighbourIndex(clustered_vectors(2000, args.dims[0]), method='nndescent')
    warm.query(warm.vectors[:2], 5)
    print(f'pynndescent numba compilation (once per process): {time.perf_counter() - start:.1f} s')

    rows = []
    for d in args.dims:
        for n in sizes:
            row = bench(n, d, args)
            rows.append(row)
            print(f'  done N={n} d={d}', flush=True)

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


if __name__ == '__main__':
    main()
