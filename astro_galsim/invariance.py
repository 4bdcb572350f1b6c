"""How much an embedding moves an image's vector when the image is rotated or mirrored.

`invariance` compares that move with the typical distance between neighbouring images;
its name is importable from `astro_galsim.evaluation` too.
"""
import numpy as np
from astropy import units as u
from astropy.table import QTable
from tqdm.auto import tqdm

from .config import conf
from .utils._checks import positive_integer
from .utils._dihedral import dihedral_transform
from .utils._distances import nearest_others, prepare_space
from .utils._knn import check_metric

__all__ = ['invariance']


def _d4_transforms():
    """The seven flips and quarter turns other than the identity, the three rotations first."""
    return [(name, dihedral_transform(name))
            for name in ('rot90', 'rot180', 'rot270', 'flip_lr', 'flip_ud', 'transpose', 'antitranspose')]


def _embed_checked(embed, images, n, what):
    vec = embed(images)
    if isinstance(vec, u.Quantity):
        vec = vec.value
    vec = np.asarray(vec, dtype=np.float64)
    if vec.ndim != 2 or vec.shape[0] != n:
        raise ValueError(f'embed must return an array of shape (N, d) with N = {n} (one row per image); '
                         f'for the {what} images it returned shape {vec.shape}.')
    if not np.isfinite(vec).all():
        raise ValueError(f'embed returned NaN or infinite values for the {what} images.')
    return vec


def invariance(embed, images, *, transforms='d4', angles=(30, 45) * u.deg, n_neighbors=10,
               metric='euclidean', order=1, mode='constant'):
    """How much an embedding changes when images are rotated or mirrored.

    For each image and each transformation, the distance between the vector of the image
    and the vector of its transformed copy is divided by a *scale*: the median, over the
    images, of the distance from an image's vector to its ``n_neighbors``-th nearest
    neighbour among the untransformed images' vectors. A ratio well below 1 means the
    transformed copy would still be found among the image's nearest neighbours; a ratio
    near or above 1 means rotation changes the vector as much as changing the galaxy.

    Parameters
    ----------
    embed : callable
        ``embed(list_of_arrays) -> array of shape (N, d)``; called once with the original
        images and once per transformation (so it can batch).
    images : sequence of arrays or array
        Images whose last two axes are the spatial ones, e.g. ``(C, H, W)`` or ``(H, W)``
        each, or one ``(N, C, H, W)`` array. Square images keep their shape under every
        transformation.
    transforms : {'d4', 'rotations', 'none'}, optional
        Exact pixel permutations to apply: ``'d4'`` = rotations by 90, 180, 270 degrees and
        the four mirrorings (left-right, up-down, transpose, anti-transpose);
        ``'rotations'`` = the three rotations only; ``'none'`` = none.
    angles : `~astropy.units.Quantity` or sequence of float, optional
        Further rotation angles (plain numbers are degrees), done with
        `scipy.ndimage.rotate` (``reshape=False``) about the image centre.
    n_neighbors : int, optional
        Which nearest neighbour defines the scale.
    metric : {'euclidean', 'cosine'}, optional
        Distance between vectors.
    order : int, optional
        Spline interpolation order for the arbitrary-angle rotations.
    mode : str, optional
        How `scipy.ndimage.rotate` fills pixels from outside the image (``'constant'``
        fills with 0, right for background-subtracted or normalised images).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per transformation and a final ``'all'`` row over all of them, with columns
        ``transform`` (``'rot90'``, ..., ``'rotate_30deg'``), ``mean_ratio``,
        ``median_ratio`` and ``max_ratio``. ``table.meta`` holds ``scale`` (the distance
        the ratios are relative to), ``n_neighbors``, ``metric`` and ``n_images``.

    Raises
    ------
    ValueError
        If there are fewer than ``n_neighbors + 1`` images, ``embed`` returns the wrong
        shape or non-finite values, or all images get the same vector.

    Examples
    --------
    The azimuthally averaged profile of an image does not change when it is rotated by
    90 degrees, but the raw pixels do:

    >>> import numpy as np
    >>> from astro_galsim.evaluation import invariance
    >>> rng = np.random.default_rng(1)
    >>> yy, xx = np.mgrid[:17, :17] - 8.0
    >>> images = [np.exp(-((xx - dx) ** 2 + yy ** 2) / s ** 2)
    ...           for dx, s in zip(rng.uniform(-3, 3, 12), rng.uniform(1.5, 4, 12))]
    >>> r = np.hypot(xx, yy).round().astype(int)
    >>> def profile(ims):
    ...     return np.array([np.bincount(r.ravel(), im.ravel()) for im in ims])
    >>> t = invariance(profile, images, transforms='rotations', angles=[])
    >>> bool(t['max_ratio'][-1] < 1e-9)
    True
    >>> t = invariance(lambda ims: np.array([im.ravel() for im in ims]), images,
    ...                transforms='rotations', angles=[])
    >>> bool(t['median_ratio'][-1] > 0.5)
    True
    """
    if not callable(embed):
        raise TypeError(f'embed must be a callable taking a list of arrays; got {type(embed).__name__}.')
    images = [np.asarray(im) for im in images]
    n = len(images)
    for i, im in enumerate(images):
        if im.ndim < 2:
            raise ValueError(f'images[{i}] has shape {im.shape}; images need at least two (spatial) axes.')
    n_neighbors = positive_integer(n_neighbors, 'n_neighbors')
    if n < n_neighbors + 1:
        raise ValueError(f'invariance needs at least n_neighbors + 1 = {n_neighbors + 1} images to '
                         f'define the neighbour-distance scale; got {n}.')
    check_metric(metric)

    if transforms is None or transforms == 'none':
        chosen = []
    elif transforms == 'd4':
        chosen = _d4_transforms()
    elif transforms == 'rotations':
        chosen = _d4_transforms()[:3]
    else:
        raise ValueError(f"transforms must be 'd4', 'rotations' or 'none'; got {transforms!r}.")
    angles = u.Quantity(angles, u.deg).ravel() if np.size(angles) else u.Quantity([], u.deg)
    if angles.size:
        from scipy import ndimage

        for angle in angles.to_value(u.deg):
            chosen.append((f'rotate_{angle:g}deg',
                           lambda a, angle=angle: ndimage.rotate(a, angle, axes=(-1, -2), reshape=False,
                                                                 order=order, mode=mode)))
    if not chosen:
        raise ValueError('no transformation selected: use transforms=\'d4\' or give angles.')

    base = _embed_checked(embed, images, n, 'original')
    x, sq = prepare_space(base, metric)
    _, nn_dist = nearest_others(x, sq, np.arange(n), n_neighbors, metric)
    scale = float(np.median(nn_dist[:, -1]))
    if not scale > 0:
        raise ValueError(f'the median distance to the {n_neighbors}th neighbour is {scale}: the embedding '
                         'gives (nearly) identical vectors, so no relative change can be measured.')

    names, means, medians, maxes, every = [], [], [], [], []
    for name, func in tqdm(chosen, desc='invariance', disable=not conf.show_progress, leave=False):
        moved = _embed_checked(embed, [np.ascontiguousarray(func(im)) for im in images], n, name)
        if metric == 'euclidean':
            dist = np.linalg.norm(moved - base, axis=1)
        else:
            nm = np.linalg.norm(moved, axis=1)
            if (nm == 0).any():
                raise ValueError(f"embed returned all-zero vectors for the {name} images; the cosine "
                                 "distance is undefined. Use metric='euclidean'.")
            dist = np.maximum(1.0 - np.einsum('ij,ij->i', moved / nm[:, None], x), 0.0)
        ratio = dist / scale
        every.append(ratio)
        names.append(name)
        means.append(ratio.mean())
        medians.append(np.median(ratio))
        maxes.append(ratio.max())
    every = np.concatenate(every)
    table = QTable()
    table['transform'] = np.array(names + ['all'], dtype=str)
    table['mean_ratio'] = np.array(means + [every.mean()])
    table['median_ratio'] = np.array(medians + [np.median(every)])
    table['max_ratio'] = np.array(maxes + [every.max()])
    table.meta.update({'scale': scale, 'n_neighbors': int(n_neighbors), 'metric': metric, 'n_images': n})
    return table
