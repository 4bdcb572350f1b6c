"""Tests of the ``astro-galsim`` command line (astro_galsim.cli.main)."""
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.table import QTable

from astro_galsim.cli import main

DEMO_DATABASE = Path(str(resources.files('astro_galsim') / 'data' / 'demo_database.fits'))
needs_demo = pytest.mark.skipif(not DEMO_DATABASE.is_file(),
                                reason=f'the shipped demo database {DEMO_DATABASE} has not been built yet')

COMMANDS = {
    'demo': ['--output', '--k', '--n'],
    'query': ['target', '--database', '--k', '--exclude-radius', '--output'],
    'build': ['source', '--output', '--partition-size', '--executor', '--restart'],
    'train': ['data', '--output', '--epochs', '--contrastive-weight', '--seed', '--workers'],
    'evaluate': ['data', '--label-column', '--k', '--encoder'],
    'info': ['database'],
}


@pytest.fixture(scope='module')
def hdf_database(tmp_path_factory):
    """A small database file built from Hubble Deep Field cutouts, and its search."""
    from astro_galsim import SimilaritySearch
    from astro_galsim.demo import hubble_deep_field_cutouts
    search = SimilaritySearch()
    search.add(hubble_deep_field_cutouts(n=30))
    path = tmp_path_factory.mktemp('cli') / 'hdf.fits'
    search.save(path)
    return path, search


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: astro-galsim')
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_command_help_names_its_arguments(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, '--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: astro-galsim {command}')
    for argument in COMMANDS[command]:
        assert argument in out, f'{command} --help does not mention {argument}'


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert 'COMMAND' in capsys.readouterr().err


def test_info_prints_the_galaxy_count(hdf_database, capsys):
    path, search = hdf_database
    assert main(['info', str(path)]) == 0
    out = capsys.readouterr().out
    assert f'{len(search)} galaxies' in out
    assert search.encoder.identity['sha256'][:12] in out


def test_query_by_id_prints_the_neighbours(hdf_database, capsys):
    path, search = hdf_database
    query = str(search.ids[0])
    assert main(['query', query, '--database', str(path), '--k', '3']) == 0
    out = capsys.readouterr().out
    expected = search.query(query, k=3)
    lines = [line.split() for line in out.splitlines()]
    printed = [words[2] for words in lines if len(words) > 3 and words[0] == query and words[1].isdigit()]
    assert printed == list(expected['id'])
    assert query not in printed


def test_query_output_file_reads_back(hdf_database, tmp_path, capsys):
    path, search = hdf_database
    output = tmp_path / 'x.ecsv'
    query = str(search.ids[1])
    assert main(['query', query, '--database', str(path), '--k', '4', '--output', str(output)]) == 0
    assert f'wrote {output}' in capsys.readouterr().out
    table = QTable.read(output, format='ascii.ecsv')
    for column in ('query_id', 'rank', 'id', 'distance'):
        assert column in table.colnames
    assert list(table['rank']) == [1, 2, 3, 4]
    assert set(table['query_id']) == {query}
    expected = search.query(query, k=4)
    assert list(table['id']) == list(expected['id'])
    np.testing.assert_allclose(table['distance'], expected['distance'], rtol=1e-6)
    assert not list(tmp_path.glob('*.tmp'))


def test_query_bad_output_suffix(hdf_database, tmp_path):
    path, search = hdf_database
    with pytest.raises(SystemExit, match='cannot write .*x.txt: use one of .ecsv'):
        main(['query', str(search.ids[0]), '--database', str(path), '--output', str(tmp_path / 'x.txt')])
    assert not (tmp_path / 'x.txt').exists()


@needs_demo
def test_info_on_the_demo_database(capsys):
    assert main(['info']) == 0
    out = capsys.readouterr().out
    from astro_galsim.database import GalaxyDatabase
    from astro_galsim.model import load_pretrained
    count = len(GalaxyDatabase.load(DEMO_DATABASE, encoder_id=load_pretrained().identity))
    assert f'{count} galaxies' in out


@needs_demo
def test_query_demo_by_position_excludes_the_galaxy_itself(capsys):
    assert main(['query', '180.4819 -1.0693', '--k', '5']) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    rows = [words for words in rows if len(words) > 3 and words[0] == '587722981740314629' and words[1].isdigit()]
    assert [int(words[1]) for words in rows] == [1, 2, 3, 4, 5]
    assert rows[0][2] != '587722981740314629'
    assert all(words[2].isdigit() and len(words[2]) == 18 for words in rows)   # SDSS objids


@needs_demo
def test_demo_writes_a_gallery_and_prints_neighbours(tmp_path, capsys):
    from PIL import Image
    output = tmp_path / 'tmp.png'
    assert main(['demo', '--output', str(output), '--k', '5', '--n', '30']) == 0
    out = capsys.readouterr().out
    with Image.open(output) as image:
        assert image.format == 'PNG'
        width, height = image.size
    assert 300 <= width <= 3000 and 100 <= height <= 3000
    hdf_rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].startswith('HDF-')]
    assert len(hdf_rows) == 5
    assert all(words[2].startswith('HDF-') and words[2] != words[0] for words in hdf_rows)


def test_evaluate_on_real_labelled_images_with_a_chosen_encoder(shared_data, tmp_path, capsys):
    """``evaluate --encoder`` scores the given weights: the shipped file named explicitly gives the
    default's table; weights that are not there are an error naming the file."""
    from astropy.table import Table
    labels = Table.read(shared_data / 'sdss_gz1_eggochi' / 'labels.csv', format='ascii.csv')
    picks = [np.flatnonzero(labels['similarity_group'] == c)[:6] for c in ('elliptical', 'spiral_edge_on')]
    subset = labels[np.concatenate(picks)]['path', 'similarity_group']
    subset['path'] = [str(shared_data / 'sdss_gz1_eggochi' / p) for p in subset['path']]
    subset.write(tmp_path / 'labels.csv', format='ascii.csv')
    weights = Path(str(resources.files('astro_galsim') / 'data' / 'encoder.pt'))

    assert main(['evaluate', str(tmp_path), '--k', '3']) == 0
    default = capsys.readouterr().out
    assert 'precision_at_k_elliptical' in default and 'precision_at_k_spiral_edge_on' in default
    assert main(['evaluate', str(tmp_path), '--k', '3', '--encoder', str(weights)]) == 0
    assert capsys.readouterr().out == default

    assert main(['evaluate', str(tmp_path), '--encoder', str(tmp_path / 'missing.pt')]) == 1
    assert 'missing.pt' in capsys.readouterr().err


def test_build_ctrl_c_says_where_it_stopped(build_source, tmp_path, monkeypatch, capsys):
    """Ctrl-C during a real build: one message with what is saved and the command that resumes, no traceback."""
    from astro_galsim import SimilaritySearch
    from astro_galsim import build as build_module
    folder, _ = build_source(4)
    original, calls = build_module.describe_partition, []

    def interrupted(*args, **kwargs):   # Ctrl-C while the second partition is described
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(build_module, 'describe_partition', interrupted)
    output = tmp_path / 'db.fits'
    assert main(['build', str(folder), '--output', str(output), '--partition-size', '2']) == 130
    err = capsys.readouterr().err
    said = [line for line in err.replace('\r', '\n').splitlines() if line.strip() and not line.startswith('building')]
    assert 'Traceback' not in err and len(said) == 1 and said[0].startswith('astro-galsim build: interrupted')
    assert f'interrupted: 2 galaxies saved in {output}, 1 finished partition(s)' in err
    assert f'astro-galsim build {folder} --output {output} --partition-size 2' in err
    monkeypatch.setattr(build_module, 'describe_partition', original)
    assert main(['build', str(folder), '--output', str(output), '--partition-size', '2']) == 0
    assert len(SimilaritySearch.load(output)) == 4


def test_build_executor_runs_local_processes_and_scheduler_is_a_deprecated_alias(shared_data, tmp_path, capsys):
    from astro_galsim import SimilaritySearch
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in sorted((shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'val').glob('*.jpg'))[:4]:
        (folder / path.name).symlink_to(path)
    assert main(['build', str(folder), '--output', str(tmp_path / 'a.fits'), '--executor', '2',
                 '--partition-size', '2']) == 0
    first = capsys.readouterr()
    assert 'deprecated' not in first.err and len(list((tmp_path / 'a.fits.shards').glob('part-*'))) == 2
    assert main(['build', str(folder), '--output', str(tmp_path / 'b.fits'), '--scheduler', '2',
                 '--chunk-size', '2']) == 0
    err = capsys.readouterr().err
    assert '--scheduler is deprecated: use --executor' in err and '--chunk-size is deprecated' in err
    a, b = SimilaritySearch.load(tmp_path / 'a.fits'), SimilaritySearch.load(tmp_path / 'b.fits')
    assert len(a) >= 3 and list(a.ids) == list(b.ids)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6)
