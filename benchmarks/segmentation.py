"""Throughput of the segmentation stage and of the cutout -> latent vector path.

Compares, in one run and on the same real SDSS JPEG cutouts:

* a straightforward photutils baseline (Background2D + detect_sources + deblend_sources on
  the whole full-resolution image + a full SourceCatalog table + scipy zoom resampling);
* astro_galsim's stage (``measure_galaxy`` + ``normalise_galaxy``);
* the whole path from a cached cutout file to a latent vector: JPEG decode, colour form,
  the stage, and the pretrained encoder (``load_pretrained().encode``, which averages the
  8 flips / quarter turns), with 1 and 2 worker processes. Ours goes through
  `astro_galsim.pipeline.describe` (the code path `SimilaritySearch.add` runs, process
  start-up included: every worker encodes the galaxies it has just prepared); the
  baseline path prepares with the baseline in the workers and then encodes with the same
  encoder in this process.

It prints the single-process time per image of each step (CPU milliseconds, which a
busy machine disturbs less than wall time) and rates in galaxies per second (wall
time), with ratios to the baseline measured in the same run.

Usage (from the repository root)::

    python benchmarks/segmentation.py [--n 200] [--profile]

Reads real JPEG cutouts from ../shared/data/sdss_galaxies_mikeedi. The encoder step uses
astro_galsim/data/encoder.pt when it exists; otherwise only preparation is timed.
"""
import argparse
import cProfile
import io
import os
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
    return ndimage.zoom(cut, (1, 64 / cut.shape[1], 64 / cut.shape[2]), order=1).astype(np.float32)


def _load(path):
    from astro_galsim.io import read_image
    from astro_galsim.preprocessing import to_colour
    return to_colour(read_image(path))


def _stack(arrays, size=64):
    out = np.zeros((len(arrays), 3, size, size), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a is not None:
            out[i] = a
    return out


def _baseline_paths(paths):
    return [_baseline(_load(p)) for p in paths]


def _ours_arrays(arrays):
    return [_ours(a) for a in arrays]


def _baseline_arrays(arrays):
    return [_baseline(a) for a in arrays]


def _in_workers(func, items, workers):
    """func over items split into ``workers`` contiguous parts, one process each."""
    if workers == 1:
        return func(items)
    parts = np.array_split(np.arange(len(items)), workers)
    with ProcessPoolExecutor(workers) as pool:
        done = pool.map(func, [[items[i] for i in part] for part in parts])
        return [x for part in done for x in part]


def _per_image_ms(paths, encoder):
    """Single-process CPU ms per image of each step, ours and the baseline, interleaved."""
    from astro_galsim.io import read_image
    from astro_galsim.preprocessing import to_colour
    from astro_galsim.segmentation import measure_galaxy, normalise_galaxy
    clock = time.process_time
    steps = dict.fromkeys(('read (JPEG decode)', 'colour form', 'measure_galaxy', 'normalise_galaxy',
                           'photutils baseline stage'), 0.0)
    outputs = []
    for path in paths:
        t0 = clock()
        image = read_image(path)
        t1 = clock()
        rgb = to_colour(image)
        t2 = clock()
        m = measure_galaxy(rgb)
        t3 = clock()
        outputs.append(normalise_galaxy(rgb, m) if m['found'] else None)
        t4 = clock()
        _baseline(rgb)
        t5 = clock()
        for name, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            steps[name] += dt
    ms = {k: 1000 * v / len(paths) for k, v in steps.items()}
    if encoder is not None:
        # as in each describe() worker: one torch thread, batches of conf.batch_size / 8 galaxies
        import torch
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        batch = _stack(outputs)
        encoder.encode(batch[:8])  # warm-up
        t0 = clock()
        encoder.encode(batch)
        ms['encoder (8 views, 1 thread)'] = 1000 * (clock() - t0) / len(batch)
        torch.set_num_threads(threads)
    return ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=200, help='number of galaxies (default 200)')
    parser.add_argument('--profile', action='store_true', help='print a cProfile summary of our stage')
    args = parser.parse_args()
    from astro_galsim.pipeline import describe, prepare

    index = Table.read(DATA / 'index.csv', format='ascii.csv')
    paths = [str(DATA / p) for p in index['path'][::max(1, len(index) // args.n)][:args.n]]
    arrays = [_load(p) for p in paths]
    encoder = None
    if WEIGHTS.is_file():
        from astro_galsim.model import load_pretrained
        encoder = load_pretrained(WEIGHTS)
    side = int(np.median([a.shape[1] for a in arrays]))
    if encoder is not None:
        from astro_galsim.model import uses_bfloat16
        print(f'encoder arithmetic: {"bfloat16" if uses_bfloat16() else "float32"} (conf.encoder_precision)')
    print(f'{len(paths)} real SDSS JPEG cutouts, median side {side} px, {os.cpu_count()} CPUs, load average '
          f'{os.getloadavg()[0]:.1f} before the run. The CPU may be shared with other jobs: compare ratios '
          'within this run.')
    _ours_arrays(arrays[:3])  # warm-up (imports, caches)
    _baseline_arrays(arrays[:3])

    ms = _per_image_ms(paths, encoder)
    print('\nSingle process, CPU time per image (ms):')
    for name, value in ms.items():
        print(f'  {name:32s} {value:8.2f}')
    ours_path = ms['read (JPEG decode)'] + ms['colour form'] + ms['measure_galaxy'] + ms['normalise_galaxy']
    base_path = ms['read (JPEG decode)'] + ms['colour form'] + ms['photutils baseline stage']
    enc = ms.get('encoder (8 views, 1 thread)', 0.0)
    for name, total in (('cutout -> vector, ours', ours_path + enc),
                        ('cutout -> vector, baseline', base_path + enc)):
        print(f'  {name:32s} {total:8.2f}  ({1000 / total:.0f} gal/s per core)')
    print(f'  {"ratio baseline / ours":32s} {(base_path + enc) / (ours_path + enc):8.2f}x')

    rows = []
    for workers in (1, 2):
        for label, func in (('stage: photutils baseline', _baseline_arrays),
                            ('stage: astro_galsim measure+normalise', _ours_arrays)):
            start = time.perf_counter()
            _in_workers(func, arrays, workers)
            rows.append((label, workers, time.perf_counter() - start))
        # the whole path: files -> arrays (in workers) -> vectors (encoder in this process)
        start = time.perf_counter()
        batch = _stack(_in_workers(_baseline_paths, paths, workers))
        if encoder is not None:
            encoder.encode(batch)
        rows.append(('path: baseline, file -> vector', workers, time.perf_counter() - start))
        start = time.perf_counter()
        if encoder is not None:   # each worker encodes what it has just prepared
            describe(paths, encoder, workers=workers, progress=False)
        else:
            prepare(paths, workers=workers, progress=False)
        rows.append(('path: describe(), file -> vector', workers, time.perf_counter() - start))

    base = {(w, kind): len(paths) / t for label, w, t in rows for kind in ('stage', 'path')
            if label.startswith(kind) and 'baseline' in label}
    print(f'\nWall-clock rates ({"with" if encoder else "WITHOUT"} the encoder on the path):')
    print(f'{"what":44s} {"workers":>7s} {"n":>5s} {"seconds":>8s} {"gal/s":>8s} {"vs baseline":>11s}')
    for label, workers, elapsed in rows:
        rate = len(paths) / elapsed
        ratio = rate / base[(workers, label.split(':')[0])]
        print(f'{label:44s} {workers:7d} {len(paths):5d} {elapsed:8.2f} {rate:8.1f} {ratio:10.2f}x')
    for kind in ('stage: astro_galsim', 'path: describe'):
        one, two = (len(paths) / t for label, w, t in rows if label.startswith(kind))
        print(f'scaling 1 -> 2 workers, {kind.split(":")[0]} (ours): {two / one:.2f}x')
    if encoder is None:
        print(f'note: {WEIGHTS} not found; the encoder step is not timed (preparation only)')

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        _ours_arrays(arrays)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats('cumulative').print_stats(25)
        print(out.getvalue())


if __name__ == '__main__':
    main()
