"""Benchmark: SDSS cutouts per second from cached frames, against naive baselines.

Frames in the real DR17 format and at the real size (2048 x 1489 float32, nanomaggies,
real WCS, HDU1/HDU2) are built from the real DR7 r-band galaxies in
``../shared/data/sdss_fits_cutouts_pawlikmorph`` (each galaxy embedded in a frame of
noise with its own sky level), served once through the same fake archive as the tests
(``astroquery.query.BaseQuery._request`` replaced: no network), and cached. Then:

* ``astro_galsim``: `astro_galsim.retrieval.get_cutouts` from the cached frames
  (cutout cache emptied before every repetition, outside the timing): memory-mapped frames, only the
  needed region cropped, one bilinear `reproject_interp` per band without round-trip
  checks.
* ``naive interp``: per galaxy and band, read the whole frame with `astropy.io.fits`,
  `reproject_interp` of the full frame (defaults) onto the same grid.
* ``naive adaptive``: the same with flux-conserving `reproject_adaptive`.
* ``cached cutouts``: `get_cutouts` again with the finished cutouts cached.

Run: ``python benchmarks/retrieval.py [--size 128] [--repeat 3]``
"""
import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import astropy.units as u
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astro_galsim import retrieval  # noqa: E402
from astro_galsim.config import conf  # noqa: E402
from astro_galsim.retrieval.core import tan_wcs  # noqa: E402

FRAME_SHAPE = (1489, 2048)


def load_test_helpers():
    spec = importlib.util.spec_from_file_location('_test_retrieval', ROOT / 'tests' / 'test_retrieval.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def full_frame(real, rng):
    """Embed a real galaxy image in a 2048 x 1489 frame of matching noise, WCS extended."""
    data = real['data']
    ny, nx = data.shape
    border = np.concatenate([data[:10].ravel(), data[-10:].ravel()])
    sigma = 1.4826 * np.median(np.abs(border - np.median(border)))
    frame = rng.normal(0.0, sigma, FRAME_SHAPE).astype(np.float32)
    y0, x0 = 600, 900
    frame[y0:y0 + ny, x0:x0 + nx] = data
    wcs = real['wcs'].deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix + [x0, y0]
    return frame, wcs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=128, help='cutout size in pixels')
    parser.add_argument('--repeat', type=int, default=3, help='repetitions (best is reported)')
    parser.add_argument('--galaxies', type=int, default=8)
    args = parser.parse_args()

    T = load_test_helpers()
    shared = ROOT.parent / 'shared' / 'data'
    index = T.Table.read(shared / T.FOLDER / 'index.csv', format='ascii.csv')
    names = []
    for row in index[(index['kind'] == 'large') & (index['nx'] == 231)]:
        name = row['path'].split('sdsslcutout_')[1].split('_rband')[0]
        std = index[index['path'] == f'cutouts/sdsscutout_{name}_rband.fits']
        if len(std) == 1 and str(std['field'][0]).isdigit() and row['wcs_consistent_with_name'] == 'True':
            names.append(name)
    names = names[:args.galaxies]

    from astroquery.query import BaseQuery
    fake = T.FakeArchive()
    rng = np.random.default_rng(1)
    reals = []
    for k, name in enumerate(names):
        real = T.load_real_galaxy(shared, name)
        real['field'] = 1000 + k  # one frame per galaxy
        frame, wcs = full_frame(real, rng)
        fake.add_galaxy(real, objid=1237650000000000000 + k)
        fake.add_frame(real, data=frame, wcs=wcs)
        reals.append(real)
    BaseQuery._request = lambda query, *a, **kw: fake.request(query, *a, **kw)
    coords = T.SkyCoord([r['coord'] for r in reals])
    shape = (args.size, args.size)
    scale = 0.396 * u.arcsec
    n = len(coords)

    with tempfile.TemporaryDirectory() as tmp, conf.set_temp('cache_dir', tmp), \
            conf.set_temp('show_progress', False):
        first = retrieval.get_cutouts(coords, size=args.size)  # fills the frame cache
        assert all(isinstance(c, NDData) for c in first), first
        frames = sorted(Path(tmp).rglob('frame-*.fits'))
        requests_before = sum(fake.calls.values())

        def ours():
            return retrieval.get_cutouts(coords, size=args.size)

        def clear_cutouts():
            shutil.rmtree(Path(tmp) / 'cutouts', ignore_errors=True)

        def cached():
            return retrieval.get_cutouts(coords, size=args.size)

        def naive(method):
            from reproject import reproject_adaptive, reproject_interp
            out = []
            for real in reals:
                wcs_out = tan_wcs(real['coord'].icrs, shape, scale)
                cube = np.empty((3,) + shape, np.float32)
                for k, band in enumerate('irg'):
                    path = next(p for p in frames if p.name.startswith(f'frame-{band}-')
                                and p.name.endswith(f"-{real['field']:04d}.fits"))
                    with fits.open(path, memmap=False) as hdul, warnings.catch_warnings():
                        warnings.simplefilter('ignore')
                        data = hdul[0].data
                        wcs = WCS(hdul[0].header)
                    if method == 'interp':
                        cube[k] = reproject_interp((data, wcs), wcs_out, shape_out=shape,
                                                   return_footprint=False)
                    else:
                        cube[k] = reproject_adaptive((data, wcs), wcs_out, shape_out=shape,
                                                     conserve_flux=True, return_footprint=False)
                out.append(cube)
            return out

        def best(func, setup=None):
            times = []
            for _ in range(args.repeat):
                if setup is not None:
                    setup()
                t0 = time.perf_counter()
                result = func()
                times.append(time.perf_counter() - t0)
            return min(times), result

        t_naive, ref = best(lambda: naive('interp'))
        t_adapt, _ = best(lambda: naive('adaptive'))
        t_ours, mine = best(ours, setup=clear_cutouts)
        t_cached, _ = best(cached)
        assert sum(fake.calls.values()) == requests_before, 'cached runs made requests'
        # The same pixels as the naive path (ours multiplies by the tiny pixel-area ratio).
        worst = max(float(np.nanmax(np.abs(m.data - r))) / float(np.nanmax(np.abs(r)))
                    for m, r in zip(mine, ref))

    print(f'SDSS cutouts from cached frames: {n} galaxies x 3 bands, {args.size}x{args.size} px, '
          f'frames {FRAME_SHAPE[1]}x{FRAME_SHAPE[0]} float32; best of {args.repeat}')
    print(f'max |ours - naive interp| / max |naive| = {worst:.1e}')
    print(f"{'method':<34}{'s per batch':>12}{'cutouts/s':>12}{'vs naive interp':>17}")
    rows = [('naive interp (full frame, baseline)', t_naive),
            ('naive adaptive (full frame)', t_adapt),
            ('astro_galsim get_cutouts (frames)', t_ours),
            ('astro_galsim get_cutouts (cached)', t_cached)]
    for label, t in rows:
        print(f'{label:<34}{t:>12.4f}{n / t:>12.1f}{t_naive / t:>16.1f}x')


if __name__ == '__main__':
    main()
