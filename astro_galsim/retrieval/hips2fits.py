# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CDS hips2fits: a colour HiPS resampled onto a TAN grid centred on a position.

`HiPSColour` serves any colour HiPS; ``source='hips2fits'`` is the SDSS9 colour HiPS.
"""
from astropy import config as _config
import astropy.units as u

from ._http import bounded_reads, call_with_retries
from .core import CutoutSource, RetrievalError, decode_jpeg, register_source, rgb_cutout, tan_wcs

__all__ = ['Conf', 'conf', 'HiPSColour']


class Conf(_config.ConfigNamespace):
    """Settings of ``source='hips2fits'``."""

    hips = _config.ConfigItem('CDS/P/SDSS9/color', 'The colour HiPS that source="hips2fits" reads.',
                              cfgtype='string')


conf = Conf()


class HiPSColour(CutoutSource):
    """A colour HiPS read through `astroquery.hips2fits` as a JPEG on the cutout's own grid.

    A subclass sets ``name``, ``bands``, ``pixel_scale``, ``survey`` (for messages),
    ``meta`` (identifiers added to each cutout) and a ``conf`` with a ``hips`` item.
    """

    survey = 'SDSS'
    # a linear grey stretch between percentiles: not SkyServer's rendering (astro_galsim.surveys)
    meta = {'data_release': 9, 'survey': 'unknown'}

    def cache_key(self, options):
        return [self.conf.hips]

    def fetch_one(self, coord, shape, scale, options):
        from astroquery.hips2fits import hips2fitsClass
        client = bounded_reads(hips2fitsClass())
        hips = self.conf.hips
        wcs = tan_wcs(coord, shape, scale)
        what = f'hips2fits {hips} at {coord.to_string("decimal")}'

        def request(timeout):
            client.timeout = timeout
            return client.query_with_wcs_async(hips=hips, wcs=wcs, format='jpg', min_cut=0.5,
                                               max_cut=99.5, stretch='linear', cmap='Greys_r')
        response = call_with_retries(request, what)
        if getattr(response, 'status_code', 200) != 200:
            raise RetrievalError(f'{what}: the service answered HTTP {response.status_code}: '
                                 f'{_error_detail(response)}')
        meta = dict(self.meta, source=self.name, hips=hips)
        return rgb_cutout(decode_jpeg(response.content, what), coord, shape, scale, what,
                          bands=self.bands, survey=self.survey, meta=meta)


def _error_detail(response):
    """hips2fits explains an error in JSON ``{"title": ..., "description": ...}``."""
    try:
        content = response.json()
        return ': '.join(str(content[k]) for k in ('title', 'description') if k in content)
    except Exception:
        return repr(response.content[:200])


class SDSS9Colour(HiPSColour):
    """``source='hips2fits'``: the CDS SDSS9 colour HiPS (g, r, i composite)."""

    name = 'hips2fits'
    bands = ('i', 'r', 'g')
    pixel_scale = 0.396 * u.arcsec
    conf = conf


register_source(SDSS9Colour())
