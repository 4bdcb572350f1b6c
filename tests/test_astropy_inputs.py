"""Queries from the objects astropy analyses hold, and results built for joining and export (real data)."""
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import CCDData, Cutout2D
from astropy.table import Column, QTable, Table, join
from astropy.wcs import WCS

from astro_galsim import SimilaritySearch
from astro_galsim.cli import main
from astro_galsim.results import to_flat_table, write_result


@pytest.fixture(scope='module')
def demo():
    return SimilaritySearch.load_demo()


@pytest.fixture(scope='module')
def frame(shared_data):
    """A real SDSS fpC r-band cutout whose galaxy the default selection accepts, and its index row."""
    folder = shared_data / 'sdss_fits_cutouts_pawlikmorph'
    index = Table.read(folder / 'index.csv', format='ascii.csv')
    row = index[(index['kind'] == 'standard') & (index['wcs_consistent_with_name'] == 'True')][1]
    return folder / row['path'], SkyCoord(row['center_ra'], row['center_dec'], unit='deg')


def _ccd(path):
    with warnings.catch_warnings():  # the DR7 header's non-standard cards and its DN unit
        warnings.simplefilter('ignore')
        return CCDData.read(path, unit='adu')


def test_ccddata_position_comes_from_the_wcs_not_the_pointing(demo, frame):
    path, centre = frame
    ccd = _ccd(path)
    pointing = SkyCoord(ccd.header['RA'], ccd.header['DEC'], unit='deg')
    assert pointing.separation(centre) > 0.3 * u.deg       # the header's RA/DEC is the telescope's
    result = demo.query(ccd, k=3)
    assert list(result['rank']) == [1, 2, 3]
    assert result['query_coord'][0].separation(centre) < 1 * u.arcsec
    assert result.meta['targets']['status'][0] == 'ok'


def test_fits_objects_give_the_vector_of_the_file(demo, frame):
    path, centre = frame
    expected = demo.embed(path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # the DR7 header's non-standard cards
        with fits.open(path) as hdul:
            for item in (hdul, hdul[0]):
                np.testing.assert_allclose(demo.embed(item), expected, atol=1e-5)
                result = demo.query(item, k=2)
                assert result['query_coord'][0].separation(centre) < 1 * u.arcsec
    np.testing.assert_allclose(demo.embed(_ccd(path)), expected, atol=1e-5)


def test_cutout2d_keeps_its_wcs(demo, frame):
    path, centre = frame
    ccd = _ccd(path)
    x, y = ccd.wcs.world_to_pixel(centre)
    cutout = Cutout2D(ccd.data, (float(x) + 10, float(y)), 101, wcs=ccd.wcs)   # galaxy off the centre
    result = demo.query(cutout, k=2)
    where = cutout.wcs.pixel_to_world(50, 50)
    assert result['query_coord'][0].separation(where) < 0.5 * u.arcsec
    assert np.isfinite(demo.embed(cutout)).all()


def test_hdu_without_an_image_is_named():
    with pytest.raises(ValueError, match='query target: the HDUList holds no 2-D or 3-D image'):
        SimilaritySearch.load_demo().query(fits.HDUList([fits.PrimaryHDU()]))


def test_source_catalog_gives_one_query_per_source(demo, shared_data):
    from photutils.segmentation import SourceCatalog, detect_sources
    path = sorted((shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'large_cutouts').glob('*.fits.gz'))[3]
    with fits.open(path) as hdul:
        data = hdul[0].data.astype(float)
        wcs = WCS(hdul[0].header)
    data -= np.median(data)
    noise = 1.4826 * np.median(np.abs(data))
    segments = detect_sources(data, 5 * noise, n_pixels=20)
    catalog = SourceCatalog(data, segments, wcs=wcs)
    assert len(catalog) >= 2
    result = demo.query(catalog, k=2, on_error='skip')
    targets = result.meta['targets']
    assert list(targets['query_id']) == list(catalog.labels)   # photutils' labels, ints, join back
    assert result['query_id'].dtype.kind == 'i'
    assert 'ok' in targets['status']
    for label, position in zip(catalog.labels, catalog.sky_centroid):
        rows = result[result['query_id'] == label]
        if len(rows):
            assert rows['query_coord'][0].separation(position) < 0.01 * u.arcsec


def test_ids_as_ints_arrays_and_columns(demo):
    ids = list(demo.ids[[5, 1, 3]])
    expected = demo.query(ids, k=3)
    for target in ([int(i) for i in ids], np.array(ids).astype(np.int64), Column(ids, name='objid'),
                   np.array(ids)):
        result = demo.query(target, k=3)
        assert list(result['query_id']) == list(expected['query_id'])
        assert list(result['id']) == list(expected['id'])
    assert list(demo.query(np.int64(ids[0]), k=3)['id']) == list(expected['id'][:3])
    # an unknown id is named; with on_error='skip' the others keep their results
    with pytest.raises(KeyError, match=r"not in the database: \['12345'\]"):
        demo.query([int(ids[0]), 12345], k=3)
    skipped = demo.query([int(ids[0]), 12345], k=3, on_error='skip')
    assert list(skipped['query_id']) == [ids[0]] * 3
    assert list(skipped.meta['targets']['status']) == ['ok', 'failed']


def test_positions_as_text_and_2d_skycoord(demo):
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))[:4]
    grid = demo.database.coords[placed].reshape((2, 2))
    result = demo.query(grid, k=2)
    assert list(result['query_id']) == [str(demo.ids[i]) for i in placed for _ in range(2)]
    first = demo.database.coords[placed[0]]
    for text in (f'{first.ra.deg} {first.dec.deg}', first.to_string('hmsdms', sep=':', precision=3)):
        by_text = demo.query(text, k=2)
        assert list(by_text['id']) == list(result['id'][:2])
    # a separation where both positions are known, NaN where the neighbour has none
    known = np.isfinite(result['coord'].ra.deg)
    assert known.any() and np.all(result['separation'][known] > 0 * u.arcsec)
    assert np.all(np.isnan(result['separation'][~known]))
    np.testing.assert_allclose(result['separation'][known].to_value(u.arcsec),
                               result['query_coord'][known].separation(result['coord'][known]).arcsec)


def test_match_radius_decides_what_is_a_stored_galaxy(demo, monkeypatch):
    import astro_galsim.retrieval as retrieval
    monkeypatch.setattr(retrieval, 'get_cutouts',
                        lambda coords, **kw: [retrieval.RetrievalError('offline') for _ in coords])
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))[0]
    near = demo.database.coords[placed].directional_offset_by(0 * u.deg, 3 * u.arcsec)
    assert demo.query(near, k=1, match_radius=5 * u.arcsec)['query_id'][0] == demo.ids[placed]
    with pytest.raises(ValueError, match="offline.*on_error='skip'"):
        demo.query(near, k=1)


def test_catalogue_with_id_joins_back_in_its_order(demo, monkeypatch):
    import astro_galsim.retrieval as retrieval
    monkeypatch.setattr(retrieval, 'get_cutouts',
                        lambda coords, **kw: [retrieval.RetrievalError('outside the SDSS footprint')
                                              for _ in coords])
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))
    rows = placed[[40, 2, 17]]
    coords = demo.database.coords[rows]
    catalogue = Table({'id': np.array([30, 10, 99, 20], dtype=np.int64),
                       'RAJ2000': np.r_[coords.ra.deg[:2], 10.0, coords.ra.deg[2]] * u.deg,
                       'DEJ2000': np.r_[coords.dec.deg[:2], -80.0, coords.dec.deg[2]] * u.deg,
                       'r50': [1.0, 2.0, 3.0, 4.0] * u.arcsec, 'coord_flag': [1, 2, 3, 4]})
    result = demo.query(catalogue, k=2, on_error='skip')
    # no id_1/id_2: the catalogue's columns are query_<name>, its id is query_id with its own type
    assert {'id', 'query_id', 'r50', 'query_r50', 'query_raj2000', 'query_coord_flag'} <= set(
        c.lower() for c in result.colnames)
    assert result['query_id'].dtype == np.int64
    assert list(result['query_id']) == [30, 30, 10, 10, 20, 20]          # the catalogue's order
    targets = result.meta['targets']
    assert list(targets['status']) == ['ok', 'ok', 'failed', 'ok']
    assert 'outside the SDSS footprint' in targets['reason'][2]
    # every catalogue column came along, row by row
    for row in result:
        source = catalogue[catalogue['id'] == row['query_id']][0]
        assert row['query_r50'].to_value(u.arcsec) == source['r50'] and row['query_coord_flag'] == source['coord_flag']
    # and a table keyed by the objids, as astroquery gives them, joins on query_id
    photometry = Table({'objid': np.array([20, 30, 10], dtype=np.int64), 'petroMag_r': [17.1, 16.2, 15.3]})
    joined = join(result, photometry, keys_left='query_id', keys_right='objid', join_type='left')
    assert len(joined) == 6 and not any(name.endswith(('_1', '_2')) for name in joined.colnames)
    assert list(joined['petroMag_r'][joined['query_id'] == 20]) == [17.1, 17.1]
    with pytest.raises(ValueError, match=r"1 of 4 target\(s\) could not be described"):
        demo.query(catalogue, k=2)


def test_votable_and_fits_round_trip(demo, tmp_path):
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))[:2]
    result = demo.query(demo.database.coords[placed], k=3, measurements=True)
    assert 'gini' in result.colnames and 'r90' in result.colnames
    assert 'r90' not in demo.query(demo.database.coords[placed], k=3).colnames
    for name in ('x.vot', 'x.fits', 'x.csv'):
        write_result(result, tmp_path / name)
        back = QTable.read(tmp_path / name)
        assert list(back['id'].astype(str)) == list(result['id'])
        np.testing.assert_allclose(u.Quantity(back['ra'], u.deg).value, result['coord'].ra.deg, atol=1e-9)
        np.testing.assert_allclose(u.Quantity(back['query_dec'], u.deg).value, result['query_coord'].dec.deg,
                                   atol=1e-9)
        np.testing.assert_allclose(np.asarray(back['distance']), np.asarray(result['distance']), rtol=1e-6)
    with pytest.raises(FileExistsError):
        write_result(result, tmp_path / 'x.vot')
    write_result(result, tmp_path / 'x.ecsv')
    back = QTable.read(tmp_path / 'x.ecsv')
    assert isinstance(back['coord'], SkyCoord)
    assert back.meta['targets']['status'] == ['ok', 'ok']
    result.write(tmp_path / 'direct.ecsv')          # astropy's own writer keeps everything too
    assert QTable.read(tmp_path / 'direct.ecsv').meta['targets'] == result.meta['targets']
    assert to_flat_table(result).colnames[:6] == ['query_id', 'rank', 'id', 'distance', 'ra', 'dec']


def test_cli_batch_query_of_a_catalogue_to_votable(demo, tmp_path, capsys):
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))[:3]
    coords = demo.database.coords[placed]
    catalogue = Table({'name': ['a', 'b', 'c'], 'ra': coords.ra.deg, 'dec': coords.dec.deg})
    catalogue.write(tmp_path / 'targets.ecsv')
    output = tmp_path / 'x.vot'
    assert main(['query', str(tmp_path / 'targets.ecsv'), '--k', '4', '--where', 'ellipticity<0.5',
                 '--exclude-radius', '60', '--output', str(output)]) == 0
    table = QTable.read(output)
    assert list(table['query_name'].astype(str)) == [n for n in 'abc' for _ in range(4)]
    assert np.all(np.asarray(table['ellipticity']) < 0.5)
    found = SkyCoord(table['ra'], table['dec'], unit='deg')
    asked = SkyCoord(table['query_ra'], table['query_dec'], unit='deg')
    known = np.isfinite(found.ra.deg)
    assert np.all(found[known].separation(asked[known]) > 60 * u.arcsec)


def test_cli_version_info_and_help(capsys):
    import astro_galsim
    with pytest.raises(SystemExit):
        main(['--version'])
    assert astro_galsim.__version__ in capsys.readouterr().out
    assert main(['info']) == 0
    out = capsys.readouterr().out
    demo = SimilaritySearch.load_demo()
    placed = int(np.isfinite(demo.database.coords.ra.deg).sum())
    assert f'with a position: {placed} ({len(demo) - placed} known by id only)' in out and ' MB, written ' in out
    with pytest.raises(SystemExit):
        main(['query', '--help'])
    help_text = capsys.readouterr().out
    assert '(default: None)' not in help_text and help_text.count('(default: the shipped demo') == 1


def test_explain_puts_the_query_beside_its_neighbours(demo, frame):
    path, _ = frame
    why = demo.explain(_ccd(path), k=4)
    assert list(why['rank']) == [0, 1, 2, 3, 4] and why['distance'][0] == 0
    # the frame's pixel scale is known (0.396"/px): its sizes are in arcsec as well as pixels
    assert why['r50_arcsec'][0].to_value(u.arcsec) == pytest.approx(why['r50'][0].value * 0.396, rel=0.01)
    neighbours = demo.database.lookup_ids(list(why['id'][1:]))
    np.testing.assert_allclose(why['ellipticity'][1:], demo.table['ellipticity'][neighbours])
    pct = np.asarray(why['distance_percentile'][1:])
    assert np.all(np.diff(pct) >= 0) and np.all((pct >= 0) & (pct <= 100))
    # the scale: a stored galaxy's own nearest neighbour sits low among neighbour distances
    stored = demo.explain(demo.ids[0], k=1)
    assert stored['ellipticity'][0] == demo.table['ellipticity'][0]
    assert demo.distance_percentile(np.inf) == 100 and demo.distance_percentile(0) == 0


def test_similarity_figure_shows_normalised_inputs(demo, shared_data):
    from astro_galsim.visualization import similarity_figure
    folder = shared_data / 'sdss_galaxies_mikeedi' / 'images'
    why = demo.explain('587722981740314629', k=3)

    def image_of(objid):
        return next(iter(folder.glob(f'*/{objid}.jpg')), None)
    fig = similarity_figure(why, image_of, normalisation=demo.encoder.normalisation)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith('587722981740314629\nquery')
    assert all(f'd = {d:.3f}' in t for d, t in zip(why['distance'][1:], titles[1:]))
    shown = [ax.get_images() for ax in fig.axes]
    for ax_images, objid in zip(shown, why['id']):
        assert bool(ax_images) == (image_of(objid) is not None)
        if ax_images:   # the normalised input, not the JPEG: the encoder's square size
            assert ax_images[0].get_array().shape[:2] == (demo.encoder.normalisation.get('size', 64),) * 2


def test_notebook_views(demo):
    from astro_galsim.results import ResultTable
    text = demo._repr_html_()
    placed = int(np.isfinite(demo.database.coords.ra.deg).sum())
    assert f'{placed} ({len(demo) - placed} known by id only)' in text and '<table>' in text
    assert demo.database._repr_html_().startswith('<p><b>GalaxyDatabase</b></p>')
    result = demo.query(list(demo.ids[:11]), k=2, measurements=True)
    assert isinstance(result, ResultTable) and isinstance(result[:3], ResultTable)
    html = result._repr_html_()
    assert '<th>gini</th>' in html and '<th>r90</th>' not in html and 'also: ' in html and 'r90' in html
    assert '22 rows; the first 20 shown' in html


def test_source_catalog_of_integer_data(demo, frame):
    from photutils.segmentation import SourceCatalog, detect_sources
    path, centre = frame
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with fits.open(path) as hdul:
            data, wcs = hdul[0].data.astype(np.int32), WCS(hdul[0].header)
    data -= int(np.median(data))       # raw DN stay integers: cutouts at the edge are padded and masked
    catalog = SourceCatalog(data, detect_sources(data, 30, n_pixels=20), wcs=wcs)
    result = demo.query(catalog, k=2, on_error='skip')
    nearest = np.argmin(catalog.sky_centroid.separation(centre))
    status = dict(zip(result.meta['targets']['query_id'], result.meta['targets']['status']))
    assert status[catalog.labels[nearest]] == 'ok'
    # the same catalogue adds its sources, placed at their centroids
    search = SimilaritySearch(demo.encoder)
    report = search.add(catalog)
    assert list(report['id']) == [f'source{label}' for label in catalog.labels]
    row = search.database.lookup_ids(f'source{catalog.labels[nearest]}')
    assert search.database.coords[row].separation(catalog.sky_centroid[nearest]) < 0.01 * u.arcsec
