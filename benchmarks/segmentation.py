"""Throughput of the segmentation stage and of the cutout -> latent vector path.

Compares astro_galsim's measure_galaxy + normalise_galaxy with a straightforward photutils
baseline measured in the same run (Background2D + detect_sources + deblend_sources on the
whole full-resolution image + a full SourceCatalog table + scipy zoom resampling), with 1
and 2 worker processes, and prints where the time goes (cProfile).

Usage (from the repository root)::

    python benchmarks/segmentation.py [--n 200] [--profile]

Reads real JPEG cutouts from ../shared/data/sdss_galaxies_mikeedi. The encoder step uses
astro_galsim/data/encoder.pt when it exists; otherwise only preparation is timed.
"""
import argparse
import cProfile
import io
import pstats
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / 'shared' / 'data' / 'sdss_galaxies_mikeedi'
WEIGHTS = ROOT / 'astro_galsim' / 'data' / 'encoder.pt'


def _ours(rgb):
    from astro_galsim.segmentation import measure_galaxy, normalise_galaxy
    m = measure_galaxy(rgb)
    return normalise_galaxy(rgb, m) if m['found'] else None


def _baseline(rgb):
    """A straightforward photutils pass over the full-resolution image."""
    from astropy.convolution import convolve
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import (SourceCatalog, deblend_sources, detect_sources,
                                        make_2dgaussian_kernel)
    from scipy import ndimage
    grey = rgb.mean(axis=0)
    box = max(16, grey.shape[0] // 8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # NoDetections / deblending-size warnings are not the point here
        bkg = Background2D(grey, box, filter_size=3, bkg_estimator=MedianBackground())
        data = grey - bkg.background
        convolved = convolve(data, make_2dgaussian_kernel(3.0, size=5))
        segm = detect_sources(convolved, 3 * bkg.background_rms, n_pixels=10)
        if segm is None:
            return None
        segm = deblend_sources(data, segm, n_pixels=10, n_levels=32, contrast=0.001, progress_bar=False)
        cat = SourceCatalog(data, segm, convolved_data=convolved)
        table = cat.to_table()
    label = segm.data[grey.shape[0] // 2, grey.shape[1] // 2] or 1
    row = table[int(label) - 1]
    r = float(row['semimajor_axis'].value) * 6
    x, y = float(row['x_centroid']), float(row['y_centroid'])
    y0, y1 = int(max(0, y - r)), int(min(grey.shape[0], y + r + 1))
    x0, x1 = int(max(0, x - r)), int(min(grey.shape[1], x + r + 1))
    cut = rgb[:, y0:y1, x0:x1]
    return ndimage.zoom(cut, (1, 64 / cut.shape[1], 64 / cut.shape[2]), order=1)


def _load(path):
    from astro_galsim.io import read_image
    from astro_galsim.preprocessing import to_colour
    return to_colour(read_image(path))


def _stage_chunk(args):
    func, arrays = args
    return [func(a) for a in arrays]


def _path_chunk(paths):
    return [_ours(_load(p)) for p in paths]


def _run(func, items, workers):
    if workers == 1:
        return func(items)
    chunks = [items[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return [x for part in pool.map(func, chunks) for x in part]


def _time(label, func, items, workers, table):
    # a warm-up call (imports, worker start-up excluded from the rate as far as possible)
    func(items[:2]) if workers == 1 else None
    start = time.perf_counter()
    _run(func, items, workers)
    elapsed = time.perf_counter() - start
    table.append((label, workers, len(items), elapsed, len(items) / elapsed))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=200, help='number of galaxies (default 200)')
    parser.add_argument('--profile', action='store_true', help='print a cProfile summary of our stage')
    args = parser.parse_args()
    index = Table.read(DATA / 'index.csv', format='ascii.csv')
    paths = [str(DATA / p) for p in index['path'][::max(1, len(index) // args.n)][:args.n]]
    arrays = [_load(p) for p in paths]
    print(f'{len(paths)} real SDSS JPEG cutouts, median side {int(np.median([a.shape[1] for a in arrays]))} px; '
          'CPU shared with other jobs: rates are noisy, compare ratios within this run')
    rows = []
    for workers in (1, 2):
        _time('stage: astro_galsim measure+normalise', _chunk_ours, arrays, workers, rows)
        _time('stage: photutils baseline', _chunk_base, arrays, workers, rows)
        _time('path: JPEG file -> normalised array', _path_chunk, paths, workers, rows)
    encoder_note = ''
    if WEIGHTS.is_file():
        from astro_galsim.model import load_pretrained
        encoder = load_pretrained(WEIGHTS)
        batch = np.stack([a for a in _path_chunk(paths) if a is not None]).astype(np.float32)
        start = time.perf_counter()
        encoder.encode(batch)
        rows.append(('encoder only (8 dihedral views, 1 process)', 1, len(batch), time.perf_counter() - start,
                     len(batch) / (time.perf_counter() - start)))
    else:
        encoder_note = f'note: {WEIGHTS} not found; the encoder step is not timed (preparation only)'
    base = {w: r[4] for r in rows for w in (1, 2) if r[0] == 'stage: photutils baseline' and r[1] == w}
    print(f'{"what":46s} {"workers":>7s} {"n":>5s} {"seconds":>8s} {"gal/s":>8s} {"vs baseline":>11s}')
    for label, workers, n, elapsed, rate in rows:
        ratio = rate / base[workers] if workers in base else np.nan
        print(f'{label:46s} {workers:7d} {n:5d} {elapsed:8.2f} {rate:8.1f} {ratio:10.2f}x')
    if encoder_note:
        print(encoder_note)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        _chunk_ours(arrays)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats('cumulative').print_stats(25)
        print(out.getvalue())


def _chunk_ours(arrays):
    return [_ours(a) for a in arrays]


def _chunk_base(arrays):
    return [_baseline(a) for a in arrays]


if __name__ == '__main__':
    main()
