"""The eight flips and quarter turns of an image (the dihedral group D4), defined once.

The encoder averages its vectors over them (`astro_galsim.network.dihedral_views` passes
torch's turn and mirror) and `astro_galsim.evaluation.invariance` measures how much a
description changes under each of them (numpy's).
"""
import numpy as np

__all__ = ['DIHEDRAL_NAMES', 'dihedral_views', 'dihedral_transform']

#: The views in the order `dihedral_views` gives them: each counter-clockwise quarter turn
#: (k = 0 to 3, as `numpy.rot90`), then that turn mirrored left to right.
DIHEDRAL_NAMES = ('identity', 'flip_lr', 'rot90', 'antitranspose', 'rot180', 'flip_ud', 'rot270', 'transpose')


def _turn(a, k):
    return np.rot90(a, k, axes=(-2, -1))


def _mirror(a):
    return a[..., ::-1]


def dihedral_views(a, *, turn=_turn, mirror=_mirror):
    """The eight flips and quarter turns of an array ``(..., h, w)``, in `DIHEDRAL_NAMES` order.

    ``turn(a, k)`` (k counter-clockwise quarter turns of the last two axes) and
    ``mirror(a)`` (left to right) are numpy's by default (views, no copies); another array
    library passes its own.
    """
    views = []
    for k in range(4):
        turned = turn(a, k)
        views += [turned, mirror(turned)]
    return views


def dihedral_transform(name):
    """The function ``a -> view`` of one of `DIHEDRAL_NAMES` (numpy)."""
    i = DIHEDRAL_NAMES.index(name)
    return lambda a: dihedral_views(a)[i]
