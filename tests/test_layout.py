"""The package's layout rules, checked on its source: imports follow the flow of data.

* no module imports a private name (``_x``) of another module; shared code lives under
  public names, or in the private modules made for sharing (``astro_galsim/utils/_*.py``);
* the stages never import the fronts (``search``, ``build``, ``cli``), so there is no cycle;
* no module is longer than about 600 lines (one concern per module).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'astro_galsim'
FRONTS = {'search', 'build', 'cli'}
# the fronts themselves (build and cli drive SimilaritySearch)
ALLOWED_FRONT_USERS = {'__init__', 'search', 'build', 'cli'}
MAX_LINES = 600


def _imports(path):
    """(module imported, names imported) for every relative import of a file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            yield node.module or '', [alias.name for alias in node.names]


def _modules():
    return sorted(p for p in PACKAGE.rglob('*.py') if p.name != '_version.py')


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_crosses_modules(path):
    for module, names in _imports(path):
        private = [n for n in names if n.startswith('_') and n != '_version']
        assert not private, f'{path.name} imports private {private} from .{module}'


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_stages_do_not_import_the_fronts(path):
    if path.stem in ALLOWED_FRONT_USERS:
        return
    for module, _ in _imports(path):
        assert module.split('.')[-1] not in FRONTS, f'{path.name} imports the front .{module}'


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_too_long(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f'{path.name} has {lines} lines; split it along its concerns'
