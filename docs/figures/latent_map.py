"""Latent map of the shipped SDSS demo database (docs figure, run by the plot directive).

Thumbnails come from the images of the original study in ``../shared/data`` when that
folder is present; without it (or without the demo database) the figure still builds,
from the Hubble Deep Field galaxies.
"""
from pathlib import Path

import matplotlib.pyplot as plt

from astro_galsim import SimilaritySearch
from astro_galsim.visualization import latent_map

IMAGES = Path('..') / 'shared' / 'data' / 'sdss_galaxies_mikeedi' / 'images'

try:
    search = SimilaritySearch.load_demo()
    paths = {p.stem: p for p in IMAGES.glob('*/*.jpg')}      # objid -> JPEG, when available
    thumbnails = paths.get
    colour = 'r50' if 'r50' in search.table.colnames else None
    title = f'SDSS demo database: {len(search)} galaxies (PCA)'
except FileNotFoundError:                                    # the demo database is not built
    from astro_galsim.demo import hubble_deep_field_cutouts
    cutouts = hubble_deep_field_cutouts(n=60)
    search = SimilaritySearch()
    search.add(cutouts)
    thumbnails = {c.meta['objid']: c for c in cutouts}
    colour, title = 'r50', f'Hubble Deep Field: {len(search)} galaxies (PCA)'

fig = latent_map(search, thumbnails=thumbnails, n_thumbnails=45, colour=colour, size=8, title=title)
plt.figure(fig)
