# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""DESI Legacy Imaging Surveys DR10: g, r, z colour cutouts through the CDS hips2fits service.

The whole survey in one file: its settings, its source class and its registration.
"""
from astropy import config as _config
import astropy.units as u

from .core import register_source
from .hips2fits import HiPSColour

__all__ = ['Conf', 'conf', 'LegacySurveyDR10']


class Conf(_config.ConfigNamespace):
    """Settings of ``source='legacysurvey'``."""

    hips = _config.ConfigItem(
        'CDS/P/DESI-Legacy-Surveys/DR10/color',
        'The colour HiPS of the DESI Legacy Surveys (g, r, z composite) that source="legacysurvey" reads.',
        cfgtype='string')


conf = Conf()


class LegacySurveyDR10(HiPSColour):
    """``source='legacysurvey'``: DESI Legacy Surveys DR10 colour cutouts (z, r, g as R, G, B).

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from astro_galsim.retrieval import get_cutout
    >>> galaxy = SkyCoord(185.4288, 15.8225, unit='deg')
    >>> cutout = get_cutout(galaxy, size=64, source='legacysurvey')  # doctest: +REMOTE_DATA
    >>> cutout.meta['bands'], cutout.meta['pixel_scale']  # doctest: +REMOTE_DATA
    (['z', 'r', 'g'], <Quantity 0.262 arcsec>)
    """

    name = 'legacysurvey'
    bands = ('z', 'r', 'g')
    pixel_scale = 0.262 * u.arcsec
    conf = conf
    survey = 'Legacy Surveys DR10'
    meta = {'data_release': 10, 'survey': 'legacysurvey'}


register_source(LegacySurveyDR10())
