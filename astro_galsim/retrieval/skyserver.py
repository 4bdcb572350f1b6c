# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""SkyServer: the SDSS ``ImgCutout`` colour JPEG (g, r, i composite) centred on a position."""
import astropy.units as u

from ._http import check_status, get as http_get
from .core import CutoutSource, decode_jpeg, register_source, rgb_cutout
from .sdss import BANDS, NATIVE_SCALE, conf, resolve_release

__all__ = ['SkyServerJPEG']


class SkyServerJPEG(CutoutSource):
    """``source='skyserver'``: the SkyServer colour JPEG of an SDSS data release.

    The service address is astroquery's ``astroquery.sdss.conf.skyserver_baseurl``; the
    data release is the ``data_release`` option (default ``sdss.conf.data_release``).
    """

    name = 'skyserver'
    bands = BANDS
    pixel_scale = NATIVE_SCALE
    conf = conf
    options = {'data_release': None}

    def resolve_options(self, **options):
        options = super().resolve_options(**options)
        return {'data_release': resolve_release(options['data_release'])}

    def fetch_one(self, coord, shape, scale, options):
        from astroquery.sdss import conf as sdss_conf
        dr = options['data_release']
        url = f'{sdss_conf.skyserver_baseurl}/dr{dr}/SkyServerWS/ImgCutout/getjpeg'
        params = {'ra': float(coord.ra.deg), 'dec': float(coord.dec.deg),
                  'scale': float(scale.to_value(u.arcsec)), 'width': shape[1], 'height': shape[0]}
        what = f'SkyServer DR{dr} ImgCutout at {coord.to_string("decimal")}'
        response = http_get(url, what, params=params)
        check_status(response, what)
        meta = {'data_release': dr, 'source': self.name, 'survey': 'sdss'}
        return rgb_cutout(decode_jpeg(response.content, what), coord, shape, scale, what,
                          bands=self.bands, survey='SDSS', meta=meta)


register_source(SkyServerJPEG())
