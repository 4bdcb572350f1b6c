#!/usr/bin/env python
"""How far the labels can take retrieval: the shipped encoder, a linear probe and a supervised fine-tune.

For each labelled set of the issue "Morphology that astronomers name", this measures, on the
set's ``test`` split (queries and database, as ``benchmarks/similarity.py`` does), the precision
at 10 (`astro_galsim.evaluation.precision_at_k`, euclidean; macro, micro and per class) of:

1. ``encoder``: the shipped encoder's vectors, described as ``benchmarks/similarity.py`` describes
   them (its ``describe_paths`` / ``describe_images``: `astro_galsim.pipeline.describe`; a galaxy
   the pipeline finds nothing in gets a random unit vector);
2. ``linear probe``: a multinomial logistic regression (torch, L-BFGS, class-balanced, L2 penalty
   chosen on a validation part of the train split) fitted on the encoder's vectors of the ``train``
   split; each test galaxy is described by its predicted class probabilities (``probe
   probabilities``) or by the probe's logits (``probe logits``);
3. ``supervised fine-tune``: the encoder network, its head started from a probe, fine-tuned end to
   end with class-balanced cross-entropy on the ``train`` split only (batch ``--batch-size``, AdamW,
   one-cycle schedule of ``--steps``), with the views of `astro_galsim.training.augment` (a flip or
   quarter turn, a small rotation, shift and zoom, stretch, brightness, colour and noise) drawn from
   images prepared with the training's wider field (`astro_galsim.training_data.context_normalisation`).
   Test galaxies are described by the softmax probabilities averaged over the eight flips and
   quarter turns of their prepared input (the same input as the encoder row); the test accuracy
   (plain and class-balanced) is reported too. Two initialisations:

   * ``shipped init``: the shipped weights. They were trained with the labels of every ``train``
     galaxy, so a validation part carved from the train split is no longer held out for them (the
     encoder's validation P@10 printed beside it shows how much): it cannot choose a state, and this
     fine-tune runs a fixed schedule at the first of ``--lrs`` and keeps the last state; its
     validation curve is printed for information only.
   * ``label-free init`` (with ``--label-free-init WEIGHTS``): the same network trained without any
     label (``astro_galsim-ae-v2``, in the repository's history: ``git show
     2a89061:astro_galsim/data/encoder.pt > ae_v2.pt``, and ``encoder.json`` to ``ae_v2.json``).
     For it the validation part (a stratified ``--val-fraction`` of the train split, never trained
     on) is clean: every ``--eval-every`` steps the model is scored on it, and the state of best
     validation macro P@10 over the learning rates of ``--lrs`` is kept.

   These rows are the ceiling: what this network reaches on these images when taught these labels
   directly.

The ``test`` splits are never trained, fitted, tuned or early-stopped on: they are read only to
be described and scored, after every choice was made on the train split (``--validation-only``
stops before them).

Sets (``--sets``):

* ``gz1``: ``sdss_gz1_eggochi`` by ``similarity_group`` (``split.csv``); ``dont_know`` galaxies
  are in the database but are neither queries nor trained on;
* ``hubble``: ``sdss_ngc_ic_kavehsayeh`` by ``hubble_coarse``; its train data also hold the
  training sample's galaxies with OpenNGC types (``sdss_galaxies_mikeedi/hubble_types_openngc.csv``,
  not with ``--no-openngc``); the validation part is carved from the NGC/IC train split only;
* ``subtypes``: the SDSS images (read with ``survey='sdss'``) of ``galaxy_cruise_interacting`` by
  interaction sub-type (``label``, the sub-type with most votes).

Each set prints the validation curves, its table (with the seconds of each row), a confusion
summary (each fine-tune's confusion matrix on test; for the encoder and the fine-tunes the share
of each class among a test query's 10 nearest), for the Hubble types the predictions by catalogued
OpenNGC type of the test lenticulars and ellipticals, and for the sub-types the accuracy with and
without a sub-type holding half the votes. The run ends with a PASS/FAIL line per target of the
issue (the best row for each number) and a line per set stating the ceiling. A set whose data are
absent is skipped with the reason.

Usage (from the repository root)::

    python benchmarks/label_ceiling.py --label-free-init ae_v2.pt   # all three sets, about 30 minutes on 2 cores
    python benchmarks/label_ceiling.py                          # the shipped init only
    python benchmarks/label_ceiling.py --sets hubble --steps 600 --lrs 3e-4 1e-3
    python benchmarks/label_ceiling.py --validation-only --label-free-init ae_v2.pt   # choose settings
    python benchmarks/label_ceiling.py --limit 200 --steps 40   # a quick check that it runs
    python benchmarks/label_ceiling.py --output ceiling.ecsv
"""
import argparse
import copy
import csv
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import astro_galsim  # noqa: F401
except ImportError:   # running from a source tree without an install
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from astropy.table import QTable  # noqa: E402

import similarity  # noqa: E402  (benchmarks/ is on the path of a script run from it)
from astro_galsim import read_image  # noqa: E402
from astro_galsim.config import conf  # noqa: E402
from astro_galsim.evaluation import precision_at_k  # noqa: E402
from astro_galsim.model import load_pretrained, uses_bfloat16  # noqa: E402
from astro_galsim.network import ConvAutoencoder, dihedral_views  # noqa: E402
from astro_galsim.pipeline import prepare  # noqa: E402
from astro_galsim.training import augment  # noqa: E402
from astro_galsim.training_data import context_normalisation  # noqa: E402

SHARED = REPO.parent / 'shared' / 'data'
GZ1 = SHARED / 'sdss_gz1_eggochi'
NGC = SHARED / 'sdss_ngc_ic_kavehsayeh'
OPENNGC = SHARED / 'sdss_galaxies_mikeedi' / 'hubble_types_openngc.csv'
CRUISE = SHARED / 'galaxy_cruise_interacting'
IGNORE = ('dont_know',)
K = 10
CLASSES = {'gz1': ('elliptical', 'spiral_edge_on', 'spiral_face_on', 'merger'),
           'hubble': ('spiral', 'lenticular', 'elliptical', 'irregular'),
           'subtypes': ('ring', 'fan', 'distortion', 'tail')}
TITLES = {'gz1': 'Galaxy Zoo 1 (sdss_gz1_eggochi, similarity_group)',
          'hubble': 'NGC/IC Hubble types (sdss_ngc_ic_kavehsayeh, hubble_coarse)',
          'subtypes': 'GALAXY CRUISE interaction sub-types, SDSS images (galaxy_cruise_interacting, label)'}
TARGETS = {'gz1': {'macro': 0.70, 'micro': 0.78, 'merger': 0.40},
           'hubble': {'macro': 0.62, 'micro': 0.70, 'lenticular': 0.50, 'irregular': 0.30},
           'subtypes': {'macro': 0.45}}
ROWS = ('encoder', 'probe probabilities', 'probe logits', 'supervised fine-tune')


# ---------------------------------------------------------------------------------------
# the labelled sets: train and test items, labels
# ---------------------------------------------------------------------------------------

def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def load_set(name, use_openngc=True):
    """Items (paths or images), labels and extras of one set's train and test splits; a str where absent.

    Returns ``dict(train=(items, labels), test=(items, labels), carve=bool array of the train
    items the validation part may be drawn from, fine=catalogued types of the test items or None)``.
    """
    if name == 'gz1':
        if not (GZ1 / 'split.csv').is_file():
            return f'{GZ1} or its split.csv is absent'
        rows = similarity.read_labels(GZ1)
        (train, y_train), (test, y_test) = (similarity.select(GZ1, rows, s) for s in ('train', 'test'))
        return {'train': ([str(p) for p in train], y_train), 'test': ([str(p) for p in test], y_test),
                'carve': np.ones(len(train), bool), 'fine': None, 'test_kind': 'paths'}
    if name == 'hubble':
        if not (NGC / 'index.csv').is_file():
            return f'{NGC / "index.csv"} is absent'
        rows = _rows(NGC / 'index.csv')
        split = {s: [r for r in rows if r['split'] == s and r['hubble_coarse'] in CLASSES['hubble']]
                 for s in ('train', 'test')}
        train = [NGC / 'images' / r['file'] for r in split['train']]
        y_train = [r['hubble_coarse'] for r in split['train']]
        carve = [True] * len(train)
        if use_openngc and OPENNGC.is_file():
            extra = [r for r in _rows(OPENNGC) if r['hubble_coarse'] in CLASSES['hubble']]
            train += [OPENNGC.parent / r['path'] for r in extra]
            y_train += [r['hubble_coarse'] for r in extra]
            carve += [False] * len(extra)   # the validation part is NGC/IC galaxies, like the test split
        elif use_openngc:
            print(f'hubble: {OPENNGC} is absent; training on the NGC/IC train split only')
        # read as benchmarks/similarity.py reads the test images (read_image, then describe)
        test = [read_image(NGC / 'images' / r['file']) for r in split['test']]
        return {'train': ([str(p) for p in train], np.array(y_train)),
                'test': (test, np.array([r['hubble_coarse'] for r in split['test']])),
                'carve': np.array(carve), 'fine': np.array([r['hubble'] or '?' for r in split['test']])}
    if name == 'subtypes':
        if not (CRUISE / 'index.csv').is_file():
            return f'{CRUISE / "index.csv"} is absent'
        rows = _rows(CRUISE / 'index.csv')
        split = {s: [r for r in rows if r['split'] == s and r['label'] in CLASSES['subtypes']]
                 for s in ('train', 'test')}

        def items(rs):
            return [read_image(CRUISE / r['sdss_file'], survey='sdss') for r in rs]

        votes = np.array([max(float(r[c]) for c in ('ring', 'fan', 'tailm', 'distortion'))
                          for r in split['test']])
        return {'train': (items(split['train']), np.array([r['label'] for r in split['train']])),
                'test': (items(split['test']), np.array([r['label'] for r in split['test']])),
                'carve': np.ones(len(split['train']), bool), 'fine': None, 'votes': votes}
    raise ValueError(f'unknown set {name!r}')


def _subsample(items, labels, limit, seed, *extra):
    if limit is None or limit >= len(items):
        return (items, labels) + extra
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return ([items[i] for i in keep], labels[keep]) + tuple(None if e is None else e[keep] for e in extra)


def carve_validation(labels, allowed, fraction, seed):
    """A stratified, seeded validation part of the train split (only where ``allowed``)."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        rows = np.flatnonzero((labels == c) & allowed)
        take = int(round(fraction * len(rows)))
        is_val[rng.choice(rows, size=take, replace=False)] = True
    return is_val


# ---------------------------------------------------------------------------------------
# the linear probe
# ---------------------------------------------------------------------------------------

def _class_weights(y, n_classes):
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def fit_probe(x, y, n_classes, penalty):
    """Multinomial logistic regression (class-balanced cross-entropy + ``penalty`` |W|^2), L-BFGS.

    Returns ``(W, b)`` as float32 tensors, shapes (d, n_classes) and (n_classes,).
    """
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    weights = _class_weights(y, n_classes)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-6, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt, weight=weights) + penalty * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe_outputs(x, w, b):
    logits = torch.as_tensor(x, dtype=torch.float32) @ w + b
    return torch.softmax(logits, 1).numpy().astype(np.float64), logits.numpy().astype(np.float64)


def macro_at_k(vectors, labels):
    k = min(K, len(labels) - 1)
    return float(precision_at_k(vectors, labels, k=k, ignore=IGNORE).meta['macro'])


# ---------------------------------------------------------------------------------------
# the supervised fine-tune
# ---------------------------------------------------------------------------------------

class Classifier(torch.nn.Module):
    """The encoder network (its encoding half) and a linear head on the unit-length latent vector."""

    def __init__(self, encoder, w, b):
        super().__init__()
        net = ConvAutoencoder(**encoder.card['architecture'])
        net.load_state_dict(torch.load(encoder.path, map_location='cpu', weights_only=True))
        self.features, self.to_latent = net.features, net.to_latent
        self.head = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            self.head.weight.copy_(w.T)
            self.head.bias.copy_(b)

    def forward(self, x):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=uses_bfloat16()):
            z = self.to_latent(self.features(x).flatten(1))
        return self.head(F.normalize(z.float(), dim=1))


def predict(model, arrays, batch=32):
    """Softmax probabilities averaged over the eight flips and quarter turns, (n, n_classes)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(arrays), batch):
            x = torch.from_numpy(np.asarray(arrays[start:start + batch], dtype=np.float32))
            p = torch.softmax(model(torch.cat(dihedral_views(x))), 1)
            out.append(p.view(8, len(x), -1).mean(0).numpy())
    return np.concatenate(out).astype(np.float64)


def finetune(encoder, probe, context, y, val_arrays, y_val_names, classes, lr, args, early_stop=True):
    """Fine-tune ``encoder``'s network; the state with the best validation macro P@10 (or the last one).

    Returns the model in that state, the curve ``[(step, val macro P@10)]``, the step kept,
    its score, the seconds and the steps run.
    """
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Classifier(encoder, *probe)
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith('head.')]
    opt = torch.optim.AdamW([{'params': body, 'lr': lr}, {'params': head, 'lr': lr * args.head_lr_factor}],
                            weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * args.head_lr_factor],
                                                   total_steps=args.steps,
                                                   pct_start=max(0.1, 3 / args.steps))
    data = torch.from_numpy(np.asarray(context, dtype=np.float16))
    targets = torch.as_tensor(y)
    weights = _class_weights(y, len(classes))
    size = encoder.input_shape[-1]
    curve = [(0, macro_at_k(predict(model, val_arrays), y_val_names))]
    best = (curve[0][1], 0, copy.deepcopy(model.state_dict()))
    t0 = time.perf_counter()
    order = rng.permutation(len(y))
    at = 0
    for step in range(1, args.steps + 1):
        model.train()
        if at + args.batch_size > len(order):
            order, at = rng.permutation(len(y)), 0
        rows = order[at:at + args.batch_size]
        at += args.batch_size
        x = augment(data[rows].float(), size, generator, zoom=tuple(args.zoom), colour=args.colour,
                    grey=args.grey, noise=args.noise)
        loss = F.cross_entropy(model(x), targets[rows], weight=weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            score = macro_at_k(predict(model, val_arrays), y_val_names)
            curve.append((step, score))
            if score > best[0] or (not early_stop and step == args.steps):
                best = (score, step, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    return model, curve, best[1], best[0], time.perf_counter() - t0, args.steps


# ---------------------------------------------------------------------------------------
# scores and summaries
# ---------------------------------------------------------------------------------------

def score_row(set_name, method, vectors, labels, classes, seconds, accuracy=(np.nan, np.nan)):
    t = precision_at_k(vectors, labels, k=K, ignore=IGNORE)
    values = dict(zip(t['class'], t['precision_at_k']))
    row = {'set': set_name, 'method': method, 'P@10 macro': values['macro'], 'P@10 micro': values['micro']}
    row.update({f'P@10 {c}': values.get(c, np.nan) for c in classes})
    row.update({'accuracy': accuracy[0], 'balanced accuracy': accuracy[1], 'seconds': seconds})
    return row


def accuracy_of(probs, labels, classes):
    known = np.isin(labels, classes)
    truth = np.array([classes.index(c) for c in labels[known]])
    pred = probs[known].argmax(1)
    per_class = [np.mean(pred[truth == i] == i) for i in range(len(classes)) if np.any(truth == i)]
    return float(np.mean(pred == truth)), float(np.mean(per_class)), truth, pred


def neighbour_shares(vectors, labels, classes):
    """For each query class, the mean share of each class among a query's 10 nearest (euclidean)."""
    x = np.asarray(vectors, dtype=np.float64)
    sq = (x ** 2).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :K]
    columns = list(classes) + sorted(set(labels) - set(classes))
    shares = {}
    for c in classes:
        q = labels == c
        shares[c] = [float(np.mean(labels[nearest[q]] == other)) for other in columns]
    return columns, shares


def print_matrix(title, columns, rows):
    print(title)
    width = max(len(c) for c in list(columns) + list(rows)) + 2
    print(' ' * width + ''.join(f'{c:>{width}}' for c in columns))
    for name, values in rows.items():
        print(f'{name:<{width}}' + ''.join(f'{v:>{width}.3f}' if isinstance(v, float) else f'{v:>{width}}'
                                           for v in values))


def show(rows, classes):
    table = QTable(rows=[[r[c] for c in rows[0]] for r in rows], names=list(rows[0]))
    for name in table.colnames:
        if table[name].dtype.kind == 'f':
            table[name].info.format = '.1f' if name == 'seconds' else '.3f'
    table.remove_column('set')
    table.pprint_all()


# ---------------------------------------------------------------------------------------

def run_set(name, encoder, label_free, args):
    """Every row of one set (none with ``--validation-only``, None when the set is skipped)."""
    loaded = load_set(name, not args.no_openngc)
    if isinstance(loaded, str):
        print(f'\n{TITLES[name]}: skipped, {loaded}')
        return None
    classes = CLASSES[name]
    train, y_train, carve = _subsample(*loaded['train'], args.limit, args.seed, loaded['carve'])
    test, y_test, fine, votes = _subsample(*loaded['test'], args.limit, args.seed, loaded['fine'], loaded.get('votes'))
    is_train_class = np.isin(y_train, classes)   # dont_know is never a training class
    train, y_train, carve = ([t for t, keep in zip(train, is_train_class) if keep], y_train[is_train_class],
                             carve[is_train_class])
    counts = {s: dict(Counter(y.tolist())) for s, y in (('train', y_train), ('test', y_test))}
    chance = np.mean([(counts['test'][c] - 1) / (len(y_test) - 1) for c in classes if counts['test'].get(c)])
    print(f'\n{"=" * 100}\n{TITLES[name]}\ntrain {len(y_train)} {counts["train"]}\ntest {len(y_test)} '
          f'{counts["test"]}; chance macro P@10 {chance:.3f}')
    t_set = time.perf_counter()

    # train galaxies: encoder vectors (the probe) and context-sized arrays (the fine-tune)
    train_arrays, train_table = prepare(train, normalisation=encoder.normalisation, workers=args.workers)
    context, context_table = prepare(train, normalisation=context_normalisation(encoder.normalisation),
                                     workers=args.workers)
    ok = (np.asarray(train_table['found']) & train_arrays.any(axis=(1, 2, 3)) & np.asarray(context_table['found'])
          & context.any(axis=(1, 2, 3)))
    train_vectors = encoder.encode(train_arrays[ok]).astype(np.float64)
    train_arrays, context, y_names, carve = train_arrays[ok], context[ok].astype(np.float16), y_train[ok], carve[ok]
    y = np.array([classes.index(c) for c in y_names])
    is_val = carve_validation(y_names, carve, args.val_fraction, args.seed)
    print(f'train: {ok.sum()} of {len(ok)} galaxies prepared ({time.perf_counter() - t_set:.1f} s); validation part '
          f'{is_val.sum()} {dict(Counter(y_names[is_val].tolist()))}; validation macro P@10 of the encoder\'s '
          f'vectors {macro_at_k(train_vectors[is_val], y_names[is_val]):.3f}')

    # the linear probe: penalty chosen on the validation part, then refitted on the whole train split
    probe, probe_train_part, probe_seconds = choose_probe(train_vectors, y, y_names, is_val, classes, args)

    # the supervised fine-tunes. From the shipped weights: those were trained with the labels of every
    # train galaxy, the validation part included (its encoder P@10 above is that of galaxies trained on),
    # so it cannot choose a state; a fixed schedule, the last state. From label-free weights: the
    # validation part is clean, it chooses the learning rate and the step.
    fine_tunes = {}
    model, curve, step, score, seconds, steps = finetune(
        encoder, probe_train_part, context[~is_val], y[~is_val], train_arrays[is_val], y_names[is_val],
        classes, args.lrs[0], args, early_stop=False)
    print(f'fine-tune from the shipped weights, lr {args.lrs[0]:g}: {steps} steps of {args.batch_size} in '
          f'{seconds:.1f} s ({seconds / steps:.2f} s/step), the last state kept; validation macro P@10 (galaxies '
          'the shipped weights were trained on; for information) by step: ' + ', '.join(f'{s}: {v:.3f}' for s, v in curve))
    fine_tunes['supervised fine-tune (shipped init)'] = (model, seconds)
    if label_free is not None:
        free_vectors = label_free.encode(train_arrays).astype(np.float64)
        print(f'label-free weights {label_free.identity["name"]}: validation macro P@10 of their vectors '
              f'{macro_at_k(free_vectors[is_val], y_names[is_val]):.3f}')
        free_probe = choose_probe(free_vectors, y, y_names, is_val, classes, args)[1]
        best = None
        for lr in args.lrs:
            model, curve, step, score, seconds, steps = finetune(
                label_free, free_probe, context[~is_val], y[~is_val], train_arrays[is_val], y_names[is_val],
                classes, lr, args)
            print(f'fine-tune from {label_free.identity["name"]}, lr {lr:g}: {steps} steps in {seconds:.1f} s; '
                  'validation macro P@10 by step: ' + ', '.join(f'{s}: {v:.3f}' for s, v in curve)
                  + f'; best step {step} ({score:.3f})')
            if best is None or score > best[1]:
                best = (model, score, lr, step, seconds)
        print(f'fine-tune from {label_free.identity["name"]} kept: lr {best[2]:g}, step {best[3]} (validation '
              f'macro P@10 {best[1]:.3f})')
        fine_tunes['supervised fine-tune (label-free init)'] = (best[0], best[4])
    if args.validation_only:
        return []

    # the test split, described and scored only now: 1. the shipped encoder, as benchmarks/similarity.py does
    describe_test = similarity.describe_paths if loaded.get('test_kind') == 'paths' else (
        lambda *a: similarity.describe_images(*a)[:3])
    test_vectors, test_failed, t_encoder = describe_test(encoder, test, args.workers, args.seed)
    rows = [score_row(name, 'encoder', test_vectors, y_test, classes, t_encoder)]
    # the fine-tunes' test inputs: the same preparation, kept as arrays
    test_arrays, _ = prepare(test, normalisation=encoder.normalisation, workers=args.workers)
    agree = np.abs(encoder.encode(test_arrays[~test_failed][:64]) - test_vectors[~test_failed][:64]).max()
    print(f'encoder: {t_encoder:.1f} s, {int(test_failed.sum())} test galaxies without a galaxy found (random '
          f'vectors); re-encoding the prepared test arrays agrees to {agree:.1e}')
    # 2. the linear probe's probabilities and logits
    probs, logits = probe_outputs(test_vectors, *probe)
    acc = accuracy_of(probs, y_test, classes)
    rows.append(score_row(name, 'probe probabilities', probs, y_test, classes, probe_seconds, acc[:2]))
    rows.append(score_row(name, 'probe logits', logits, y_test, classes, probe_seconds, acc[:2]))
    # 3. the fine-tunes' eight-view softmax
    described = {}
    for method, (model, seconds) in fine_tunes.items():
        fine_probs = predict(model, test_arrays)
        if test_failed.any():   # as the encoder row: no galaxy found, a chance-level description
            fill = np.random.default_rng(args.seed).dirichlet(np.ones(len(classes)), size=int(test_failed.sum()))
            fine_probs[test_failed] = fill
        acc, bal, truth, pred = accuracy_of(fine_probs, y_test, classes)
        rows.append(score_row(name, method, fine_probs, y_test, classes, seconds, (acc, bal)))
        described[method] = (fine_probs, truth, pred)
    print(f'\n{TITLES[name]}, test split ({len(y_test)} galaxies), P@10 euclidean; set run time '
          f'{time.perf_counter() - t_set:.0f} s:')
    show(rows, classes)
    confusions(test_vectors, described, y_test, classes, fine, votes)
    return rows


def choose_probe(vectors, y, y_names, is_val, classes, args):
    """The probe with the penalty of best validation macro P@10: refitted on all, fitted on the train part."""
    t0 = time.perf_counter()
    scores = {}
    for penalty in args.penalties:
        w, b = fit_probe(vectors[~is_val], y[~is_val], len(classes), penalty)
        scores[penalty] = (macro_at_k(probe_outputs(vectors[is_val], w, b)[0], y_names[is_val]), (w, b))
    penalty = max(scores, key=lambda p: scores[p][0])
    probe = fit_probe(vectors, y, len(classes), penalty)
    print('linear probe: validation macro P@10 by penalty ' + ', '.join(f'{p:g}: {v[0]:.3f}' for p, v in scores.items())
          + f'; chose {penalty:g}')
    return probe, scores[penalty][1], time.perf_counter() - t0


def confusions(test_vectors, described, y_test, classes, fine, votes):
    """The fine-tunes' confusion matrices, neighbour shares, catalogued types and sub-type votes."""
    print_matrix(f'\nshare of each class among a test query\'s {K} nearest, encoder (rows: query class):',
                 *neighbour_shares(test_vectors, y_test, classes))
    known = np.isin(y_test, classes)
    for method, (fine_probs, truth, pred) in described.items():
        print(f'\n{method}:')
        matrix = {c: [int(np.sum((truth == i) & (pred == j))) for j in range(len(classes))]
                  for i, c in enumerate(classes)}
        print_matrix('confusion on test (rows: catalogued class, columns: predicted):', classes, matrix)
        print_matrix(f'share of each class among a test query\'s {K} nearest (rows: query class):',
                     *neighbour_shares(fine_probs, y_test, classes))
        if fine is not None:
            print('predictions by catalogued (OpenNGC) type, test lenticulars and ellipticals:')
            for i, c in enumerate(classes):
                if c not in ('lenticular', 'elliptical'):
                    continue
                types = fine[known][truth == i]
                for t, n in Counter(types.tolist()).most_common(6):
                    got = Counter(classes[j] for j in pred[truth == i][types == t])
                    print(f'  {c:<11} {t:<7} n={n:<4} predicted ' + ', '.join(f'{k} {v}' for k, v in got.most_common()))
        if votes is not None:
            clear = votes[known] >= 0.5
            print(f'sub-type votes: {np.mean(~clear):.0%} of test galaxies have no sub-type with half the votes '
                  f'(median top vote {np.median(votes):.2f}); accuracy {np.mean(pred[clear] == truth[clear]):.3f} '
                  f'where one has, {np.mean(pred[~clear] == truth[~clear]):.3f} where none has')


def target_lines(all_rows):
    """PASS/FAIL per target (best row per number) and the ceiling of each set."""
    lines = ['\nTargets of the issue "Morphology that astronomers name" (test splits; best row for each number):']
    for set_name, goals in TARGETS.items():
        rows = [r for r in all_rows if r['set'] == set_name]
        if not rows:
            lines.append(f'target {set_name}: not measured (set not run, or skipped)')
            continue
        failed = []
        for goal, value in goals.items():
            column = f'P@10 {goal}'
            top = max(rows, key=lambda r: r[column])
            fine = max((r for r in rows if r['method'].startswith('supervised')), key=lambda r: r[column])
            ok = top[column] >= value
            if fine[column] < value:
                failed.append(f'{goal} {fine[column]:.3f} < {value:.2f}')
            lines.append(f'target {set_name} {goal} >= {value:.2f}: best {top[column]:.3f} ({top["method"]}); '
                         f'encoder {rows[0][column]:.3f}, best fine-tune {fine[column]:.3f}: {"PASS" if ok else "FAIL"}')
        if failed:
            lines.append(f'ceiling {set_name}: even the supervised fine-tunes stay below the target '
                         f'({"; ".join(failed)}): the measured ceiling of this network on these images with these labels')
        else:
            lines.append(f'ceiling {set_name}: a row reaches every target; the labels can lift the description this far')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sets', default='gz1,hubble,subtypes', help='comma-separated: gz1, hubble, subtypes')
    parser.add_argument('--steps', type=int, default=400, help='fine-tune steps per learning rate')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lrs', type=float, nargs='+', default=[3e-4, 1e-3],
                        help='learning rates of the network: the shipped init uses the first, the label-free init '
                        'tries each (the head gets --head-lr-factor times more)')
    parser.add_argument('--head-lr-factor', type=float, default=3.0)
    parser.add_argument('--eval-every', type=int, default=50, help='steps between validation scores')
    parser.add_argument('--val-fraction', type=float, default=0.2, help='of the train split, stratified')
    parser.add_argument('--penalties', type=float, nargs='+', default=[1e-5, 1e-4, 1e-3, 1e-2],
                        help='L2 penalties of the linear probe tried on the validation part')
    parser.add_argument('--zoom', type=float, nargs=2, default=[0.8, 1.25], help='augment: field range')
    parser.add_argument('--colour', type=float, default=0.1, help='augment: per-band scale change')
    parser.add_argument('--grey', type=float, default=0.0, help='augment: fraction of grey views')
    parser.add_argument('--noise', type=float, default=0.03, help='augment: largest added noise')
    parser.add_argument('--encoder', type=Path, default=None, metavar='WEIGHTS',
                        help='weights (model card beside them) of the encoder row and of the shipped-init fine-tune '
                        '(default: the shipped encoder)')
    parser.add_argument('--label-free-init', type=Path, default=None, metavar='WEIGHTS',
                        help='weights (model card beside them) of the same network trained without labels, for a '
                        'second fine-tune whose validation part is clean, e.g. astro_galsim-ae-v2 from the history')
    parser.add_argument('--no-openngc', action='store_true',
                        help='Hubble types: train on the NGC/IC train split only, without the training sample\'s '
                        'OpenNGC types')
    parser.add_argument('--limit', type=int, default=None, help='random subset of N train and N test galaxies '
                        'per set (a quick check; numbers not comparable)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--workers', type=int, default=2, help='processes preparing the images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--validation-only', action='store_true',
                        help='stop after the validation scores: choose settings without describing or scoring any '
                        'test galaxy')
    parser.add_argument('--output', type=Path, default=None, help='write the table of every set to this ECSV file')
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error(f'--steps {args.steps}: give at least 10 (the one-cycle schedule needs a warm-up)')
    sets = [s.strip() for s in args.sets.split(',') if s.strip()]
    if set(sets) - set(CLASSES):
        parser.error(f'unknown --sets {sorted(set(sets) - set(CLASSES))}; choose from {", ".join(CLASSES)}')
    torch.set_num_threads(args.threads)
    try:
        encoder = load_pretrained(args.encoder)
    except (OSError, ValueError) as exc:
        sys.exit(f'label ceiling benchmark: cannot load --encoder ({exc})')
    label_free = None
    if args.label_free_init is not None:
        try:
            label_free = load_pretrained(args.label_free_init)
        except (OSError, ValueError) as exc:
            sys.exit(f'label ceiling benchmark: cannot load --label-free-init ({exc})')
        configs = [ConvAutoencoder(**e.card['architecture']).config for e in (label_free, encoder)]
        if configs[0] != configs[1]:
            sys.exit(f'label ceiling benchmark: --label-free-init {args.label_free_init} has another architecture '
                     f'({label_free.card["architecture"]}) than the shipped encoder ({encoder.card["architecture"]})')
    started = time.perf_counter()
    print(f'encoder {encoder.identity["name"]}; torch {torch.__version__}, {args.threads} threads, bfloat16 '
          f'{uses_bfloat16()}; fine-tune: {args.steps} steps of {args.batch_size} per learning rate {args.lrs}, '
          f'validation every {args.eval_every}; augment zoom {args.zoom} colour {args.colour} grey {args.grey} '
          f'noise {args.noise}')
    all_rows = []
    with conf.set_temp('show_progress', False):
        for name in sets:
            all_rows += run_set(name, encoder, label_free, args) or []
    if not args.validation_only:
        for line in target_lines(all_rows):
            print(line)
    print(f'\ntotal run time {time.perf_counter() - started:.0f} s')
    if args.output is not None and all_rows:
        columns = list(dict.fromkeys(c for r in all_rows for c in r))   # every set's classes, in order
        table = QTable(rows=[[r.get(c, np.nan) for c in columns] for r in all_rows], names=columns)
        similarity.write_atomic(table, args.output)
        print(f'wrote {args.output}')
    return all_rows


if __name__ == '__main__':
    main()
