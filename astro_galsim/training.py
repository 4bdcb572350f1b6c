"""Training the galaxy autoencoder.

The network learns from galaxies prepared with extra context (a wider field than the
encoder's input): each training step draws two augmented views of every galaxy, with a
random flip or quarter turn, a small rotation, shift and change of scale, and changes of
stretch, brightness, noise and colour (including grey, as single-band images look), so
that colour JPEG cutouts and calibrated frames both look familiar. The loss is the
reconstruction error of each view plus a contrastive term (NT-Xent, Chen et al. 2020)
that pulls the two views of a galaxy together and pushes other galaxies apart.

The shipped weights were made with::

    astro-galsim train ../shared/data/sdss_galaxies_mikeedi --output astro_galsim/data/encoder.pt
"""
import datetime
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from astropy import log
from tqdm.auto import tqdm

from .config import conf
from .io import atomic_output
from .model import file_sha256
from .network import ConvAutoencoder
# the training data live in their own module; their names stay importable from here
from .training_data import (LABEL_GROUPS, MORPHOLOGY_CLASSES, TrainingLabels, context_normalisation,  # noqa: F401
                            degraded_copies, gz2_labels_of, load_hubble_types, load_interacting_pairs,
                            load_labelled_images, load_training_images, load_training_set)

__all__ = ['train_autoencoder', 'augment', 'project_out_differences', 'average_weights']


def augment(batch, out_size, generator, zoom=(0.67, 1.5), colour=0.1, grey=0.25, noise=0.06):
    """Random view of each context image: geometry, stretch, brightness, noise and colour.

    Parameters
    ----------
    batch : `torch.Tensor`, shape (n, 3, S, S)
        Context images in [0, 1].
    out_size : int
        Side of the views; the view's pixel scale equals the context image's.
    generator : `torch.Generator`
        Source of randomness.
    zoom : (float, float), optional
        Range (log-uniform) of the view's field relative to the encoder's: 0.67 shows
        2/3 of the normal field, 1.5 the whole context image.
    colour : float, optional
        Largest change of each band's scale (0.1: by up to 10 per cent).
    grey : float, optional
        Fraction of the views turned grey (as single-band images look).
    noise : float, optional
        Largest standard deviation of the added pixel noise (uniform from 0); grey views get
        the same noise in every channel, as a single-band image shown in grey has. A single
        SDSS frame shown in grey is about 3 times noisier than the colour JPEG of the same
        galaxy (0.04 against 0.014 at the edge of the normalised image, 12 galaxies in both
        forms); without such views a grey query with that noise found its own colour image
        among 7,494 within 10 places for 46 of 100 galaxies.
    """
    n, _, size, _ = batch.shape
    rnd = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    k = torch.randint(0, 4, (n,), generator=generator)
    angle = (k * math.pi / 2) + (rnd(n) - 0.5) * math.radians(30)
    lo, hi = math.log(zoom[0]), math.log(zoom[1])
    scale = (out_size / size) * torch.exp(lo + (hi - lo) * rnd(n))
    flip = torch.where(rnd(n) < 0.5, -1.0, 1.0)
    shift = (rnd(n, 2) - 0.5) * (4.0 / size)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 3, out_size, out_size), align_corners=False)
    x = F.grid_sample(batch, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    # photometry: stretch (gamma), brightness, per-band colour, noise, and sometimes grey
    gamma = torch.exp((rnd(n, 1, 1, 1) - 0.5) * 0.6)
    x = x.clamp(0, 1) ** gamma
    x = x * (0.8 + 0.4 * rnd(n, 1, 1, 1)) * (1 - colour + 2 * colour * rnd(n, 3, 1, 1))
    is_grey = rnd(n, 1, 1, 1) < grey
    x = torch.where(is_grey, x.mean(1, keepdim=True).expand_as(x), x)
    per_channel = torch.randn(x.shape, generator=generator)
    shared = torch.randn((n, 1) + x.shape[2:], generator=generator).expand_as(x)
    x = x + torch.where(is_grey, shared, per_channel) * noise * rnd(n, 1, 1, 1)
    return x.clamp(0, 1)


def _nt_xent(a, b, temperature):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    z = torch.cat([a, b])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(-1e9)
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def train_autoencoder(arrays, output, *, normalisation, is_val=None, latent_dim=64, widths=(32, 64, 128, 256),
                      refine_from=2, epochs=40, batch_size=128, learning_rate=2e-3, contrastive_weight=1.0,
                      temperature=0.2, zoom=(0.67, 1.5), colour=0.1, grey=0.25, noise=0.06, patience=10, seed=0, bf16=True,
                      training_data='', progress=None, labels=None, label_weight=1.0, label_temperature=0.1,
                      labelled_per_step=32, init=None, partners=None, group_per_class=8, max_steps=None):
    """Train a `~astro_galsim.network.ConvAutoencoder` and save it with its model card.

    Parameters
    ----------
    arrays : `~numpy.ndarray`, shape (n, 3, S, S)
        Galaxies prepared with `~astro_galsim.training_data.context_normalisation` of ``normalisation``.
    output : str or `~pathlib.Path`
        Weights file to write (``.pt``); the model card goes beside it as ``.json``.
        Both are written atomically; the best epoch (lowest validation loss) is kept.
    normalisation : dict
        How the encoder's inputs are prepared (stored in the model card).
    is_val : `~numpy.ndarray` of bool, optional
        Validation galaxies (split by object); default a seeded 10 per cent.
    latent_dim, widths, refine_from, epochs, batch_size, learning_rate : optional
        Network (see `~astro_galsim.network.ConvAutoencoder`) and optimiser settings.
    contrastive_weight, temperature : float, optional
        Weight and temperature of the NT-Xent term; 0 trains a plain autoencoder.
    zoom : (float, float), optional
        Range of the views' fields relative to the encoder's (see `augment`).
    colour, grey, noise : float, optional
        Colour jitter, fraction of grey views and largest added noise (see `augment`).
    patience : int, optional
        Stop after this many epochs without a better validation loss (without labels; with
        labels every epoch is kept and the last one is saved).
    seed : int, optional
        Seeds the split, the initial weights and the augmentations.
    bf16 : bool, optional
        Use bfloat16 autocast (about three times faster on CPUs that support it).
    labels : `~astro_galsim.training_data.TrainingLabels`, optional
        Morphology labels of some of ``arrays`` (see `~astro_galsim.training_data.load_training_set`). With them,
        every step adds ``labelled_per_step`` galaxies drawn evenly from the classes of
        `~astro_galsim.training_data.MORPHOLOGY_CLASSES`, and the loss gains, weighted by ``label_weight``: a
        supervised contrastive term (Khosla et al. 2020; temperature ``label_temperature``)
        on the latent vectors of those galaxies, so that galaxies of one class lie close
        in the description itself, and cross-entropy terms of two linear heads on the
        latent vector (class probabilities and spiral / not spiral, soft targets from
        Galaxy Zoo vote fractions). The heads serve the training only and are not saved.
    init : str or `~pathlib.Path`, optional
        Weights file of the same architecture to start from (for example a
        self-supervised encoder to fine-tune with labels).
    partners : `~numpy.ndarray` of int, optional
        For each image, the row of another image of the same galaxy (another survey's, a
        degraded copy; -1 where none): the second view of such a galaxy is drawn from its
        partner, so that the contrastive term pulls the two images together.
    group_per_class : int, optional
        With ``labels`` that have label groups (`~astro_galsim.training_data.LABEL_GROUPS`),
        galaxies of each class of each group added to every step, with a supervised
        contrastive term per group.
    max_steps : int, optional
        Stop after this many steps (the epoch in progress is then the last), for a
        training that must fit a time budget.

    Returns
    -------
    card : dict
        The model card that was saved.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    if conf.num_threads:
        torch.set_num_threads(conf.num_threads)
    if is_val is None or not np.any(is_val):
        is_val = rng.random(len(arrays)) < 0.1
    is_val = np.asarray(is_val, bool)
    # rows index the whole array (labels and partners are aligned with it); float16 is kept until a batch is drawn
    data = torch.from_numpy(np.asarray(arrays, dtype=np.float16))
    train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    partners = np.full(len(arrays), -1) if partners is None else np.asarray(partners, dtype=int)
    if len(partners) != len(arrays) or partners.max(initial=-1) >= len(arrays):
        raise ValueError('partners: give one row index (or -1) per image')
    size = normalisation['size']
    # channels_last with bf16 hit a slow path for transposed convolutions on our CPUs (10x)
    model = ConvAutoencoder(latent_dim=latent_dim, size=size, widths=widths, refine_from=refine_from)
    if init is not None:
        model.load_state_dict(torch.load(init, map_location='cpu', weights_only=True))
    heads = _LabelHeads(latent_dim) if labels is not None else None
    parameters = list(model.parameters()) + (list(heads.parameters()) if heads is not None else [])
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    by_group = {}
    if labels is not None:
        by_class = [np.flatnonzero((labels.classes == c) & ~is_val) for c in range(len(MORPHOLOGY_CLASSES))]
        by_group = {name: [np.flatnonzero((labels.groups[name] == c) & ~is_val) for c in range(len(classes))]
                    for name, classes in LABEL_GROUPS.items()}
        by_group = {name: rows for name, rows in by_group.items() if min(len(r) for r in rows) > 0}
        if min(len(b) for b in by_class) == 0:
            raise ValueError('labels: every class of MORPHOLOGY_CLASSES needs training galaxies; '
                             f'counts {[len(b) for b in by_class]}')
        soft = torch.from_numpy(np.nan_to_num(labels.soft, nan=-1.0)).float()
        spiral = torch.from_numpy(np.nan_to_num(labels.spiral, nan=-1.0)).float()
    steps = epochs * (len(train) // batch_size)
    steps = steps if max_steps is None else min(steps, int(max_steps))
    done = 0
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=steps)
    progress = conf.show_progress if progress is None else progress

    def loss_of(rows, gen, n_classed=0, segments=(), labelled=True):
        pair = np.where(partners[rows] >= 0, partners[rows], rows)
        v1 = augment(data[rows].float(), size, gen, zoom, colour, grey, noise)
        v2 = augment(data[pair].float(), size, gen, zoom, colour, grey, noise)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            x = torch.cat([v1, v2])
            recon, z = model(x)
            rec = F.mse_loss(recon.float(), x)
            con = _nt_xent(*model.projection(z).float().chunk(2), temperature) if contrastive_weight else 0 * rec
        loss = rec + contrastive_weight * con
        if labels is not None and labelled:
            loss = loss + label_weight * _label_loss(z.float(), heads, rows, n_classed, labels, soft, spiral,
                                                     label_temperature, segments)
        return loss, rec, con

    def make_card():
        return {
            'name': Path(output).stem,
            'architecture': {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()},
            # explicit scale: cards without one are read as the r50 scaling of earlier encoders
            'normalisation': {'scale': 'scale_radius', **normalisation},
            'metric': 'euclidean',
            'preprocessing': 'astro_galsim.preprocessing.to_colour (SDSS gri asinh colour, [0, 1])',
            'description': 'flip/quarter-turn averaged latent vector, unit length',
            'training': {
                'data': training_data, 'n_train': int(len(train)), 'n_val': int(len(val)),
                'epochs_run': len(history), 'best_epoch': best_epoch, 'batch_size': batch_size,
                'learning_rate': learning_rate, 'contrastive_weight': contrastive_weight,
                'temperature': temperature, 'zoom': list(zoom), 'colour': colour, 'grey': grey, 'noise': noise,
                'seed': seed, 'bf16': bf16,
                'labels': None if labels is None else {
                    **labels.provenance, 'classes': list(MORPHOLOGY_CLASSES), 'label_weight': label_weight,
                    'label_temperature': label_temperature, 'labelled_per_step': labelled_per_step,
                    'groups': {name: list(LABEL_GROUPS[name]) for name in by_group},
                    'group_per_class': group_per_class},
                'pairs': int((partners >= 0).sum()), 'steps': done,
                'init': None if init is None else {'file': Path(init).name, 'sha256': file_sha256(init)},
                'seconds': round(time.time() - started, 1), 'torch': torch.__version__,
                'date': datetime.date.today().isoformat(),
            },
            'metrics': {'best_val_loss': best, 'history': history},
        }

    best, best_epoch, history = math.inf, -1, []
    started = time.time()
    for epoch in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        bar = tqdm(range(0, len(train) - batch_size + 1, batch_size), disable=not progress,
                   desc=f'epoch {epoch + 1}/{epochs}', leave=False)
        for start in bar:
            rows = order[start:start + batch_size]
            if labels is None:
                loss, rec, con = loss_of(rows, generator)
            else:  # the batch, then galaxies drawn evenly from the classes (rare ones repeat)
                per = max(1, labelled_per_step // len(by_class))
                classed = np.concatenate([b[rng.integers(0, len(b), per)] for b in by_class])
                drawn, segments = [classed], []
                for name, group in by_group.items():   # each label group: its classes evenly
                    start = sum(len(d) for d in drawn)
                    drawn += [b[rng.integers(0, len(b), group_per_class)] for b in group]
                    segments.append((name, start, sum(len(d) for d in drawn)))
                rows = np.concatenate(drawn + [rows])
                loss, rec, con = loss_of(rows, generator, len(classed), segments)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            done += 1
            bar.set_postfix(rec=f'{rec.item():.4f}', con=f'{float(con.detach()):.3f}')
            if done >= steps:
                break
        model.eval()
        val_gen = torch.Generator().manual_seed(seed + 1)  # the same validation views every epoch
        with torch.no_grad():
            parts = [loss_of(val[s:s + 256], val_gen, labelled=False) for s in range(0, len(val), 256)]
        val_loss = float(np.mean([p[0].item() for p in parts]))
        val_rec = float(np.mean([p[1].item() for p in parts]))
        history.append({'epoch': epoch + 1, 'val_loss': val_loss, 'val_reconstruction': val_rec})
        log.info(f'epoch {epoch + 1}: validation loss {val_loss:.4f} (reconstruction {val_rec:.5f})')
        # with labels the unlabelled validation loss no longer measures what is trained for: keep the last epoch
        if val_loss < best or labels is not None:
            best, best_epoch = min(best, val_loss), epoch + 1
            # checkpoint: the best model so far is always on disk, so a stopped run loses nothing
            card = make_card()
            _save_atomically(model.state_dict(), card, Path(output))
        elif epoch + 1 - best_epoch >= patience:
            log.info(f'early stop: no better validation loss since epoch {best_epoch}')
            break
        if done >= steps:
            break

    return card


class _LabelHeads(torch.nn.Module):
    """Linear heads on the latent vector: class logits and a spiral logit (training only)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.classes = torch.nn.Linear(latent_dim, len(MORPHOLOGY_CLASSES))
        self.spiral = torch.nn.Linear(latent_dim, 1)


def _supervised_contrastive(z, classes, temperature):
    """SupCon loss (Khosla et al. 2020): every other view of the same class is a positive."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, -1e9)
    positives = (classes[:, None] == classes[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob * positives).sum(1).div(positives.sum(1).clamp(min=1)).mean()


def _label_loss(z, heads, rows, n_classed, labels, soft, spiral, temperature, segments=()):
    """Label terms of one step; ``z`` holds two views of each of ``rows`` (view 1, then view 2).

    The first ``n_classed`` rows were drawn by Galaxy Zoo class, each ``(group, start, stop)``
    of ``segments`` by the classes of that label group.
    """
    n = len(rows)
    both = np.concatenate([rows, rows])
    classes = torch.from_numpy(labels.classes[rows[:n_classed]])
    classed = torch.cat([z[:n_classed], z[n:n + n_classed]])
    loss = _supervised_contrastive(classed, torch.cat([classes, classes]), temperature)
    for name, start, stop in segments:
        classes = torch.from_numpy(labels.groups[name][rows[start:stop]])
        grouped = torch.cat([z[start:stop], z[n + start:n + stop]])
        loss = loss + _supervised_contrastive(grouped, torch.cat([classes, classes]), temperature)
    target = soft[both]
    known = target[:, 0] >= 0
    if known.any():
        log_p = F.log_softmax(heads.classes(z[known]), dim=1)
        loss = loss + -(target[known] * log_p).sum(1).mean()
    target = spiral[both]
    known = target >= 0
    if known.any():
        loss = loss + F.binary_cross_entropy_with_logits(heads.spiral(z[known])[:, 0], target[known])
    return loss


def _save_atomically(state, card, output):
    """Weights first, then the card with their checksum; each replaces its file only once complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as handle:
        torch.save(state, handle)
    card['sha256'] = file_sha256(output)
    with atomic_output(output.with_suffix('.json')) as handle:
        handle.write(json.dumps(card, indent=1).encode())


def project_out_differences(init, output, first, second, spread, *, n_directions=1, name=None, note=''):
    """Remove from an encoder's description the directions in which two images of one galaxy differ most.

    Nuisance attribute projection: the differences between the descriptions of paired images of
    the same galaxies (another survey, another rendering) are compared with the spread of the
    descriptions of many galaxies; the ``n_directions`` directions in which the pairs differ most
    relative to that spread (generalised eigenvectors) are projected out of the latent space, along
    the spread's metric so that the rest of the space is left as it was. The projection is linear, so
    it is folded into the network's last encoder layer: the new weights describe a galaxy as
    ``unit(z @ P)``, ``z`` being the old flip-averaged latent vector.

    Parameters
    ----------
    init : str or `~pathlib.Path`
        Weights of the encoder (with its model card beside them).
    output : str or `~pathlib.Path`
        Where the new weights go; their card (``.json``) is written beside them.
    first, second : `~numpy.ndarray`, shape (n, latent_dim)
        The init encoder's vectors of the two images of ``n`` galaxies, row by row.
    spread : `~numpy.ndarray`, shape (m, latent_dim)
        Its vectors of many galaxies (the spread the differences are measured against).
    n_directions : int, optional
        How many directions to remove.
    name : str, optional
        Model card name (default: the file's stem).
    note : str, optional
        Where the vectors came from, for the model card.

    Returns
    -------
    projection : `~numpy.ndarray`, shape (latent_dim, latent_dim)
        ``P``: a description ``z`` becomes ``unit(z @ P)``.
    ratios : `~numpy.ndarray`
        Mean squared pair difference over the spread along each direction, largest first.

    Examples
    --------
    Pairs that differ along one axis only lose it, and a galaxy's two images then agree:

    >>> import numpy as np
    >>> from astro_galsim.training import _nap_projection
    >>> rng = np.random.default_rng(0)
    >>> spread = rng.normal(size=(500, 4))
    >>> a = rng.normal(size=(50, 4)); b = a * [-1, 1, 1, 1]     # the same but for axis 0
    >>> P, ratios = _nap_projection(a, b, spread, 1)
    >>> bool(np.allclose(a @ P, b @ P)), bool(ratios[0] > 10 * ratios[1])
    (True, True)
    """
    init, output = Path(init), Path(output)
    projection, ratios = _nap_projection(first, second, spread, n_directions)
    state = torch.load(init, map_location='cpu', weights_only=True)
    p = torch.from_numpy(projection.astype(np.float32))
    state['to_latent.weight'] = (p.T @ state['to_latent.weight'].float()).contiguous()
    state['to_latent.bias'] = (state['to_latent.bias'].float() @ p).contiguous()
    card = json.loads(init.with_suffix('.json').read_text())
    card['training'] = dict(card['training'], projection={
        'method': 'nuisance attribute projection folded into to_latent (training.project_out_differences)',
        'init': {'name': card.get('name'), 'sha256': file_sha256(init)}, 'n_directions': int(n_directions),
        'pairs': int(len(first)), 'spread': int(len(spread)),
        'ratios': [round(float(r), 3) for r in ratios[:max(4, n_directions)]], 'note': note})
    card['name'] = name or output.stem
    _save_atomically(state, card, output)
    return projection, ratios


def average_weights(inputs, output, *, weights=None, name=None, note=''):
    """Average the weights of encoders fine-tuned from one starting point (a weight average).

    Networks continued from the same weights stay in one basin of the loss, and the average of
    their weights is a network that keeps most of what each learned (Wortsman et al. 2022, "model
    soups"): continuations with different label weights or seeds averaged give a description
    between theirs, often better than either.

    Parameters
    ----------
    inputs : list of str or `~pathlib.Path`
        Weights files of one architecture, each with its model card beside it.
    output : str or `~pathlib.Path`
        Where the averaged weights go; their card (``.json``, the first input's, with the
        average recorded in ``training['weight_average']``) is written beside them.
    weights : sequence of float, optional
        Weight of each input (non-negative, summing to 1); equal weights by default.
    name : str, optional
        Model card name (default: the file's stem).
    note : str, optional
        What the inputs are, for the model card.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import torch
    >>> from astro_galsim.model import load_pretrained
    >>> from astro_galsim.training import average_weights
    >>> shipped = load_pretrained().path
    >>> out = Path(tempfile.mkdtemp()) / 'same.pt'
    >>> average_weights([shipped, shipped], out, weights=[0.25, 0.75])['weights']
    [0.25, 0.75]
    >>> a, b = (torch.load(p, weights_only=True) for p in (shipped, out))
    >>> all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    True
    """
    inputs, output = [Path(p) for p in inputs], Path(output)
    if not inputs:
        raise ValueError('average_weights: give at least one weights file')
    weights = np.full(len(inputs), 1 / len(inputs)) if weights is None else np.asarray(weights, dtype=float)
    if weights.shape != (len(inputs),) or (weights < 0).any() or not math.isclose(weights.sum(), 1, abs_tol=1e-6):
        raise ValueError(f'average_weights: weights {weights.tolist()} must be one non-negative number per input '
                         f'({len(inputs)}), summing to 1')
    states = [torch.load(p, map_location='cpu', weights_only=True) for p in inputs]
    cards = [json.loads(p.with_suffix('.json').read_text()) for p in inputs]
    for path, state, card in zip(inputs[1:], states[1:], cards[1:]):
        same = (state.keys() == states[0].keys() and all(state[k].shape == states[0][k].shape for k in state)
                and card.get('architecture') == cards[0].get('architecture')
                and card.get('normalisation') == cards[0].get('normalisation'))
        if not same:
            raise ValueError(f'average_weights: {str(path)!r} is not the architecture and normalisation of '
                             f'{str(inputs[0])!r}; only continuations of one network can be averaged')
    state = {k: (sum(w * s[k].float() for w, s in zip(weights, states)).to(states[0][k].dtype)
                 if states[0][k].is_floating_point() else states[0][k]) for k in states[0]}
    record = {'of': [{'name': c.get('name'), 'sha256': file_sha256(p)} for p, c in zip(inputs, cards)],
              'weights': [round(float(w), 6) for w in weights], 'note': note}
    card = dict(cards[0], name=name or output.stem)
    card['training'] = dict(card['training'], weight_average=record)
    _save_atomically(state, card, output)
    return record


def _nap_projection(first, second, spread, n_directions):
    """``P`` removing the largest pair-difference directions relative to the spread (whitened)."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    first, second, spread = unit(first), unit(second), unit(spread)
    if first.shape != second.shape or not (np.isfinite(first).all() and np.isfinite(second).all()
                                           and np.isfinite(spread).all()):
        raise ValueError('first and second must be finite vectors of the same galaxies, row by row, and '
                         'spread finite vectors: leave out galaxies that were not described')
    values, vectors = np.linalg.eigh(np.cov(spread.T))
    # a floor: the spread of an encoder that already had a direction removed is singular there
    values = np.maximum(values, 1e-6 * values.max())
    whiten = vectors @ np.diag(values ** -0.5) @ vectors.T
    colour = vectors @ np.diag(values ** 0.5) @ vectors.T
    differences = (first - second) @ whiten
    scatter, axes = np.linalg.eigh(differences.T @ differences / len(differences))
    keep = axes[:, ::-1][:, :n_directions]
    return whiten @ (np.eye(len(whiten)) - keep @ keep.T) @ colour, scatter[::-1]
