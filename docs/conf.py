"""Sphinx configuration of the astro_galsim documentation.

Build (offline)::

    sphinx-build -W -b html docs docs/_build/html

Intersphinx links to the Python, numpy, astropy... documentation need the network; they
are off unless ``ASTRO_GALSIM_DOCS_INTERSPHINX=1`` is set.
"""
import datetime
import os
import sys
from pathlib import Path

try:
    from sphinx_astropy.conf.v3 import *  # noqa: F401,F403
except ImportError:  # sphinx-astropy older than 1.10
    from sphinx_astropy.conf.v2 import *  # noqa: F401,F403

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import astro_galsim  # noqa: E402

project = 'astro_galsim'
author = 'The astro_galsim developers'
copyright = f'{datetime.date.today().year}, {author}'
release = astro_galsim.__version__
version = release.split('+')[0]

exclude_patterns = ['_build', 'figures', '**.ipynb_checkpoints']

# sphinx-copybutton only adds a copy button to code blocks: build without it when missing
import importlib.util  # noqa: E402
extensions = [e for e in extensions  # noqa: F405
              if e != 'sphinx_copybutton' or importlib.util.find_spec('sphinx_copybutton')]
html_title = f'astro_galsim {version}'
html_static_path = ['_static']

# -- cross-references -------------------------------------------------------------------
if os.environ.get('ASTRO_GALSIM_DOCS_INTERSPHINX') != '1':
    intersphinx_mapping = {}
else:
    intersphinx_mapping.update({  # noqa: F405
        'photutils': ('https://photutils.readthedocs.io/en/stable/', None),
        'astroquery': ('https://astroquery.readthedocs.io/en/latest/', None),
        'reproject': ('https://reproject.readthedocs.io/en/stable/', None),
        'torch': ('https://docs.pytorch.org/docs/stable/', None),
    })

# Every reference inside astro_galsim must resolve; references into other packages
# resolve only with intersphinx (online), so they are not checked offline.
nitpicky = True
_EXTERNAL = (r'(astropy|numpy|np|matplotlib|scipy|sklearn|torch|photutils|pynndescent|astroquery|reproject|'
             r'skimage|umap|PIL|pathlib|collections|dask|os|tqdm)')
nitpick_ignore_regex = [
    (r'py:.*', _EXTERNAL + r'(\..*)?'),
    (r'py:.*', r'(str|int|float|bool|dict|list|tuple|callable|object|None|type|Exception|ValueError|'
               r'KeyError|TypeError|ImportError|FileNotFoundError|OSError|UserWarning|Module)'),
]
if intersphinx_mapping:
    nitpick_ignore_regex = nitpick_ignore_regex[1:]

# -- automodapi / numpydoc -------------------------------------------------------------
automodapi_inheritance_diagram = False
automodsumm_inherited_members = False
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

# -- figures made from real data when the docs build (matplotlib plot directive) ----------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [('png', 90)]
plot_rcparams = {'savefig.bbox': 'tight'}
plot_apply_rcparams = True
plot_working_directory = str(ROOT)
plot_pre_code = """
import warnings
import numpy as np
import matplotlib
matplotlib.use('Agg')
"""

# doctests in the .rst pages run under pytest (pytest --doctest-rst docs); none run here
suppress_warnings = ['app.add_directive']

# -- the real `--help` output of every command, for cli.rst --------------------------------


def _write_cli_help(folder=Path(__file__).parent / '_generated'):
    import contextlib
    import io
    from astro_galsim.cli import _parser
    folder.mkdir(exist_ok=True)
    os.environ['COLUMNS'] = '88'
    parser = _parser()
    commands = [None] + list(parser._subparsers._group_actions[0].choices)
    for command in commands:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            parser.parse_args(([command] if command else []) + ['--help'])
        path = folder / f'cli_{command or "main"}.txt'
        text = f'$ astro-galsim {command + " " if command else ""}--help\n' + buffer.getvalue()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


_write_cli_help()
exclude_patterns.append('_generated')
