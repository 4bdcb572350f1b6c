"""What the figure modules share: a figure without pyplot, images for display, image look-up by id."""
from collections.abc import Mapping

import numpy as np

__all__ = ['new_figure', 'thumbnail', 'lookup_image', 'bottom_up', 'image_lookup']


def new_figure(ncols, nrows, size, extra_height=0.0, **kwargs):
    """A constrained-layout `matplotlib.figure.Figure` of ``ncols`` x ``nrows`` panels of ``size`` inches (no pyplot)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(size * ncols, size * nrows + extra_height), layout='constrained', **kwargs)


def thumbnail(image, stretch=None):
    """An image as an ``(ny, nx, 3)`` RGB array in [0, 1] for display.

    Parameters
    ----------
    image : `~astropy.nddata.NDData`, path or `~numpy.ndarray`
        Anything `~astro_galsim.pipeline.prepare` accepts: it is brought to the encoder's
        colour form with `~astro_galsim.preprocessing.to_colour`. A ``(3, ny, nx)`` float
        array in [0, 1] (a prepared encoder input, for example) is shown as it is.
    stretch : `astropy.visualization.BaseStretch`, optional
        An extra stretch applied to every colour plane (for example
        ``AsinhStretch(0.1)`` to bring out faint light).

    Returns
    -------
    rgb : `~numpy.ndarray`, shape (ny, nx, 3)
        Ready for `~matplotlib.axes.Axes.imshow` with its default ``origin='upper'``: the
        first row is the top. A FITS image (or one with a WCS), whose first row is the
        bottom, is turned over, so that it is not drawn mirrored.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.visualization import thumbnail
    >>> colour = np.zeros((3, 4, 5), dtype=np.uint8); colour[0] = 255
    >>> rgb = thumbnail(colour)
    >>> rgb.shape, float(rgb[..., 0].min()), float(rgb[..., 1].max())
    ((4, 5, 3), 1.0, 0.0)
    """
    from ..preprocessing import to_colour
    from ._images import as_image
    array = image if isinstance(image, np.ndarray) else None
    if array is not None and array.ndim == 3 and array.shape[0] == 3 and array.dtype.kind == 'f' \
            and np.nanmin(array) >= 0 and np.nanmax(array) <= 1:
        rgb = np.asarray(array, dtype=np.float32)
    else:
        image = as_image(image)
        rgb = to_colour(image)
        if bottom_up(image):
            rgb = rgb[:, ::-1]
    rgb = np.clip(np.moveaxis(rgb, 0, -1), 0, 1)
    if stretch is not None:
        rgb = np.clip(stretch(rgb, clip=True), 0, 1)
    return rgb


def bottom_up(image):
    """Whether an image's first row is its bottom (FITS images, images with a WCS), as `NDData`."""
    return getattr(image, 'wcs', None) is not None or getattr(image, 'meta', {}).get('kind') == 'fits'


def image_lookup(images):
    """``images`` for `lookup_image`: a photutils SourceCatalog becomes its cutouts by label."""
    from .._targets import is_source_catalog, source_cutouts
    if not is_source_catalog(images):
        return images
    cutouts, _ = source_cutouts(images)
    out = {}
    for label, cutout in zip(np.atleast_1d(images.labels), cutouts):
        out.update({int(label): cutout, str(label): cutout, f'source{label}': cutout})
    return out


def lookup_image(images, key):
    """An image from a dict or a callable id -> image; None when there is none."""
    if images is None:
        return None
    if isinstance(images, Mapping):
        return images.get(key, images.get(str(key)))
    if callable(images):
        return images(key)
    raise TypeError(f'images must be a dict or a callable mapping ids to images, not {type(images).__name__}')
