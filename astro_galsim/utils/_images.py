"""Galaxy image inputs: turning them into `~astropy.nddata.NDData`, their ids and positions."""
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D, NDData

from ..io import FITS_SUFFIXES, fits_geometry, fits_meta, image_from_hdu, image_stem, read_fits_near
from ._checks import wcs_problem
from ._coords import known_positions, sky_coords

__all__ = ['image_items', 'as_image', 'pixel_position', 'image_id', 'image_coords', 'image_positions', 'wcs_and_shape']


_HDU_TYPES = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


def image_items(item, name='input'):
    """Astropy image objects as NDData; other items unchanged.

    A `~astropy.nddata.Cutout2D` keeps its WCS; a FITS HDU or `~astropy.io.fits.HDUList`
    (its first HDU with a 2-D or 3-D image) gives its data, celestial WCS and header; an
    NDData whose ``meta`` is a FITS header (`~astropy.nddata.CCDData.read`) gets the
    ``meta`` of `~astro_galsim.read_image`, so it is prepared as the file would be.

    Raises
    ------
    ValueError
        For an HDU or HDUList without image data, naming ``name``.
    """
    if isinstance(item, NDData) and isinstance(item.meta, fits.Header):
        return NDData(item.data, wcs=item.wcs, unit=item.unit, mask=item.mask, meta=fits_meta(item.meta))
    if isinstance(item, Cutout2D):
        return NDData(item.data, wcs=item.wcs, meta={'kind': 'fits'})
    if isinstance(item, fits.HDUList):
        hdu = next((h for h in item if isinstance(h, _HDU_TYPES) and h.data is not None
                    and h.data.ndim in (2, 3)), None)
        if hdu is None:
            raise ValueError(f'{name}: the HDUList holds no 2-D or 3-D image HDU '
                             f'(HDUs: {[type(h).__name__ for h in item]}); give the HDU with the image')
        return image_from_hdu(hdu)
    if isinstance(item, _HDU_TYPES):
        if item.data is None or item.data.ndim not in (2, 3):
            raise ValueError(f'{name}: the {type(item).__name__} holds no 2-D or 3-D image '
                             f'(shape {None if item.data is None else item.data.shape}); give an HDU with one')
        return image_from_hdu(item)
    return item


def as_image(image, target=None):
    """An NDData from an NDData, an image file path or an array.

    A FITS file larger than ``conf.max_image_pixels`` is read as a section around
    ``target`` (a SkyCoord) where one is given (`~astro_galsim.io.read_fits_near`).
    """
    if isinstance(image, NDData):
        return image
    if isinstance(image, (str, Path)):
        return read_fits_near(image, target)
    return NDData(np.asarray(image))


def pixel_position(image, target):
    """Pixel (x, y) of a SkyCoord target through the image WCS, or None for the centre."""
    if target is None or image.wcs is None:
        return None
    x, y = image.wcs.world_to_pixel(target)
    return float(x), float(y)


def image_id(item, number):
    """Default id of an image input: its SDSS objid, else its file name stem, else ``'img<number>'``."""
    if isinstance(item, NDData):
        meta = item.meta or {}
        if 'objid' in meta:
            return str(meta['objid'])
        if 'path' in meta:
            return image_stem(meta['path'])
    if isinstance(item, (str, Path)):
        return image_stem(item)
    return f'img{number}'


def wcs_and_shape(item):
    """Celestial WCS and data shape of an NDData or FITS file (None, None without a WCS).

    A FITS file's WCS comes from its header alone (no pixel read). A file that cannot be
    read gives (None, None) here; preparing it reports why.
    """
    if isinstance(item, (str, Path)) and str(item).lower().endswith(FITS_SUFFIXES):
        if not Path(item).is_file():   # missing, or a FIFO that would block: reading it says why
            return None, None
        try:
            return fits_geometry(item)
        except (OSError, ValueError):
            return None, None
    if isinstance(item, NDData) and item.wcs is not None and wcs_problem(item.wcs) is None:
        return item.wcs, np.shape(item.data)   # an unusable WCS places nothing (preparing rejects it)
    return None, None


def image_coords(images, geometry=None):
    """Positions of images: from meta ra/dec, else the WCS at the image centre, else NaN.

    The ``RA``/``DEC`` cards of a FITS header in ``meta`` (`~astropy.nddata.CCDData.read`
    puts the header there) are the telescope pointing, not the galaxy: never used.

    ``geometry`` is the `wcs_and_shape` of each image, when already known.
    """
    geometry = [wcs_and_shape(item) for item in images] if geometry is None else geometry
    ra, dec = [], []
    for im, (wcs, shape) in zip(images, geometry):
        position = (np.nan, np.nan)
        meta = (im.meta or {}) if isinstance(im, NDData) else {}
        if isinstance(meta, fits.Header):  # RA/DEC cards of instrument headers are the telescope pointing
            meta = {}
        if 'ra' in meta and 'dec' in meta:
            position = (float(meta['ra']), float(meta['dec']))
        elif wcs is not None:
            ny, nx = shape[-2:]
            sky = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
            position = (sky.icrs.ra.deg, sky.icrs.dec.deg)
        ra.append(position[0])
        dec.append(position[1])
    return sky_coords(ra, dec)


def image_positions(images, coords=None, geometry=None):
    """Positions of images: ``coords`` where given and known, else what the images say (`image_coords`)."""
    geometry = [wcs_and_shape(item) for item in images] if geometry is None else geometry
    if coords is None:
        return image_coords(images, geometry)
    coords = coords.reshape((1,)) if coords.isscalar else coords
    if len(coords) != len(images):
        raise ValueError(f'coords has {len(coords)} positions for {len(images)} images')
    unknown = np.flatnonzero(~known_positions(coords.icrs))
    if unknown.size:
        coords = coords.icrs.copy()
        coords[unknown] = image_coords([images[i] for i in unknown], [geometry[i] for i in unknown])
    return coords
