"""Distributions of the segmentation measures over the original work's 7,505 galaxies.

Writes ``docs/_static/segmentation_distributions.png``: histograms of the measures the default
selection tests (r50, signal-to-noise, Gini, the isophotal scale radius relative to r50, the
ellipticity, the core's peak level and the centre offset relative to the scale radius) and of the
scale radius itself, with the default limits.

Usage (from the repository root)::

    python docs/figures/segmentation_distributions.py [measurements.ecsv]

Without an argument the measurements are computed from ``../shared/data/sdss_galaxies_mikeedi``
(a few minutes on 2 cores); with one, an existing table written by
``astro_galsim.pipeline.prepare`` (with ``objid`` optional) is read.
"""
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from astropy.table import QTable, Table  # noqa: E402

from astro_galsim.config import conf  # noqa: E402
from astro_galsim.segmentation import SELECTION_DEFAULTS, select_galaxy  # noqa: E402
from astro_galsim.surveys import SURVEYS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / 'shared' / 'data' / 'sdss_galaxies_mikeedi'
OUT = ROOT / 'docs' / '_static' / 'segmentation_distributions.png'


def measurements(path=None):
    if path:
        return QTable.read(path)
    from astro_galsim.pipeline import prepare
    index = Table.read(DATA / 'index.csv', format='ascii.csv')
    with conf.set_temp('show_progress', True):
        _, table = prepare([DATA / p for p in index['path']], workers=2)
    return table


def main(path=None):
    table = measurements(path)
    found = np.asarray(table['found'])
    rows = [dict(zip(table.colnames, [np.asarray(table[c][i]).item() if hasattr(table[c][i], 'unit')
                                      else table[c][i] for c in table.colnames]))
            for i in range(len(table))]
    accepted = np.array([select_galaxy(r)[0] for r in rows])
    table = QTable(table)
    table['scale_ratio'] = table['scale_radius'] / table['r50']
    table['offset_ratio'] = table['centre_offset'] / table['scale_radius']
    # the resolution limit (min_r50='seeing') at SDSS's seeing and native pixel scale
    seeing_limit = float(SURVEYS['sdss'].seeing / SURVEYS['sdss'].pixel_scale)
    panels = [('r50', 'half-light radius r50 [pix]', ('min', seeing_limit), True),
              ('snr', 'signal-to-noise', ('min', SELECTION_DEFAULTS['min_snr']), True),
              ('gini', 'Gini', ('min', SELECTION_DEFAULTS['min_gini']), False),
              ('scale_radius', 'isophotal scale radius [pix]', None, True),
              ('scale_ratio', 'scale radius / r50 (light at the target)',
               ('min', SELECTION_DEFAULTS['min_scale_ratio']), True),
              ('offset_ratio', 'centre offset / scale radius', ('max', SELECTION_DEFAULTS['max_offset_ratio']), True),
              ('ellipticity', 'ellipticity (trails)', ('max', SELECTION_DEFAULTS['max_ellipticity']), False),
              ('peak_level', 'peak level of the core (stars)', ('max', SELECTION_DEFAULTS['max_peak_level']), False),
              ('concentration', 'concentration 5 log10(r80/r20)', None, False)]
    fig, axes = plt.subplots(3, 3, figsize=(10, 8))
    for ax, (name, label, limit, log) in zip(axes.flat, panels):
        values = np.asarray(table[name].value if hasattr(table[name], 'unit') else table[name], float)[found]
        values = values[np.isfinite(values) & (values > 0 if log else True)]
        bins = np.geomspace(max(values.min(), 1e-3), values.max(), 50) if log else 50
        ax.hist(values, bins=bins, color='0.45')
        if log:
            ax.set_xscale('log')
        if limit is not None:
            side, value = limit
            beyond = (values < value).sum() if side == 'min' else (values > value).sum()
            ax.axvline(value, color='C3', lw=1.5, label=f'default {side}imum {value:g}: {beyond} beyond')
            ax.legend(fontsize=7, loc='upper left')
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f'{len(table)} SDSS galaxies of the original sample: {found.sum()} found, '
                 f'{accepted.sum()} ({accepted.mean():.1%}) accepted by the default selection', fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f'wrote {OUT}; found {found.mean():.2%}, accepted {accepted.mean():.2%}')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else None)
