"""Figures of the latent space: two-dimensional maps of a database's vectors, and reconstructions.

Every function returns a `matplotlib.figure.Figure` made without pyplot (save it with
`~astro_galsim.visualization.save_figure`); their names are importable from
`astro_galsim.visualization` too.
"""
from collections.abc import Mapping

import numpy as np

from .utils._figures import lookup_image, new_figure, thumbnail

__all__ = ['project_latent', 'latent_map', 'reconstruction_figure']


def project_latent(vectors, method='pca', *, random_state=0, **kwargs):
    """Project latent vectors to two dimensions.

    Parameters
    ----------
    vectors : array-like, shape (N, d)
        The vectors (for example ``search.vectors``); rows with NaN are not allowed.
    method : {'pca', 'umap'}, optional
        ``'pca'``: the first two principal components (numpy SVD; deterministic, signs
        fixed so that each component's largest loading is positive). ``'umap'``: UMAP
        (needs the optional package ``umap-learn``).
    random_state : int, optional
        Seed for UMAP.
    **kwargs
        Passed to ``umap.UMAP``.

    Returns
    -------
    coords : `~numpy.ndarray`, shape (N, 2)
        The map positions.
    explained : `~numpy.ndarray` or None
        For PCA, the fraction of the variance along each of the two axes.

    Raises
    ------
    ValueError
        If there are fewer than 3 vectors, or they contain NaN or infinity.
    ImportError
        If ``method='umap'`` and umap-learn is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.visualization import project_latent
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=(200, 8)) * [5, 2, 1, 1, 1, 1, 1, 1]
    >>> coords, explained = project_latent(x)
    >>> coords.shape, bool(explained[0] > explained[1])
    ((200, 2), True)
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f'vectors must be an (N, d) array with at least 3 rows to map, got shape {x.shape}')
    if not np.isfinite(x).all():
        raise ValueError('vectors contain NaN or infinity (galaxies that could not be described?): '
                         'drop those rows before mapping')
    if method == 'pca':
        centred = x - x.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        components = vt[:2]
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        components = components * signs[:, None]
        coords = centred @ components.T
        if coords.shape[1] < 2:
            coords = np.column_stack([coords, np.zeros(len(coords))])
        total = (s ** 2).sum()
        explained = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
        return coords, explained
    if method == 'umap':
        try:
            import umap
        except ImportError as exc:
            raise ImportError("method='umap' needs the optional package umap-learn "
                              "(pip install umap-learn); use method='pca' otherwise") from exc
        options = dict(n_neighbors=min(15, len(x) - 1), random_state=random_state)
        options.update(kwargs)
        return np.asarray(umap.UMAP(**options).fit_transform(x), dtype=np.float64), None
    raise ValueError(f"unknown projection method {method!r}: use 'pca' or 'umap'")


def _spread_subset(coords, n):
    """Indices of ``n`` points spread over a 2-D map (greedy farthest-point, deterministic)."""
    if n >= len(coords):
        return np.arange(len(coords))
    span = np.ptp(coords, axis=0)
    scaled = coords / np.where(span > 0, span, 1)
    chosen = [int(np.argmin(np.hypot(*(scaled - scaled.mean(axis=0)).T)))]
    distance = np.hypot(*(scaled - scaled[chosen[0]]).T)
    for _ in range(n - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.hypot(*(scaled - scaled[nxt]).T))
    return np.array(chosen)


def latent_map(source, *, method='pca', ids=None, thumbnails=None, n_thumbnails=40, thumbnail_size=0.045,
               colour=None, cmap='viridis', size=7.0, random_state=0, title=None):
    """A two-dimensional map of a database's latent space, with galaxy thumbnails.

    Parameters
    ----------
    source : `~astro_galsim.SimilaritySearch`, `~astro_galsim.database.GalaxyDatabase` or array
        Where the vectors come from (an array is an ``(N, d)`` matrix of vectors).
    method : {'pca', 'umap'}, optional
        Projection (see `project_latent`); UMAP needs the optional package umap-learn.
    ids : sequence of str, optional
        Ids of the rows (default the database's ids; needed with an array and ``thumbnails``).
    thumbnails : dict or callable, optional
        Maps an id to an image (or None); up to ``n_thumbnails`` galaxies spread over the
        map are drawn at their positions.
    n_thumbnails : int, optional
        How many thumbnails to draw at most.
    thumbnail_size : float, optional
        Thumbnail side as a fraction of the figure width.
    colour : str or array-like, optional
        Colour the points by a column of the database's table (name) or by these values:
        numbers give a colour bar, strings or booleans a legend.
    cmap : str, optional
        Colour map for numeric ``colour``.
    size : float, optional
        Figure side in inches.
    random_state : int, optional
        Seed for UMAP.
    title : str, optional
        Axes title (default names the projection and the number of galaxies).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        Its first axes holds the map: one scatter collection per colour group whose
        offsets are the `project_latent` coordinates, and the thumbnails as
        `~matplotlib.offsetbox.AnnotationBbox` artists. ``fig.latent_coords`` holds
        the coordinates of all galaxies and ``fig.latent_ids`` their ids.

    Raises
    ------
    ValueError
        If ``colour`` names no column or has the wrong length, or the vectors cannot be mapped.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.visualization import latent_map
    >>> rng = np.random.default_rng(0)
    >>> fig = latent_map(rng.normal(size=(50, 16)), colour=rng.random(50))
    >>> fig.axes[0].collections[0].get_offsets().shape
    (50, 2)
    """
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    table = None
    if hasattr(source, 'vectors') and hasattr(source, 'ids'):
        vectors, default_ids = np.asarray(source.vectors), np.asarray(source.ids).astype(str)
        table = getattr(source, 'table', None)
    else:
        vectors = np.asarray(source)
        default_ids = np.array([str(i) for i in range(len(vectors))])
    ids = default_ids if ids is None else np.asarray(ids).astype(str)
    if len(ids) != len(vectors):
        raise ValueError(f'ids has {len(ids)} entries for {len(vectors)} vectors')
    coords, explained = project_latent(vectors, method, random_state=random_state)

    values = None
    if colour is not None:
        if isinstance(colour, str):
            if table is None or colour not in table.colnames:
                names = [] if table is None else table.colnames
                raise ValueError(f'colour={colour!r} is not a column of the database table (columns: {names})')
            values = table[colour]
            label = colour
        else:
            values, label = colour, None
        values = np.asarray(getattr(values, 'value', values))
        if len(values) != len(vectors):
            raise ValueError(f'colour has {len(values)} values for {len(vectors)} galaxies')

    fig = new_figure(1, 1, size)
    ax = fig.add_subplot()
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, color='tab:blue', alpha=0.6, linewidths=0)
    elif values.dtype.kind in 'fiu':
        points = ax.scatter(coords[:, 0], coords[:, 1], s=6, c=values.astype(float), cmap=cmap, alpha=0.8,
                            linewidths=0)
        fig.colorbar(points, ax=ax, label=label or '', shrink=0.8)
    else:
        groups = values.astype(str)
        from matplotlib import colormaps
        palette = colormaps['tab10']
        for i, group in enumerate(sorted(set(groups))):
            sel = groups == group
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, color=palette(i % 10), alpha=0.8, linewidths=0,
                       label=group)
        ax.legend(title=label, fontsize=7, markerscale=2, loc='best')

    if thumbnails is not None and n_thumbnails > 0:
        have = np.array([lookup_image(thumbnails, i) is not None for i in ids]) if isinstance(thumbnails, Mapping) \
            else np.ones(len(ids), dtype=bool)
        candidates = np.flatnonzero(have)
        for row in candidates[_spread_subset(coords[candidates], n_thumbnails)]:
            image = lookup_image(thumbnails, ids[row])
            if image is None:
                continue
            rgb = thumbnail(image)
            zoom = thumbnail_size * size * fig.dpi / max(rgb.shape[:2])
            box = AnnotationBbox(OffsetImage(rgb, zoom=zoom, interpolation='nearest'), tuple(coords[row]),
                                 frameon=True, pad=0.05, bboxprops={'edgecolor': '0.5', 'linewidth': 0.5})
            box.set_gid(f'thumbnail:{ids[row]}')
            ax.add_artist(box)
    if method == 'pca':
        ax.set_xlabel(f'principal component 1 ({100 * explained[0]:.0f}% of the variance)')
        ax.set_ylabel(f'principal component 2 ({100 * explained[1]:.0f}% of the variance)')
    else:
        ax.set_xlabel(f'{method.upper()} 1')
        ax.set_ylabel(f'{method.upper()} 2')
    ax.set_title(title if title is not None else f'latent space of {len(vectors)} galaxies ({method.upper()})',
                 fontsize=10)
    fig.latent_coords = coords
    fig.latent_ids = ids
    return fig


def reconstruction_figure(images, encoder=None, *, ids=None, n=8, size=1.5):
    """Inputs, autoencoder reconstructions and residuals, one column per galaxy.

    Parameters
    ----------
    images : list of images, or `~numpy.ndarray` of shape (N, 3, size, size)
        Galaxy images (prepared with the encoder's normalisation by
        `~astro_galsim.pipeline.prepare`), or inputs already prepared.
    encoder : `~astro_galsim.model.AutoencoderEncoder`, optional
        Its ``model`` (a `~astro_galsim.network.ConvAutoencoder`) makes the reconstructions;
        default the pretrained encoder.
    ids : list of str, optional
        Column titles.
    n : int, optional
        At most this many galaxies (those where a galaxy was found, in input order).
    size : float, optional
        Panel size in inches.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        Three rows: encoder input, reconstruction (titled with the mean squared error)
        and the absolute difference.

    Raises
    ------
    ValueError
        If no image holds a galaxy, or prepared inputs have the wrong shape.
    """
    import torch
    from .model import load_pretrained
    from .pipeline import prepare
    from .utils._images import image_id

    encoder = load_pretrained() if encoder is None else encoder
    if isinstance(images, np.ndarray) and images.ndim == 4:
        arrays = np.asarray(images, dtype=np.float32)
        if arrays.shape[1:] != tuple(encoder.input_shape):
            raise ValueError(f'prepared inputs have shape {arrays.shape[1:]}, the encoder takes '
                             f'{tuple(encoder.input_shape)}; pass raw images to have them prepared')
        names = [str(i) for i in (ids if ids is not None else range(len(arrays)))]
    else:
        images = list(images)
        arrays, table = prepare(images, normalisation=encoder.normalisation)
        found = np.asarray(table['found'], dtype=bool)
        names = [str(i) for i in ids] if ids is not None else [image_id(im, i) for i, im in enumerate(images)]
        arrays = arrays[found]
        names = [name for name, ok in zip(names, found) if ok]
    if len(names) != len(arrays):
        raise ValueError(f'ids has {len(names)} entries for {len(arrays)} images')
    if not len(arrays):
        raise ValueError('no galaxy was found in any of the images: nothing to reconstruct')
    arrays, names = arrays[:n], names[:n]
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            recon, _ = model(torch.from_numpy(np.ascontiguousarray(arrays)))
    finally:
        model.train(was_training)
    recon = recon.numpy()
    fig = new_figure(len(arrays), 3, size, extra_height=0.6)
    axes = fig.subplots(3, len(arrays), squeeze=False)
    for j, name in enumerate(names):
        residual = np.abs(arrays[j] - recon[j]).mean(axis=0)
        mse = float(np.mean((arrays[j] - recon[j]) ** 2))
        axes[0, j].imshow(np.moveaxis(arrays[j], 0, -1), origin='upper', interpolation='nearest')
        axes[0, j].set_title(name, fontsize=7)
        axes[1, j].imshow(np.clip(np.moveaxis(recon[j], 0, -1), 0, 1), origin='upper', interpolation='nearest')
        axes[1, j].set_title(f'mse {mse:.4f}', fontsize=7)
        axes[2, j].imshow(residual, origin='upper', cmap='magma', vmin=0, vmax=0.5, interpolation='nearest')
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, label in zip(axes[:, 0], ('input', 'reconstruction', '|difference|')):
        ax.set_ylabel(label, fontsize=8)
    return fig
