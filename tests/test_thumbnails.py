"""SDSS thumbnails of results: fetched from a local server answering as SkyServer does, cached, offline errors."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from astro_galsim import SimilaritySearch, conf, read_image
from astro_galsim.retrieval import RetrievalError
from astro_galsim.thumbnails import get_thumbnail, result_thumbnails, thumbnail_gallery


@pytest.fixture
def skyserver(shared_data, tmp_path):
    """A SkyServer ImgCutout stand-in on 127.0.0.1 answering with a real SDSS colour JPEG."""
    from astroquery.sdss import conf as sdss_conf
    jpeg = next((shared_data / 'sdss_galaxies_mikeedi' / 'images' / 'train').glob('*.jpg'))
    asked = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            asked.append((url.path, parse_qs(url.query)))
            body = jpeg.read_bytes()
            self.send_response(200 if url.path.endswith('/ImgCutout/getjpeg') else 404)
            self.send_header('Content-Type', 'image/jpeg')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with sdss_conf.set_temp('skyserver_baseurl', f'http://127.0.0.1:{server.server_port}'), \
            conf.set_temp('cache_dir', str(tmp_path)):
        yield jpeg, asked
    server.shutdown()
    server.server_close()


def test_thumbnail_is_fetched_once_then_cached(skyserver):
    jpeg, asked = skyserver
    position = SkyCoord(180.4819, -1.0693, unit='deg')
    image = get_thumbnail(position, size=96)
    np.testing.assert_array_equal(image.data, read_image(jpeg).data)     # the JPEG, read as read_image does
    (path, params), = asked
    assert path == f'/dr{conf.data_release}/SkyServerWS/ImgCutout/getjpeg'
    assert float(params['ra'][0]) == pytest.approx(180.4819) and params['width'] == ['96']
    again = get_thumbnail(position, size=96)
    assert len(asked) == 1 and np.array_equal(again.data, image.data)


def test_result_gallery_of_thumbnails_with_positions(skyserver):
    _, asked = skyserver
    demo = SimilaritySearch.load_demo()
    placed = np.flatnonzero(np.isfinite(demo.database.coords.ra.deg))[:2]
    result = demo.query(demo.database.coords[placed], k=3)
    thumbnails = result_thumbnails(result)
    known = {str(i) for i, c in zip(result['id'], result['coord']) if np.isfinite(c.ra.deg)}
    assert known | set(result['query_id']) == set(thumbnails)
    fig = thumbnail_gallery(result)
    assert len(fig.axes) == 2 * 4
    first = result[0]
    title = fig.axes[1].get_title()
    if np.isfinite(first['coord'].ra.deg):
        assert f'{first["coord"].ra.deg:.4f} {first["coord"].dec.deg:+.4f}' in title


def test_offline_says_so(tmp_path):
    from astroquery.sdss import conf as sdss_conf
    # a port nobody listens on: the connection is refused, as it is without a network
    with sdss_conf.set_temp('skyserver_baseurl', 'http://127.0.0.1:9'), conf.set_temp('cache_dir', str(tmp_path)):
        with pytest.raises(RetrievalError, match='cannot reach SkyServer.*need the network'):
            get_thumbnail(SkyCoord(10, 1, unit='deg'))
    assert not list(tmp_path.rglob('*.jpg'))
    with pytest.raises(RetrievalError, match='no position'):
        get_thumbnail(SkyCoord(np.nan, np.nan, unit='deg'))
