"""The package's layout rules, checked on its source: imports follow the flow of data.

* no module imports a private name (``_x``) of another module; shared code lives under
  public names, or in the private modules made for sharing (``astro_galsim/utils/_*.py``);
* the stages never import the fronts (``search``, ``build``, ``cli``), so there is no cycle;
* no module is longer than about 600 lines (one concern per module);
* only the describe stage (``ingest``) turns inputs into vectors: no other module calls the
  pipeline's ``describe``, fetches cutouts to describe or runs an encoder on prepared images
  (the pipeline and the model, which it calls, excepted), and the front reaches a cluster
  only through ``build``.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'astro_galsim'
FRONTS = {'search', 'build', 'cli'}
# the fronts themselves (build and cli drive SimilaritySearch)
ALLOWED_FRONT_USERS = {'__init__', 'search', 'build', 'cli'}
MAX_LINES = 600
# the one module that turns inputs into vectors, and the modules below it that do the work
DESCRIBE_STAGE = 'ingest'
DESCRIBE_WORKERS = {'pipeline', 'model', 'network'}


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


def _encoder_calls(path):
    """Calls ``<something named ...encoder>.encode(...)`` in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'encode':
            receiver = node.func.value
            name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, 'attr', '')
            if 'encoder' in name.lower():
                yield node.lineno


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_describe_stage_turns_inputs_into_vectors(path):
    if path.stem == DESCRIBE_STAGE or path.stem in DESCRIBE_WORKERS or path.parent.name == 'retrieval':
        return
    for module, names in _imports(path):
        home = module.split('.')[-1]
        assert not (home == 'pipeline' and 'describe' in names), \
            f'{path.name} describes images itself; call ingest.describe_items'
        assert not (home == 'retrieval' and 'get_cutouts' in names), \
            f'{path.name} fetches cutouts to describe; call ingest.describe_items with the positions'
    lines = list(_encoder_calls(path))
    assert not lines, f'{path.name} runs an encoder on line(s) {lines}; call ingest.describe_items'


def test_the_front_reaches_a_cluster_only_through_build():
    for module, _ in _imports(PACKAGE / 'search.py'):
        assert module.split('.')[-1] != 'scaleout', 'search imports scaleout; go through build'
