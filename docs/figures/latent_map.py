"""Latent map of the shipped SDSS demo database (docs figure, run by the plot directive).

Thumbnails come from the images of the original study in ``../shared/data`` when that
folder is present; without it the map is drawn without them.
"""
from pathlib import Path

import matplotlib.pyplot as plt

from astro_galsim import SimilaritySearch
from astro_galsim.visualization import latent_map

IMAGES = Path('..') / 'shared' / 'data' / 'sdss_galaxies_mikeedi' / 'images'

search = SimilaritySearch.load_demo()
paths = {p.stem: p for p in IMAGES.glob('*/*.jpg')}      # objid -> JPEG, when available
fig = latent_map(search, thumbnails=paths.get if paths else None, n_thumbnails=45, colour='ellipticity',
                 size=8, title=f'SDSS demo database: {len(search)} galaxies (PCA)')
plt.figure(fig)  # hand the figure to pyplot, where the plot directive looks for it
