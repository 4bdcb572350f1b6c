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
    asked, answered, busy = [], [], []   # busy: answer HTTP 503 while it holds anything

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            import io
            from PIL import Image
            url = urlparse(self.path)
            query = parse_qs(url.query)
            asked.append((url.path, query))
            with Image.open(jpeg) as image:   # as SkyServer does: the size asked for
                answer = io.BytesIO()
                image.convert('RGB').resize((int(query['width'][0]), int(query['height'][0]))).save(
                    answer, format='JPEG')
            body = answer.getvalue()
            if busy:
                busy.pop()
                self.send_response(503)
            else:
                answered.append(body)
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
        yield answered, asked, busy
    server.shutdown()
    server.server_close()


def test_thumbnail_is_fetched_once_then_cached(skyserver, tmp_path):
    answered, asked, _ = skyserver
    position = SkyCoord(180.4819, -1.0693, unit='deg')
    image = get_thumbnail(position, size=96)
    jpeg = tmp_path / 'answer.jpg'
    jpeg.write_bytes(answered[0])
    np.testing.assert_array_equal(image.data, read_image(jpeg).data)     # the JPEG, read as read_image does
    (path, params), = asked
    assert path == f'/dr{conf.data_release}/SkyServerWS/ImgCutout/getjpeg'
    assert float(params['ra'][0]) == pytest.approx(180.4819) and params['width'] == ['96']
    again = get_thumbnail(position, size=96)
    assert len(asked) == 1 and np.array_equal(again.data, image.data)


def test_result_gallery_of_thumbnails_with_positions(skyserver):
    _, asked, _ = skyserver
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
        with pytest.raises(RetrievalError, match='no SkyServer thumbnail.*could not connect.*need the network'):
            get_thumbnail(SkyCoord(10, 1, unit='deg'))
    assert not list(tmp_path.rglob('*.jpg'))
    with pytest.raises(RetrievalError, match='no position'):
        get_thumbnail(SkyCoord(np.nan, np.nan, unit='deg'))


def test_thumbnail_is_retried_as_every_download(skyserver):
    # one SkyServer client: thumbnails go through retrieval, so a busy service is asked again
    answered, asked, busy = skyserver
    busy.append(True)
    with conf.set_temp('retry_backoff', 0.01):
        image = get_thumbnail(SkyCoord(150.0, 2.0, unit='deg'), size=64)
    assert len(asked) == 2 and len(answered) == 1 and image.data.shape == (3, 64, 64)
