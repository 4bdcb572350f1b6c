import csv
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from scipy import ndimage

from astro_galsim.config import conf
from astro_galsim.model import file_sha256, load_pretrained, query_arithmetic, uses_bfloat16
from astro_galsim.network import ConvAutoencoder, dihedral_views
from astro_galsim.pipeline import prepare
from astro_galsim.training import augment, context_normalisation, train_autoencoder


@pytest.fixture(scope='module')
def encoder():
    return load_pretrained()


@pytest.fixture(scope='module')
def real_inputs(shared_data, encoder):
    folder = shared_data / 'sdss_gz1_eggochi' / 'images'
    paths = sorted(folder.glob('*.jpg'))[:40]
    arrays, table = prepare(paths, normalisation=encoder.normalisation)
    assert table['found'].all()
    return paths, arrays


def test_pretrained_card_matches_weights(encoder):
    card = encoder.card
    from importlib import resources
    weights = resources.files('astro_galsim') / 'data' / 'encoder.pt'
    assert card['sha256'] == file_sha256(weights)
    for key in ('architecture', 'normalisation', 'training', 'metrics', 'name'):
        assert key in card
    assert encoder.input_shape == (3, card['normalisation']['size'], card['normalisation']['size'])


def test_damaged_weights_are_refused(tmp_path):
    from importlib import resources
    src = resources.files('astro_galsim') / 'data'
    shutil.copy(src / 'encoder.pt', tmp_path / 'encoder.pt')
    shutil.copy(src / 'encoder.json', tmp_path / 'encoder.json')
    data = bytearray((tmp_path / 'encoder.pt').read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / 'encoder.pt').write_bytes(bytes(data))
    with pytest.raises(ValueError, match='damaged'):
        load_pretrained(tmp_path / 'encoder.pt')


@pytest.fixture
def evil_encoder(tmp_path):
    """An encoder whose weights file is a pickle that would run code, with a card that matches it."""
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    torch.save({'x': Evil()}, tmp_path / 'evil.pt')
    card = dict(load_pretrained().card)
    card['sha256'] = file_sha256(tmp_path / 'evil.pt')
    (tmp_path / 'evil.json').write_text(json.dumps(card))
    return load_pretrained(tmp_path / 'evil.pt')


def test_weights_file_with_code_is_not_executed(evil_encoder):
    # a pickle that would run code must be refused by weights_only loading
    with pytest.raises(Exception, match='(?i)weights only|unsupported|global'):
        evil_encoder.model  # the weights are read, never executed, when first needed


def test_weights_file_with_code_is_not_executed_by_the_numpy_reader(evil_encoder):
    # a query of one image reads the weights without torch: the same refusal
    encoder = evil_encoder
    with conf.set_temp('encoder_precision', 'float32'), \
            pytest.raises(pickle.UnpicklingError, match='not part of a weights file'):
        encoder.encode(np.zeros((1,) + encoder.input_shape, dtype=np.float32))


def test_a_query_is_described_in_numpy_as_torch_does_in_float32(encoder, real_inputs):
    """Up to NUMPY_MAX_IMAGES images are described without torch in float32, and query images
    by default ('auto'): torch's float32 vectors to 1e-6. Asked for bfloat16, torch describes
    them, as it describes a batch; vectors to be stored never depend on the batch's size."""
    from astro_galsim.model import NUMPY_MAX_IMAGES
    _, arrays = real_inputs
    few = arrays[:NUMPY_MAX_IMAGES]
    fresh = load_pretrained()
    with conf.set_temp('encoder_precision', 'float32'):
        quick = fresh.encode(few)
        assert fresh._model is None and fresh._inference is None   # torch's network never built
        float32 = encoder.encode(arrays[:NUMPY_MAX_IMAGES + 4])[:NUMPY_MAX_IMAGES]
        with_numpy = encoder.encode(few)
    np.testing.assert_allclose(quick, float32, atol=1e-6)
    np.testing.assert_array_equal(with_numpy, quick)
    with conf.set_temp('encoder_precision', 'auto'):
        with query_arithmetic():
            np.testing.assert_array_equal(load_pretrained().encode(few), quick)
        if uses_bfloat16():   # stored vectors: one arithmetic whatever the batch
            np.testing.assert_allclose(encoder.encode(few), encoder.encode(arrays[:NUMPY_MAX_IMAGES + 4])[:len(few)],
                                       atol=2e-4)
            assert not np.allclose(encoder.encode(few), quick, atol=1e-5)
    with conf.set_temp('encoder_precision', 'bfloat16'), query_arithmetic():
        assert not np.array_equal(fresh.encode(few), quick)
    with conf.set_temp('encoder_precision', 'bfloat16'):
        batch = encoder.encode(arrays[:NUMPY_MAX_IMAGES + 4])[:NUMPY_MAX_IMAGES]
        bfloat16 = fresh.encode(few)
    assert fresh._inference is not None and not np.array_equal(bfloat16, quick)
    assert ((quick * bfloat16).sum(axis=1) > 0.999).all()
    np.testing.assert_allclose(bfloat16, batch, atol=2e-4)


def test_an_image_query_in_a_fresh_process_imports_only_what_it_needs(shared_data):
    """No torch (numpy describes one image, with the default configuration), photutils, Dask,
    matplotlib or scikit-learn."""
    import subprocess
    import sys
    image = sorted((shared_data / 'sdss_gz1_eggochi' / 'images').glob('*.jpg'))[0]
    code = ('import sys; from astro_galsim import SimilaritySearch; '
            f's = SimilaritySearch.load_demo(); r = s.query({str(image)!r}, k=3); assert len(r) == 3; '
            "print(sorted(m for m in ('torch', 'photutils', 'dask', 'matplotlib', 'sklearn', 'pynndescent') "
            'if m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == '[]', done.stdout + done.stderr


def test_description_invariant_to_flips_and_quarter_turns(encoder, real_inputs):
    _, arrays = real_inputs
    base = encoder.encode(arrays[:8])
    for view in dihedral_views(torch.from_numpy(arrays[:8])):
        np.testing.assert_allclose(encoder.encode(view.numpy()), base, atol=2e-5)


def test_encoder_views_are_the_one_definition_of_the_eight_views():
    """The encoder's torch views are the package's numpy views, in the same order, and each
    named view is the flip or quarter turn its name says."""
    from astro_galsim.utils._dihedral import DIHEDRAL_NAMES, dihedral_transform, dihedral_views as numpy_views
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)   # not square: turns change the shape
    torch_views = dihedral_views(torch.from_numpy(a))
    assert len(torch_views) == len(DIHEDRAL_NAMES) == 8
    for name, t, n in zip(DIHEDRAL_NAMES, torch_views, numpy_views(a)):
        assert np.array_equal(t.numpy(), n), name
    expected = {'identity': a, 'flip_lr': a[..., ::-1], 'flip_ud': a[..., ::-1, :],
                'rot90': np.rot90(a, 1, axes=(-2, -1)), 'rot180': a[..., ::-1, ::-1],
                'rot270': np.rot90(a, -1, axes=(-2, -1)), 'transpose': np.swapaxes(a, -2, -1),
                'antitranspose': np.swapaxes(a, -2, -1)[..., ::-1, ::-1]}
    assert set(expected) == set(DIHEDRAL_NAMES)
    for name, view in expected.items():
        assert np.array_equal(dihedral_transform(name)(a), view), name


def test_rotation_moves_a_galaxy_less_than_its_neighbours(encoder, real_inputs, shared_data):
    # a real galaxy turned by 30 degrees (any angle) stays much closer to itself than to the
    # nearest other galaxy: orientation normalisation plus the eight-fold average
    from astro_galsim import read_image
    paths, arrays = real_inputs
    vectors = encoder.encode(arrays)
    d = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nearest_other = d.min(axis=1)
    rotated = [ndimage.rotate(read_image(p).data, 30, axes=(1, 2), reshape=False, order=1) for p in paths[:12]]
    rot_arrays, _ = prepare(rotated, normalisation=encoder.normalisation)
    moved = np.linalg.norm(encoder.encode(rot_arrays) - vectors[:12], axis=1)
    ratio = moved / np.median(nearest_other)
    assert np.median(ratio) < 0.5
    assert np.mean(moved < nearest_other[:12]) >= 0.75


def test_encode_rejects_wrong_shape(encoder):
    with pytest.raises(ValueError, match='prepare images'):
        encoder.encode(np.zeros((2, 3, 32, 32), dtype=np.float32))


def test_augment_keeps_range_and_shape():
    gen = torch.Generator().manual_seed(0)
    batch = torch.rand(4, 3, 96, 96)
    out = augment(batch, 64, gen)
    assert out.shape == (4, 3, 64, 64)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # two draws differ (random views), the same seed repeats them
    again = augment(batch, 64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)
    assert not torch.allclose(out, augment(batch, 64, gen))


@pytest.fixture(scope='module')
def training_sample_paths(shared_data):
    # images of the training sample: GZ1 images may be in its test split, which is never trained on
    folder = shared_data / 'sdss_galaxies_mikeedi'
    with open(folder / 'index.csv', newline='') as f:
        return [folder / r['path'] for r in csv.DictReader(f)][:40]


def test_training_round_trip_and_model_card(tmp_path, training_sample_paths):
    # a tiny training run: the saved weights reload (weights_only) to the same descriptions
    paths = training_sample_paths
    normalisation = {'size': 32, 'radius_scale': 3.0, 'rotate': True, 'isolate': True}
    arrays, _ = prepare(paths[:24], normalisation=context_normalisation(normalisation))
    assert arrays.shape[-1] == 48
    out = tmp_path / 'tiny.pt'
    # refine_from=1: an extra convolution at stages 1-3, which the card must carry for the reload
    card = train_autoencoder(arrays, out, normalisation=normalisation, latent_dim=8, widths=(8, 8, 16, 16),
                             refine_from=1, epochs=2, batch_size=8, seed=3, bf16=False, progress=False)
    assert out.is_file() and out.with_suffix('.json').is_file()
    assert not list(tmp_path.glob('*.tmp*'))
    loaded = load_pretrained(out)
    assert loaded.card == json.loads(out.with_suffix('.json').read_text())
    assert card['sha256'] == file_sha256(out)
    # the card records the scale the inputs were prepared with
    assert loaded.latent_dim == 8 and loaded.normalisation == {'scale': 'scale_radius', **normalisation}
    assert card['architecture']['refine_from'] == 1
    model = ConvAutoencoder(latent_dim=8, size=32, widths=(8, 8, 16, 16), refine_from=1)
    model.load_state_dict(torch.load(out, weights_only=True))
    x = torch.from_numpy(prepare(paths[:3], normalisation=normalisation)[0])
    with torch.no_grad():
        z = torch.nn.functional.normalize(torch.stack([model.eval().encode(v) for v in dihedral_views(x)]).mean(0))
    with conf.set_temp('encoder_precision', 'float32'):
        np.testing.assert_allclose(loaded.encode(x.numpy()), z.numpy(), atol=1e-5)
    with conf.set_temp('encoder_precision', 'bfloat16'):
        np.testing.assert_allclose(loaded.encode(x.numpy()), z.numpy(), atol=0.02)
    assert card['training']['seed'] == 3 and len(card['metrics']['history']) >= 1


def test_refine_from_sets_the_extra_convolutions_and_rejects_other_values():
    def convolutions(model):
        return sum(isinstance(layer, torch.nn.Conv2d) for layer in model.features)
    # four stride-2 stages, plus one refining convolution at each stage from refine_from on
    assert [convolutions(ConvAutoencoder(refine_from=r)) for r in range(5)] == [8, 7, 6, 5, 4]
    for bad in (-1, 5, 1.5, None):
        with pytest.raises(ValueError, match='refine_from=.*integer from 0'):
            ConvAutoencoder(refine_from=bad)


def test_weight_average_is_the_weighted_mean_of_continuations_and_refuses_other_networks(tmp_path):
    """Two networks of one architecture average parameter by parameter with the given weights, the
    card records both inputs, and a network of another architecture or bad weights are refused."""
    from astro_galsim.training import average_weights
    shipped = load_pretrained().path
    state = torch.load(shipped, weights_only=True)
    other = tmp_path / 'other.pt'
    torch.save({k: v * 3 if v.is_floating_point() else v for k, v in state.items()}, other)
    card = json.loads(shipped.with_suffix('.json').read_text())
    other.with_suffix('.json').write_text(json.dumps(dict(card, name='other')))
    record = average_weights([shipped, other], tmp_path / 'avg.pt', weights=[0.75, 0.25], name='avg', note='test')
    averaged = torch.load(tmp_path / 'avg.pt', weights_only=True)
    for k, v in state.items():
        if v.is_floating_point():   # 0.75 v + 0.25 (3 v) = 1.5 v
            torch.testing.assert_close(averaged[k].float(), 1.5 * v.float(), rtol=1e-2, atol=1e-6)
    loaded = load_pretrained(tmp_path / 'avg.pt')
    assert loaded.identity['name'] == 'avg'
    assert [r['name'] for r in record['of']] == [card['name'], 'other'] and record['weights'] == [0.75, 0.25]
    assert loaded.card['training']['weight_average']['of'][1]['sha256'] == file_sha256(other)
    small = tmp_path / 'small.pt'
    model = ConvAutoencoder(latent_dim=8, size=32, widths=(8, 8, 16, 16))
    torch.save(model.state_dict(), small)
    small.with_suffix('.json').write_text(json.dumps(dict(card, architecture={'latent_dim': 8})))
    with pytest.raises(ValueError, match='small.pt.*not the architecture'):
        average_weights([shipped, small], tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='summing to 1'):
        average_weights([shipped, other], tmp_path / 'bad.pt', weights=[0.5, 0.6])
    assert not (tmp_path / 'bad.pt').exists()
