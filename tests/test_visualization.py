"""Tests of astro_galsim.visualization: the figures draw what they claim to draw.

A small real database is built from the Hubble Deep Field cutouts (scikit-image ships
the image), so that the tests do not depend on the shipped demo database.
"""
import numpy as np
import pytest
from astropy import units as u
from astropy.table import QTable
from matplotlib.image import AxesImage
from matplotlib.offsetbox import AnnotationBbox

from astro_galsim import SimilaritySearch
from astro_galsim.demo import hubble_deep_field_cutouts
from astro_galsim.pipeline import prepare
from astro_galsim.preprocessing import to_colour
from astro_galsim.segmentation import measure_galaxy, normalise_galaxy, segmentation_map
from astro_galsim.visualization import (gallery, latent_map, project_latent, reconstruction_figure,
                                        result_gallery, save_figure, segmentation_figure, thumbnail)


@pytest.fixture(scope='module')
def hdf():
    """(search, images by id) for the accepted galaxies of 60 Hubble Deep Field cutouts."""
    cutouts = hubble_deep_field_cutouts(n=60)
    # HST's 0.04" pixels resolve the field's galaxies at fewer pixels than SDSS's: the demo's limit
    search = SimilaritySearch(selection={'min_r50': 8 * u.pix})
    search.add(cutouts)
    assert len(search) >= 10, 'the Hubble Deep Field should give at least 10 accepted galaxies'
    return search, {c.meta['objid']: c for c in cutouts}


def _images(ax):
    return [a for a in ax.get_children() if isinstance(a, AxesImage)]


def _image_data(ax):
    (image,) = _images(ax)
    return np.asarray(image.get_array())


def test_thumbnail_of_colour_cutout_is_its_pixels(hdf):
    _, by_id = hdf
    cutout = by_id['HDF-1']
    rgb = thumbnail(cutout)
    assert rgb.shape == cutout.data.shape[1:] + (3,)
    np.testing.assert_allclose(rgb, np.moveaxis(cutout.data, 0, -1) / 255, atol=1e-6)


def test_thumbnail_stretch_applies_to_every_plane():
    from astropy.visualization import SqrtStretch
    image = np.full((3, 4, 4), 0.25)
    np.testing.assert_allclose(thumbnail(image, SqrtStretch()), 0.5)


def test_thumbnail_of_calibrated_cube_uses_the_encoder_colours():
    flux = np.zeros((3, 9, 9), dtype=np.float32)
    flux[:, 4, 4] = [3.0, 2.0, 1.0]
    from astropy.nddata import NDData
    image = NDData(flux, meta={'bands': ('i', 'r', 'g')})
    np.testing.assert_allclose(thumbnail(image), np.moveaxis(to_colour(image), 0, -1))


def test_gallery_panels_titles_and_pixels(hdf):
    search, by_id = hdf
    query = search.ids[0]
    result = search.query(query, k=5)
    ids = list(result['id'])
    fig = gallery(by_id[query], [by_id[i] for i in ids], ids=ids, distances=result['distance'],
                  query_label=query, ncols=4)
    assert len(fig.axes) == 6      # spare grid cells are removed
    assert all(len(_images(ax)) == 1 for ax in fig.axes)
    assert fig.axes[0].get_title() == query
    for ax, name, distance in zip(fig.axes[1:], ids, result['distance']):
        assert ax.get_title() == f'{name}\nd = {distance:.3f}'
        np.testing.assert_allclose(_image_data(ax), thumbnail(by_id[name]))
    np.testing.assert_allclose(_image_data(fig.axes[0]), thumbnail(by_id[query]))
    assert query not in ids


def test_gallery_missing_image_and_label_mismatch():
    image = np.full((3, 8, 8), 0.5)
    fig = gallery(image, [image, None], labels=['x', 'y'])
    assert [len(_images(ax)) for ax in fig.axes] == [1, 1, 0]
    assert 'no image' in [t.get_text() for t in fig.axes[2].texts]
    with pytest.raises(ValueError, match='labels has 1 entries for 2 neighbours'):
        gallery(image, [image, image], labels=['x'])


def test_result_gallery_rows_follow_the_result_table(hdf):
    search, by_id = hdf
    queries = list(search.ids[:3])
    result = search.query(queries, k=4)
    fig = result_gallery(result, by_id)
    assert len(fig.axes) == 3 * 5
    for row, query in enumerate(queries):
        axes = fig.axes[row * 5:(row + 1) * 5]
        assert axes[0].get_title() == query
        np.testing.assert_allclose(_image_data(axes[0]), thumbnail(by_id[query]))
        part = result[result['query_id'] == query]
        for ax, rank in zip(axes[1:], (1, 2, 3, 4)):
            (match,) = part[part['rank'] == rank]
            assert ax.get_title() == f'{match["id"]}\nd = {match["distance"]:.3f}'
            np.testing.assert_allclose(_image_data(ax), thumbnail(by_id[str(match['id'])]))


def test_result_gallery_callable_query_images_and_missing_ids(hdf):
    search, by_id = hdf
    result = search.query(by_id[search.ids[1]], k=3)      # a query by image: its id is the objid
    label = str(result['query_id'][0])
    asked = []

    def lookup(name):
        asked.append(name)
        return None if name == str(result['id'][2]) else by_id.get(name)

    fig = result_gallery(result, lookup, query_images={label: by_id[search.ids[1]]})
    assert [len(_images(ax)) for ax in fig.axes] == [1, 1, 1, 0]
    assert fig.axes[3].get_title().startswith(str(result['id'][2]))
    assert set(result['id'].astype(str)) <= set(asked)


def test_result_gallery_needs_a_result_table():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['distance'\]"):
        result_gallery(QTable({'query': ['a'], 'rank': [1], 'id': ['b']}), {})
    with pytest.raises(TypeError, match='dict or a callable'):
        result_gallery(QTable({'query': ['a'], 'rank': [1], 'id': ['b'], 'distance': [0.1]}), [1, 2])


def test_segmentation_figure_shows_the_measurement(hdf):
    _, by_id = hdf
    images = [by_id['HDF-1'], by_id['HDF-2']]
    fig = segmentation_figure(images)
    assert len(fig.axes) == 8
    for row, image in enumerate(images):
        axes = fig.axes[4 * row:4 * row + 4]
        rgb = to_colour(image)
        m = measure_galaxy(rgb)
        labels = segmentation_map(m, rgb.shape[1:])
        np.testing.assert_allclose(_image_data(axes[0]), np.moveaxis(rgb, 0, -1))
        np.testing.assert_array_equal(_image_data(axes[1]), labels)
        np.testing.assert_allclose(_image_data(axes[2]), np.moveaxis(np.where(labels == 1, rgb, 0), 0, -1))
        np.testing.assert_allclose(_image_data(axes[3]), np.moveaxis(normalise_galaxy(rgb, m), 0, -1))
        assert axes[0].get_title().startswith(image.meta['objid'])
        assert f'r50 {m["r50"]:.1f} px' in axes[0].get_title()
        # the centroid marker sits on the measured centre
        (marker,) = axes[0].get_lines()
        np.testing.assert_allclose(marker.get_xydata()[0], [m['x_centroid'], m['y_centroid']])


def test_segmentation_figure_without_a_galaxy():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.1, 0.01, (3, 64, 64)).clip(0, 1)
    fig = segmentation_figure(noise, titles=['noise'])
    assert 'no central galaxy found' in fig.axes[0].get_title()
    assert [len(_images(ax)) for ax in fig.axes] == [1, 0, 0, 0]


def test_segmentation_figure_on_real_fits_with_a_wcs_target(shared_data):
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astro_galsim.io import read_image
    path = shared_data / 'sdss_fits_cutouts_pawlikmorph' / 'cutouts' / 'sdsscutout_148.93658+0.8608237_rband.fits'
    target = SkyCoord(148.93658 * u.deg, 0.8608237 * u.deg)
    image = read_image(path)
    fig = segmentation_figure(image, target)
    rgb = to_colour(image)
    position = tuple(float(v) for v in image.wcs.world_to_pixel(target))
    m = measure_galaxy(rgb, position)
    assert m['found']
    np.testing.assert_array_equal(_image_data(fig.axes[1]), segmentation_map(m, rgb.shape[1:]))
    assert _images(fig.axes[0])[0].origin == 'lower'      # FITS are shown with north up, as stored


def test_project_latent_pca_is_the_principal_plane():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    coords, explained = project_latent(x)
    eigenvalues = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    np.testing.assert_allclose(coords.var(axis=0, ddof=1), eigenvalues[:2], rtol=1e-8)
    np.testing.assert_allclose(explained, eigenvalues[:2] / eigenvalues.sum(), rtol=1e-8)
    np.testing.assert_allclose(coords.mean(axis=0), 0, atol=1e-9)
    # deterministic, whatever the row order
    again, _ = project_latent(x[::-1])
    np.testing.assert_allclose(again[::-1], coords, atol=1e-8)


def test_project_latent_bad_input_and_missing_umap(monkeypatch):
    with pytest.raises(ValueError, match='NaN or infinity'):
        project_latent(np.array([[0.0, 1], [1, np.nan], [2, 2]]))
    with pytest.raises(ValueError, match='at least 3 rows'):
        project_latent(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="unknown projection method 'tsne'"):
        project_latent(np.zeros((5, 4)), 'tsne')
    import sys
    monkeypatch.setitem(sys.modules, 'umap', None)
    with pytest.raises(ImportError, match='optional package umap-learn'):
        project_latent(np.random.default_rng(0).normal(size=(10, 3)), 'umap')


def test_latent_map_points_thumbnails_and_colour(hdf):
    search, by_id = hdf
    fig = latent_map(search, thumbnails=by_id, n_thumbnails=5, colour='r50')
    ax = fig.axes[0]
    coords, _ = project_latent(search.vectors)
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), coords, rtol=1e-6)
    np.testing.assert_allclose(points.get_array(), search.table['r50'].value)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == 'r50'     # the colour bar
    boxes = [a for a in ax.artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 5
    for box in boxes:
        name = box.get_gid().split(':', 1)[1]
        row = list(search.ids).index(name)
        np.testing.assert_allclose(box.xybox, coords[row])
        np.testing.assert_allclose(box.offsetbox.get_data(), thumbnail(by_id[name]))
    np.testing.assert_array_equal(fig.latent_ids, search.ids)
    assert 'principal component 1' in ax.get_xlabel()


def test_latent_map_categorical_colour_and_array_input():
    rng = np.random.default_rng(2)
    vectors = np.concatenate([rng.normal(0, 1, (30, 8)), rng.normal(6, 1, (20, 8))])
    kind = np.array(['spiral'] * 30 + ['elliptical'] * 20)
    fig = latent_map(vectors, colour=kind, thumbnails=lambda i: np.full((3, 8, 8), 0.5), n_thumbnails=3)
    ax = fig.axes[0]
    coords, _ = project_latent(vectors)
    groups = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert set(groups) == {'spiral', 'elliptical'}
    np.testing.assert_allclose(groups['spiral'], coords[:30])
    np.testing.assert_allclose(groups['elliptical'], coords[30:])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['elliptical', 'spiral']
    assert len([a for a in ax.artists if isinstance(a, AnnotationBbox)]) == 3
    with pytest.raises(ValueError, match='colour has 2 values for 50 galaxies'):
        latent_map(vectors, colour=[1, 2])
    with pytest.raises(ValueError, match="colour='kind' is not a column"):
        latent_map(vectors, colour='kind')


def test_reconstruction_figure_shows_the_model_output(hdf):
    import torch
    search, by_id = hdf
    names = list(search.ids[:3])
    images = [by_id[i] for i in names]
    fig = reconstruction_figure(images, search.encoder)
    assert len(fig.axes) == 9
    arrays, _ = prepare(images, normalisation=search.encoder.normalisation)
    with torch.inference_mode():
        recon, _ = search.encoder.model(torch.from_numpy(arrays))
    recon = recon.numpy()
    for j, name in enumerate(names):
        top, middle, bottom = fig.axes[j], fig.axes[3 + j], fig.axes[6 + j]
        assert top.get_title() == name
        np.testing.assert_allclose(_image_data(top), np.moveaxis(arrays[j], 0, -1))
        np.testing.assert_allclose(_image_data(middle), np.moveaxis(recon[j], 0, -1), atol=1e-5)
        assert middle.get_title() == f'mse {np.mean((arrays[j] - recon[j]) ** 2):.4f}'
        np.testing.assert_allclose(_image_data(bottom), np.abs(arrays[j] - recon[j]).mean(axis=0), atol=1e-5)
    assert not search.encoder.model.training
    with pytest.raises(ValueError, match='prepared inputs have shape'):
        reconstruction_figure(np.zeros((2, 3, 32, 32), dtype=np.float32), search.encoder)


def test_save_figure_png_and_pdf(tmp_path):
    from PIL import Image
    fig = gallery(np.full((3, 16, 16), 0.5), [np.full((3, 16, 16), 0.2)] * 3, ids=['a', 'b', 'c'])
    png = save_figure(fig, tmp_path / 'g.png', dpi=50)
    with Image.open(png) as image:
        width, height = image.size
        assert image.format == 'PNG'
    assert (width, height) == (round(fig.get_figwidth() * 50), round(fig.get_figheight() * 50))
    pdf = save_figure(fig, tmp_path / 'g.pdf')
    assert pdf.read_bytes()[:5] == b'%PDF-'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['g.pdf', 'g.png']   # no temporary left
    with pytest.raises(ValueError, match='cannot tell the image format'):
        save_figure(fig, tmp_path / 'noext')


# ---------------------------------------------------------------- what a person sees (real FITS, real JPEGs)
@pytest.fixture(scope='module')
def fits_query(shared_data):
    """A real SDSS r-band FITS cutout (with WCS), the demo database and its explanation."""
    import warnings
    from astropy.nddata import CCDData
    frame = shared_data / 'sdss_fits_cutouts_pawlikmorph/cutouts/sdsscutout_149.00575+0.3580208_rband.fits'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ccd = CCDData.read(frame, unit='adu')
    demo = SimilaritySearch.load_demo()
    return demo, ccd, demo.explain(ccd, k=3)


def test_fits_panels_are_not_mirrored(fits_query):
    from astro_galsim.visualization import similarity_figure
    demo, ccd, why = fits_query
    # a FITS image's first row is its bottom: the thumbnail turns it over for imshow's origin='upper'
    np.testing.assert_allclose(thumbnail(ccd), np.moveaxis(to_colour(ccd), 0, -1)[::-1], atol=1e-6)
    fig = gallery(ccd, [], query_label='fits')
    assert _images(fig.axes[0])[0].origin == 'upper'
    np.testing.assert_allclose(_image_data(fig.axes[0]), thumbnail(ccd))
    fig = similarity_figure(why, {}, query_image=ccd, normalisation=demo.encoder.normalisation)
    assert _images(fig.axes[0])[0].origin == 'lower'


def test_similarity_figure_captions_fit_and_use_arcsec(fits_query, tmp_path):
    from astro_galsim.visualization import similarity_figure
    demo, ccd, why = fits_query
    fig = similarity_figure(why, {}, query_image=ccd, normalisation=demo.encoder.normalisation)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    save_figure(fig, tmp_path / 'why.png')
    canvas = FigureCanvasAgg(fig)
    canvas.draw()   # the constrained layout, as saved
    renderer = canvas.get_renderer()
    height = fig.bbox.height
    for ax in fig.axes:
        top = ax.title.get_window_extent(renderer).y1
        assert top <= height, f'caption {ax.title.get_text()!r} is clipped ({top:.0f} > {height:.0f} px)'
    assert 'r50 ' in fig.axes[1].get_title() and '"' in fig.axes[1].get_title()   # demo sizes in arcsec


def test_source_catalog_query_panel_shows_the_source(shared_data):
    from astropy.io import fits
    from astropy.wcs import WCS
    from photutils.segmentation import SourceCatalog, detect_sources
    field = shared_data / 'sdss_fits_cutouts_pawlikmorph/large_cutouts/sdsslcutout_149.91553+0.5410566_rband.fits.gz'
    with fits.open(field) as hdul:
        data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
    data -= np.median(data)
    sources = SourceCatalog(data, detect_sources(data, 5 * 1.4826 * np.median(np.abs(data)), n_pixels=20), wcs=wcs)
    demo = SimilaritySearch.load_demo()
    result = demo.query(sources, k=2, on_error='skip')
    fig = result_gallery(result, {}, query_images=sources, max_queries=2)
    assert len(_images(fig.axes[0])) == 1, 'the query panel of a source is blank'
