"""Benchmark: is a galaxy's description the galaxy's, whatever the image it comes from?

On real data from ``../shared/data``, each measurement of the issue "Any image of a galaxy,
one description" with a PASS/FAIL line per target, for the encoder of ``--encoder`` (default
the shipped one) and, with ``--previous-encoder``, a second one in the same run:

* ``HSC -> SDSS``: the HSC image of a ``galaxy_cruise_interacting`` ``test`` galaxy (read with
  ``survey='hsc'``) as the query, the rank of the same galaxy's SDSS image (``survey='sdss'``,
  96 px at 0.396"/px) among the sample's SDSS images, and with the 7,505 training-sample
  images (``sdss_galaxies_mikeedi``) added to the database;
* ``accepted``: the share of those SDSS images (and of the HSC ones) the pipeline accepts as
  queries, with the commonest reasons for refusal;
* ``FITS -> JPEG``: the 12 DR7 r-band FITS cutouts whose galaxy is a training-sample JPEG,
  queried among the 7,505 (as in ``benchmarks/framing.py``);
* ``re-cut``: central crops to 80, 60 and 45 % of the side of ``--n`` training-sample
  images and ``--n`` NGC/IC ``test`` images (``sdss_ngc_ic_kavehsayeh``);
* ``re-rendered``: the same images with another asinh stretch and colour balance
  (`astro_galsim.degrade.degrade` with nothing blurred, resampled or added: nonlinearity 2.4
  instead of 2.82 and the blue (g) band 1.35 times brighter, chosen so that, as in later
  SkyServer JPEGs, the central 6" is about 16 % brighter in grey and 44 % in blue; the run
  prints what its sample got);
* ``degraded``: the same images seen further away and worse (`astro_galsim.degrade.degrade`:
  the stretch inverted to flux, the galaxy shrunk 3 times, seeing 1.4", 0.396" pixels, its
  default sky noise (that of SDSS JPEGs), stretched again). The training sample's pixel scale
  is not recorded: its JPEGs are taken to be at the native 0.396"/px; an NGC/IC image's is
  1.25 times its catalogued major axis over 256 px;
* ``survey AUC``: how well a linear classifier (scikit-learn ``LogisticRegression`` on
  standardised vectors, 5-fold cross-validation grouped by galaxy) tells an HSC description
  from an SDSS one of the same galaxies: ROC AUC, 0.5 when the description does not know the survey;
* ``GZ1 test``: precision@10 on the ``test`` split of ``sdss_gz1_eggochi``, computed as
  ``benchmarks/similarity.py`` does (euclidean), against the shipped encoder's in the same
  run (or the ``--previous-encoder``'s), with its raw-pixel PCA baseline.

The re-cut, re-rendered and degraded copies of training-sample images are ranked among the
7,505 training images; those of NGC/IC images among the 7,505 and the 591 NGC/IC ``test``
images. Ranks use every finite vector, accepted as a query or not (acceptance is reported
apart); a query without a galaxy found ranks last.

Baseline, measured in the same run on the same queries and databases (``raw field``): a
fixed 30" field about the image centre at the image's pixel scale (the survey's, the
WCS's, or as above), the grey level (the mean of the three display planes; FITS through
the package's SDSS stretch), minus its median (the sky pedestal), log stretch
``log10(1 + grey / 0.02)`` of what is above zero, resized to 40x40 (area average), unit
length, cosine similarity. It is the raw-pixel probe of the issue, which needs the pixel
scale and nothing else.

Database vectors are cached in ``--cache-dir`` under the encoder's checksum and a hash of
the astro_galsim source, as ``benchmarks/framing.py`` does: a re-run describes only the queries.
The HSC tone curve of `astro_galsim.surveys` can be measured again with ``--fit-hsc``.

Usage (from the repository root)::

    python benchmarks/invariance.py [--n 300] [--seed 0] [--encoder WEIGHTS] [--previous-encoder WEIGHTS]
                                    [--workers 2] [--cache-dir DIR] [--output table.ecsv] [--fit-hsc]
"""
import argparse
import re
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.config import get_cache_dir
from astropy.nddata import NDData
from astropy.wcs.utils import proj_plane_pixel_scales
from PIL import Image

import framing  # noqa: E402  (benchmarks/ is on the path of a script run from it)
import similarity  # noqa: E402
from astro_galsim import __version__, read_image  # noqa: E402
from astro_galsim.degrade import degrade  # noqa: E402
from astro_galsim.evaluation import evaluate  # noqa: E402
from astro_galsim.model import load_pretrained  # noqa: E402
from astro_galsim.pipeline import describe  # noqa: E402
from astro_galsim.preprocessing import to_colour  # noqa: E402
from astro_galsim.surveys import SURVEYS  # noqa: E402

DATA = framing.DATA
TRAINING, GZ1, FITS = framing.TRAINING, framing.GZ1, framing.FITS
CRUISE = DATA / 'galaxy_cruise_interacting'
NGC = DATA / 'sdss_ngc_ic_kavehsayeh'

CROPS = (0.8, 0.6, 0.45)
RERENDER = {'nonlinearity': 2.4, 'colour_balance': (1.0, 1.0, 1.35), 'noise': 0.0}
DEGRADE = {'seeing': 1.4 * u.arcsec, 'pixel_scale': 0.396 * u.arcsec, 'shrink': 3.0}
TRAINING_SCALE = 0.396 * u.arcsec   # assumed: the training sample's JPEGs do not record it
FIELD = 30 * u.arcsec
FIELD_SIZE = 40
FIELD_SOFTENING = 0.02
BASELINE_VERSION = 'field-30arcsec-2'
TARGETS = {  # the "Done when" of the issue
    'hsc_r10': 0.9, 'hsc_r1': 0.7, 'hsc_r10_training': 0.7, 'accepted': 0.95, 'fits_within_10': 10,
    'recut_r1': {0.8: 0.9, 0.6: 0.85}, 'rerender_r1': 0.9, 'degraded_r10': 0.8, 'auc': 0.65}


# ----------------------------------------------------------------------------- baseline

def field_vector(image, pixel_scale):
    """The raw-field baseline of one image (NDData or display array) at ``pixel_scale``."""
    if isinstance(image, NDData) and image.meta.get('kind') == 'fits':
        grey = to_colour(image).mean(axis=0)
    else:
        data = np.asarray(image.data if isinstance(image, NDData) else image, dtype=np.float32)
        grey = data.mean(axis=0) / (255.0 if data.max() > 1 else 1.0)
    side = (FIELD / u.Quantity(pixel_scale, u.arcsec)).to_value(u.one) / np.array(grey.shape)
    crop = framing.centre_crop(grey, float(min(1.0, side.min())))
    sky = np.median(crop)
    level = np.log10(1 + np.maximum(crop - sky, 0) / FIELD_SOFTENING).astype(np.float32)
    small = np.asarray(Image.fromarray(level).resize((FIELD_SIZE, FIELD_SIZE), Image.BOX), dtype=np.float64)
    norm = np.linalg.norm(small)
    return (small.ravel() / norm if norm > 0 else small.ravel()).astype(np.float32)


def _field_of_path(args):
    path, survey, scale = args
    return field_vector(read_image(path, survey=survey), scale)


def field_vectors(paths, survey, scales, workers):
    from concurrent.futures import ProcessPoolExecutor
    jobs = [(str(p), survey, s) for p, s in zip(paths, scales)]
    with ProcessPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(_field_of_path, jobs, chunksize=32)))


# ----------------------------------------------------------------------------- describing

def describe_images(images, encoder, workers):
    """Vectors (NaN where no galaxy was found), acceptance and refusal reasons."""
    vectors, table = describe(images, encoder, workers=workers, progress=False)
    return {'vectors': np.asarray(vectors, dtype=np.float32), 'accepted': np.asarray(table['accepted'], dtype=bool),
            'reason': np.asarray(table['reason'], dtype=str)}


def _read_all(paths, survey):
    return [read_image(p, survey=survey) for p in paths]


class Databases:
    """Encoder and baseline vectors of whole image sets, cached by encoder, code and files."""

    def __init__(self, cache_dir, code, workers):
        self.cache_dir, self.code, self.workers = cache_dir, code, workers

    def encoder(self, name, encoder, paths, survey=None):
        key = f'{encoder.identity["sha256"][:16]}-{self.code[:16]}-{framing.files_key(paths, survey)}'
        t0 = time.perf_counter()
        out, hit = framing.cached(self.cache_dir, name, key,
                                  lambda: describe_images(_read_all(paths, survey) if survey else
                                                          [str(p) for p in paths], encoder, self.workers))
        print(f'  database {name} ({len(paths)} images): {encoder.identity["name"]} '
              f'{"cached" if hit else "described"}, {time.perf_counter() - t0:.0f} s', flush=True)
        return out

    def baseline(self, name, paths, survey, scales):
        key = framing.files_key(paths, survey, BASELINE_VERSION, *np.round(scales, 5))
        out, _ = framing.cached(self.cache_dir, f'{name}-field', key,
                                lambda: {'vectors': field_vectors(paths, survey, scales, self.workers)})
        return out['vectors']


# ----------------------------------------------------------------------------- metrics

def rank_row(group, variant, method, rank, database, **extra):
    return dict({'set': group, 'variant': variant, 'method': method, 'n': len(rank), 'database': database,
                 'recall@1': float(np.mean(rank <= 1)), 'recall@10': float(np.mean(rank <= 10)),
                 'median_rank': float(np.median(rank))}, **extra)


def identity_truth(n_queries, n_database, positions=None):
    truth = np.zeros((n_queries, n_database), dtype=bool)
    truth[np.arange(n_queries), np.arange(n_queries) if positions is None else positions] = True
    return truth


def survey_auc(a, b, seed):
    """Cross-validated ROC AUC of a linear classifier telling rows of ``a`` from rows of ``b``
    (row i of each is one galaxy; folds keep a galaxy's two rows together)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    x = np.vstack([a[ok], b[ok]])
    y = np.r_[np.ones(ok.sum()), np.zeros(ok.sum())]
    groups = np.r_[np.arange(ok.sum()), np.arange(ok.sum())]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    score = cross_val_predict(model, x, y, groups=groups, cv=GroupKFold(min(5, int(ok.sum()))),
                              method='decision_function')
    return float(roc_auc_score(y, score)), int(ok.sum())


def central_ratio(originals, copies, scale):
    """Median ratio copy / original of the mean grey and blue level within 3" of the centre."""
    out = []
    for a, b in zip(originals, copies):
        ny, nx = a.shape[1:]
        y, x = np.mgrid[:ny, :nx]
        inside = np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2) <= (3 * u.arcsec / scale).to_value(u.one)
        ma, mb = a[:, inside].astype(float).mean(1), np.asarray(b)[:, inside].astype(float).mean(1)
        out.append([mb.mean() / max(ma.mean(), 1e-9), mb[2] / max(ma[2], 1e-9)])
    return np.median(out, axis=0)


# ----------------------------------------------------------------------------- data

def cruise_rows(split):
    return [r for r in framing.read_csv(CRUISE / 'index.csv') if r['split'] == split]


def ngc_test():
    rows = [r for r in framing.read_csv(NGC / 'index.csv') if r['split'] == 'test']
    scales = [1.25 * float(r['major_axis_arcmin']) * 60 / 256 for r in rows]
    return [NGC / 'images' / r['file'] for r in rows], np.array(scales)


def gz1_test():
    rows = similarity.read_labels(GZ1)
    return similarity.select(GZ1, rows, 'test')


# ----------------------------------------------------------------------------- the HSC tone curve

def fit_hsc(n=400, ring=0.5, reach=15.0):
    """Print the HSC -> SDSS tone curve of `astro_galsim.surveys` measured again on the first ``n``
    ``train`` galaxies: per channel, the mean level in rings of ``ring`` arcsec about the centre (the
    HSC image blurred to SDSS's 1.4" seeing), the median SDSS level per 0.05 of HSC level."""
    from scipy import ndimage
    hsc_scale, sdss_scale = SURVEYS['hsc'].pixel_scale.value, SURVEYS['sdss'].pixel_scale.value
    blur = np.sqrt(SURVEYS['sdss'].seeing.value ** 2 - SURVEYS['hsc'].seeing.value ** 2) / 2.3548 / hsc_scale
    pairs = [[], [], []]
    for row in cruise_rows('train')[:n]:
        hsc = read_image(CRUISE / row['hsc_file']).data / 255.0
        sdss = read_image(CRUISE / row['sdss_file']).data / 255.0
        hsc = ndimage.gaussian_filter(hsc, (0, blur, blur))
        profiles = []
        for image, scale in ((hsc, hsc_scale), (sdss, sdss_scale)):
            ny, nx = image.shape[1:]
            y, x = np.mgrid[:ny, :nx]
            r = np.hypot(x - (nx - 1) / 2, y - (ny - 1) / 2) * scale
            index = np.minimum((r / ring).astype(int), int(reach / ring))
            counts = np.bincount(index.ravel(), minlength=int(reach / ring) + 1)
            profiles.append([np.bincount(index.ravel(), plane.ravel(), minlength=len(counts)) / np.maximum(counts, 1)
                             for plane in image])
        for c in range(3):
            pairs[c].append(np.c_[profiles[0][c][:-1], profiles[1][c][:-1]])
    print(f'HSC -> SDSS tone curve from {n} train galaxies (rings of {ring}" to {reach}"): HSC level, SDSS level')
    for c, name in enumerate(('red', 'green', 'blue')):
        p = np.vstack(pairs[c])
        bins = np.floor(p[:, 0] / 0.05).astype(int)
        levels = [(0.05 * b + 0.025, float(np.median(p[bins == b, 1]))) for b in np.unique(bins)
                  if (bins == b).sum() >= 20]
        print(f'  {name}: ' + ', '.join(f'{h:.3f}:{s:.3f}' for h, s in levels))


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--n', type=int, default=300,
                        help='images sampled per set for the copies, and cross-survey galaxies (default 300; '
                        'the targets are for all 208 cross-survey galaxies)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the samples and noise (default 0)')
    parser.add_argument('--encoder', default=None, metavar='WEIGHTS',
                        help='encoder weights (.pt; default: the shipped one)')
    parser.add_argument('--previous-encoder', default=None, metavar='WEIGHTS',
                        help='a second encoder measured in the same run (and the GZ1 reference)')
    parser.add_argument('--workers', type=int, default=2, help='processes for describing (default 2)')
    parser.add_argument('--cache-dir', default=str(Path(get_cache_dir()) / 'astro_galsim' / 'invariance'),
                        help="where database vectors are kept between runs (default: in astropy's cache)")
    parser.add_argument('--output', default=None, help='also write the retrieval table here (.ecsv)')
    parser.add_argument('--fit-hsc', action='store_true',
                        help="print the HSC tone curve measured again on the train split's pairs, and stop")
    args = parser.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        parser.error('--n and --workers must be at least 1')
    print('command: python ' + ' '.join(shlex.quote(a) for a in [sys.argv[0]] + list(sys.argv[1:] if argv is None
                                                                                     else argv)))
    missing = [f'../shared/data/{p.name}' for p in (TRAINING, GZ1, FITS, CRUISE, NGC) if not p.is_dir()]
    if missing:
        print(f'skipped: no real data in {", ".join(missing)} beside the repository; see ../shared/data/README.md')
        return 0
    if args.fit_hsc:
        fit_hsc()
        return 0
    start = time.perf_counter()
    encoders = {}
    if args.previous_encoder:
        previous = load_pretrained(args.previous_encoder)
        encoders[f'previous {previous.identity["name"]}'] = previous
    encoder = load_pretrained(args.encoder)
    name = f'encoder {encoder.identity["name"]}'
    encoders[name] = encoder
    shipped = load_pretrained(None)
    reference = previous if args.previous_encoder else shipped
    code = framing.code_version()
    for label, enc in encoders.items():
        print(f'{label}: {enc.path} sha256 {enc.identity["sha256"]}')
    print(f'astro_galsim {__version__}, source hash {code[:16]}; cache {args.cache_dir}')
    db = Databases(args.cache_dir, code, args.workers)
    rng = np.random.default_rng(args.seed)
    baseline = 'raw field (baseline)'
    methods = [baseline] + list(encoders)

    # --- the data sets
    training_paths = [TRAINING / r['path'] for r in framing.read_csv(TRAINING / 'index.csv')]
    n_training = len(training_paths)
    ngc_paths, ngc_scales = ngc_test()
    cruise = cruise_rows('test')
    cruise = [cruise[i] for i in np.sort(rng.choice(len(cruise), size=min(args.n, len(cruise)), replace=False))]
    sdss_paths = [CRUISE / r['sdss_file'] for r in cruise]
    hsc_paths = [CRUISE / r['hsc_file'] for r in cruise]
    gz1_paths, gz1_groups = gz1_test()
    training_sample = np.sort(rng.choice(n_training, size=min(args.n, n_training), replace=False))
    ngc_sample = np.sort(rng.choice(len(ngc_paths), size=min(args.n, len(ngc_paths)), replace=False))

    print('databases and baselines:', flush=True)
    base = {'training': db.baseline('training', training_paths, None,
                                    np.full(n_training, TRAINING_SCALE.value)),
            'ngc': db.baseline('ngc-test', ngc_paths, None, ngc_scales),
            'sdss': db.baseline('cruise-sdss', sdss_paths, 'sdss', np.full(len(cruise), 0.396)),
            'hsc': db.baseline('cruise-hsc', hsc_paths, 'hsc', np.full(len(cruise), 0.168))}
    vec = {m: {'training': db.encoder('training', e, training_paths),
               'ngc': db.encoder('ngc-test', e, ngc_paths),
               'sdss': db.encoder('cruise-sdss', e, sdss_paths, 'sdss'),
               'hsc': db.encoder('cruise-hsc', e, hsc_paths, 'hsc'),
               'gz1': db.encoder('gz1-test', e, gz1_paths)} for m, e in encoders.items()}
    if reference.identity['sha256'] not in {e.identity['sha256'] for e in encoders.values()}:
        vec['reference'] = {'gz1': db.encoder('gz1-test', reference, gz1_paths)}

    def databases(kind, method):
        """Database vectors of one method: 'training', 'training+ngc', 'sdss', 'sdss+training'."""
        source = base if method == baseline else {k: v['vectors'] for k, v in vec[method].items()}
        parts = {'training': ['training'], 'training+ngc': ['training', 'ngc'], 'sdss': ['sdss'],
                 'sdss+training': ['sdss', 'training']}[kind]
        return np.vstack([source[p] for p in parts])

    rows, notes = [], []
    # --- HSC -> SDSS
    n_cruise = len(cruise)
    for method in methods:
        query = base['hsc'] if method == baseline else vec[method]['hsc']['vectors']
        for kind in ('sdss', 'sdss+training'):
            database = databases(kind, method)
            rank = framing.ranks(query, database, identity_truth(n_cruise, len(database)))
            rows.append(rank_row('HSC -> SDSS', f'among {kind.replace("sdss", "the SDSS images")}', method,
                                 rank, len(database)))

    # --- FITS -> JPEG
    cross = [r for r in framing.read_csv(FITS / 'same_galaxy_in_mikeedi.csv') if r['kind'] == 'standard']
    fits = [read_image(FITS / r['fits_path']) for r in cross]
    position = {str(p.relative_to(TRAINING)): i for i, p in enumerate(training_paths)}
    truth = identity_truth(len(cross), n_training, [position[r['mikeedi_path']] for r in cross])
    fits_base = np.stack([field_vector(f, (np.mean(proj_plane_pixel_scales(f.wcs)) * u.deg).to(u.arcsec))
                          for f in fits])
    for method in methods:
        query = fits_base if method == baseline else describe_images(fits, encoders[method], args.workers)['vectors']
        rows.append(rank_row('FITS -> JPEG', 'standard r-band FITS', method,
                             framing.ranks(query, databases('training', method), truth), n_training))

    # --- copies of training-sample and NGC/IC images
    copy_sets = [('training sample', [training_paths[i] for i in training_sample], training_sample,
                  np.full(len(training_sample), TRAINING_SCALE.value), 'training'),
                 ('NGC/IC test', [ngc_paths[i] for i in ngc_sample], n_training + ngc_sample,
                  ngc_scales[ngc_sample], 'training+ngc')]
    for group, paths, positions, scales, kind in copy_sets:
        originals = [read_image(p).data for p in paths]
        variants = [(f'crop {f:g}', [framing.as_jpeg_image(framing.centre_crop(a, f)) for a in originals], scales)
                    for f in CROPS]
        # the same galaxy, seeing and pixels (nothing blurred or resampled), another stretch and colour balance
        rendered = [degrade(a, seeing=SURVEYS['sdss'].seeing, pixel_scale=s * u.arcsec, source_pixel_scale=s * u.arcsec,
                            **RERENDER) for a, s in zip(originals, scales)]
        variants.append(('re-rendered', rendered, scales))
        ratio = central_ratio(originals, [r.data for r in rendered], TRAINING_SCALE if group == 'training sample'
                              else np.median(scales) * u.arcsec)
        notes.append(f'{group}, re-rendered: the central 6" is {ratio[0] - 1:+.0%} in grey, {ratio[1] - 1:+.0%} in '
                     'blue (median over the sample; the later SkyServer JPEGs: +16% / +44%)')
        degraded = [degrade(a, source_pixel_scale=s * u.arcsec, seed=args.seed + i, **DEGRADE)
                    for i, (a, s) in enumerate(zip(originals, scales))]
        variants.append(('degraded', degraded, np.full(len(degraded), DEGRADE['pixel_scale'].value)))
        sizes = np.array([d.data.shape[-1] for d in degraded])
        notes.append(f'{group}, degraded: {np.median(sizes):.0f} px a side (median; {sizes.min()} to {sizes.max()})')
        for variant, images, vscales in variants:
            t0 = time.perf_counter()
            for method in methods:
                database = databases(kind, method)
                truth = identity_truth(len(paths), len(database), positions)
                if method == baseline:
                    query, accepted = np.stack([field_vector(im, s * u.arcsec) for im, s in zip(images, vscales)]), None
                else:
                    described = describe_images(images, encoders[method], args.workers)
                    query, accepted = described['vectors'], float(np.mean(described['accepted']))
                rows.append(rank_row(group, variant, method, framing.ranks(query, database, truth), len(database),
                                     accepted=np.nan if accepted is None else accepted))
            print(f'  {group}, {variant}: {time.perf_counter() - t0:.0f} s', flush=True)

    # --- acceptance, survey AUC, GZ1
    accepted, aucs, gz1 = [], [], []
    for method in methods:
        if method != baseline:
            for survey in ('sdss', 'hsc'):
                v = vec[method][survey]
                refused = Counter(_reason_kind(r) for r, a in zip(v['reason'], v['accepted']) if not a)
                accepted.append({'method': method, 'survey': survey, 'n': len(v['accepted']),
                                 'accepted': float(np.mean(v['accepted'])),
                                 'refused because': '; '.join(f'{k} ({c})' for k, c in refused.most_common(3))})
        source = base if method == baseline else {k: v['vectors'] for k, v in vec[method].items()}
        a, b = source['hsc'], source['sdss']
        auc, n_auc = survey_auc(a, b, args.seed)
        aucs.append({'method': method, 'n': n_auc, 'auc': auc})
    gz1_methods = {m: vec[m]['gz1']['vectors'] for m in encoders}
    gz1_methods['reference'] = vec['reference']['gz1']['vectors'] if 'reference' in vec else \
        next(vec[m]['gz1']['vectors'] for m, e in encoders.items() if e is reference or
             e.identity['sha256'] == reference.identity['sha256'])
    raw = similarity.load_small(gz1_paths)
    gz1_methods['raw pixel PCA (baseline)'] = similarity.PCA(seed=args.seed).fit(raw).transform(raw)
    for method, v in gz1_methods.items():
        v = np.array(v, dtype=np.float64)
        bad = ~np.isfinite(v).all(1)
        if bad.any():   # as benchmarks/similarity.py: random unit vectors where no galaxy was found
            fill = np.random.default_rng(args.seed).normal(size=(int(bad.sum()), v.shape[1]))
            v[bad] = fill / np.linalg.norm(fill, axis=1, keepdims=True)
        t = evaluate(v, gz1_groups, k=10, ignore=similarity.IGNORE)
        r = t[t['metric'] == 'euclidean'][0]
        gz1.append({'method': method, 'n': len(v), 'P@10 macro': float(r['precision_at_k_macro']),
                    'P@10 micro': float(r['precision_at_k_micro']),
                    **{f'P@10 {c}': float(r[f'precision_at_k_{c}']) for c in similarity.CLASSES}})

    # --- output
    print()
    print(f'Invariance benchmark: --n {args.n} (seed {args.seed}); {n_cruise} cross-survey galaxies of the test '
          f'split; {time.perf_counter() - start:.0f} s in all')
    print(f'Baseline "raw field": {FIELD.value:g}" about the centre, grey minus its median, '
          f'log10(1 + grey / {FIELD_SOFTENING}), {FIELD_SIZE}x{FIELD_SIZE}, cosine. Ranks: 1 = first.')
    columns = [('set', 'set', '{}'), ('variant', 'variant', '{}'), ('method', 'method', '{}'), ('n', 'n', '{}'),
               ('database', 'database', '{}'), ('recall@1', 'recall@1', '{:.3f}'),
               ('recall@10', 'recall@10', '{:.3f}'), ('median_rank', 'median rank', '{:g}'),
               ('accepted', 'accepted', '{:.3f}')]
    for r in rows:
        r.setdefault('accepted', np.nan)
    print(framing.text_table(rows, columns))
    for note in notes:
        print('  ' + note)
    print('\nAccepted as queries (the galaxy_cruise_interacting test sample)')
    print(framing.text_table(accepted, [('method', 'method', '{}'), ('survey', 'survey', '{}'), ('n', 'n', '{}'),
                                        ('accepted', 'accepted', '{:.3f}'),
                                        ('refused because', 'refused because (commonest)', '{}')]))
    print('\nHSC or SDSS? Cross-validated ROC AUC of a linear classifier on the two descriptions of each galaxy '
          '(0.5 = survey-blind)')
    print(framing.text_table(aucs, [('method', 'method', '{}'), ('n', 'galaxies', '{}'), ('auc', 'ROC AUC', '{:.3f}')]))
    print(f'\nGZ1 test precision@10 (euclidean; "reference": {reference.identity["name"]}, '
          f'{"the --previous-encoder" if args.previous_encoder else "the shipped encoder"})')
    print(framing.text_table(gz1, [('method', 'method', '{}'), ('n', 'n', '{}'), ('P@10 macro', 'macro', '{:.3f}'),
                                   ('P@10 micro', 'micro', '{:.3f}')]
                             + [(f'P@10 {c}', c, '{:.3f}') for c in similarity.CLASSES]))
    print()
    for line in target_lines(rows, accepted, aucs, gz1, name, n_cruise, len(cross)):
        print(line)
    if args.output:
        framing.write_rows(rows, args.output, n=args.n, seed=args.seed,
                           encoders={m: e.identity for m, e in encoders.items()})
    return 0


def _reason_kind(reason):
    """A refusal reason with its numbers as '#', so that like reasons count together."""
    return re.sub(r'\d+(\.\d+)?', '#', str(reason))


def target_lines(rows, accepted, aucs, gz1, method, n_cruise, n_fits):
    def get(group, variant, key):
        return next(r[key] for r in rows if r['set'] == group and r['variant'] == variant and r['method'] == method)

    def line(what, value, ok, judged=True):
        verdict = ('PASS' if ok else 'FAIL') if judged else 'not judged (the target is on all 208: --n 208)'
        return f'target {what}: {value}: {verdict}'

    t = TARGETS
    whole = n_cruise == 208
    caveat = '' if whole else f' [on {n_cruise} of the 208 galaxies]'
    r1, r10 = get('HSC -> SDSS', 'among the SDSS images', 'recall@1'), get('HSC -> SDSS', 'among the SDSS images',
                                                                           'recall@10')
    out = [f'Targets of the issue for {method!r}:',
           line(f'HSC -> SDSS recall@10 >= {t["hsc_r10"]} and recall@1 >= {t["hsc_r1"]} among the SDSS images{caveat}',
                f'{r10:.3f} / {r1:.3f}', r10 >= t['hsc_r10'] and r1 >= t['hsc_r1'], whole)]
    r10t = get('HSC -> SDSS', 'among the SDSS images+training', 'recall@10')
    out.append(line(f'HSC -> SDSS recall@10 >= {t["hsc_r10_training"]} with the 7,505 training images{caveat}',
                    f'{r10t:.3f}', r10t >= t['hsc_r10_training'], whole))
    share = next(a['accepted'] for a in accepted if a['method'] == method and a['survey'] == 'sdss')
    out.append(line(f'SDSS images accepted as queries >= {t["accepted"]:.0%}', f'{share:.1%}', share >= t['accepted']))
    within = int(round(get('FITS -> JPEG', 'standard r-band FITS', 'recall@10') * n_fits))
    out.append(line(f'FITS -> JPEG within the first 10 for >= {t["fits_within_10"]} of {n_fits}', f'{within}',
                    within >= t['fits_within_10']))
    for crop, goal in t['recut_r1'].items():
        v = get('training sample', f'crop {crop:g}', 'recall@1')
        out.append(line(f're-cut training-sample images ({crop:.0%}) recall@1 >= {goal}', f'{v:.3f}', v >= goal))
    v = get('training sample', 're-rendered', 'recall@1')
    out.append(line(f're-rendered training-sample images recall@1 >= {t["rerender_r1"]}', f'{v:.3f}',
                    v >= t['rerender_r1']))
    v = get('training sample', 'degraded', 'recall@10')
    out.append(line(f'degraded training-sample images recall@10 >= {t["degraded_r10"]} among the 7,505', f'{v:.3f}',
                    v >= t['degraded_r10']))
    mine = next(g for g in gz1 if g['method'] == method)
    ref = next(g for g in gz1 if g['method'] == 'reference')
    out.append(line('GZ1 test P@10 macro / micro no lower than the reference\'s '
                    f'({ref["P@10 macro"]:.3f} / {ref["P@10 micro"]:.3f})',
                    f'{mine["P@10 macro"]:.3f} / {mine["P@10 micro"]:.3f}',
                    mine['P@10 macro'] >= ref['P@10 macro'] and mine['P@10 micro'] >= ref['P@10 micro']))
    auc = next(a['auc'] for a in aucs if a['method'] == method)
    out.append(line(f'HSC vs SDSS descriptions ROC AUC <= {t["auc"]}', f'{auc:.3f}', auc <= t['auc']))
    out.append('target describing >= 100 galaxies/s on 2 workers: not measured here (benchmarks/segmentation.py)')
    return out


if __name__ == '__main__':
    sys.exit(main())
