"""Figures: galleries of a query and its neighbours.

Every function returns a `matplotlib.figure.Figure`; save it with ``fig.savefig(path)``
(PNG or PDF). Images are shown as the encoder sees their colours: SDSS gri asinh
composites (`~astro_galsim.preprocessing.to_colour`).
"""
import numpy as np

__all__ = ['gallery', 'thumbnail']


def thumbnail(image):
    """An image as an ``(ny, nx, 3)`` RGB array in [0, 1] for display.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, path or `~numpy.ndarray`
        Anything `~astro_galsim.pipeline.prepare` accepts; a ``(3, ny, nx)`` float array
        in [0, 1] is shown as it is.
    """
    from .pipeline import _as_image
    from .preprocessing import to_colour
    array = np.asarray(image) if isinstance(image, np.ndarray) else None
    if array is not None and array.ndim == 3 and array.shape[0] == 3 and array.dtype.kind == 'f':
        rgb = array
    else:
        rgb = to_colour(_as_image(image))
    return np.clip(np.moveaxis(rgb, 0, -1), 0, 1)


def gallery(query, neighbours, labels=None, *, query_label='query', ncols=6, size=1.8):
    """Show a query galaxy and its neighbours side by side.

    Parameters
    ----------
    query : image
        The query (anything `thumbnail` accepts).
    neighbours : list of images
        The neighbours, nearest first.
    labels : list of str, optional
        A caption per neighbour (for example id and distance).
    query_label : str, optional
        Caption of the query.
    ncols : int, optional
        Panels per row.
    size : float, optional
        Panel size in inches.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
    """
    import matplotlib
    from matplotlib.figure import Figure
    del matplotlib
    panels = [query] + list(neighbours)
    captions = [query_label] + list(labels or [f'#{i + 1}' for i in range(len(neighbours))])
    ncols = min(ncols, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig = Figure(figsize=(size * ncols, size * nrows + 0.2), layout='constrained')
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i, (ax, panel, caption) in enumerate(zip(axes, panels, captions)):
        ax.imshow(thumbnail(panel), origin='upper', interpolation='nearest')
        ax.set_title(caption, fontsize=8, color='tab:red' if i == 0 else 'black')
        if i == 0:
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color('tab:red')
                spine.set_linewidth(2)
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
