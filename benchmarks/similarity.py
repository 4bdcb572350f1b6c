#!/usr/bin/env python
"""Retrieval quality of astro_galsim embeddings on the test split of the labelled Galaxy Zoo 1 set.

Runs on ``shared/data/sdss_gz1_eggochi`` (SDSS colour cutouts with GZ1 classes). By default
only its ``test`` split (``split.csv``; galaxies never trained on) is used, as queries and
as the database; ``--split all`` evaluates every galaxy (the older numbers, for
comparison). Galaxies are grouped by ``similarity_group``; for euclidean and cosine
distances, all measured in the same run:

* ``random``         -- Gaussian random 64-d vectors (the chance level);
* ``raw pixel PCA``  -- the JPEG resized to 64 x 64 pixels, as floats in [0, 1], flattened,
  PCA to 64 components (the baseline of the ratio column);
* ``segmented PCA``  -- the same PCA on `astro_galsim.pipeline.prepare` output (central
  galaxy isolated, scaled and rotated by photutils segmentation);
* ``encoder <name>`` -- `astro_galsim.pipeline.describe` vectors of the encoder given with
  ``--encoder`` (default the shipped one), labelled with its model-card name;
* ``previous <name>`` -- the same for ``--previous-encoder`` (optional), e.g. the weights
  that new ones would replace;
* ``label-fitted linear map (reference)`` -- not a method of the package: a linear
  discriminant (LDA) fitted on the encoder's vectors of the *train* split and their labels,
  its projection of the test vectors (unit length, times ``--lda-weight``) appended to the
  unit-length test vectors. It shows what a linear map taught by labels can reach.

Then, in the same run (``--sets``; ``--limit`` samples each), the labelled sets of the issue
"Morphology that astronomers name", each with its random, raw pixel PCA and encoder rows:

* ``hubble`` -- the 591 ``test`` galaxies of ``sdss_ngc_ic_kavehsayeh`` grouped by coarse
  Hubble type (``hubble_coarse``: spiral, lenticular, elliptical, irregular);
* ``subtypes`` -- the SDSS images (96 px, 0.396"/px, read with ``survey='sdss'``) of the 208
  ``test`` galaxies of ``galaxy_cruise_interacting`` grouped by interaction sub-type
  (``label``: ring, fan, distortion, tail);
* ``interacting`` -- those 208 interacting galaxies against the 591 NGC/IC ``test`` galaxies
  degraded to the same look (`astro_galsim.degrade.degrade`: 96 px at 0.396"/px, seeing 1.4",
  the sky noise of SDSS JPEGs, each galaxy shrunk to a half-light radius drawn from the
  interacting galaxies'): ``P@10 interacting`` is the share of interacting galaxies among an
  interacting galaxy's 10 nearest, ``P@10 non-interacting`` the converse (degraded copies of
  non-interacting galaxies must not look interacting).

Each ends with a PASS/FAIL line per target of that issue (euclidean rows).

Columns: macro and micro precision at k (``dont_know`` galaxies stay in the database but
are not queries), per-class precision at k, mAP (macro and micro over queries), k-NN
leave-one-out accuracy (plain and balanced), and the macro P@k as a ratio to raw pixel
PCA with the same distance. A target line then says whether the encoder row reaches the
retrieval target (macro P@10 >= 0.70, micro >= 0.78, no class below 0.45). Last, the
invariance of each embedding to rotations and mirror images
(`astro_galsim.evaluation.invariance`): the distance between a galaxy's vector and its
rotated copy's, relative to the median distance to the 10th neighbour.

Usage::

    python benchmarks/similarity.py                 # test split, shipped encoder
    python benchmarks/similarity.py --previous-encoder old.pt --encoder new.pt
    python benchmarks/similarity.py --limit 300     # quick run on a random subset
    python benchmarks/similarity.py --split all     # every galaxy (not comparable with test numbers)
    python benchmarks/similarity.py --sets none     # Galaxy Zoo 1 only
    python benchmarks/similarity.py --output similarity.ecsv
"""
import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / 'shared' / 'data' / 'sdss_gz1_eggochi'
CLASSES = ('elliptical', 'spiral_edge_on', 'spiral_face_on', 'merger')
IGNORE = ('dont_know',)
SIZE = 64
N_COMPONENTS = 64

try:
    import astro_galsim  # noqa: F401
except ImportError:   # running from a source tree without an install
    sys.path.insert(0, str(REPO))

from astropy import units as u  # noqa: E402
from astropy.nddata import NDData  # noqa: E402
from astropy.table import QTable, vstack  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from astro_galsim import read_image  # noqa: E402
from astro_galsim.config import conf  # noqa: E402
from astro_galsim.degrade import degrade  # noqa: E402
from astro_galsim.evaluation import evaluate, invariance  # noqa: E402
from astro_galsim.io import atomic_output  # noqa: E402
from astro_galsim.model import load_pretrained  # noqa: E402
from astro_galsim.pipeline import describe, prepare  # noqa: E402


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------

SPLITS = ('test', 'all')
TARGET = {'macro': 0.70, 'micro': 0.78, 'class': 0.45}   # the retrieval target at k = 10


def read_labels(folder):
    """Rows of labels.csv with their ``split`` (train/test) from split.csv, where it exists."""
    labels = folder / 'labels.csv'
    if not labels.is_file():
        sys.exit(f'similarity benchmark: no labels.csv in {folder}. Give the folder of the '
                 'sdss_gz1_eggochi set with --data PATH (default: <repo>/../shared/data/sdss_gz1_eggochi).')
    with open(labels, newline='') as f:
        rows = list(csv.DictReader(f))
    split_file = folder / 'split.csv'
    if split_file.is_file():
        with open(split_file, newline='') as f:
            split = {row['objid']: row['split'] for row in csv.DictReader(f)}
        for row in rows:
            row['split'] = split.get(row['objid'], '')
    return rows


def select(folder, rows, split, limit=None, seed=0):
    """Image paths and similarity groups of one split, optionally a random subset of ``limit``."""
    if split != 'all':
        if 'split' not in rows[0]:
            sys.exit(f'similarity benchmark: no split.csv in {folder}, so the {split!r} split is unknown. '
                     'Use the current sdss_gz1_eggochi set, which has split.csv, or give --split all '
                     'to evaluate every galaxy (numbers then include galaxies that may have been trained on).')
        unsplit = [row['objid'] for row in rows if row['split'] not in ('train', 'test')]
        if unsplit:
            sys.exit(f'similarity benchmark: {len(unsplit)} galaxies of labels.csv have no train/test '
                     f'split in {folder / "split.csv"} (e.g. objid {unsplit[0]}); the set is inconsistent, '
                     'get it again.')
        rows = [row for row in rows if row['split'] == split]
    if limit is not None and limit < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))
        rows = [rows[i] for i in keep]
    paths = [folder / row['path'] for row in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        sys.exit(f'similarity benchmark: {len(missing)} image(s) listed in labels.csv are missing, '
                 f'e.g. {missing[0]}')
    return paths, np.array([row['similarity_group'] for row in rows])


def _small(im):
    """PIL image -> flattened (3 * SIZE * SIZE) float32 in [0, 1]."""
    small = im.convert('RGB').resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return (np.asarray(small, dtype=np.float32) / 255.0).transpose(2, 0, 1).ravel()


def load_small(paths):
    """Raw-pixel vectors of JPEG files, decoded at reduced DCT scale for speed."""
    out = np.empty((len(paths), 3 * SIZE * SIZE), dtype=np.float32)
    for i, path in enumerate(tqdm(paths, desc='reading JPEGs', disable=not conf.show_progress)):
        with Image.open(path) as im:
            im.draft('RGB', (2 * SIZE, 2 * SIZE))   # JPEG decoder downscales by 1/2, 1/4 or 1/8
            out[i] = _small(im)
    return out


def small_from_arrays(arrays):
    """Raw-pixel vectors of (3, H, W) uint8 arrays (the path used by the invariance test)."""
    return np.array([_small(Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))) for a in arrays])


def load_full(paths):
    """Full-resolution (3, H, W) uint8 arrays."""
    out = []
    for path in tqdm(paths, desc='reading full images', disable=not conf.show_progress):
        with Image.open(path) as im:
            out.append(np.ascontiguousarray(np.asarray(im.convert('RGB')).transpose(2, 0, 1)))
    return out


# ---------------------------------------------------------------------------------------
# PCA
# ---------------------------------------------------------------------------------------

def _orthonormalize(y):
    """Orthonormal basis of the columns of a tall matrix using only small dense algebra.

    Two rounds of Gram-matrix (eigenvector) orthonormalisation in float64; cheaper than a
    LAPACK QR of the tall matrix, which is slow when OpenBLAS threads compete for cores.
    """
    y = np.asarray(y, dtype=np.float64)
    for _ in range(2):
        w, v = np.linalg.eigh(y.T @ y)
        w = np.maximum(w, w.max() * 1e-12)
        y = y @ (v / np.sqrt(w))
    return y


class PCA:
    """PCA by a randomized range finder (Halko, Martinsson & Tropp 2011).

    The data are projected on ``n_components + 16`` random directions, refined by 4
    power iterations; the principal axes are then those of the small projected matrix.
    On the GZ1 images the leading singular values agree with an exact ``np.linalg.svd``
    to 1e-4, in seconds rather than the minutes the full SVD of a 2,552 x 12,288 matrix
    takes on 2 cores.
    """

    def __init__(self, n_components=N_COMPONENTS, seed=0, power_iterations=4, oversample=16):
        self.n_components = n_components
        self.seed = seed
        self.power_iterations = power_iterations
        self.oversample = oversample

    def fit(self, x):
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        self.mean = x.mean(axis=0)
        xc = x - self.mean
        n_comp = min(self.n_components, *xc.shape)
        width = min(n_comp + self.oversample, *xc.shape)
        rng = np.random.default_rng(self.seed)
        y = xc @ rng.normal(size=(xc.shape[1], width)).astype(np.float32)
        for _ in range(self.power_iterations):
            q = _orthonormalize(y).astype(np.float32)
            y = xc @ (xc.T @ q)
        q = _orthonormalize(y).astype(np.float32)
        b = (q.T @ xc).astype(np.float64)            # (width, D); X ~ Q B
        w, u = np.linalg.eigh(b @ b.T)               # B B^T = U S^2 U^T, ascending
        w, u = w[::-1][:n_comp], u[:, ::-1][:, :n_comp]
        s = np.sqrt(np.maximum(w, 0))
        v = (b.T @ u) / s                            # right singular vectors, (D, n_comp)
        v *= np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(n_comp)])   # deterministic signs
        self.components = v.T.astype(np.float32)
        self.singular_values = s
        self.explained_variance_ratio = float((s ** 2).sum() / np.einsum('ij,ij->', xc, xc, dtype=np.float64))
        return self

    def transform(self, x):
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        return (x - self.mean) @ self.components.T


# ---------------------------------------------------------------------------------------
# encoders and the label-fitted reference
# ---------------------------------------------------------------------------------------

def load_encoder(weights, option):
    try:
        return load_pretrained(weights)
    except (OSError, ValueError) as exc:
        sys.exit(f'similarity benchmark: cannot load the encoder of {option} ({exc})')


def describe_paths(encoder, paths, workers, seed):
    """Encoder vectors of image files; a galaxy the pipeline finds nothing in gets a random
    unit vector (it stays in the database, as a chance-level description); returns the vectors,
    which galaxies failed so, and the seconds taken."""
    t0 = time.perf_counter()
    vectors, _ = describe([str(p) for p in paths], encoder, workers=workers)
    vectors = vectors.astype(np.float64)
    failed = ~np.isfinite(vectors).all(axis=1)
    if failed.any():
        fill = np.random.default_rng(seed).normal(size=(int(failed.sum()), vectors.shape[1]))
        vectors[failed] = fill / np.linalg.norm(fill, axis=1, keepdims=True)
    return vectors, failed, time.perf_counter() - t0


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_lda(x, labels, regularisation=1e-3):
    """Linear discriminant directions of labelled vectors (numpy only).

    Maximises between-class over within-class scatter: the within-class scatter ``Sw``
    (plus ``regularisation`` times its mean eigenvalue on the diagonal, so that it stays
    invertible) is whitened by its Cholesky factor, and the leading ``n_classes - 1``
    eigenvectors of the whitened between-class scatter are mapped back.
    Returns the mean of ``x`` and the directions, shape (d, n_classes - 1).
    """
    classes = np.unique(labels)
    mean = x.mean(axis=0)
    d = x.shape[1]
    sw = np.zeros((d, d))
    sb = np.zeros((d, d))
    for c in classes:
        xc = x[labels == c]
        mc = xc.mean(axis=0)
        sw += (xc - mc).T @ (xc - mc)
        sb += len(xc) * np.outer(mc - mean, mc - mean)
    sw += regularisation * np.trace(sw) / d * np.eye(d)
    inv_l = np.linalg.inv(np.linalg.cholesky(sw))
    w, v = np.linalg.eigh(inv_l @ sb @ inv_l.T)
    lead = np.argsort(w)[::-1][:len(classes) - 1]
    return mean, inv_l.T @ v[:, lead]


def label_fitted(train_vectors, train_groups, test_vectors, weight):
    """Test vectors (unit length) with their LDA projection (unit length, times ``weight``) appended;
    LDA fitted on the train vectors whose group is not ignored."""
    keep = ~np.isin(train_groups, IGNORE)
    mean, directions = fit_lda(_unit(train_vectors[keep]), train_groups[keep])
    projection = (_unit(test_vectors) - mean) @ directions
    return np.hstack([_unit(test_vectors), weight * _unit(projection)])


def target_line(table, method, k):
    """PASS/FAIL of one row (euclidean distance) against the retrieval target."""
    row = table[(table['method'] == method) & (table['metric'] == 'euclidean')][0]
    per_class = {c: float(row[f'P@{k} {c}']) for c in CLASSES}
    low = min(per_class, key=per_class.get)
    ok = (row[f'P@{k} macro'] >= TARGET['macro'] and row[f'P@{k} micro'] >= TARGET['micro']
          and per_class[low] >= TARGET['class'])
    return (f'target (P@{k} macro >= {TARGET["macro"]:.2f}, micro >= {TARGET["micro"]:.2f}, no class below '
            f'{TARGET["class"]:.2f}) for {method!r}: macro {row[f"P@{k} macro"]:.3f}, micro '
            f'{row[f"P@{k} micro"]:.3f}, lowest {low} {per_class[low]:.3f}: {"PASS" if ok else "FAIL"}')


def _as_nddata(arrays, paths):
    """Transformed colour arrays as NDData like `astro_galsim.read_image` returns."""
    return [NDData(np.ascontiguousarray(a), meta={'bands': ('i', 'r', 'g'), 'kind': 'colour',
                                                  'path': str(p)})
            for a, p in zip(arrays, paths)]


# ---------------------------------------------------------------------------------------
# the other labelled sets: Hubble types, interaction sub-types, interacting or not
# ---------------------------------------------------------------------------------------

SHARED = REPO.parent / 'shared' / 'data'
NGC_DATA = SHARED / 'sdss_ngc_ic_kavehsayeh'
CRUISE_DATA = SHARED / 'galaxy_cruise_interacting'
HUBBLE = ('spiral', 'lenticular', 'elliptical', 'irregular')
SUBTYPES = ('ring', 'fan', 'distortion', 'tail')
INTERACTING = ('interacting', 'non-interacting')
SDSS_SIDE = 96   # the interacting galaxies' SDSS images: 96 px at the native 0.396"/px
TARGETS_MORPHOLOGY = {'gz1': {'macro': 0.70, 'micro': 0.78, 'merger': 0.40},
                      'hubble': {'macro': 0.62, 'micro': 0.70, 'lenticular': 0.50, 'irregular': 0.30},
                      'subtypes': {'macro': 0.45}, 'interacting': {'interacting': 0.70}}


def _csv_rows(path):
    if not path.is_file():
        sys.exit(f'similarity benchmark: {path} is missing; the labelled sets live in ../shared/data beside the '
                 'repository (see its README.md), or leave them out with --sets gz1')
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _sample(rows, limit, seed):
    if limit is None or limit >= len(rows):
        return rows
    return [rows[i] for i in np.sort(np.random.default_rng(seed).choice(len(rows), size=limit, replace=False))]


def ngc_test_set(limit=None, seed=0):
    """Paths, coarse Hubble types and pixel scales (arcsec; 1.25 major axes over 256 px) of NGC/IC ``test``."""
    rows = _sample([r for r in _csv_rows(NGC_DATA / 'index.csv') if r['split'] == 'test'], limit, seed)
    return ([NGC_DATA / 'images' / r['file'] for r in rows], np.array([r['hubble_coarse'] for r in rows]),
            np.array([1.25 * float(r['major_axis_arcmin']) * 60 / 256 for r in rows]))


def cruise_test_set(limit=None, seed=0):
    """SDSS image paths and interaction sub-types of the ``galaxy_cruise_interacting`` ``test`` split."""
    rows = _sample([r for r in _csv_rows(CRUISE_DATA / 'index.csv') if r['split'] == 'test'], limit, seed)
    return [CRUISE_DATA / r['sdss_file'] for r in rows], np.array([r['label'] for r in rows])


def describe_images(encoder, images, workers, seed):
    """As `describe_paths`, for images in memory; also returns the measurements table."""
    t0 = time.perf_counter()
    vectors, table = describe(images, encoder, workers=workers)
    vectors = vectors.astype(np.float64)
    failed = ~np.isfinite(vectors).all(axis=1)
    if failed.any():
        fill = np.random.default_rng(seed).normal(size=(int(failed.sum()), vectors.shape[1]))
        vectors[failed] = fill / np.linalg.norm(fill, axis=1, keepdims=True)
    return vectors, failed, time.perf_counter() - t0, table


def _r50_arcsec(table, scales):
    r50 = u.Quantity(table['r50']).value
    return np.where(np.asarray(table['found'], dtype=bool), r50 * scales, np.nan)


def set_table(title, raw, groups, classes, described, k, seed):
    """Rows of random, raw pixel PCA (of ``raw``) and each encoder's vectors for one labelled set."""
    counts = {c: int((groups == c).sum()) for c in classes}
    chance = np.mean([(counts[c] - 1) / (len(groups) - 1) for c in classes if counts[c]])
    print(f'\n{title}: {len(groups)} galaxies {counts}; chance macro P@{k} = {chance:.3f}')
    tables = [metric_rows('random', np.random.default_rng(seed).normal(size=(len(groups), N_COMPONENTS)),
                          groups, k, 0.0, classes)]
    t0 = time.perf_counter()
    pca = PCA(seed=seed).fit(raw)
    tables.append(metric_rows('raw pixel PCA', pca.transform(raw), groups, k, time.perf_counter() - t0, classes))
    for name, (vectors, failed, seconds) in described.items():
        print(f'  {name}: {seconds:.1f} s; {int(failed.sum())} images without a galaxy found (random unit vectors)')
        tables.append(metric_rows(name, vectors, groups, k, seconds, classes))
    table = vstack(tables)
    add_ratio(table, k)
    table.meta.update({'set': title, 'k': k, 'n_galaxies': len(groups), 'chance_macro_precision_at_k': float(chance)})
    _show(table)
    return table


def degraded_to_side(rgb, pixel_scale, shrink, seed, side=SDSS_SIDE):
    """A colour image (display bytes at ``pixel_scale`` arcsec) degraded to SDSS's look, ``shrink`` times
    smaller, in a ``side`` x ``side`` frame at 0.396"/px: the source is first padded with its sky (each
    channel's border median) where the copy would be smaller than the frame, so that the sky noise
    covers the padding too, then the copy is cut about its centre."""
    factor = pixel_scale / (0.396 * shrink)
    need = int(np.ceil(side / factor)) + 2
    ny, nx = rgb.shape[1:]
    if min(ny, nx) < need:
        border = np.concatenate([rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]], axis=1)
        sky = np.median(border, axis=1)
        py, px = max(need - ny, 0), max(need - nx, 0)
        rgb = np.stack([np.pad(plane, ((py // 2, py - py // 2), (px // 2, px - px // 2)), constant_values=level)
                        for plane, level in zip(rgb, sky.astype(rgb.dtype))])
    copy = degrade(rgb, shrink=shrink, source_pixel_scale=pixel_scale * u.arcsec, seed=seed)
    ny, nx = copy.data.shape[1:]
    y0, x0 = (ny - side) // 2, (nx - side) // 2
    return NDData(np.ascontiguousarray(copy.data[:, y0:y0 + side, x0:x0 + side]), meta=dict(copy.meta))


def morphology_line(what, table, method, k, goals):
    """PASS/FAIL of one row (euclidean) against the goals of the morphology issue."""
    row = table[(table['method'] == method) & (table['metric'] == 'euclidean')][0]
    got = {g: float(row[f'P@{k} {g}']) for g in goals}
    ok = all(got[g] >= goal for g, goal in goals.items())
    wanted = ', '.join(f'{g} >= {goal:.2f}' for g, goal in goals.items())
    return (f'target {what} (P@{k} {wanted}) for {method!r}: '
            + ', '.join(f'{g} {got[g]:.3f}' for g in goals) + f': {"PASS" if ok else "FAIL"}')


def morphology_sets(sets, encoders, args):
    """The NGC/IC Hubble types, the interaction sub-types and interacting-or-not sets; tables and target lines."""
    tables, lines = [], []
    k, seed, workers = args.k, args.seed, args.workers
    if 'hubble' in sets or 'interacting' in sets:
        ngc_paths, hubble, ngc_scales = ngc_test_set(args.limit, seed)
        ngc_images = [read_image(p) for p in ngc_paths]
    if 'subtypes' in sets or 'interacting' in sets:
        cruise_paths, subtypes = cruise_test_set(args.limit, seed)
        cruise_images = [read_image(p, survey='sdss') for p in cruise_paths]
    described = {}
    for name, enc in encoders.items():
        if 'hubble' in sets or 'interacting' in sets:
            described[name, 'ngc'] = describe_images(enc, ngc_images, workers, seed)
        if 'subtypes' in sets or 'interacting' in sets:
            described[name, 'cruise'] = describe_images(enc, cruise_images, workers, seed)

    def of(which):
        return {name: described[name, which][:3] for name in encoders}

    if 'hubble' in sets:
        table = set_table('NGC/IC test, Hubble types (hubble_coarse)', load_small(ngc_paths), hubble, HUBBLE,
                          of('ngc'), k, seed)
        tables.append(('_hubble', table))
        lines += [morphology_line('NGC/IC Hubble types', table, name, k, TARGETS_MORPHOLOGY['hubble'])
                  for name in encoders]
    if 'subtypes' in sets:
        table = set_table('galaxy_cruise_interacting test, sub-types of the SDSS images (label)',
                          load_small(cruise_paths), subtypes, SUBTYPES, of('cruise'), k, seed)
        tables.append(('_subtypes', table))
        lines += [morphology_line('interaction sub-types (SDSS images)', table, name, k,
                                  TARGETS_MORPHOLOGY['subtypes']) for name in encoders]
    if 'interacting' in sets:
        # sizes from the pipeline's measurements (prepare where no encoder runs); they do not depend on the encoder
        if encoders:
            first = next(iter(encoders))
            ngc_table, cruise_table = described[first, 'ngc'][3], described[first, 'cruise'][3]
        else:
            ngc_table = prepare(ngc_images, workers=workers)[1]
            cruise_table = prepare(cruise_images, workers=workers)[1]
        cruise_r50 = _r50_arcsec(cruise_table, 0.396)
        ngc_r50 = _r50_arcsec(ngc_table, ngc_scales)
        rng = np.random.default_rng(seed)
        goal = rng.choice(cruise_r50[np.isfinite(cruise_r50)], size=len(ngc_images))
        shrink = np.where(np.isfinite(ngc_r50), np.maximum(ngc_r50 / goal, 1.0), 1.0)
        far = [degraded_to_side(im.data, s, f, seed + i) for i, (im, s, f) in
               enumerate(zip(ngc_images, ngc_scales, shrink))]
        groups = np.array(['interacting'] * len(cruise_images) + ['non-interacting'] * len(far))
        raw = small_from_arrays([im.data for im in cruise_images] + [im.data for im in far])
        merged = {}
        for name, enc in encoders.items():
            vectors, failed, seconds, far_table = describe_images(enc, far, workers, seed)
            cv, cf, cs = described[name, 'cruise'][:3]
            merged[name] = (np.vstack([cv, vectors]), np.r_[cf, failed], cs + seconds)
        far_r50 = _r50_arcsec(far_table if encoders else prepare(far, workers=workers)[1], 0.396)
        print(f'\nnon-interacting galaxies: {len(far)} NGC/IC test galaxies degraded to the interacting galaxies\' '
              f'SDSS look ({SDSS_SIDE} px at 0.396"/px, seeing 1.4", SDSS JPEG sky noise; astro_galsim.degrade), '
              f'each shrunk (median {np.median(shrink):.1f}x, {shrink.min():.1f} to {shrink.max():.1f}) to a '
              'half-light radius drawn from the interacting galaxies\'; median r50 interacting '
              f'{np.nanmedian(cruise_r50):.2f}", degraded non-interacting {np.nanmedian(far_r50):.2f}"')
        table = set_table('interacting (galaxy_cruise_interacting test, SDSS) against equally degraded '
                          'non-interacting galaxies', raw, groups, INTERACTING, merged, k, seed)
        tables.append(('_interacting', table))
        lines += [morphology_line('interacting among interacting and degraded non-interacting', table, name, k,
                                  TARGETS_MORPHOLOGY['interacting']) for name in encoders]
    return tables, lines


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------

def metric_rows(method, vectors, groups, k, seconds, classes=CLASSES):
    t = evaluate(vectors, groups, k=k, ignore=IGNORE)
    rows = QTable()
    rows['method'] = [method] * len(t)
    rows['metric'] = t['metric']
    rows[f'P@{k} macro'] = t['precision_at_k_macro']
    rows[f'P@{k} micro'] = t['precision_at_k_micro']
    for c in classes:
        col = f'precision_at_k_{c}'
        rows[f'P@{k} {c}'] = t[col] if col in t.colnames else np.full(len(t), np.nan)
    rows['mAP macro'] = t['map_macro']
    rows['mAP micro'] = t['map_micro']
    rows['kNN acc'] = t['knn_accuracy_micro']
    rows['kNN bal acc'] = t['knn_accuracy_macro']
    rows['embed time'] = np.full(len(t), seconds) * u.s
    return rows


def add_ratio(table, k):
    base = {m: v for meth, m, v in zip(table['method'], table['metric'], table[f'P@{k} macro'])
            if meth == 'raw pixel PCA'}
    table[f'P@{k} macro / raw PCA'] = [v / base[m] if m in base else np.nan
                                       for m, v in zip(table['metric'], table[f'P@{k} macro'])]


def write_atomic(table, path):
    text = io.StringIO()
    table.write(text, format='ascii.ecsv')
    with atomic_output(Path(path).resolve()) as handle:
        handle.write(text.getvalue().encode())


def _show(table):
    shown = table.copy()
    for name in shown.colnames:
        if shown[name].dtype.kind == 'f':
            shown[name].info.format = '.3f'
    shown.pprint_all()


# ---------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='folder of the sdss_gz1_eggochi set (default: %(default)s)')
    parser.add_argument('--split', choices=SPLITS, default='test',
                        help='galaxies used as queries and database: the test split of split.csv '
                        '(default), or all of them (older numbers; no label-fitted row)')
    parser.add_argument('--k', type=int, default=10, help='neighbours for P@k and the k-NN vote')
    parser.add_argument('--limit', type=int, default=None,
                        help='random subset of N galaxies of the split, and of N train galaxies for the '
                        'label-fitted row (quick run)')
    parser.add_argument('--invariance-n', type=int, default=200,
                        help='galaxies used for the invariance measure (default: %(default)s; 0 skips it)')
    parser.add_argument('--workers', type=int, default=2,
                        help='processes for astro_galsim.pipeline.prepare and describe')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--methods', default='random,raw,segmented,encoder,lda',
                        help='comma-separated rows to run, from random, raw, segmented, encoder, lda '
                        '(default: all; raw is always run, it is the baseline; lda needs encoder)')
    parser.add_argument('--sets', default='hubble,subtypes,interacting',
                        help='labelled sets measured after Galaxy Zoo 1, comma-separated: hubble (NGC/IC test '
                        'Hubble types), subtypes (interaction sub-types), interacting (interacting against '
                        'degraded non-interacting galaxies), or none (default: all three)')
    parser.add_argument('--encoder', type=Path, default=None, metavar='WEIGHTS',
                        help='weights file (.pt, model card beside it) of the encoder row, e.g. one written '
                        'by astro-galsim train (default: the shipped encoder)')
    parser.add_argument('--previous-encoder', type=Path, default=None, metavar='WEIGHTS',
                        help='weights of a second encoder row, e.g. the weights the --encoder ones replace')
    parser.add_argument('--lda-weight', type=float, default=1.0,
                        help='length of the appended LDA projection in the label-fitted row, against 1 for '
                        'the encoder vector (default: %(default)s)')
    parser.add_argument('--output', type=Path, default=None, help='write the metric table to this ECSV file '
                        '(the invariance table goes beside it, suffixed _invariance)')
    args = parser.parse_args(argv)
    methods = {m.strip() for m in args.methods.split(',') if m.strip()}
    unknown = methods - {'random', 'raw', 'segmented', 'encoder', 'lda'}
    if unknown:
        parser.error(f'unknown --methods {sorted(unknown)}; choose from random, raw, segmented, encoder, lda')
    sets = {m.strip() for m in args.sets.split(',') if m.strip()} - {'none'}
    if sets - {'hubble', 'subtypes', 'interacting'}:
        parser.error(f'unknown --sets {sorted(sets - {"hubble", "subtypes", "interacting"})}; choose from hubble, '
                     'subtypes, interacting, or none')
    if 'lda' in methods and 'encoder' not in methods:
        parser.error('--methods lda needs encoder too: the label-fitted map is fitted on the encoder\'s vectors')

    # encoders first, each labelled with its model-card name: a wrong file fails before the costly work
    encoders = {}
    if 'encoder' in methods:
        if args.previous_encoder is not None:
            previous = load_encoder(args.previous_encoder, '--previous-encoder')
            encoders[f'previous {previous.identity["name"]}'] = previous
        encoder = load_encoder(args.encoder, '--encoder')
        encoder_row = f'encoder {encoder.identity["name"]}'
        encoders[encoder_row] = encoder

    rows = read_labels(args.data)
    paths, groups = select(args.data, rows, args.split, args.limit, args.seed)
    counts = {str(c): int((groups == c).sum()) for c in np.unique(groups)}
    print(f'data: {args.data}  split: {args.split}  galaxies: {len(paths)}  groups: {counts}')
    queried = [c for c in counts if c not in IGNORE]
    chance = np.mean([(counts[c] - 1) / (len(groups) - 1) for c in queried])
    which = 'every galaxy' if args.split == 'all' else f'the {args.split} galaxies'
    print(f'k = {args.k}; queries and database are {which}; {", ".join(IGNORE)} galaxies are '
          f'candidates but not queries; chance macro P@k = {chance:.3f}')

    tables = []
    pcas = {}

    # random vectors
    if 'random' in methods:
        t0 = time.perf_counter()
        rand = np.random.default_rng(args.seed).normal(size=(len(paths), N_COMPONENTS))
        tables.append(metric_rows('random', rand, groups, args.k, time.perf_counter() - t0))

    # raw pixel PCA
    t0 = time.perf_counter()
    raw = load_small(paths)
    t_read = time.perf_counter() - t0
    pca = PCA(seed=args.seed).fit(raw)
    vec = pca.transform(raw)
    t_raw = time.perf_counter() - t0
    print(f'raw pixel PCA: read {t_read:.1f} s, PCA {t_raw - t_read:.1f} s, '
          f'{N_COMPONENTS} components keep {pca.explained_variance_ratio:.1%} of the variance')
    pcas['raw pixel PCA'] = pca
    tables.append(metric_rows('raw pixel PCA', vec, groups, args.k, t_raw))
    del raw

    # pixel PCA after segmentation and normalisation
    if 'segmented' in methods:
        t0 = time.perf_counter()
        arrays, meas = prepare([str(p) for p in paths], workers=args.workers)
        n_rej = int((~np.asarray(meas['accepted'])).sum())
        seg = np.nan_to_num(arrays.reshape(len(arrays), -1), nan=0.0, posinf=0.0, neginf=0.0)
        seg_pca = PCA(seed=args.seed).fit(seg)
        vec = seg_pca.transform(seg)
        t_seg = time.perf_counter() - t0
        print(f'segmented PCA: {t_seg:.1f} s; {n_rej} of {len(paths)} galaxies not accepted by the '
              f'pipeline (kept, with their arrays as returned); {N_COMPONENTS} components keep '
              f'{seg_pca.explained_variance_ratio:.1%} of the variance')
        pcas['segmented PCA'] = seg_pca
        tables.append(metric_rows('segmented PCA', vec, groups, args.k, t_seg))
        del arrays, seg

    # encoders, each labelled with its model-card name
    described = {}
    for name, enc in encoders.items():
        vec, failed, seconds = described[name] = describe_paths(enc, paths, args.workers, args.seed)
        print(f'{name}: {seconds:.1f} s, {vec.shape[1]}-d vectors, normalisation {enc.normalisation}; '
              f'{int(failed.sum())} images without a galaxy found (random unit vectors)')
        tables.append(metric_rows(name, vec, groups, args.k, seconds))

    # what a linear map fitted on the train split's labels reaches (a reference, not a method)
    if 'lda' in methods and args.split == 'all':
        print('NOTE: no label-fitted row with --split all: its train galaxies would be among the queries')
    elif 'lda' in methods:
        train_paths, train_groups = select(args.data, rows, 'train', args.limit, args.seed)
        train_vectors, failed, seconds = describe_paths(encoder, train_paths, args.workers, args.seed)
        print(f'label-fitted linear map: LDA on {encoder_row}\'s vectors of {len(train_paths)} train galaxies '
              f'({int(failed.sum())} without a galaxy found, left out), {seconds:.1f} s; '
              f'projection weight {args.lda_weight}')
        vec = label_fitted(train_vectors[~failed], train_groups[~failed], described[encoder_row][0],
                           args.lda_weight)
        tables.append(metric_rows('label-fitted linear map (reference)', vec, groups, args.k, seconds))

    table = vstack(tables)
    add_ratio(table, args.k)
    table.meta.update({'k': args.k, 'split': args.split, 'n_galaxies': len(paths), 'data': str(args.data),
                       'ignored': list(IGNORE), 'limit': args.limit, 'seed': args.seed,
                       'lda_weight': args.lda_weight, 'chance_macro_precision_at_k': float(chance),
                       'encoders': {name: enc.identity for name, enc in encoders.items()}})
    print()
    _show(table)
    if 'encoder' in methods:
        print()
        print(target_line(table, encoder_row, args.k))
    morphology_tables, lines = morphology_sets(sets, encoders, args) if sets else ([], [])
    if 'encoder' in methods:
        print('\nTargets of the morphology issue (test splits; euclidean):')
        for name in encoders:
            print(morphology_line('GZ1', table, name, args.k, TARGETS_MORPHOLOGY['gz1']))
        for line in lines:
            print(line)
        print('target: the invariance targets still hold with this encoder: see benchmarks/invariance.py')

    # invariance
    inv_tables = []
    n_inv = min(args.invariance_n, len(paths))
    if n_inv > 0:
        pick = np.sort(np.random.default_rng(args.seed + 1).choice(len(paths), size=n_inv, replace=False))
        inv_paths = [paths[i] for i in pick]
        full = load_full(inv_paths)
        embeds = {'raw pixel PCA': lambda ims: pcas['raw pixel PCA'].transform(small_from_arrays(ims))}
        if 'segmented PCA' in pcas:
            def seg_embed(ims):
                arr, _ = prepare(_as_nddata(ims, inv_paths), workers=args.workers)
                arr = np.nan_to_num(arr.reshape(len(arr), -1), nan=0.0, posinf=0.0, neginf=0.0)
                return pcas['segmented PCA'].transform(arr)
            embeds['segmented PCA'] = seg_embed
        for name, enc in encoders.items():
            embeds[name] = lambda ims, enc=enc: describe(_as_nddata(ims, inv_paths), enc, workers=args.workers)[0]
        print(f'\ninvariance on {n_inv} galaxies (full-resolution images transformed, then embedded); '
              'ratio = distance to the transformed copy / median distance to the 10th neighbour:')
        for method, embed in embeds.items():
            t0 = time.perf_counter()
            inv = invariance(embed, full, transforms='d4', angles=[30, 45] * u.deg)
            inv.add_column([method] * len(inv), name='method', index=0)
            inv_tables.append(inv)
            print(f'{method}: scale (median 10th-neighbour distance) {inv.meta["scale"]:.4g}, '
                  f'{time.perf_counter() - t0:.1f} s')
        inv_table = vstack(inv_tables, metadata_conflicts='silent')
        inv_table.meta = {'n_images': n_inv, 'n_neighbors': 10, 'metric': 'euclidean',
                          'scales': {t['method'][0]: t.meta['scale'] for t in inv_tables}}
        _show(inv_table)

    if args.output is not None:
        write_atomic(table, args.output)
        print(f'\nwrote {args.output}')
        for suffix, extra in morphology_tables:
            extra_path = args.output.with_name(args.output.stem + suffix + '.ecsv')
            write_atomic(extra, extra_path)
            print(f'wrote {extra_path}')
        if inv_tables:
            inv_path = args.output.with_name(args.output.stem + '_invariance.ecsv')
            write_atomic(inv_table, inv_path)
            print(f'wrote {inv_path}')
    return table


if __name__ == '__main__':
    main()
