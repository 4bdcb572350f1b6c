"""The pieces of benchmarks/label_ceiling.py that decide what is trained on and what is reported."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torch')

BENCHMARKS = Path(__file__).resolve().parent.parent / 'benchmarks'


@pytest.fixture(scope='module')
def ceiling():
    sys.path.insert(0, str(BENCHMARKS))   # the script imports benchmarks/similarity.py beside it
    try:
        spec = importlib.util.spec_from_file_location('label_ceiling', BENCHMARKS / 'label_ceiling.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_validation_part_is_stratified_and_only_where_allowed(ceiling):
    labels = np.array(['a'] * 50 + ['b'] * 10 + ['a'] * 40)
    allowed = np.r_[np.ones(60, bool), np.zeros(40, bool)]   # e.g. extra galaxies of another sample
    is_val = ceiling.carve_validation(labels, allowed, 0.2, seed=0)
    assert not is_val[~allowed].any()
    assert (is_val & (labels == 'a')).sum() == 10 and (is_val & (labels == 'b')).sum() == 2
    np.testing.assert_array_equal(is_val, ceiling.carve_validation(labels, allowed, 0.2, seed=0))


def test_probe_separates_classes_and_gives_probabilities(ceiling):
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (40, 4)) + [1, 0, 0, 0], rng.normal(0, 0.1, (8, 4)) + [0, 1, 0, 0]])
    y = np.r_[np.zeros(40, int), np.ones(8, int)]
    w, b = ceiling.fit_probe(x, y, 2, penalty=1e-4)
    probs, logits = ceiling.probe_outputs(x, w, b)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert (probs.argmax(1) == y).all() and (logits.argmax(1) == y).all()


def test_ceiling_line_follows_the_fine_tunes(ceiling):
    def row(method, macro, micro, merger):
        return {'set': 'gz1', 'method': method, 'P@10 macro': macro, 'P@10 micro': micro, 'P@10 merger': merger}
    rows = [row('encoder', 0.64, 0.75, 0.29), row('supervised fine-tune (shipped init)', 0.62, 0.74, 0.26),
            row('supervised fine-tune (label-free init)', 0.60, 0.79, 0.41)]
    lines = ceiling.target_lines(rows)
    assert any('gz1 micro >= 0.78: best 0.790 (supervised fine-tune (label-free init))' in line and
               line.endswith('PASS') for line in lines)
    ceiling_line = next(line for line in lines if line.startswith('ceiling gz1'))
    assert 'macro 0.620 < 0.70' in ceiling_line and 'micro' not in ceiling_line and 'merger' not in ceiling_line
