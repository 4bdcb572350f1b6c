"""Training data of the galaxy autoencoder: prepared images, labels and views of one galaxy.

Every image is prepared by the per-galaxy path (`~astro_galsim.pipeline.prepare`) with a
wider field than the encoder's input (`context_normalisation`). Labels come from Galaxy
Zoo 1 and 2, the Hubble types of OpenNGC and the interacting galaxies of GALAXY CRUISE
(`TrainingLabels`); two images of one galaxy (an HSC and an SDSS image, a physically
degraded copy, `degraded_copies`) are paired as positives (``partners``). Only the
``train`` split of a labelled set is ever read.
"""
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from astropy import log
from astropy import units as u
from astropy.table import Table
from tqdm.auto import tqdm

from .config import conf

__all__ = ['context_normalisation', 'load_training_images', 'load_labelled_images', 'gz2_labels_of',
           'TrainingLabels', 'MORPHOLOGY_CLASSES', 'LABEL_GROUPS', 'load_hubble_types', 'load_interacting_pairs',
           'degraded_copies', 'hubble_types_of', 'load_training_set', 'TRAINING_SAMPLE_PIXEL_SCALE']


def context_normalisation(normalisation, context=1.5):
    """The normalisation of the training images: the same pixel scale, a wider field."""
    size = int(round(normalisation['size'] * context / 16)) * 16
    return dict(normalisation, size=size, radius_scale=normalisation['radius_scale'] * size / normalisation['size'])


def load_training_images(folder, normalisation, workers=2):
    """Prepare the images of a training folder (an ``index.csv`` with ``path`` and ``split``).

    Returns the context-sized arrays (float16), their ids and a boolean array marking the
    validation split.
    """
    from .pipeline import prepare
    folder = Path(folder)
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    paths = [folder / p for p in index['path']]
    arrays, table = prepare(paths, normalisation=context_normalisation(normalisation), workers=workers,
                            progress=conf.show_progress)
    keep = np.asarray(table['found']) & arrays.any(axis=(1, 2, 3))  # found, and with a scale to normalise to
    log.info(f'{keep.sum()} of {len(keep)} training images have a central galaxy')
    is_val = np.asarray(index['split']) == 'val' if 'split' in index.colnames else np.zeros(len(index), bool)
    return arrays[keep].astype(np.float16), np.asarray(index['objid'])[keep].astype(str), is_val[keep]


#: The morphology classes of the label terms: the Galaxy Zoo 1 similarity groups of
#: ``sdss_gz1_eggochi`` without ``dont_know`` (stars, artefacts).
MORPHOLOGY_CLASSES = ('elliptical', 'spiral_face_on', 'spiral_edge_on', 'merger')

#: Further label sets of the supervised contrastive term, each with its classes: the coarse Hubble
#: types of OpenNGC (NGC/IC galaxies and the training sample's matches), interacting or not
#: (GALAXY CRUISE's interacting galaxies; galaxies of the other sets that are not mergers), and the
#: GALAXY CRUISE sub-type of an interacting galaxy.
LABEL_GROUPS = {
    'hubble': ('spiral', 'lenticular', 'elliptical', 'irregular'),
    'interacting': ('not_interacting', 'interacting'),
    'interaction_type': ('ring', 'fan', 'distortion', 'tail'),
}


class TrainingLabels:
    """Morphology labels aligned with an array of training images.

    Parameters
    ----------
    classes : `~numpy.ndarray` of int
        Index into `MORPHOLOGY_CLASSES` per image, -1 where unknown.
    soft : `~numpy.ndarray`, shape (n, 4)
        Class probabilities (vote fractions) per image, NaN rows where unknown.
    spiral : `~numpy.ndarray`
        Probability that the galaxy is a spiral, NaN where unknown.
    provenance : dict, optional
        Which label sets and how many galaxies of each (for the model card).
    groups : dict, optional
        Further label sets, by name of `LABEL_GROUPS`: an index into that group's classes
        per image, -1 where unknown (a missing group is unknown for every image).
    """

    def __init__(self, classes, soft, spiral, provenance=None, groups=None):
        self.classes = np.asarray(classes, dtype=int)
        groups = dict(groups or {})
        unknown = set(groups) - set(LABEL_GROUPS)
        if unknown:
            raise ValueError(f'labels: unknown label group(s) {sorted(unknown)}; known: {sorted(LABEL_GROUPS)}')
        self.groups = {name: np.asarray(groups.get(name, np.full(len(self.classes), -1)), dtype=int)
                       for name in LABEL_GROUPS}
        self.soft = np.asarray(soft, dtype=np.float32).reshape(len(self.classes), len(MORPHOLOGY_CLASSES))
        self.spiral = np.asarray(spiral, dtype=np.float32)
        if not len(self.soft) == len(self.spiral) == len(self.classes) or any(
                len(g) != len(self.classes) for g in self.groups.values()):
            raise ValueError('labels: classes, soft, spiral and every group need one entry per image')
        self.provenance = dict(provenance or {})

    def __len__(self):
        return len(self.classes)

    def subset(self, keep):
        return TrainingLabels(self.classes[keep], self.soft[keep], self.spiral[keep], self.provenance,
                              {name: g[keep] for name, g in self.groups.items()})

    @classmethod
    def unlabelled(cls, n, provenance=None, groups=None):
        """Labels of ``n`` images about which nothing is known (but ``groups``, where given)."""
        return cls(np.full(n, -1), np.full((n, len(MORPHOLOGY_CLASSES)), np.nan), np.full(n, np.nan), provenance,
                   groups)

    @classmethod
    def concatenate(cls, parts):
        provenance = {}
        for part in parts:
            provenance.update(part.provenance)
        return cls(np.concatenate([p.classes for p in parts]), np.concatenate([p.soft for p in parts]),
                   np.concatenate([p.spiral for p in parts]), provenance,
                   {name: np.concatenate([p.groups[name] for p in parts]) for name in LABEL_GROUPS})


def load_labelled_images(normalisation, *, gz1=None, gz2_sample=None, workers=2):
    """Prepare labelled training galaxies: the Galaxy Zoo 1 *train* split and Galaxy Zoo 2 images.

    Parameters
    ----------
    normalisation : dict
        The encoder's normalisation (the images are prepared with its `context_normalisation`).
    gz1 : str or `~pathlib.Path`, optional
        A folder like ``sdss_gz1_eggochi``: ``labels.csv`` (``path``, ``objid``,
        ``similarity_group``) and ``split.csv`` (``objid``, ``split``). Only the galaxies of
        the ``train`` split are read; the ``test`` split is never touched.
    gz2_sample : str or `~pathlib.Path`, optional
        A folder like ``sdss_gz2_kaggle_sample``: ``labels.csv`` (``path``, ``label``
        ``spiral`` or ``non_spiral``).

    Returns
    -------
    arrays : `~numpy.ndarray`, float16
    labels : `TrainingLabels`
    ids : `~numpy.ndarray` of str
        The image of each row (GZ1 objid, or GZ2 file name).
    """
    from .pipeline import prepare
    parts, label_parts, id_parts = [], [], []
    if gz1 is not None:
        gz1 = Path(gz1)
        table = Table.read(gz1 / 'labels.csv', format='ascii.csv')
        split = Table.read(gz1 / 'split.csv', format='ascii.csv')
        train_ids = {str(o) for o, s in zip(split['objid'], split['split']) if s == 'train'}
        table = table[[str(o) in train_ids for o in table['objid']]]
        groups = np.asarray(table['similarity_group']).astype(str)
        classes = np.array([MORPHOLOGY_CLASSES.index(g) if g in MORPHOLOGY_CLASSES else -1 for g in groups])
        soft = np.full((len(table), len(MORPHOLOGY_CLASSES)), np.nan, dtype=np.float32)
        soft[classes >= 0] = np.eye(len(MORPHOLOGY_CLASSES))[classes[classes >= 0]]
        spiral = np.full(len(table), np.nan, dtype=np.float32)
        spiral[groups == 'spiral_face_on'] = 1.0
        spiral[groups == 'elliptical'] = 0.0
        parts.append([gz1 / p for p in table['path']])
        id_parts.append(np.asarray(table['objid']).astype(str))
        # a GZ1 merger is interacting; its other classes are not
        interacting = np.where(classes == MORPHOLOGY_CLASSES.index('merger'), 1, np.where(classes >= 0, 0, -1))
        label_parts.append(TrainingLabels(classes, soft, spiral,
                                          {'gz1_train': {'folder': gz1.name, 'split': 'train', 'n': len(table)}},
                                          {'interacting': interacting}))
    if gz2_sample is not None:
        gz2_sample = Path(gz2_sample)
        table = Table.read(gz2_sample / 'labels.csv', format='ascii.csv')
        spiral = (np.asarray(table['label']).astype(str) == 'spiral').astype(np.float32)
        parts.append([gz2_sample / p for p in table['path']])
        id_parts.append(np.array([Path(p).name for p in table['path']]))
        label_parts.append(TrainingLabels(np.full(len(table), -1), np.full((len(table), 4), np.nan), spiral,
                                          {'gz2_sample': {'folder': gz2_sample.name, 'n': len(table)}}))
    if not parts:
        raise ValueError('load_labelled_images: give gz1 and/or gz2_sample')
    arrays, keep = [], []
    for paths in parts:
        prepared, table = prepare(paths, normalisation=context_normalisation(normalisation), workers=workers,
                                  progress=conf.show_progress)
        ok = np.asarray(table['found']) & prepared.any(axis=(1, 2, 3))
        arrays.append(prepared[ok].astype(np.float16))
        keep.append(ok)
    labels = TrainingLabels.concatenate([lab.subset(ok) for lab, ok in zip(label_parts, keep)])
    ids = np.concatenate([i[ok] for i, ok in zip(id_parts, keep)])
    return np.concatenate(arrays), labels, ids


def gz2_labels_of(folder, ids):
    """Galaxy Zoo 2 class probabilities of training-sample galaxies (``gz2_labels/`` of the folder).

    ``gz2_classes_iaifi.csv`` gives smooth, edge-on, features and merger probabilities by
    objid: elliptical = smooth, edge-on = edge-on, face-on spiral = features not edge-on,
    merger = merger (renormalised); spiral = ``spiral_prob``. Galaxies without labels get NaN.
    """
    path = Path(folder) / 'gz2_labels' / 'gz2_classes_iaifi.csv'
    n = len(ids)
    if not path.exists():
        return TrainingLabels.unlabelled(n)
    table = Table.read(path, format='ascii.csv')
    row_of = {str(o): i for i, o in enumerate(table['objid'])}
    soft = np.full((n, len(MORPHOLOGY_CLASSES)), np.nan, dtype=np.float32)
    spiral = np.full(n, np.nan, dtype=np.float32)
    for i, objid in enumerate(ids):
        j = row_of.get(str(objid))
        if j is None:
            continue
        r = table[j]
        edge = float(r['edgeon_prob'])
        p = np.array([float(r['smooth_prob']), float(r['features_prob']) * (1 - edge), edge,
                      float(r['merger_prob'])], dtype=np.float32)
        if p.sum() > 0:
            soft[i] = p / p.sum()
        spiral[i] = float(r['spiral_prob'])
    found = int(np.isfinite(spiral).sum())
    return TrainingLabels(np.full(n, -1), soft, spiral, {'gz2_training_sample': {'file': path.name, 'n': found}})


def _prepare_context(images, normalisation, workers):
    """Context-sized arrays of images (float16) and which of them hold a measured galaxy."""
    from .pipeline import prepare
    arrays, table = prepare(images, normalisation=context_normalisation(normalisation), workers=workers,
                            progress=conf.show_progress)
    return arrays.astype(np.float16), np.asarray(table['found']) & arrays.any(axis=(1, 2, 3))


def _train_split(index, folder):
    if 'split' not in index.colnames:
        raise ValueError(f'{folder}: index.csv has no split column; a labelled set must say which images '
                         'may be trained on (train) and which are held back (test)')
    return index[np.asarray(index['split']).astype(str) == 'train']


def hubble_types_of(folder, ids):
    """Coarse Hubble types (`LABEL_GROUPS` ``'hubble'``) of training-sample galaxies, by objid.

    Read from ``hubble_types_openngc.csv`` of the folder (OpenNGC types matched by
    position); -1 where a galaxy has none.
    """
    path = Path(folder) / 'hubble_types_openngc.csv'
    types = np.full(len(ids), -1)
    if not path.exists():
        return types
    table = Table.read(path, format='ascii.csv')
    classes = LABEL_GROUPS['hubble']
    of = {str(o): classes.index(str(c)) for o, c in zip(table['objid'], table['hubble_coarse'])
          if str(c) in classes}
    return np.array([of.get(str(i), -1) for i in ids])


def load_hubble_types(folder, normalisation, *, workers=2):
    """The *train* split of an NGC/IC folder with coarse Hubble types (like ``sdss_ngc_ic_kavehsayeh``).

    Returns
    -------
    arrays : `~numpy.ndarray`, float16
    labels : `TrainingLabels`
        ``'hubble'`` from ``hubble_coarse``; none is a merger, so ``'interacting'`` is 0.
    ids : `~numpy.ndarray` of str
    pixel_scales : `~astropy.units.Quantity`
        Of each image: cut to 1.25 times the catalogued major axis on 256 pixels (NaN where
        the axis is unknown).
    """
    folder = Path(folder)
    index = _train_split(Table.read(folder / 'index.csv', format='ascii.csv'), folder)
    arrays, ok = _prepare_context([folder / 'images' / f for f in index['file']], normalisation, workers)
    classes = LABEL_GROUPS['hubble']
    hubble = np.array([classes.index(str(c)) if str(c) in classes else -1 for c in index['hubble_coarse']])
    axis = np.asarray(index['major_axis_arcmin'].filled(np.nan) if hasattr(index['major_axis_arcmin'], 'filled')
                      else index['major_axis_arcmin'], dtype=float)
    scales = (1.25 * axis * 60 / 256) * u.arcsec
    labels = TrainingLabels.unlabelled(len(index), {'ngc_ic_train': {'folder': folder.name, 'split': 'train',
                                                                     'n': int(ok.sum())}},
                                       {'hubble': hubble, 'interacting': np.zeros(len(index), int)})
    return arrays[ok], labels.subset(ok), np.asarray(index['name']).astype(str)[ok], scales[ok]


def load_interacting_pairs(folder, normalisation, *, workers=2):
    """The *train* split of GALAXY CRUISE's interacting galaxies, each as an SDSS and an HSC image.

    Returns
    -------
    arrays : `~numpy.ndarray`, float16
        The SDSS images, then the HSC images of the galaxies with both found.
    labels : `TrainingLabels`
        ``'interacting'`` 1 and ``'interaction_type'`` from the sub-type with most votes.
    ids : `~numpy.ndarray` of str
    partners : `~numpy.ndarray` of int
        For each row, the row of the same galaxy's image from the other survey.
    """
    from .io import read_image
    folder = Path(folder)
    index = _train_split(Table.read(folder / 'index.csv', format='ascii.csv'), folder)
    sdss, ok_sdss = _prepare_context([read_image(folder / f, survey='sdss') for f in index['sdss_file']],
                                     normalisation, workers)
    hsc, ok_hsc = _prepare_context([read_image(folder / f, survey='hsc') for f in index['hsc_file']],
                                   normalisation, workers)
    ok = ok_sdss & ok_hsc
    n = int(ok.sum())
    types = LABEL_GROUPS['interaction_type']
    kind = np.array([types.index(str(c)) if str(c) in types else -1 for c in index['label']])[ok]
    labels = TrainingLabels.unlabelled(2 * n, {'interacting_train': {'folder': folder.name, 'split': 'train',
                                                                     'n': n}},
                                       {'interacting': np.ones(2 * n, int), 'interaction_type': np.tile(kind, 2)})
    ids = np.asarray(index['object_id']).astype(str)[ok]
    partners = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    return np.concatenate([sdss[ok], hsc[ok]]), labels, np.concatenate([ids, ids]), partners


def _degraded_one(job):
    from .degrade import degrade
    from .io import read_image
    from .pipeline import prepare_one
    path, scale, seed, normalisation = job
    rng = np.random.default_rng(seed)
    try:
        image = read_image(path)
        copy = degrade(image, shrink=float(np.exp(rng.uniform(np.log(1.5), np.log(4.0)))),
                       seeing=rng.uniform(1.0, 2.0) * u.arcsec, pixel_scale=rng.uniform(0.26, 0.5) * u.arcsec,
                       source_pixel_scale=scale * u.arcsec, noise=rng.uniform(0.004, 0.03),
                       nonlinearity=rng.uniform(2.0, 3.6), colour_balance=rng.uniform(0.8, 1.25, 3),
                       brightness=rng.uniform(0.7, 1.4), seed=seed)
        array, record = prepare_one(copy, normalisation=normalisation)
    except Exception:  # noqa: BLE001 - a copy that cannot be made is left out, never the batch
        return None
    return None if array is None or not record['found'] else array.astype(np.float16)


def degraded_copies(paths, normalisation, *, pixel_scales, seed=0, workers=2):
    """A physically degraded copy of each image (`~astro_galsim.degrade.degrade`), prepared.

    Each copy sees its galaxy 1.5 to 4 times further away, with a seeing of 1-2", pixels of
    0.26-0.5", sky noise, another asinh nonlinearity (2.0-3.6), colour balance (0.8-1.25 per
    channel) and brightness (0.7-1.4), drawn per image from ``seed``: the views the encoder
    must learn to give the description of the original.

    Parameters
    ----------
    paths : list of path
        SDSS-stretched colour images.
    normalisation : dict
        The encoder's normalisation (copies are prepared with its `context_normalisation`).
    pixel_scales : `~astropy.units.Quantity` or float
        Arcsec per pixel of each image (or one for all).

    Returns
    -------
    arrays : `~numpy.ndarray`, float16
    ok : `~numpy.ndarray` of bool
        Which images gave a copy (``arrays`` holds those only, in order).
    """
    scales = np.broadcast_to(u.Quantity(pixel_scales, u.arcsec).value, (len(paths),))
    jobs = [(str(p), float(s), seed * 1_000_003 + i, context_normalisation(normalisation))
            for i, (p, s) in enumerate(zip(paths, scales))]
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_degraded_one, jobs, chunksize=16), total=len(jobs),
                            disable=not conf.show_progress, desc='degraded copies'))
    ok = np.array([r is not None for r in results])
    size = context_normalisation(normalisation)['size']
    if not ok.any():
        return np.zeros((0, 3, size, size), np.float16), ok
    return np.stack([r for r in results if r is not None]), ok


#: Arcsec per pixel of the training sample's JPEGs (``sdss_galaxies_mikeedi``), for its degraded copies:
#: 12 of its galaxies that are also DR7 frames measured 0.400"/px (docs/preprocessing.rst).
TRAINING_SAMPLE_PIXEL_SCALE = 0.40 * u.arcsec


def load_training_set(folder, normalisation, *, gz1=None, gz2_sample=None, ngc_ic=None, interacting=None,
                      degraded=0.0, seed=0, workers=2):
    """Every image the encoder trains on, with labels, the validation split and pairs of one galaxy.

    Parameters
    ----------
    folder : str or `~pathlib.Path`
        The training sample (``index.csv``: ``path``, ``split`` train/val, ``objid``; its
        ``gz2_labels/`` and ``hubble_types_openngc.csv`` when present).
    normalisation : dict
        The encoder's normalisation.
    gz1, gz2_sample : optional
        As in `load_labelled_images` (the GZ1 *train* split only).
    ngc_ic : optional
        An NGC/IC folder with Hubble types (`load_hubble_types`; its *train* split only).
    interacting : optional
        GALAXY CRUISE's interacting galaxies in SDSS and HSC (`load_interacting_pairs`; *train*
        split only), each image the other's partner.
    degraded : float, optional
        Fraction of the training sample's and the NGC/IC images that get a degraded copy
        (`degraded_copies`) as their partner; a copy of a galaxy that is not interacting is
        labelled not interacting, so that poor resolution does not mean interaction. Above 1,
        more copies, each drawn anew (2.0: two of every image): the original's partner is the
        first of its copies that could be made, and the original is every copy's.

    Returns
    -------
    arrays : `~numpy.ndarray`, float16
    labels : `TrainingLabels` or None
        None when no labelled set is given.
    is_val : `~numpy.ndarray` of bool
        The training sample's validation split (and the copies of its galaxies).
    partners : `~numpy.ndarray` of int
        The row of another image of the same galaxy, -1 where there is none.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    arrays, ids, is_val = load_training_images(folder, normalisation, workers=workers)
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    path_of = {str(o): folder / p for o, p in zip(index['objid'], index['path'])}
    parts = [arrays]
    labelled = any(x is not None for x in (gz1, gz2_sample, ngc_ic, interacting))
    own = gz2_labels_of(folder, ids)
    own.groups['hubble'] = hubble_types_of(folder, ids)
    # Galaxy Zoo 2 merger votes: interacting above one half, not interacting below a tenth
    merger = own.soft[:, MORPHOLOGY_CLASSES.index('merger')]
    own.groups['interacting'] = np.where(merger > 0.5, 1, np.where(merger < 0.1, 0, -1))
    label_parts, val_parts = [own], [is_val]
    partner_parts = [np.full(len(arrays), -1)]
    sources = [(np.array([path_of[i] for i in ids]), np.full(len(ids), TRAINING_SAMPLE_PIXEL_SCALE.value),
                0, own)]
    if gz1 is not None or gz2_sample is not None:
        extra, extra_labels, _ = load_labelled_images(normalisation, gz1=gz1, gz2_sample=gz2_sample, workers=workers)
        parts.append(extra)
        label_parts.append(extra_labels)
        val_parts.append(np.zeros(len(extra), bool))
        partner_parts.append(np.full(len(extra), -1))
    if ngc_ic is not None:
        extra, extra_labels, names, scales = load_hubble_types(ngc_ic, normalisation, workers=workers)
        start = sum(len(p) for p in parts)
        ngc_index = Table.read(Path(ngc_ic) / 'index.csv', format='ascii.csv')
        file_of = {str(n): Path(ngc_ic) / 'images' / f for n, f in zip(ngc_index['name'], ngc_index['file'])}
        parts.append(extra)
        label_parts.append(extra_labels)
        val_parts.append(np.zeros(len(extra), bool))
        partner_parts.append(np.full(len(extra), -1))
        sources.append((np.array([file_of[n] for n in names]), scales.to_value(u.arcsec), start, extra_labels))
    if interacting is not None:
        extra, extra_labels, _, pairs = load_interacting_pairs(interacting, normalisation, workers=workers)
        start = sum(len(p) for p in parts)
        parts.append(extra)
        label_parts.append(extra_labels)
        val_parts.append(np.zeros(len(extra), bool))
        partner_parts.append(pairs + start)
    n_before_copies = len(parts)
    # each round draws its copies anew; the first round is what degraded <= 1 gives
    for round_ in range(math.ceil(degraded)):
        for paths, scales, start, source_labels in sources:
            chosen = np.flatnonzero((rng.random(len(paths)) < min(1.0, degraded - round_)) & np.isfinite(scales))
            copies, ok = degraded_copies(paths[chosen], normalisation, pixel_scales=scales[chosen],
                                         seed=seed + start + 1_000_000 * round_, workers=workers)
            chosen = chosen[ok]
            first = sum(len(p) for p in parts)
            parts.append(copies)
            copy_labels = source_labels.subset(chosen)
            copy_labels.provenance = {}
            label_parts.append(copy_labels)
            val_parts.append(val_parts[0][chosen] if start == 0 else np.zeros(len(chosen), bool))
            partner_parts.append(chosen + start)
            rows = np.arange(first, first + len(chosen))
            _set_partners(partner_parts, chosen + start, rows)
    if degraded > 0:
        log.info(f'degraded copies: {sum(len(p) for p in parts[n_before_copies:])}')
    arrays = np.concatenate(parts)
    labels = TrainingLabels.concatenate(label_parts) if labelled else None
    return arrays, labels, np.concatenate(val_parts), np.concatenate(partner_parts)


def _set_partners(partner_parts, originals, copies):
    """Point each original row (of the concatenated parts) at its copy, where it has no partner yet."""
    offset = 0
    for part in partner_parts[:-1]:
        inside = (originals >= offset) & (originals < offset + len(part))
        local = originals[inside] - offset
        free = part[local] < 0
        part[local[free]] = copies[inside][free]
        offset += len(part)
