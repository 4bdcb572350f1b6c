"""The encoder's forward pass in numpy, for a few images without importing torch.

Importing torch takes about a second, more than describing one galaxy; a command that asks
one question pays it for nothing. `NumpyEncoder` runs the encoder half of
`~astro_galsim.network.ConvAutoencoder` (3x3 convolutions with their batch norms folded in,
GELU, the linear map to the latent vector) in float32 with numpy, from weights read by
`read_state_dict` out of the ``torch.save`` file without torch: only tensors and an ordered
dictionary are accepted from its pickle, nothing else is called.
"""
import collections
import pickle
import zipfile

import numpy as np

from ._dihedral import dihedral_views

__all__ = ['NumpyEncoder', 'read_state_dict']

_STORAGE_DTYPES = {'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
                   'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
                   'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_}


def _rebuild_tensor(storage, offset, size, stride, *args):
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride)).copy()


class _Storage(str):
    """Names a storage type in the pickle (its dtype)."""


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) == ('collections', 'OrderedDict'):
            return collections.OrderedDict
        if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
            return _rebuild_tensor
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _Storage(name)
        raise pickle.UnpicklingError(f'{module}.{name} is not part of a weights file')

    def persistent_load(self, pid):
        kind, storage, key, _location, numel = pid
        if kind != 'storage' or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f'unexpected persistent id {pid!r} in a weights file')
        raw = self._archive.read(f'{self._prefix}/data/{key}')
        return np.frombuffer(raw, dtype=_STORAGE_DTYPES[storage], count=numel)


def read_state_dict(path):
    """The tensors of a ``torch.save``'d state dict as numpy arrays, without torch.

    Parameters
    ----------
    path : str or path-like
        A file written by ``torch.save(model.state_dict(), path)`` (zip format, little-endian).

    Returns
    -------
    `collections.OrderedDict` of `~numpy.ndarray`

    Raises
    ------
    pickle.UnpicklingError
        If the file holds anything but tensors in an ordered dictionary.
    """
    with zipfile.ZipFile(path) as archive:
        pickled = next(name for name in archive.namelist() if name.endswith('/data.pkl'))
        prefix = pickled[:-len('/data.pkl')]
        if f'{prefix}/byteorder' in archive.namelist() and archive.read(f'{prefix}/byteorder') != b'little':
            raise pickle.UnpicklingError(f'{path} holds big-endian tensors')
        with archive.open(pickled) as fh:
            return _StateUnpickler(fh, archive, prefix).load()


def _erf(x):
    """erf to 1.5e-7 (Abramowitz and Stegun 7.1.26), below float32 resolution for GELU."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))


class NumpyEncoder:
    """The encoder of a `~astro_galsim.network.ConvAutoencoder` state dict, in numpy (float32).

    Parameters
    ----------
    state : mapping of `~numpy.ndarray`
        The network's state dict (`read_state_dict`).
    architecture : dict
        Its ``widths`` and ``refine_from`` (the model card's ``architecture``).
    """

    def __init__(self, state, architecture):
        widths = architecture.get('widths', (32, 64, 128, 256))
        refine_from = architecture.get('refine_from', 2)
        self.layers, index = [], 0
        for i, _ in enumerate(widths):
            for stride in (2, 1) if i >= refine_from else (2,):
                self.layers.append(self._folded(state, index, stride))
                index += 3   # convolution, batch norm, GELU
        self.to_latent = (np.ascontiguousarray(state['to_latent.weight'].T, dtype=np.float32),
                          state['to_latent.bias'].astype(np.float32))

    @staticmethod
    def _folded(state, index, stride):
        """A convolution with its batch norm folded in, as a (9 c_in, c_out) matrix and a bias."""
        w, b = state[f'features.{index}.weight'], state[f'features.{index}.bias']
        bn = f'features.{index + 1}.'
        scale = state[bn + 'weight'] / np.sqrt(state[bn + 'running_var'] + 1e-5)
        w = w * scale[:, None, None, None]
        b = (b - state[bn + 'running_mean']) * scale + state[bn + 'bias']
        matrix = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])   # (ky, kx, c_in) x c_out
        return np.ascontiguousarray(matrix, dtype=np.float32), b.astype(np.float32), stride

    def latents(self, images):
        """Latent vectors of a batch ``(n, channels, size, size)`` (no averaging)."""
        try:   # these products are small: BLAS threads only wait for each other (10x slower when busy)
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - installed with scikit-learn
            return self._latents(images)
        with threadpool_limits(1, user_api='blas'):
            return self._latents(images)

    def _latents(self, images):
        x = np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1))
        for matrix, bias, stride in self.layers:
            n, h, w, c = x.shape
            padded = np.zeros((n, h + 2, w + 2, c), dtype=np.float32)
            padded[:, 1:-1, 1:-1] = x
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            patches = np.concatenate([padded[:, ky:ky + stride * ho:stride, kx:kx + stride * wo:stride]
                                      for ky in range(3) for kx in range(3)], axis=-1)
            x = _gelu(patches.reshape(-1, 9 * c) @ matrix + bias).reshape(n, ho, wo, -1)
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)   # torch flattens (c, h, w)
        weight, bias = self.to_latent
        return flat @ weight + bias

    def encode(self, images):
        """Unit vectors averaged over the eight flips and quarter turns, shape (n, latent_dim)."""
        images = np.asarray(images, dtype=np.float32)
        views = np.concatenate(dihedral_views(images))
        z = self.latents(views).reshape(8, len(images), -1).mean(axis=0)
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)
