"""Figures: galleries of neighbours and the segmentation stage (latent-space maps: ``latent_space``).

Every function returns a `matplotlib.figure.Figure` made without pyplot, so no GUI
backend is needed (in a notebook, display it by evaluating it, or save it with
`save_figure`, which writes PNG, PDF or SVG atomically).

Images are shown the way the encoder sees their colours: the gri asinh composite of
`~astro_galsim.preprocessing.to_colour` (Lupton et al. 2004), the same fixed stretch for
every panel, so that brightness and colour compare across panels. An optional extra
`astropy.visualization` stretch can be applied identically to all panels of a figure.
"""
from pathlib import Path

import numpy as np

from .io import atomic_output
# the latent-space figures live in their own module; their names are importable from here too
from .latent_space import latent_map, project_latent, reconstruction_figure
from .utils._figures import bottom_up, image_lookup, lookup_image, new_figure, thumbnail

__all__ = ['thumbnail', 'gallery', 'result_gallery', 'similarity_figure', 'segmentation_figure', 'project_latent',
           'latent_map', 'reconstruction_figure', 'save_figure', 'SEGMENT_COLOURS']

#: Colours of the segmentation panels: sky, central galaxy, foreign sources, stars on the galaxy
#: (the labels of `~astro_galsim.segmentation.segmentation_map`).
SEGMENT_COLOURS = ('black', '#4c9be8', '#e8a33c', '#e8e23c')
_SEGMENT_NAMES = ('sky', 'central galaxy', 'foreign source', 'star on the galaxy')
_QUERY_COLOUR = 'tab:red'


def _blank(ax, text='no image'):
    ax.set_facecolor('0.92')
    ax.text(0.5, 0.5, text, ha='center', va='center', fontsize=7, color='0.4', transform=ax.transAxes)


def _frame(ax, colour):
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(colour)
        spine.set_linewidth(2.5)


def _caption(label, distance):
    if distance is None or not np.isfinite(distance):
        return str(label)
    return f'{label}\nd = {float(distance):.3f}'


def gallery(query, neighbours, labels=None, *, ids=None, distances=None, query_label='query',
            ncols=6, size=1.8, stretch=None):
    """Show a query galaxy and its neighbours side by side.

    Parameters
    ----------
    query : image
        The query (anything `thumbnail` accepts); None leaves a blank panel.
    neighbours : list of images
        The neighbours, nearest first (None for a neighbour without an image).
    labels : list of str, optional
        A caption per neighbour; default built from ``ids`` and ``distances``, else ``#1``, ``#2``...
    ids : list of str, optional
        Neighbour ids, shown with ``distances`` as ``id / d = 0.123``.
    distances : array-like, optional
        Neighbour distances.
    query_label : str, optional
        Caption of the query panel (its id, say); the panel is framed in red.
    ncols : int, optional
        Panels per row.
    size : float, optional
        Panel size in inches.
    stretch : `astropy.visualization.BaseStretch`, optional
        Extra stretch applied identically to every panel (see `thumbnail`).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One axes per panel, query first; each image panel holds one
        `~matplotlib.image.AxesImage` with the panel's `thumbnail`.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.visualization import gallery
    >>> rng = np.random.default_rng(0)
    >>> images = [rng.random((3, 32, 32)) for _ in range(4)]
    >>> fig = gallery(images[0], images[1:], ids=['a', 'b', 'c'], distances=[0.1, 0.2, 0.3],
    ...               query_label='q')
    >>> len(fig.axes), fig.axes[1].get_title()
    (4, 'a\\nd = 0.100')
    """
    neighbours = list(neighbours)
    if labels is None:
        if ids is not None:
            if len(ids) != len(neighbours):
                raise ValueError(f'ids has {len(ids)} entries for {len(neighbours)} neighbours')
            dists = [None] * len(ids) if distances is None else list(np.asarray(distances, dtype=float))
            labels = [_caption(i, d) for i, d in zip(ids, dists)]
        else:
            labels = [f'#{i + 1}' for i in range(len(neighbours))]
    elif len(labels) != len(neighbours):
        raise ValueError(f'labels has {len(labels)} entries for {len(neighbours)} neighbours')
    panels = [query] + neighbours
    captions = [query_label] + list(labels)
    ncols = max(1, min(int(ncols), len(panels)))
    nrows = int(np.ceil(len(panels) / ncols))
    fig = new_figure(ncols, nrows, size, extra_height=0.3)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    for i, (ax, panel, caption) in enumerate(zip(axes, panels, captions)):
        ax.set_axis_off()
        if panel is None:
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            _blank(ax)
        else:
            ax.imshow(thumbnail(panel, stretch), origin='upper', interpolation='nearest')
        ax.set_title(caption, fontsize=8, color=_QUERY_COLOUR if i == 0 else 'black')
        if i == 0:
            _frame(ax, _QUERY_COLOUR)
    return fig


def _radec(coord):
    """A caption line with a position in degrees ('' when unknown)."""
    coord = coord.icrs
    return f'\n{coord.ra.deg:.4f} {coord.dec.deg:+.4f}' if np.isfinite(coord.ra.deg) else ''


def result_gallery(result, images, *, query_images=None, max_queries=10, size=1.6, stretch=None):
    """Show the result table of `~astro_galsim.SimilaritySearch.query`: one row per query.

    Parameters
    ----------
    result : `~astropy.table.QTable`
        From `~astro_galsim.SimilaritySearch.query` (columns ``query_id``, ``rank``, ``id``,
        ``distance``, and ``coord``/``query_coord`` for RA/Dec captions), or
        `~astro_galsim.database.GalaxyDatabase.search` (``query`` for ``query_id``). For
        SDSS thumbnails in place of local images, see `~astro_galsim.thumbnails.thumbnail_gallery`.
    images : dict or callable
        Maps an id (of a query or a neighbour) to an image (anything `thumbnail` takes),
        or returns None; ids without an image get a blank panel that still shows the id
        and distance.
    query_images : dict or photutils ``SourceCatalog``, optional
        Images of queries that are not in ``images`` (a query image given by the user),
        keyed by the ``query_id`` column's value; or the ``SourceCatalog`` that was
        queried, whose sources are shown as they were cut out for the query.
    max_queries : int, optional
        Show at most this many queries (rows), in table order.
    size : float, optional
        Panel size in inches.
    stretch : `astropy.visualization.BaseStretch`, optional
        Extra stretch applied identically to every panel (see `thumbnail`).

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        A grid of queries x (1 + k): the query (framed in red) then its neighbours by
        rank, titled with their ids, distances and RA/Dec (where known).

    Raises
    ------
    ValueError
        If ``result`` lacks one of the columns above or is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.table import QTable
    >>> from astro_galsim.visualization import result_gallery
    >>> result = QTable({'query_id': ['q', 'q'], 'rank': [1, 2], 'id': ['a', 'b'],
    ...                  'distance': [0.25, 0.5]})
    >>> images = {name: np.full((3, 8, 8), v) for name, v in (('q', 0.2), ('a', 0.5), ('b', 0.8))}
    >>> fig = result_gallery(result, images)
    >>> [ax.get_title() for ax in fig.axes]
    ['q', 'a\\nd = 0.250', 'b\\nd = 0.500']
    """
    key = 'query_id' if 'query_id' in result.colnames else 'query'   # database.search says 'query'
    missing = [c for c in (key, 'rank', 'id', 'distance') if c not in result.colnames]
    if missing:
        raise ValueError(f'result table lacks column(s) {missing} (it has {result.colnames}); '
                         'give the table returned by SimilaritySearch.query')
    if len(result) == 0:
        raise ValueError('the result table is empty: there is nothing to show')
    images, query_images = image_lookup(images), image_lookup(query_images)
    queries = list(dict.fromkeys(str(q) for q in result[key]))[:max_queries]
    rows = []
    for q in queries:
        part = result[np.asarray(result[key]).astype(str) == q]
        part = part[np.argsort(np.asarray(part['rank']), kind='stable')]
        where = [_radec(c) for c in part['coord']] if 'coord' in part.colnames else [''] * len(part)
        here = _radec(part['query_coord'][0]) if 'query_coord' in part.colnames else ''
        rows.append((q, [str(i) for i in part['id']], np.asarray(part['distance'], dtype=float), where, here))
    ncols = 1 + max(len(r[1]) for r in rows)
    fig = new_figure(ncols, len(rows), size, extra_height=0.3 * len(rows))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for (q, ids, dists, where, here), row in zip(rows, axes):
        query_image = lookup_image(query_images, q) if query_images is not None else None
        if query_image is None:
            query_image = lookup_image(images, q)
        panels = [(query_image, q + here)] + [(lookup_image(images, i), _caption(i, d) + w)
                                              for i, d, w in zip(ids, dists, where)]
        for j, ax in enumerate(row):
            if j >= len(panels):
                fig.delaxes(ax)
                continue
            image, caption = panels[j]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                _blank(ax)
            else:
                ax.imshow(thumbnail(image, stretch), origin='upper', interpolation='nearest')
                if j:
                    ax.set_axis_off()
            ax.set_title(caption, fontsize=7, color=_QUERY_COLOUR if j == 0 else 'black')
            if j == 0:
                _frame(ax, _QUERY_COLOUR)
    return fig


def similarity_figure(explanation, images, *, query_image=None, normalisation=None, size=1.8,
                      measurements=('r50_arcsec', 'ellipticity', 'gini', 'concentration')):
    """The normalised encoder inputs of a query galaxy and its neighbours, side by side.

    What the encoder compared: each galaxy isolated, centred, scaled and turned as the
    pipeline prepares it (`~astro_galsim.pipeline.prepare_one`), captioned with its
    distance, the percentile of that distance in the database, and its measurements.

    Parameters
    ----------
    explanation : `~astropy.table.QTable`
        The table of `~astro_galsim.SimilaritySearch.explain` (rank 0 is the query).
    images : dict, callable or photutils ``SourceCatalog``
        Images by id (``images[id]`` or ``images(id)``); galaxies without one show a blank panel.
    query_image : image or photutils ``SourceCatalog``, optional
        The query's image, when ``images`` has none under its id (an image or a source
        given to `~astro_galsim.SimilaritySearch.explain`).
    normalisation : dict, optional
        The encoder's normalisation (``search.encoder.normalisation``); default
        `~astro_galsim.pipeline.DEFAULT_NORMALISATION`.
    size : float, optional
        Panel size in inches.
    measurements : sequence of str, optional
        Columns of ``explanation`` to print under each panel (with their units); a size in
        arcsec that is unknown (NaN) is shown in pixels instead.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        One panel per row of ``explanation``, the query first (framed in red).

    Examples
    --------
    >>> from astro_galsim import SimilaritySearch
    >>> from astro_galsim.demo import hubble_deep_field_cutouts
    >>> from astro_galsim.visualization import similarity_figure
    >>> cutouts = hubble_deep_field_cutouts(n=30)
    >>> search = SimilaritySearch()
    >>> report = search.add(cutouts)
    >>> why = search.explain('HDF-1', k=3)
    >>> fig = similarity_figure(why, {c.meta['objid']: c for c in cutouts},
    ...                         normalisation=search.encoder.normalisation)
    >>> len(fig.axes), fig.axes[0].get_title().splitlines()[0]
    (4, 'HDF-1')
    """
    from .pipeline import DEFAULT_NORMALISATION, prepare_one
    for column in ('id', 'rank', 'distance'):
        if column not in explanation.colnames:
            raise ValueError(f'explanation lacks column {column!r} (it has {explanation.colnames}); '
                             'give the table of SimilaritySearch.explain')
    from .utils._images import as_image
    normalisation = dict(DEFAULT_NORMALISATION if normalisation is None else normalisation)
    images = image_lookup(images)
    if query_image is not None:
        query_image = image_lookup(query_image)
        query_image = next(iter(query_image.values())) if isinstance(query_image, dict) else query_image
    captions = [_similarity_caption(row, measurements) for row in explanation]
    # room for every caption line above the panels (constrained layout keeps the panels square)
    fig = new_figure(len(explanation), 1, size, extra_height=0.25 + 0.13 * max(len(c) for c in captions))
    axes = fig.subplots(1, len(explanation), squeeze=False)[0]
    for ax, row, lines in zip(axes, explanation, captions):
        ax.set_xticks([])
        ax.set_yticks([])
        image = lookup_image(images, str(row['id']))
        if image is None and row['rank'] == 0:
            image = query_image
        image = None if image is None else as_image(image)
        array = None if image is None else prepare_one(image, normalisation=normalisation)[0]
        if array is None:
            _blank(ax, 'no image' if image is None else 'no galaxy found')
        else:   # a FITS image's first row is its bottom
            ax.imshow(np.clip(np.moveaxis(array, 0, -1), 0, 1), origin='lower' if bottom_up(image) else 'upper',
                      interpolation='nearest')
        ax.set_title('\n'.join(lines), fontsize=7, color=_QUERY_COLOUR if row['rank'] == 0 else 'black')
        if row['rank'] == 0:
            _frame(ax, _QUERY_COLOUR)
    return fig


def _similarity_caption(row, measurements):
    """The caption lines of a `similarity_figure` panel: id, distance, measurements two by two."""
    lines = [str(row['id'])]
    if row['rank'] > 0:
        scale = f' ({row["distance_percentile"]:.0f}th pct)' if 'distance_percentile' in row.colnames else ''
        lines.append(f'd = {row["distance"]:.3f}{scale}')
    else:
        lines.append('query')
    shown = []
    for name in measurements:
        if name.endswith('_arcsec') and name in row.colnames and not np.isfinite(row[name]):
            name = name[:-len('_arcsec')]   # no pixel scale: the size in pixels
        if name not in row.colnames:
            continue
        value = row[name]
        unit = getattr(value, 'unit', None)
        text = {'arcsec': '"', 'pix': ' px'}.get(str(unit), '') if unit is not None else ''
        shown.append(f'{name.replace("_arcsec", "")} {getattr(value, "value", value):.2f}{text}')
    return lines + [', '.join(shown[i:i + 2]) for i in range(0, len(shown), 2)]


def segmentation_figure(images, targets=None, *, titles=None, normalisation=None, size=2.0):
    """What the segmentation stage does to galaxy images, one row per image.

    Four panels per image: the input in the encoder's colour form with the central
    galaxy's centroid and half-light and 90%-light circles; the segments
    (`~astro_galsim.segmentation.segmentation_map`: central galaxy, foreign sources,
    stars on the galaxy); the galaxy mask applied to the image (the pixels that were
    measured); and the normalised encoder input
    (`~astro_galsim.segmentation.normalise_galaxy`).

    Parameters
    ----------
    images : image or list of images
        Anything `~astro_galsim.pipeline.prepare` accepts.
    targets : `~astropy.coordinates.SkyCoord`, optional
        Position of each galaxy (used through the image WCS), as in
        `~astro_galsim.pipeline.prepare`; default the image centres.
    titles : list of str, optional
        A title per image (default its ``meta['objid']`` or file name).
    normalisation : dict, optional
        Keywords of `~astro_galsim.segmentation.normalise_galaxy` (default
        `~astro_galsim.pipeline.DEFAULT_NORMALISATION`).
    size : float, optional
        Panel size in inches.

    Returns
    -------
    fig : `matplotlib.figure.Figure`
        Axes in rows of four; a row where no galaxy was found shows the input and says so.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Circle
    from .pipeline import DEFAULT_NORMALISATION
    from .utils._images import as_image, image_id, pixel_position
    from .preprocessing import to_colour
    from .segmentation import measure_galaxy, normalise_galaxy, segmentation_map

    single = not isinstance(images, (list, tuple))
    images = [images] if single else list(images)
    if targets is not None and not targets.isscalar and len(targets) != len(images):
        raise ValueError(f'targets has {len(targets)} positions for {len(images)} images')
    if titles is not None and len(titles) != len(images):
        raise ValueError(f'titles has {len(titles)} entries for {len(images)} images')
    normalisation = dict(DEFAULT_NORMALISATION if normalisation is None else normalisation)
    cmap = ListedColormap(SEGMENT_COLOURS)
    fig = new_figure(4, len(images), size, extra_height=0.35 * len(images))
    axes = fig.subplots(len(images), 4, squeeze=False)
    for n, (image, row) in enumerate(zip(images, axes)):
        image = as_image(image)
        target = None if targets is None else (targets if targets.isscalar else targets[n])
        rgb = to_colour(image)
        origin = 'lower' if image.wcs is not None else 'upper'
        m = measure_galaxy(rgb, pixel_position(image, target))
        name = titles[n] if titles is not None else image_id(image, n)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].imshow(np.moveaxis(rgb, 0, -1), origin=origin, interpolation='nearest')
        if not m['found']:
            row[0].set_title(f'{name}\nno central galaxy found', fontsize=7)
            for ax, what in zip(row[1:], ('segments', 'mask', 'normalised')):
                _blank(ax, f'no {what}')
            continue
        xc, yc = m['x_centroid'], m['y_centroid']
        row[0].plot([xc], [yc], '+', color='cyan', ms=9, mew=1.2)
        for radius, style in ((m['r50'], '-'), (m['r90'], '--')):
            row[0].add_patch(Circle((xc, yc), radius, fill=False, color='cyan', lw=0.8, ls=style))
        row[0].set_title(f'{name}\nr50 {m["r50"]:.1f} px, e {m["ellipticity"]:.2f}', fontsize=7)
        labels = segmentation_map(m, rgb.shape[1:])
        row[1].imshow(labels, cmap=cmap, vmin=0, vmax=len(SEGMENT_COLOURS) - 1, interpolation='nearest',
                      origin=origin)
        counts = np.bincount(labels.ravel(), minlength=4)
        row[1].set_title(f'segments: galaxy, {int(counts[2] > 0) and _n_regions(labels == 2)} foreign,'
                         f'\n{m["n_stars"]} star(s) on it', fontsize=7)
        masked = np.where((labels == 1)[None], rgb, 0.0)
        row[2].imshow(np.moveaxis(masked, 0, -1), origin=origin, interpolation='nearest')
        row[2].set_title(f'galaxy mask\ngini {m["gini"]:.2f}, snr {m["snr"]:.0f}', fontsize=7)
        normalised = normalise_galaxy(rgb, m, **normalisation)
        row[3].imshow(np.moveaxis(normalised, 0, -1), origin='upper', interpolation='nearest')
        row[3].set_title(f'normalised {normalised.shape[-1]} x {normalised.shape[-1]}\n'
                         f'{normalisation.get("radius_scale", 3.0):g} r50 to the edge'
                         f'{", rotated" if normalisation.get("rotate", True) else ""}', fontsize=7)
    if len(images):
        from matplotlib.patches import Patch
        handles = [Patch(color=c, label=t) for c, t in zip(SEGMENT_COLOURS[1:], _SEGMENT_NAMES[1:])]
        fig.legend(handles=handles, loc='outside lower center', ncols=3, fontsize=7, frameon=False)
    return fig


def _n_regions(mask):
    from scipy import ndimage
    return int(ndimage.label(mask)[1])


def save_figure(fig, path, **kwargs):
    """Write a figure to ``path`` atomically; the format follows the suffix (png, pdf, svg...).

    Parameters
    ----------
    fig : `matplotlib.figure.Figure`
    path : str or `~pathlib.Path`
    **kwargs
        Passed to `matplotlib.figure.Figure.savefig` (``dpi``, for example).

    Returns
    -------
    path : `~pathlib.Path`
    """
    path = Path(path)
    fmt = kwargs.pop('format', None) or path.suffix.lstrip('.').lower()
    if not fmt:
        raise ValueError(f'cannot tell the image format of {str(path)!r}: give a suffix such as .png or .pdf')
    with atomic_output(path) as handle:
        fig.savefig(handle, format=fmt, **kwargs)
    return path
