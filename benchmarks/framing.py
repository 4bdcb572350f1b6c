"""Benchmark: does a galaxy's description depend on how its cutout is framed?

Every comparison is between two images of one galaxy that differ only in framing,
resolution or format, on real SDSS data from ``../shared/data``:

* ``training sample`` (``sdss_galaxies_mikeedi``) and ``GZ1 test`` (the ``test`` split of
  ``sdss_gz1_eggochi``; nothing is trained here): a random sample of ``--n`` colour JPEGs,
  each re-framed by central crops to 80, 60 and 45 per cent of its side (the galaxy then
  overflows the cutout, as in the training sample's own tight cutouts) and resampled by
  0.5, 0.7, 1.5 and 2 (Lanczos), against the full image.
* ``FITS pairs``: the 119 galaxies of ``sdss_fits_cutouts_pawlikmorph`` that have a
  standard (141 px) and a large (117-231 px) r-band cutout, compared in arcsec through each
  file's WCS pixel scale.
* ``FITS -> JPEG``: the 12 galaxies that are both a FITS cutout there and a colour JPEG
  of the training sample (``same_galaxy_in_mikeedi.csv``). The JPEGs' pixel scale is not
  known, so only retrieval is reported for them, no size agreement.

Size agreement: the fraction of cases whose radius agrees within 10 per cent with the
reference (radius / resampling factor for resampled copies; failures count as
disagreeing) and the median ratio, for ``r50`` and for ``scale_radius`` when the
measurements table has that column ("n/a" otherwise).

Same-galaxy retrieval: the re-framed copy's vector as the query, the rank of the same
galaxy's reference image by cosine similarity among the database: all 7,505 training
galaxies (full images; the FITS -> JPEG queries too), the 1,021 GZ1 test galaxies, or the
120 standard FITS cutouts (for the large-cutout queries). Vectors come from
`astro_galsim.pipeline.describe` with the encoder; the database's are cached in
``--cache-dir`` under the encoder's checksum and a hash of the astro_galsim source, so a
re-run only describes the queries.

Baseline, measured in the same run on the same queries and databases: a fixed centre
crop with no segmentation, the central 62 per cent of the grey image (the raw FITS
counts minus their median), resized to 48x48, unit length, cosine similarity.

Usage (from the repository root)::

    python benchmarks/framing.py [--n 300] [--seed 0] [--encoder WEIGHTS] [--workers 2]
                                 [--cache-dir DIR] [--output table.ecsv]
"""
import argparse
import csv
import hashlib
import io
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.config import get_cache_dir
from astropy.nddata import NDData
from astropy.table import Table
from astropy.wcs.utils import proj_plane_pixel_scales
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import astro_galsim  # noqa: E402
from astro_galsim import read_image  # noqa: E402
from astro_galsim.io import COLOUR_IMAGE_BANDS, atomic_output  # noqa: E402
from astro_galsim.model import load_pretrained  # noqa: E402
from astro_galsim.pipeline import describe  # noqa: E402

DATA = ROOT.parent / 'shared' / 'data'
TRAINING = DATA / 'sdss_galaxies_mikeedi'
GZ1 = DATA / 'sdss_gz1_eggochi'
FITS = DATA / 'sdss_fits_cutouts_pawlikmorph'

#: (kind, factor) of the re-framed copies
FRAMINGS = [('crop', 0.8), ('crop', 0.6), ('crop', 0.45),
            ('resample', 0.5), ('resample', 0.7), ('resample', 1.5), ('resample', 2.0)]
TOLERANCE = 0.10             # radii agree when their ratio is within 10 per cent of 1
SAME_GALAXY = 20 * u.arcsec  # FITS files whose name positions are this close show one galaxy
BASELINE_CROP = 0.62         # the typical width ratio of tight to wide cutouts (issue 14)
BASELINE_SIZE = 48
BASELINE_VERSION = 'centre-crop-1'  # part of the baseline cache key: change with the baseline
MEASURED = ('r50', 'scale_radius', 'truncated')  # columns read from the measurements, where present


# ----------------------------------------------------------------------------- framing

def centre_crop(image, fraction):
    """The central ``fraction`` of each side of an image (last two axes)."""
    ny, nx = image.shape[-2:]
    sy, sx = max(1, round(ny * fraction)), max(1, round(nx * fraction))
    y0, x0 = (ny - sy) // 2, (nx - sx) // 2
    return np.ascontiguousarray(image[..., y0:y0 + sy, x0:x0 + sx])


def reframe(rgb, kind, factor):
    """A re-framed copy of a ``(3, ny, nx)`` uint8 image and the factor its radii scale by.

    ``crop``: the central ``factor`` of each side (radii unchanged); ``resample``: the whole
    image resized by ``factor`` with a Lanczos filter (radii scale by the realised factor).
    """
    if kind == 'crop':
        return centre_crop(rgb, factor), 1.0
    ny, nx = rgb.shape[1:]
    size = (round(nx * factor), round(ny * factor))
    resized = Image.fromarray(rgb.transpose(1, 2, 0)).resize(size, Image.LANCZOS)
    return np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1)), size[0] / nx


def as_jpeg_image(rgb):
    """An in-memory copy in the form `~astro_galsim.read_image` gives colour JPEGs."""
    return NDData(rgb, meta={'bands': COLOUR_IMAGE_BANDS, 'kind': 'colour'})


# ----------------------------------------------------------------------------- baseline

def baseline_vector(grey):
    """The centre-crop baseline: central 62% of a grey image, 48x48, unit length."""
    crop = centre_crop(np.asarray(grey, dtype=np.float32), BASELINE_CROP)
    small = np.asarray(Image.fromarray(crop).resize((BASELINE_SIZE, BASELINE_SIZE), Image.BILINEAR))
    vector = small.ravel().astype(np.float64)
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def baseline_grey(image):
    """Grey pixels of a colour array or of a FITS NDData (raw counts minus their median)."""
    data = np.asarray(image.data if isinstance(image, NDData) else image, dtype=np.float32)
    if data.ndim == 3:
        return data.mean(axis=0)
    return data - np.nanmedian(data)


def _baseline_of_path(path):
    return baseline_vector(baseline_grey(read_image(path)))


def baseline_vectors(paths, workers):
    with ProcessPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(_baseline_of_path, paths, chunksize=64)))


# ----------------------------------------------------------------------------- describing

def summarise(vectors, table):
    """Vectors and the measurement columns this benchmark reads, as plain arrays."""
    out = {'vectors': np.asarray(vectors, dtype=np.float32)}
    for name in MEASURED:
        if name in table.colnames:
            column = table[name]
            out[name] = np.asarray(column.value if hasattr(column, 'unit') and column.unit else column)
    return out


def code_version():
    """Hash of the installed astro_galsim source: cached descriptions expire with the code."""
    digest = hashlib.sha256(astro_galsim.__version__.encode())
    for path in sorted(Path(astro_galsim.__file__).parent.glob('*.py')):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def cached(cache_dir, name, key, compute):
    """``compute()`` (a dict of arrays), kept in ``cache_dir/name-key.npz``."""
    path = Path(cache_dir) / f'{name}-{key}.npz'
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in stored.files}, True
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        np.savez(handle, **result)
    return result, False


def files_key(paths, *parts):
    digest = hashlib.sha256('\n'.join(map(str, list(parts) + list(paths))).encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- metrics

def ranks(queries, database, truth):
    """Rank (1 = first) of the best true match of every query by cosine similarity.

    ``truth`` is a boolean ``(n_queries, n_database)`` array of same-galaxy entries. A query
    or database vector that is NaN (no galaxy found) never matches: its true rank is taken
    as the database size.
    """
    q_ok, d_ok = np.isfinite(queries).all(1), np.isfinite(database).all(1)
    sims = np.nan_to_num(queries) @ np.nan_to_num(database).T
    sims[:, ~d_ok] = -np.inf
    best_true = np.where(truth & d_ok, sims, -np.inf).max(axis=1)
    rank = 1 + (sims > best_true[:, None]).sum(axis=1)
    rank[~q_ok | ~np.isfinite(best_true)] = len(database)
    return rank


def agreement(radius, reference):
    """Fraction of ratios within the tolerance (a missing radius counts as disagreeing) and
    the median ratio of those that exist."""
    ratio = radius / reference
    ok = np.isfinite(ratio) & (ratio > 0)
    if not ok.any():
        return 0.0, np.nan
    return float(np.mean(ok & (np.abs(ratio - 1) <= TOLERANCE))), float(np.median(ratio[ok]))


def row(dataset, framing, query, reference, rank, base_rank, database):
    """One line of the result table: size agreement and retrieval of one set of queries.

    ``query`` and ``reference`` hold the radii to compare (already in one unit and scale)
    and the query's vectors; ``reference`` is None where radii cannot be compared.
    """
    out = {'set': dataset, 'framing': framing, 'n': len(rank), 'database': database,
           'no_galaxy': int((~np.isfinite(query['vectors']).all(1)).sum())}
    for name in ('r50', 'scale_radius'):
        frac = median = np.nan
        if reference is not None and name in query and name in reference:
            frac, median = agreement(query[name], reference[name])
        out[f'{name}_within_10pc'], out[f'{name}_median_ratio'] = frac, median
    out['truncated'] = float(np.mean(query['truncated'])) if 'truncated' in query else np.nan
    for label, r in (('', rank), ('baseline_', base_rank)):
        out[f'{label}recall@1'] = float(np.mean(r <= 1))
        out[f'{label}recall@10'] = float(np.mean(r <= 10))
        out[f'{label}median_rank'] = float(np.median(r))
    out['ratio@1'] = out['recall@1'] / out['baseline_recall@1'] if out['baseline_recall@1'] > 0 else np.nan
    return out


# ----------------------------------------------------------------------------- data sets

def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def run_jpeg_set(label, folder, paths, sample, database, base_database, encoder, workers):
    """Re-framed copies of ``sample`` (indices into ``paths``) against the full images."""
    reference = {k: v[sample] for k, v in database.items()}
    truth = np.zeros((len(sample), len(paths)), dtype=bool)
    truth[np.arange(len(sample)), sample] = True
    originals = [read_image(folder / paths[i]).data for i in sample]
    rows = []
    for kind, factor in FRAMINGS:
        t0 = time.perf_counter()
        copies = [reframe(rgb, kind, factor) for rgb in originals]
        factors = np.array([f for _, f in copies])
        vectors, table = describe([as_jpeg_image(c) for c, _ in copies], encoder, workers=workers,
                                  progress=False)
        query = summarise(vectors, table)
        sizes = {k: query[k] / factors for k in ('r50', 'scale_radius') if k in query}
        base = np.stack([baseline_vector(baseline_grey(c)) for c, _ in copies])
        rows.append(row(label, f'{kind} {factor:g}', dict(query, **sizes), reference,
                        ranks(query['vectors'], database['vectors'], truth),
                        ranks(base, base_database, truth), len(paths)))
        print(f'  {label}, {kind} {factor:g}: {time.perf_counter() - t0:.0f} s', flush=True)
    return rows


def fits_galaxies():
    """Index rows of the standard cutouts, and of the large ones by the name they share."""
    index = read_csv(FITS / 'index.csv')
    standard = [r for r in index if r['kind'] == 'standard' and r['path'].startswith('cutouts/')]
    large = {r['path'].split('sdsslcutout_')[1].split('_rband')[0]: r for r in index
             if r['kind'] == 'large' and r['path'].startswith('large_cutouts/')}
    return standard, large


def describe_paths(paths, encoder, workers):
    return summarise(*describe([str(p) for p in paths], encoder, workers=workers, progress=False))


def with_frame_calibration(large_path, standard_path):
    """The large cutout with the ``SOFTBIAS``, ``SKY`` and ``FLUX20`` of the standard cutout's header,
    and whether the two hold the same counts at the standard cutout's centre.

    Both are cut from one ``fpC`` frame, but the large cutouts' header kept only the WCS, so
    as given they are read as of unknown calibration and scaled by their noise.
    """
    large, standard = read_image(large_path), read_image(standard_path)
    header = large.meta['header'].copy()
    for key in ('SOFTBIAS', 'SKY', 'FLUX20', 'FILTER'):
        header[key] = standard.meta['header'][key]
    centre = standard.wcs.pixel_to_world(*(np.array(standard.data.shape[::-1]) // 2))
    x, y = (int(round(float(c))) for c in large.wcs.world_to_pixel(centre))
    ny, nx = standard.data.shape
    same = bool(0 <= y < large.data.shape[0] and 0 <= x < large.data.shape[1]
                and large.data[y, x] == standard.data[ny // 2, nx // 2])
    return NDData(large.data, wcs=large.wcs, unit=large.unit, meta={**large.meta, 'header': header}), same


def pixel_scale(path):
    """Arcsec per pixel of a FITS file, from its WCS."""
    return float(np.mean(proj_plane_pixel_scales(read_image(path).wcs)) * 3600)


# ----------------------------------------------------------------------------- output

COLUMNS_SIZE = [('set', 'set', '{}'), ('framing', 'framing', '{}'), ('n', 'n', '{}'),
                ('no_galaxy', 'no galaxy', '{}'),
                ('r50_within_10pc', 'r50 <=10%', '{:.3f}'), ('r50_median_ratio', 'r50 median ratio', '{:.3f}'),
                ('scale_radius_within_10pc', 'scale_radius <=10%', '{:.3f}'),
                ('scale_radius_median_ratio', 'scale_radius median ratio', '{:.3f}'),
                ('truncated', 'truncated', '{:.3f}')]
COLUMNS_RETRIEVAL = [('set', 'set', '{}'), ('framing', 'framing', '{}'), ('n', 'n', '{}'),
                     ('database', 'database', '{}'),
                     ('recall@1', 'recall@1', '{:.3f}'), ('recall@10', 'recall@10', '{:.3f}'),
                     ('median_rank', 'median rank', '{:g}'),
                     ('baseline_recall@1', 'base recall@1', '{:.3f}'),
                     ('baseline_recall@10', 'base recall@10', '{:.3f}'),
                     ('baseline_median_rank', 'base median rank', '{:g}'),
                     ('ratio@1', 'recall@1 / base', '{:.2f}')]


def text_table(rows, columns):
    def cell(value, fmt):
        if isinstance(value, float) and not np.isfinite(value):
            return 'n/a'
        return fmt.format(value)
    cells = [[title for _, title, _ in columns]]
    cells += [[cell(r[key], fmt) for key, _, fmt in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    rule = '  '.join('=' * w for w in widths)
    lines = [rule, '  '.join(c.ljust(w) for c, w in zip(cells[0], widths)), rule]
    lines += ['  '.join(c.ljust(w) for c, w in zip(line, widths)) for line in cells[1:]]
    return '\n'.join(lines + [rule])


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=300, help='JPEGs sampled per set (default 300)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the sample (default 0)')
    parser.add_argument('--encoder', default=None, help='encoder weights (.pt; default: the shipped one)')
    parser.add_argument('--workers', type=int, default=2, help='processes for describing (default 2)')
    parser.add_argument('--cache-dir', default=str(Path(get_cache_dir()) / 'astro_galsim' / 'framing'),
                        help="where database vectors are kept between runs (default: in astropy's cache)")
    parser.add_argument('--output', default=None, help='also write the result table here (.ecsv)')
    args = parser.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        parser.error('--n and --workers must be at least 1')

    print('command: python ' + ' '.join(shlex.quote(a) for a in [sys.argv[0]] + list(sys.argv[1:] if argv is None
                                                                                     else argv)))
    missing = [f'../shared/data/{p.name}' for p in (TRAINING, GZ1, FITS) if not p.is_dir()]
    if missing:
        print(f'skipped: no real data in {", ".join(missing)} beside the repository; see '
              '../shared/data/README.md')
        return 0
    encoder = load_pretrained(args.encoder)
    code = code_version()
    print(f'encoder: {encoder.identity["name"]} {encoder.path} sha256 {encoder.identity["sha256"]}')
    print(f'astro_galsim {astro_galsim.__version__}, source hash {code[:16]}; cache {args.cache_dir}')
    key = f'{encoder.identity["sha256"][:16]}-{code[:16]}'
    start = time.perf_counter()

    # the databases: full images described with the encoder, and the baseline's vectors
    training_paths = [r['path'] for r in read_csv(TRAINING / 'index.csv')]
    split = {r['objid']: r['split'] for r in read_csv(GZ1 / 'split.csv')}
    gz1_paths = [r['path'] for r in read_csv(GZ1 / 'labels.csv') if split.get(r['objid']) == 'test']
    standard, large = fits_galaxies()
    standard_paths = [r['path'] for r in standard]
    databases = {}
    for name, folder, paths in (('training', TRAINING, training_paths), ('gz1-test', GZ1, gz1_paths),
                                ('fits-standard', FITS, standard_paths)):
        t0 = time.perf_counter()
        full = [folder / p for p in paths]
        enc, hit = cached(args.cache_dir, name, f'{key}-{files_key(paths)}',
                          lambda: describe_paths(full, encoder, args.workers))
        base, base_hit = cached(args.cache_dir, f'{name}-baseline', files_key(paths, BASELINE_VERSION),
                                lambda: {'vectors': baseline_vectors(full, args.workers)})
        databases[name] = enc, base['vectors']
        print(f'database {name}: {len(paths)} images, encoder {"cached" if hit else "described"}, '
              f'baseline {"cached" if base_hit else "computed"}, {time.perf_counter() - t0:.0f} s',
              flush=True)

    rng = np.random.default_rng(args.seed)
    rows = []
    for label, folder, paths, name in (('training sample', TRAINING, training_paths, 'training'),
                                       ('GZ1 test', GZ1, gz1_paths, 'gz1-test')):
        sample = np.sort(rng.choice(len(paths), size=min(args.n, len(paths)), replace=False))
        enc, base = databases[name]
        rows += run_jpeg_set(label, folder, paths, sample, enc, base, encoder, args.workers)

    # FITS pairs: the large cutout against the standard one, in arcsec; query among the 120
    names = [r['path'].split('sdsscutout_')[1].split('_rband')[0] for r in standard]
    paired = [i for i, n in enumerate(names) if n in large]
    flagged = [large[names[i]]['path'] for i in paired if large[names[i]]['wcs_consistent_with_name'] != 'True']
    flagged += [standard[i]['path'] for i in paired if standard[i]['wcs_consistent_with_name'] != 'True']
    large_paths = [FITS / large[names[i]]['path'] for i in paired]
    query = describe_paths(large_paths, encoder, args.workers)
    enc, base = databases['fits-standard']
    ra = np.array([float(r['name_ra']) for r in standard])
    dec = np.array([float(r['name_dec']) for r in standard])
    # one galaxy may have two standard cutouts (an older one with a wrong WCS): both are it
    separation = np.hypot((ra[paired, None] - ra[None]) * np.cos(np.radians(dec[None])),
                          dec[paired, None] - dec[None]) * u.deg
    truth = separation < SAME_GALAXY
    # sizes in arcsec, ratio standard / large (the wider large cutout is the reference)
    radii = [k for k in ('r50', 'scale_radius') if k in query and k in enc]
    tight_scale = np.array([pixel_scale(FITS / standard[i]['path']) for i in paired])
    wide_scale = np.array([pixel_scale(p) for p in large_paths])
    tight = {k: enc[k][paired] * tight_scale for k in radii}
    tight.update({k: enc[k][paired] for k in ('truncated',) if k in enc})
    wide = {k: query[k] * wide_scale for k in radii}
    rank = ranks(query['vectors'], enc['vectors'], truth)
    base_rank = ranks(np.stack([_baseline_of_path(p) for p in large_paths]), base, truth)
    rows.append(row('FITS pairs', 'large -> standard', dict(tight, vectors=query['vectors']), wide,
                    rank, base_rank, len(standard)))
    # the same pairs with the large cutout given its frame's calibration, which its header lost:
    # framing alone, without the difference between a calibrated and a noise-scaled frame
    calibrated, same = zip(*[with_frame_calibration(p, FITS / standard[i]['path'])
                             for p, i in zip(large_paths, paired)])
    same_frame = int(sum(same))
    query = summarise(*describe(list(calibrated), encoder, workers=args.workers, progress=False))
    wide = {k: query[k] * wide_scale for k in radii}
    rows.append(row('FITS pairs', 'large + frame calibration -> standard', dict(tight, vectors=query['vectors']),
                    wide, ranks(query['vectors'], enc['vectors'], truth), base_rank, len(standard)))
    duplicates = int((truth.sum(1) > 1).sum())

    # FITS -> JPEG: the standard FITS cutout as the query among the 7,505 training JPEGs
    cross = [r for r in read_csv(FITS / 'same_galaxy_in_mikeedi.csv') if r['kind'] == 'standard']
    cross_paths = [FITS / r['fits_path'] for r in cross]
    position = {p: i for i, p in enumerate(training_paths)}
    truth = np.zeros((len(cross), len(training_paths)), dtype=bool)
    truth[np.arange(len(cross)), [position[r['mikeedi_path']] for r in cross]] = True
    query = describe_paths(cross_paths, encoder, args.workers)
    enc, base = databases['training']
    rows.append(row('FITS -> JPEG', 'standard FITS -> JPEG', query, None,
                    ranks(query['vectors'], enc['vectors'], truth),
                    ranks(np.stack([_baseline_of_path(p) for p in cross_paths]), base, truth),
                    len(training_paths)))
    has_scale = 'scale_radius' in enc
    print()
    print(f'Framing benchmark: {args.n} JPEGs per set (seed {args.seed}); radii agree when within '
          f'{TOLERANCE:.0%}; {time.perf_counter() - start:.0f} s in all')
    print('Size agreement (ratio = re-framed / full, radii of resampled copies divided by the factor; '
          'FITS pairs: standard / large in arcsec; "no galaxy": queries where none was found)'
          + ('' if has_scale else '; scale_radius: n/a, the measurements table has no such column'))
    print(text_table(rows[:-1], COLUMNS_SIZE))
    print('FITS -> JPEG: retrieval only; the JPEG pixel scale is unknown, so radii cannot be compared in arcsec.')
    print(f'FITS pairs, "frame calibration": the large cutout given the standard one\'s SOFTBIAS, SKY and FLUX20 '
          f'(the same frame: equal counts at the centre in {same_frame} of {len(paired)}); as given, its header has '
          'none, so it is scaled by its noise')
    print(f'FITS pairs: {len(paired)} of {len(standard)} standard cutouts have a large one; files flagged with a '
          f'wrong WCS among the pairs: {len(flagged)} (positions are the pixel centre, the WCS gives only the '
          f'scale); queries with two standard cutouts of their galaxy in the database: {duplicates}')
    print()
    print('Same-galaxy retrieval (the re-framed copy as the query; cosine similarity; "base": the centre-crop '
          f'baseline, central {BASELINE_CROP:.0%} grey, {BASELINE_SIZE}x{BASELINE_SIZE}, unit length)')
    print(text_table(rows, COLUMNS_RETRIEVAL))
    if args.output:
        write_rows(rows, args.output, encoder=str(encoder.path), encoder_sha256=encoder.identity['sha256'],
                   seed=args.seed, n=args.n)
    return 0


def write_rows(rows, path, **meta):
    """Write result rows as an ECSV table, atomically, with the command line and ``meta``."""
    table = Table(rows=[{k: r[k] for k in rows[0]} for r in rows])
    table.meta.update(command=' '.join(sys.argv), **meta)
    text = io.StringIO()
    table.write(text, format='ascii.ecsv')
    with atomic_output(path) as handle:
        handle.write(text.getvalue().encode())
    print(f'table written to {path}')


if __name__ == '__main__':
    sys.exit(main())
