"""The network: a convolutional autoencoder and the eight flips and quarter turns.

Kept apart from `astro_galsim.model` so that opening a database and looking galaxies up
by id or position never has to import torch.
"""
import torch
from torch import nn

from .utils._dihedral import dihedral_views as dihedral_views_of

__all__ = ['ConvAutoencoder', 'dihedral_views']


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder for ``(channels, size, size)`` galaxy images.

    Parameters
    ----------
    latent_dim : int
        Length of the description vector.
    channels : int
        Image planes (3 for gri colour).
    size : int
        Side of the input in pixels; a multiple of 16.
    widths : tuple of int
        Feature maps of the four stride-2 encoder stages (mirrored in the decoder).
    refine_from : int
        First encoder stage (0-3) followed by an extra 3x3 convolution; every later stage
        has one too. 2 (the default) refines only the two coarse stages, where it is cheap;
        4 adds none.
    """

    def __init__(self, latent_dim=64, channels=3, size=64, widths=(32, 64, 128, 256), refine_from=2):
        super().__init__()
        if size % 16:
            raise ValueError(f'input size {size} must be a multiple of 16 (four stride-2 stages)')
        if refine_from not in range(len(widths) + 1):
            raise ValueError(f'refine_from={refine_from!r} is not an encoder stage: give an integer from 0 '
                             f'(an extra convolution at every stage) to {len(widths)} (none)')
        self.config = dict(latent_dim=latent_dim, channels=channels, size=size, widths=tuple(widths),
                           refine_from=refine_from)
        layers, c_in = [], channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.GELU()]
            if i >= refine_from:
                layers += [nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.GELU()]
            c_in = w
        self._final = size // 16
        self.features = nn.Sequential(*layers)
        self.to_latent = nn.Linear(widths[-1] * self._final ** 2, latent_dim)
        self.from_latent = nn.Linear(latent_dim, widths[-1] * self._final ** 2)
        layers = []
        rev = list(widths[::-1]) + [widths[0] // 2]
        for i, (w_in, w_out) in enumerate(zip(rev[:-1], rev[1:])):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), nn.BatchNorm2d(w_out), nn.GELU()]
            if i < 2:
                layers += [nn.Conv2d(w_out, w_out, 3, padding=1), nn.BatchNorm2d(w_out), nn.GELU()]
        layers += [nn.Conv2d(rev[-1], channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)
        # projection head for the contrastive term of training; not part of the description
        self.projection = nn.Sequential(nn.Linear(latent_dim, 256), nn.GELU(), nn.Linear(256, 128))

    def encode(self, x):
        """Latent vectors of a batch ``(n, channels, size, size)``."""
        return self.to_latent(self.features(x).flatten(1))

    def decode(self, z):
        """Images reconstructed from latent vectors."""
        h = self.from_latent(z).view(z.shape[0], -1, self._final, self._final)
        return self.decoder(h)

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z


def dihedral_views(x):
    """The eight flips and quarter turns of a batch ``(..., h, w)`` as a list of tensors.

    The package's one definition of the views and their order (identity, flip_lr, rot90,
    antitranspose, rot180, flip_ud, rot270, transpose: each counter-clockwise quarter turn,
    then that turn mirrored left to right), with torch's turn and mirror.
    """
    return dihedral_views_of(x, turn=lambda t, k: torch.rot90(t, k, dims=(-2, -1)),
                             mirror=lambda t: torch.flip(t, dims=(-1,)))
