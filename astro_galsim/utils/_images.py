"""Galaxy image inputs: turning them into `~astropy.nddata.NDData`, their ids and positions."""
from pathlib import Path

import numpy as np
from astropy.nddata import NDData

from ..io import image_stem, read_image
from ._coords import sky_coords

__all__ = ['as_image', 'pixel_position', 'image_id', 'image_coords']


def as_image(image):
    """An NDData from an NDData, an image file path or an array."""
    if isinstance(image, NDData):
        return image
    if isinstance(image, (str, Path)):
        return read_image(image)
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


def image_coords(images):
    """Positions of images: from meta ra/dec, else the WCS at the image centre, else NaN."""
    ra, dec = [], []
    for im in images:
        position = (np.nan, np.nan)
        if isinstance(im, NDData):
            meta = im.meta or {}
            if 'ra' in meta and 'dec' in meta:
                position = (float(meta['ra']), float(meta['dec']))
            elif im.wcs is not None:
                ny, nx = np.shape(im.data)[-2:]
                sky = im.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
                position = (sky.icrs.ra.deg, sky.icrs.dec.deg)
        ra.append(position[0])
        dec.append(position[1])
    return sky_coords(ra, dec)
