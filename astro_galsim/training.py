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
from astropy.table import Table
from tqdm.auto import tqdm

from .config import conf
from .io import atomic_output
from .model import file_sha256
from .network import ConvAutoencoder

__all__ = ['train_autoencoder', 'augment', 'context_normalisation', 'load_training_images']


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


def augment(batch, out_size, generator, zoom=(0.67, 1.5), colour=0.1, grey=0.15):
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
    x = torch.where(rnd(n, 1, 1, 1) < grey, x.mean(1, keepdim=True).expand_as(x), x)
    x = x + torch.randn(x.shape, generator=generator) * 0.03 * rnd(n, 1, 1, 1)
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
                      temperature=0.2, zoom=(0.67, 1.5), colour=0.1, grey=0.15, patience=10, seed=0, bf16=True,
                      training_data='', progress=None):
    """Train a `~astro_galsim.network.ConvAutoencoder` and save it with its model card.

    Parameters
    ----------
    arrays : `~numpy.ndarray`, shape (n, 3, S, S)
        Galaxies prepared with `context_normalisation` of ``normalisation``.
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
    colour, grey : float, optional
        Colour jitter and fraction of grey views (see `augment`).
    patience : int, optional
        Stop after this many epochs without a better validation loss.
    seed : int, optional
        Seeds the split, the initial weights and the augmentations.
    bf16 : bool, optional
        Use bfloat16 autocast (about three times faster on CPUs that support it).

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
    train = torch.from_numpy(np.asarray(arrays[~is_val], dtype=np.float32))
    val = torch.from_numpy(np.asarray(arrays[is_val], dtype=np.float32))
    size = normalisation['size']
    # channels_last with bf16 hit a slow path for transposed convolutions on our CPUs (10x)
    model = ConvAutoencoder(latent_dim=latent_dim, size=size, widths=widths, refine_from=refine_from)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=steps)
    progress = conf.show_progress if progress is None else progress

    def loss_of(batch, gen):
        v1, v2 = (augment(batch, size, gen, zoom, colour, grey) for _ in range(2))
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            x = torch.cat([v1, v2])
            recon, z = model(x)
            rec = F.mse_loss(recon.float(), x)
            con = _nt_xent(*model.projection(z).float().chunk(2), temperature) if contrastive_weight else 0 * rec
        return rec + contrastive_weight * con, rec, con

    def make_card():
        return {
            'name': Path(output).stem,
            'architecture': {k: list(v) if isinstance(v, tuple) else v for k, v in model.config.items()},
            'normalisation': dict(normalisation),
            'metric': 'euclidean',
            'preprocessing': 'astro_galsim.preprocessing.to_colour (SDSS gri asinh colour, [0, 1])',
            'description': 'flip/quarter-turn averaged latent vector, unit length',
            'training': {
                'data': training_data, 'n_train': int(len(train)), 'n_val': int(len(val)),
                'epochs_run': len(history), 'best_epoch': best_epoch, 'batch_size': batch_size,
                'learning_rate': learning_rate, 'contrastive_weight': contrastive_weight,
                'temperature': temperature, 'zoom': list(zoom), 'colour': colour, 'grey': grey, 'seed': seed, 'bf16': bf16,
                'seconds': round(time.time() - started, 1), 'torch': torch.__version__,
                'date': datetime.date.today().isoformat(),
            },
            'metrics': {'best_val_loss': best, 'history': history},
        }

    best, best_epoch, history = math.inf, -1, []
    started = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        bar = tqdm(range(0, len(train) - batch_size + 1, batch_size), disable=not progress,
                   desc=f'epoch {epoch + 1}/{epochs}', leave=False)
        for start in bar:
            loss, rec, con = loss_of(train[order[start:start + batch_size]], generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.set_postfix(rec=f'{rec.item():.4f}', con=f'{float(con.detach()):.3f}')
        model.eval()
        val_gen = torch.Generator().manual_seed(seed + 1)  # the same validation views every epoch
        with torch.no_grad():
            parts = [loss_of(val[s:s + 256], val_gen) for s in range(0, len(val), 256)]
        val_loss = float(np.mean([p[0].item() for p in parts]))
        val_rec = float(np.mean([p[1].item() for p in parts]))
        history.append({'epoch': epoch + 1, 'val_loss': val_loss, 'val_reconstruction': val_rec})
        log.info(f'epoch {epoch + 1}: validation loss {val_loss:.4f} (reconstruction {val_rec:.5f})')
        if val_loss < best:
            best, best_epoch = val_loss, epoch + 1
            # checkpoint: the best model so far is always on disk, so a stopped run loses nothing
            card = make_card()
            _save_atomically(model.state_dict(), card, Path(output))
        elif epoch + 1 - best_epoch >= patience:
            log.info(f'early stop: no better validation loss since epoch {best_epoch}')
            break

    return card


def _save_atomically(state, card, output):
    """Weights first, then the card with their checksum; each replaces its file only once complete."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as handle:
        torch.save(state, handle)
    card['sha256'] = file_sha256(output)
    with atomic_output(output.with_suffix('.json')) as handle:
        handle.write(json.dumps(card, indent=1).encode())
