"""Sizes in physical units, one result layout, and the inputs an astronomer meets first."""
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable, Table

from astro_galsim import SimilaritySearch
from astro_galsim.catalogue import WhereWarning, where_mask
from astro_galsim.search import DEMO_PIXEL_SCALE

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def demo():
    return SimilaritySearch.load_demo()


def _benchmark(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- pixel scale and arcsec sizes
def test_jpeg_pixel_scale_measured_on_real_pairs(shared_data, monkeypatch):
    """Two of the FITS/JPEG pairs give the documented 0.400"/px (the benchmark measures all 12)."""
    monkeypatch.chdir(ROOT)
    bench = _benchmark('jpeg_pixel_scale')
    monkeypatch.setattr(bench, 'DATA', shared_data)
    scales = [bench.jpeg_scale(*pair[2:])[0] for pair in list(bench.pairs('standard'))[:2]]
    np.testing.assert_allclose(scales, DEMO_PIXEL_SCALE.to_value(u.arcsec), atol=0.002)


def test_demo_sizes_in_arcsec(demo):
    table = demo.table
    measured = np.isfinite(table['r50'])
    assert measured.sum() > 7000
    for name in ('r50', 'r90', 'scale_radius'):
        np.testing.assert_allclose(table[f'{name}_arcsec'][measured].to_value(u.arcsec),
                                   0.4 * table[name][measured].value)
    assert demo.database.provenance['pixel_scale'] == 0.4 * u.arcsec
    # where filters on angular sizes now select galaxies
    found = demo.query('587722981740314629', k=5, where={'r50_arcsec': (5 * u.arcsec, 15 * u.arcsec)})
    assert len(found) == 5
    assert ((found['r50_arcsec'] >= 5 * u.arcsec) & (found['r50_arcsec'] <= 15 * u.arcsec)).all()
    why = demo.explain('587722981740314629', k=2)
    assert np.isfinite(why['r50_arcsec']).all()


def test_built_jpegs_get_arcsec_from_the_recorded_scale(shared_data, tmp_path):
    """A database of scale-less JPEGs whose provenance records the scale gives sizes in arcsec, saved and loaded."""
    folder = shared_data / 'sdss_galaxies_mikeedi'
    index = Table.read(folder / 'index.csv', format='ascii.csv')[:2]
    search = SimilaritySearch(provenance={'pixel_scale': '0.4'})   # text, as `--provenance pixel_scale=0.4`
    report = search.add([folder / p for p in index['path']], ids=[str(i) for i in index['objid']])
    assert report['accepted'].all()
    assert np.isnan(report['r50_arcsec']).all()   # the JPEG itself does not say
    np.testing.assert_allclose(search.table['r50_arcsec'].to_value(u.arcsec), 0.4 * search.table['r50'].value)
    search.save(tmp_path / 'db.fits')
    again = SimilaritySearch.load(tmp_path / 'db.fits', pixel_scale=1 * u.arcsec)   # the file's own scale wins
    np.testing.assert_allclose(again.table['r50_arcsec'], search.table['r50_arcsec'])
    with pytest.raises(ValueError, match='pixel_scale'):
        SimilaritySearch(provenance={'pixel_scale': 'large'})


def test_add_a_folder_means_its_images(shared_data, tmp_path):
    """add('folder') reads the folder as a build does: its index.csv names and places the images, else the files."""
    import shutil
    from astro_galsim.build import read_source
    src = shared_data / 'sdss_galaxies_mikeedi'
    index = Table.read(src / 'index.csv', format='ascii.csv')[:3]
    indexed, plain = tmp_path / 'indexed', tmp_path / 'plain'
    indexed.mkdir()
    plain.mkdir()
    for row in index:
        shutil.copy(src / row['path'], indexed / f'galaxy{row["objid"]}.jpg')
        shutil.copy(src / row['path'], plain / f'{row["objid"]}.jpg')
    index['path'] = [f'galaxy{objid}.jpg' for objid in index['objid']]
    index.write(indexed / 'index.csv', format='ascii.csv')

    search = SimilaritySearch()
    report = search.add(str(indexed))
    assert report['accepted'].all(), list(report['reason'])
    _, ids, coords = read_source(indexed)
    assert list(search.ids) == ids == [str(o) for o in index['objid']]
    np.testing.assert_allclose(search.database.coords.ra.deg, coords.ra.deg)
    by_files = SimilaritySearch()
    by_files.add([indexed / p for p in index['path']], ids=ids, coords=coords)
    np.testing.assert_allclose(search.vectors, by_files.vectors, atol=1e-6)

    folder_only = SimilaritySearch()
    report = folder_only.add(plain)   # no index: every image, named by its file
    assert report['accepted'].all() and sorted(folder_only.ids) == sorted(str(o) for o in index['objid'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images'):
        folder_only.add(tmp_path / 'empty')


# ---------------------------------------------------------------- where filters
def test_where_warns_on_hopeless_conditions(demo):
    table = QTable({'r50_arcsec': [np.nan, np.nan] * u.arcsec, 'g': [0.3, 0.5]})
    with pytest.warns(WhereWarning, match='NaN or masked for every galaxy'):
        assert not where_mask(table, {'r50_arcsec': (2 * u.arcsec, 5 * u.arcsec)}).any()
    with pytest.warns(WhereWarning, match='inverted'):
        where_mask(table, {'g': (0.6, 0.2)})
    with pytest.warns(WhereWarning, match='is NaN'):
        where_mask(table, {'g': (np.nan, 0.4)})
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        where_mask(table, {'g': (0.2, 0.4)})   # an ordinary range is silent
    # on a real database: a filter on a NaN column of the stored catalogue warns through query
    nan_sizes = SimilaritySearch(database=demo.database.__class__(
        demo.vectors[:50], Table(demo.table[:50]), encoder_id=demo.database.encoder_id))
    nan_sizes.table['r50_arcsec'] = np.nan * u.arcsec
    with pytest.warns(WhereWarning, match='pixel scale'):
        found = nan_sizes.query(str(demo.ids[0]), k=3, where={'r50_arcsec': (2 * u.arcsec, 5 * u.arcsec)})
    assert len(found) == 0


def test_where_list_means_one_of(demo):
    ids = [str(i) for i in demo.ids[10:13]]
    found = demo.query(str(demo.ids[0]), k=5, where={'id': ids})
    assert sorted(found['id']) == sorted(ids)
    n_stars = demo.query(str(demo.ids[0]), k=5, where={'n_stars': [0, 1]})
    assert set(np.asarray(n_stars['id'])) <= set(demo.ids[np.isin(demo.table['n_stars'], [0, 1])])
    assert len(n_stars) == 5
    sizes = QTable({'r50': [1.0, 2.0, 3.0] * u.pix})
    assert where_mask(sizes, {'r50': [2, 3] * u.pix}).tolist() == [False, True, True]
    assert where_mask(sizes, {'r50': [2 * u.pix, 3 * u.pix]}).tolist() == [False, True, True]


# ---------------------------------------------------------------- separations
def test_separations_in_a_unit_that_fits(demo):
    result = demo.query('587722981740314629', k=5)
    assert result['separation'].unit == u.deg   # neighbours across the sky, not 608665.17 arcsec
    shown = '\n'.join(result[['separation']].pformat())
    assert 'deg' in shown and 'arcsec' not in shown
    np.testing.assert_allclose(result['separation'].to_value(u.arcsec),
                               result['query_coord'].separation(result['coord']).arcsec)


# ---------------------------------------------------------------- input frames
@pytest.mark.parametrize('frame', ['fk5', 'fk4', 'galactic', 'ecliptic-list'])
def test_positions_in_any_frame(demo, frame):
    from astropy.coordinates import SkyCoord
    icrs = SkyCoord(180.481875, -1.06925, unit='deg')
    target = [icrs.transform_to('fk5').transform_to('geocentricmeanecliptic')] if frame == 'ecliptic-list' \
        else icrs.transform_to(frame)
    result = demo.query(target, k=2)
    assert list(result['query_id']) == ['587722981740314629'] * 2
    assert result['query_coord'][0].separation(icrs) < 0.01 * u.arcsec
    table = Table({'id': ['a'], 'coord': icrs.transform_to('fk5').reshape((1,))})
    assert str(demo.query(table, k=1)['query_coord'].frame.name) == 'icrs'


# ---------------------------------------------------------------- one result layout, exclude_self, k
def test_query_examples_returns_the_query_layout(demo):
    ids = ['587722981740314629', '587722981742084144']
    like = demo.query_examples(ids, k=4)
    plain = demo.query(ids[0], k=4)
    assert like.colnames == plain.colnames
    assert type(like) is type(plain)
    assert set(like['query_id']) == {'examples'} and like['rank'].tolist() == [1, 2, 3, 4]
    assert not set(ids) & set(like['id'])
    assert like.meta['targets'] == {'query_id': ['examples'], 'status': ['ok'], 'reason': ['']}
    assert like['r50_arcsec'].unit == u.arcsec
    # an example given by position (within match_radius of a stored galaxy) is left out too
    by_position = demo.query_examples([demo.database.coords[0], ids[1]], k=50)
    assert ids[0] not in list(by_position['id'])


def test_exclude_self_for_an_image_at_a_stored_position(shared_data):
    """A real FITS cutout of a galaxy of the demo database: the stored galaxy at its position is left out."""
    from astro_galsim import read_image
    pairs = Table.read(shared_data / 'sdss_fits_cutouts_pawlikmorph/same_galaxy_in_mikeedi.csv', format='ascii.csv')
    row = pairs[pairs['kind'] == 'standard'][5]
    demo = SimilaritySearch.load_demo()
    image = read_image(shared_data / 'sdss_fits_cutouts_pawlikmorph' / row['fits_path'])
    kept = demo.query(image, k=100, exclude_self=False)
    assert str(row['objid']) in list(kept['id']), 'the FITS image should find its own JPEG among 100'
    result = demo.query(image, k=100)
    assert str(row['objid']) not in list(result['id'])


def test_k_larger_than_the_database_warns(demo):
    small = SimilaritySearch(database=demo.database.__class__(
        demo.vectors[:5], Table(demo.table[:5]), encoder_id=demo.database.encoder_id))
    with pytest.warns(UserWarning, match='holds only 5 galaxies'):
        result = small.query(str(small.ids[0]), k=10)
    assert len(result) == 4
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        small.query(str(small.ids[0]), k=4)


# ---------------------------------------------------------------- writing results
@pytest.mark.parametrize('name, fmt', [('x.vot', 'votable'), ('x.fits', 'fits'), ('x.csv', 'ascii.csv'),
                                       ('x.ecsv', 'ascii.ecsv'), ('x.vot', None), ('x.html', 'html')])
def test_result_write_any_format(demo, tmp_path, name, fmt):
    result = demo.query(['587722981740314629', '587722981742084144'], k=3)
    path = tmp_path / name
    result.write(path, **({} if fmt is None else {'format': fmt}))
    back = QTable.read(path, **({} if fmt is None else {'format': fmt}))
    assert [str(i) for i in back['id']] == list(result['id'])
    if fmt == 'ascii.ecsv':
        assert back.meta['targets'] == result.meta['targets']
        assert (back['query_coord'].separation(result['query_coord']) < 1e-6 * u.arcsec).all()
    else:
        np.testing.assert_allclose(np.asarray(back['query_ra'], float), result['query_coord'].ra.deg)
    with pytest.raises(OSError):
        result.write(path, **({} if fmt is None else {'format': fmt}))   # astropy's own overwrite rule


def test_cli_output_refuses_to_overwrite(tmp_path, capsys):
    from astro_galsim.cli import main
    output = tmp_path / 'n.ecsv'
    output.write_text('precious')
    assert main(['query', '587722981740314629', '--k', '3', '--output', str(output)]) == 1
    assert '--overwrite' in capsys.readouterr().err and output.read_text() == 'precious'
    assert main(['query', '587722981740314629', '--k', '3', '--output', str(output), '--overwrite']) == 0
    written = QTable.read(output)
    expected = SimilaritySearch.load_demo().query('587722981740314629', k=3)
    assert written.colnames == expected.colnames   # the file has the columns query returns


# ---------------------------------------------------------------- joining back
def test_source_catalog_results_join_on_the_label(demo, shared_data):
    from astropy.io import fits
    from astropy.table import join
    from astropy.wcs import WCS
    from photutils.segmentation import SourceCatalog, detect_sources
    path = sorted((shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'large_cutouts').glob('*.fits.gz'))[3]
    with fits.open(path) as hdul:
        data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
    data -= np.median(data)
    catalog = SourceCatalog(data, detect_sources(data, 5 * 1.4826 * np.median(np.abs(data)), n_pixels=20), wcs=wcs)
    result = demo.query(catalog, k=2, on_error='skip')
    assert result['query_id'].dtype.kind == 'i'
    joined = join(catalog.to_table(columns=['label', 'area']), result, keys_left='label', keys_right='query_id')
    assert len(joined) == len(result) and set(joined['label']) == set(result['query_id'])
    # a catalogue with its own id and ra/dec joins with table_names, not id_1/id_2
    table = Table({'id': ['a', 'b'], 'ra': [180.481875, 184.535625], 'dec': [-1.06925, -1.0641111111111112]})
    matches = demo.query(table, k=2)
    both = join(table, matches, keys_left='id', keys_right='query_id', table_names=['cat', 'match'])
    assert {'id_cat', 'id_match', 'query_ra', 'ra'} <= set(both.colnames) and len(both) == 4


# ---------------------------------------------------------------- clustering on the front
def test_cluster_on_the_front_groups_every_galaxy(demo):
    groups = demo.cluster()
    assert list(groups['id']) == list(demo.ids)
    assert (groups['cluster'] >= 0).all()
    # HDBSCAN itself calls most of this continuum noise; those were given their nearest neighbour's group
    plain = demo.database.cluster()
    assert np.array_equal(groups['core'], plain >= 0)
    assert np.array_equal(groups['cluster'][groups['core']], plain[plain >= 0])
    left = demo.cluster(assign_noise=False)
    assert np.array_equal(left['cluster'], plain)
    few = demo.cluster(method='agglomerative', n_clusters=8)
    assert sorted(set(few['cluster'])) == list(range(8)) and few['core'].all()
