"""Label-aware training (Galaxy Zoo classes) on real images: what it reads and what it learns from."""
import csv

import numpy as np
import pytest
import torch

from astro_galsim.pipeline import DEFAULT_NORMALISATION
from astro_galsim.training import (MORPHOLOGY_CLASSES, TrainingLabels, _supervised_contrastive, gz2_labels_of,
                                   load_labelled_images, train_autoencoder)


@pytest.fixture(scope='module')
def small_gz1(shared_data, tmp_path_factory):
    """A GZ1-like folder of 16 real galaxies: 8 of the train split (2 per class), 8 of the test split."""
    source = shared_data / 'sdss_gz1_eggochi'
    with open(source / 'split.csv', newline='') as f:
        split = {r['objid']: r['split'] for r in csv.DictReader(f)}
    with open(source / 'labels.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    chosen = []
    for part in ('train', 'test'):
        for group in MORPHOLOGY_CLASSES:
            chosen += [r for r in rows if split[r['objid']] == part and r['similarity_group'] == group][:2]
    folder = tmp_path_factory.mktemp('gz1')
    with open(folder / 'labels.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['path', 'objid', 'similarity_group'])
        writer.writeheader()
        for r in chosen:   # absolute image paths: the images stay where they are
            writer.writerow({'path': str(source / r['path']), 'objid': r['objid'],
                             'similarity_group': r['similarity_group']})
    with open(folder / 'split.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['objid', 'split'])
        for r in chosen:
            writer.writerow([r['objid'], split[r['objid']]])
    return folder, {r['objid'] for r in chosen if split[r['objid']] == 'train'}, chosen


def test_labelled_images_come_from_the_train_split_only(small_gz1):
    folder, train_ids, chosen = small_gz1
    arrays, labels, ids = load_labelled_images(DEFAULT_NORMALISATION, gz1=folder, workers=1)
    assert set(ids) <= train_ids and len(ids) >= 7          # no test galaxy, whatever is found
    group = {r['objid']: r['similarity_group'] for r in chosen}
    assert [MORPHOLOGY_CLASSES[c] for c in labels.classes] == [group[i] for i in ids]
    assert arrays.shape[1:] == (3, 96, 96) and arrays.dtype == np.float16
    assert labels.provenance['gz1_train']['split'] == 'train'


def test_training_sample_gz2_labels_are_read_by_objid(shared_data):
    folder = shared_data / 'sdss_galaxies_mikeedi'
    with open(folder / 'gz2_labels/gz2_classes_iaifi.csv', newline='') as f:
        first = next(csv.DictReader(f))
    labels = gz2_labels_of(folder, [first['objid'], '1'])
    assert np.isnan(labels.soft[1]).all() and np.isfinite(labels.soft[0]).all()
    assert labels.soft[0].sum() == pytest.approx(1) and labels.spiral[0] == pytest.approx(float(first['spiral_prob']))


def test_supervised_contrastive_term_prefers_galaxies_grouped_by_class():
    generator = torch.Generator().manual_seed(0)
    classes = torch.arange(4).repeat(8)
    centres = torch.randn(4, 16, generator=generator) * 3
    grouped = centres[classes] + torch.randn(32, 16, generator=generator) * 0.3
    mixed = grouped[torch.randperm(32, generator=generator)]
    assert _supervised_contrastive(grouped, classes, 0.1) < 0.5 * _supervised_contrastive(mixed, classes, 0.1)


def test_label_training_runs_and_records_its_labels(small_gz1, tmp_path):
    folder, _, _ = small_gz1
    arrays, labels, _ = load_labelled_images(DEFAULT_NORMALISATION, gz1=folder, workers=1)
    arrays = np.concatenate([arrays, arrays])
    labels = TrainingLabels.concatenate([labels, labels])
    is_val = np.zeros(len(arrays), bool)
    is_val[-2:] = True
    card = train_autoencoder(arrays, tmp_path / 'labelled.pt', normalisation=dict(DEFAULT_NORMALISATION),
                             is_val=is_val, epochs=1, batch_size=8, labels=labels, progress=False, bf16=False)
    assert card['training']['labels']['classes'] == list(MORPHOLOGY_CLASSES)
    assert card['training']['labels']['gz1_train']['split'] == 'train'
    assert (tmp_path / 'labelled.pt').exists() and (tmp_path / 'labelled.json').exists()


def _small_index(source, name, rows, tmp_path_factory, path_columns):
    """A copy of a labelled folder's index.csv with ``rows``, its image paths made absolute."""
    folder = tmp_path_factory.mktemp(name)
    with open(folder / 'index.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (str(source / v) if k in path_columns else v) for k, v in r.items()})
    return folder


@pytest.fixture(scope='module')
def small_interacting(shared_data, tmp_path_factory):
    source = shared_data / 'galaxy_cruise_interacting'
    with open(source / 'index.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r['split'] == 'train'][:6] + [r for r in rows if r['split'] == 'test'][:4]
    return _small_index(source, 'interacting', chosen, tmp_path_factory, ('sdss_file', 'hsc_file')), chosen


def test_interacting_pairs_come_from_the_train_split_paired_across_surveys(small_interacting):
    from astro_galsim.training import LABEL_GROUPS, load_interacting_pairs
    folder, chosen = small_interacting
    arrays, labels, ids, partners = load_interacting_pairs(folder, DEFAULT_NORMALISATION, workers=1)
    train = {r['object_id']: r['label'] for r in chosen if r['split'] == 'train'}
    assert set(ids) <= set(train) and len(ids) == 2 * len(set(ids)) >= 10
    n = len(ids) // 2
    assert (partners[partners] == np.arange(2 * n)).all() and (ids[partners] == ids).all()
    assert (labels.groups['interacting'] == 1).all()
    kinds = LABEL_GROUPS['interaction_type']
    assert [kinds[k] for k in labels.groups['interaction_type']] == [train[i] for i in ids]
    # the SDSS and HSC images of one galaxy are prepared at one scale: their inputs look alike
    sdss, hsc = arrays[:n].astype(np.float32), arrays[n:].astype(np.float32)
    same = [np.corrcoef(a.mean(0).ravel(), b.mean(0).ravel())[0, 1] for a, b in zip(sdss, hsc)]
    other = [np.corrcoef(a.mean(0).ravel(), b.mean(0).ravel())[0, 1] for a, b in zip(sdss, np.roll(hsc, 1, 0))]
    assert np.median(same) > np.median(other)


def test_hubble_types_come_from_the_train_split(shared_data, tmp_path_factory):
    from astro_galsim.training import LABEL_GROUPS, load_hubble_types
    source = shared_data / 'sdss_ngc_ic_kavehsayeh'
    with open(source / 'index.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    chosen = [r for r in rows if r['split'] == 'train'][:6] + [r for r in rows if r['split'] == 'test'][:4]
    folder = _small_index(source / 'images', 'ngc', chosen, tmp_path_factory, ('file',))
    arrays, labels, names, scales = load_hubble_types(folder, DEFAULT_NORMALISATION, workers=1)
    train = {r['name']: r['hubble_coarse'] for r in chosen if r['split'] == 'train'}
    assert set(names) <= set(train) and len(names) >= 5
    assert [LABEL_GROUPS['hubble'][k] for k in labels.groups['hubble']] == [train[n] for n in names]
    assert (labels.groups['interacting'] == 0).all() and scales.unit == 'arcsec'


def test_training_with_pairs_and_label_groups_records_them(small_gz1, small_interacting, tmp_path):
    from astro_galsim.training import load_interacting_pairs
    folder, _, _ = small_gz1
    arrays, labels, _ = load_labelled_images(DEFAULT_NORMALISATION, gz1=folder, workers=1)
    pairs, pair_labels, _, partners = load_interacting_pairs(small_interacting[0], DEFAULT_NORMALISATION, workers=1)
    arrays = np.concatenate([arrays, pairs])
    labels = TrainingLabels.concatenate([labels, pair_labels])
    partners = np.concatenate([np.full(len(arrays) - len(pairs), -1), partners + len(arrays) - len(pairs)])
    is_val = np.zeros(len(arrays), bool)
    is_val[0] = True
    card = train_autoencoder(arrays, tmp_path / 'paired.pt', normalisation=dict(DEFAULT_NORMALISATION),
                             is_val=is_val, epochs=3, batch_size=8, labels=labels, partners=partners,
                             group_per_class=2, max_steps=2, progress=False, bf16=False)
    assert card['training']['pairs'] == len(pairs) and card['training']['steps'] == 2
    groups = card['training']['labels']['groups']
    # a group trains only where each of its classes has galaxies: no Hubble types were given
    assert groups['interacting'] == ['not_interacting', 'interacting'] and 'hubble' not in groups
    with pytest.raises(ValueError, match='partners'):
        train_autoencoder(arrays, tmp_path / 'bad.pt', normalisation=dict(DEFAULT_NORMALISATION),
                          partners=np.arange(3), epochs=1, progress=False, bf16=False)


def test_projecting_out_the_survey_direction_is_folded_into_the_weights(shared_data, tmp_path):
    """The HSC and SDSS images of train galaxies differ along a direction that the projection removes:
    the new weights describe every image as the old vector projected (to float32 rounding), the
    pairs come closer relative to other galaxies, and the card says what was done."""
    import json
    from astro_galsim import conf, read_image
    from astro_galsim.model import load_pretrained
    from astro_galsim.pipeline import describe
    from astro_galsim.training import project_out_differences
    source = shared_data / 'galaxy_cruise_interacting'
    with open(source / 'index.csv', newline='') as f:
        # enough pairs that the largest difference direction stands out from the next (with 40
        # pairs, and the survey directions already projected out of the shipped weights, the top
        # eigenvalues tie and the direction removed is arbitrary)
        rows = [r for r in csv.DictReader(f) if r['split'] == 'train'][:160]
    old = load_pretrained()
    with conf.set_temp('encoder_precision', 'float32'):
        hsc, _ = describe([read_image(source / r['hsc_file'], survey='hsc') for r in rows], old)
        sdss, _ = describe([read_image(source / r['sdss_file'], survey='sdss') for r in rows], old)
        first = hsc[:8]
        ok = np.isfinite(hsc).all(1) & np.isfinite(sdss).all(1)
        assert ok.sum() >= 120
        hsc, sdss = hsc[ok], sdss[ok]
        projection, ratios = project_out_differences(old.path, tmp_path / 'projected.pt', hsc, sdss,
                                                     np.vstack([hsc, sdss]), name='projected', note='test')
        new = load_pretrained(tmp_path / 'projected.pt')
        again, _ = describe([read_image(source / r['hsc_file'], survey='hsc') for r in rows[:8]], new)
    expected = first @ projection
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.isfinite(again).all(1).sum() >= 6
    np.testing.assert_allclose(again, expected, atol=1e-5)   # NaN where no galaxy was accepted, in both
    assert ratios[0] > ratios[1]

    def paired_over_others(a, b):
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        return np.diag(d).mean() / d[~np.eye(len(d), dtype=bool)].mean()
    unit = np.linalg.norm
    before = paired_over_others(hsc, sdss)
    after = paired_over_others(*(x @ projection / unit(x @ projection, axis=1, keepdims=True) for x in (hsc, sdss)))
    assert after < before
    card = json.loads((tmp_path / 'projected.json').read_text())
    assert card['name'] == 'projected' and card['training']['projection']['n_directions'] == 1
    assert card['training']['projection']['init']['sha256'] == old.identity['sha256']
    assert new.identity['sha256'] != old.identity['sha256']


def test_degraded_above_one_adds_more_copies_each_paired_with_its_original(shared_data, tmp_path_factory):
    """degraded=2 gives two copies of every training image, drawn apart; the first copy is the
    original's partner and the original every copy's; degraded=1 is the first half of it, row for row."""
    from astro_galsim.training_data import load_training_set
    source = shared_data / 'sdss_galaxies_mikeedi'
    with open(source / 'index.csv', newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['split'] == 'train'][:6]
    folder = _small_index(source, 'sample', rows, tmp_path_factory, ('path',))
    one = load_training_set(folder, DEFAULT_NORMALISATION, degraded=1.0, workers=1)
    two = load_training_set(folder, DEFAULT_NORMALISATION, degraded=2.0, workers=1)
    arrays, _, is_val, partners = two
    n = len(one[0]) // 2
    assert len(one[0]) == 2 * n and len(arrays) == 3 * n >= 12
    np.testing.assert_array_equal(arrays[:2 * n], one[0])
    np.testing.assert_array_equal(partners[:2 * n], one[3])
    originals = np.arange(n)
    assert (partners[originals] == originals + n).all()
    assert (partners[n:] == np.concatenate([originals, originals])).all()
    first, second = arrays[n:2 * n].astype(np.float32), arrays[2 * n:].astype(np.float32)
    assert not np.allclose(first, second, atol=0.02)   # another degradation, not the same copy again
    assert not is_val.any()
