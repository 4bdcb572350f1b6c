"""The encoder: the latent vector of a convolutional autoencoder describes a galaxy.

`GalaxyEncoder` is the small interface the rest of the package uses: anything with an
``identity`` (name and checksum), an ``input_shape`` and an ``encode`` method that maps a
batch of prepared images to vectors can be plugged into `~astro_galsim.SimilaritySearch`.
`AutoencoderEncoder` is the pretrained one that ships with the package; its network
(`~astro_galsim.network.ConvAutoencoder`) is loaded, with torch, only when something is
first encoded.

Descriptions are made invariant to the eight flips and quarter turns of the image by
averaging the latent vectors of all eight (the input is already turned so that the
galaxy's major axis is horizontal, which covers the other angles).
"""
import contextlib
import contextvars
import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from .config import conf
from .utils._data import package_data

__all__ = ['GalaxyEncoder', 'AutoencoderEncoder', 'load_pretrained', 'file_sha256', 'uses_bfloat16',
           'query_arithmetic']

#: Calls of ``AutoencoderEncoder.encode`` with at most this many images run in float32 numpy,
#: without torch (whose import takes longer than describing a few galaxies), where the encoder
#: computes in float32, and for query images (`query_arithmetic`) unless bfloat16 is asked for.
NUMPY_MAX_IMAGES = 4
PRETRAINED_WEIGHTS = 'encoder.pt'
PRETRAINED_CARD = 'encoder.json'


def file_sha256(path):
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class GalaxyEncoder:
    """Interface of an encoder usable by `~astro_galsim.SimilaritySearch`.

    Subclasses set ``identity`` (a dict with at least ``name`` and ``sha256``, stored in
    every database built with the encoder), ``input_shape`` ``(channels, size, size)``,
    ``normalisation`` (the keywords of `~astro_galsim.segmentation.normalise_galaxy` their
    inputs are prepared with), ``latent_dim`` and ``metric``, and implement `encode`.
    """

    identity = {'name': 'abstract', 'sha256': ''}
    path = None
    input_shape = (3, 64, 64)
    normalisation = {}
    latent_dim = 0
    metric = 'euclidean'

    def encode(self, images):
        """Map prepared images ``(n, channels, size, size)`` to vectors ``(n, latent_dim)``."""
        raise NotImplementedError


class AutoencoderEncoder(GalaxyEncoder):
    """A trained `~astro_galsim.network.ConvAutoencoder` used as an encoder, invariant to
    flips and quarter turns.

    Parameters
    ----------
    model : `~astro_galsim.network.ConvAutoencoder`, optional
        The trained network; if None it is loaded from ``path`` when first needed.
    card : dict
        Its model card (see `load_pretrained`); ``card['normalisation']`` says how inputs
        are prepared and ``card['sha256']`` identifies the weights.
    path : str or `~pathlib.Path`, optional
        The weights file the network comes from.
    batch_size : int, optional
        Images per forward pass (default ``conf.batch_size``).
    """

    def __init__(self, model=None, card=None, *, path=None, batch_size=None):
        if model is None and path is None:
            raise ValueError('AutoencoderEncoder needs a model or the path of its weights')
        self._model = None if model is None else model.eval()
        self._from_file = model is None   # a network given in memory is always run by torch
        self.card = card
        self.path = path
        self.identity = {'name': card.get('name', 'autoencoder'), 'sha256': card.get('sha256', '')}
        architecture = card['architecture']
        size = architecture.get('size', 64)
        self.input_shape = (architecture.get('channels', 3), size, size)
        self.latent_dim = architecture.get('latent_dim', 64)
        # cards before the isophotal scale (astro_galsim-ae-v3) scaled inputs to the half-light radius
        self.normalisation = {'scale': 'r50', **card['normalisation']}
        self.metric = card.get('metric', 'euclidean')
        self.batch_size = batch_size or conf.batch_size
        self._inference = None
        self._numpy = None

    @property
    def model(self):
        """The `~astro_galsim.network.ConvAutoencoder` (loaded on first use, weights only)."""
        if self._model is None:
            from .network import ConvAutoencoder
            model = ConvAutoencoder(**self.card['architecture'])
            model.load_state_dict(_checked_weights(self.path, model))
            self._model = model.eval()
        return self._model

    def _inference_model(self):
        """The network with each convolution and its batch norm folded into one, channels-last.

        Gives the same vectors (to 1e-7) at about 1.5 times the speed on CPUs.
        """
        if self._inference is None:
            import copy

            import torch
            from torch import nn
            from torch.nn.utils.fusion import fuse_conv_bn_eval
            fused = copy.deepcopy(self.model).eval()
            layers, folded, i = list(fused.features), [], 0
            while i < len(layers):
                if (isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers)
                        and isinstance(layers[i + 1], nn.BatchNorm2d)):
                    folded.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                    i += 2
                else:
                    folded.append(layers[i])
                    i += 1
            fused.features = nn.Sequential(*folded)
            self._inference = fused.to(memory_format=torch.channels_last)
        return self._inference

    def _numpy_encoder(self):
        """The network's encoder in numpy, read from the weights file without torch."""
        if self._numpy is None:
            from .utils._npencoder import NumpyEncoder, read_state_dict
            self._numpy = NumpyEncoder(read_state_dict(self.path), self.card['architecture'])
        return self._numpy

    def __repr__(self):
        return (f'<AutoencoderEncoder {self.identity["name"]} latent_dim={self.latent_dim} '
                f'input={self.input_shape} sha256={self.identity["sha256"][:12]}>')

    def encode(self, images):
        """Describe prepared images by their flip- and rotation-averaged latent vectors.

        Parameters
        ----------
        images : `~numpy.ndarray`, shape (n, channels, size, size)
            Prepared inputs (see `~astro_galsim.pipeline.prepare`).

        Returns
        -------
        vectors : `~numpy.ndarray`, shape (n, latent_dim), float32
            Unit-length vectors, so that euclidean and cosine distances rank alike. They are
            computed in bfloat16 where `uses_bfloat16` says so (``conf.encoder_precision``);
            they then differ from float32 ones by about 0.001, and do not depend on the batch.
            Calls with at most 4 images (``NUMPY_MAX_IMAGES``) run in numpy, which saves
            importing torch (about a second in a fresh process) and gives torch's float32
            vectors to 1e-7, where they are computed in float32 (``conf.encoder_precision =
            'float32'``, or a CPU without native bfloat16) and, unless bfloat16 is asked for,
            for query images (within `query_arithmetic`).
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(f'encoder input must have shape (n, {", ".join(map(str, self.input_shape))}), '
                             f'got {images.shape}; prepare images with astro_galsim.pipeline.prepare')
        if self._from_file and len(images) <= NUMPY_MAX_IMAGES and _small_calls_in_numpy():
            return self._numpy_encoder().encode(images)
        import torch
        from .network import dihedral_views
        if conf.num_threads:
            torch.set_num_threads(conf.num_threads)
        out = np.empty((len(images), self.latent_dim), dtype=np.float32)
        model, step = self._inference_model(), max(1, self.batch_size // 8)
        with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=uses_bfloat16()):
            for start in range(0, len(images), step):
                x = torch.from_numpy(images[start:start + step])
                # the eight flips and quarter turns of every image go through in one batch
                views = torch.cat(dihedral_views(x)).contiguous(memory_format=torch.channels_last)
                z = model.encode(views).float().view(8, len(x), -1).mean(0)
                out[start:start + len(x)] = torch.nn.functional.normalize(z, dim=1).numpy()
        return out


def _checked_weights(path, model):
    """The tensors of a weights file, or a ValueError naming the file and what is wrong with it."""
    import pickle
    import re

    import torch
    where = f'encoder weights {str(path)!r}'
    try:
        # weights_only: loading never runs code from the file
        state = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r'GLOBAL (\S+)', str(exc))
        if found:   # a pickled object (a function, a class) where tensors belong
            raise ValueError(f'the encoder weights were refused: {str(path)!r} holds Python objects besides '
                             f'tensors (the unsupported global {found.group(1)}), which are never loaded (nothing '
                             'in it was run); give weights written by astro-galsim train') from None
        raise ValueError(f'{where}: the file is not a torch weights file (damaged, or another format: '
                         f'{" ".join(str(exc).split()[-20:])[:160]}); retrain or reinstall astro_galsim') from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f'{where}: the file is not a torch weights file (damaged or truncated: '
                         f'{" ".join(str(exc).split())[:120]}); retrain or reinstall astro_galsim') from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f'{where}: the file holds a {type(state).__name__}, not a dictionary of tensors')
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        found = [f'missing tensors {missing[:4]}' if missing else '',
                 f'unexpected tensors {unexpected[:4]}' if unexpected else '',
                 f'tensors of another shape {shapes[:4]}' if shapes else '']
        raise ValueError(f'{where} do not fit the network of their model card: {"; ".join(t for t in found if t)} '
                         '(the file was damaged, or belongs to another architecture)')
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f'{where}: {len(bad)} tensor(s) hold NaN or infinite values ({bad[:4]}): the training '
                         'diverged or the file is damaged; retrain')
    return state


def uses_bfloat16():
    """Whether encoders compute in bfloat16 (``conf.encoder_precision``; ``'auto'``: where the CPU
    has native bfloat16 instructions, on which it is about twice as fast as float32)."""
    if conf.encoder_precision != 'auto':
        return conf.encoder_precision == 'bfloat16'
    import torch
    native = (getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)()
              or getattr(torch.cpu, '_is_amx_tile_supported', lambda: False)())
    return bool(native)


_QUERIES = contextvars.ContextVar('astro_galsim_query_arithmetic', default=False)


@contextlib.contextmanager
def query_arithmetic():
    """Describe query images in float32 with numpy where that saves importing torch.

    Within it, `AutoencoderEncoder.encode` computes calls of up to ``NUMPY_MAX_IMAGES``
    images in float32 with numpy unless ``conf.encoder_precision`` is ``'bfloat16'``. The
    vectors of a query are compared, not stored: they are within bfloat16's rounding (about
    0.001) of the vectors a database computed in bfloat16, and a one-off query from a script
    or the command line does not pay for importing torch. Stored vectors are always computed
    in one arithmetic, whatever the size of their batch. `~astro_galsim.SimilaritySearch`
    describes its query targets within it.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.model import load_pretrained, query_arithmetic
    >>> encoder = load_pretrained()
    >>> with query_arithmetic():
    ...     vector = encoder.encode(np.zeros((1,) + encoder.input_shape, dtype=np.float32))
    >>> vector.shape, vector.dtype
    ((1, 64), dtype('float32'))
    """
    token = _QUERIES.set(True)
    try:
        yield
    finally:
        _QUERIES.reset(token)


def _small_calls_in_numpy():
    """Whether a call of up to NUMPY_MAX_IMAGES images computes in numpy (float32) without torch."""
    if conf.encoder_precision != 'auto':
        return conf.encoder_precision == 'float32'
    return _QUERIES.get() or _cpu_without_bfloat16()


@functools.lru_cache(maxsize=None)   # the CPU does not change: read its flags once
def _cpu_without_bfloat16():
    """Whether 'auto' means float32 here, known without importing torch: a Linux CPU whose flags
    list neither of the native bfloat16 instructions torch looks for."""
    try:
        with open('/proc/cpuinfo') as fh:
            flags = set(next((line for line in fh if line.startswith('flags')), '').split())
    except OSError:
        return False
    return bool(flags) and not flags & {'avx512_bf16', 'amx_tile'}


def load_pretrained(path=None):
    """Load an encoder saved by `~astro_galsim.training.train_autoencoder`.

    Parameters
    ----------
    path : str or `~pathlib.Path`, optional
        The weights file (``.pt``, with its model card ``.json`` beside it). Default: the
        pretrained encoder shipped with the package.

    Returns
    -------
    encoder : `AutoencoderEncoder`

    Raises
    ------
    ValueError
        If the weights do not match the checksum in their model card.

    Examples
    --------
    >>> from astro_galsim.model import load_pretrained
    >>> encoder = load_pretrained()
    >>> encoder.input_shape, encoder.latent_dim
    ((3, 64, 64), 64)
    """
    if path is None:
        path = package_data(PRETRAINED_WEIGHTS)
    path = Path(path)
    card_path = path.with_suffix('.json')
    if not path.is_file() or not card_path.is_file():
        raise FileNotFoundError(f'encoder weights {str(path)!r} or model card {str(card_path)!r} not found')
    card = json.loads(card_path.read_text())
    checksum = file_sha256(path)
    if card.get('sha256') != checksum:
        raise ValueError(f'encoder weights {str(path)!r} have sha256 {checksum[:16]}..., but the model card '
                         f'says {str(card.get("sha256"))[:16]}...: the file is damaged or not the one '
                         'the card describes; retrain or reinstall astro_galsim')
    # the network itself is read (weights only) when the encoder is first used
    return AutoencoderEncoder(card=card, path=path)
