"""Checks shared by the modules, one rule and one message each: plain arguments, and image inputs
(is it a galaxy image at all, is its WCS usable)."""
import numbers
import re

import numpy as np

__all__ = ['positive_integer', 'image_content_problem', 'image_input_problem', 'wcs_problem', 'header_wcs_problem']


def positive_integer(value, name):
    """``value`` as an int if it is a whole number of at least 1, else a ValueError naming ``name``.

    Booleans are refused (``True`` is no count); numpy integers are taken.

    Examples
    --------
    >>> from astro_galsim.utils._checks import positive_integer
    >>> positive_integer(3, 'k')
    3
    >>> positive_integer(0, 'k')
    Traceback (most recent call last):
    ...
    ValueError: k must be a whole number of at least 1 (a positive integer); got 0.
    """
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)) \
            and value >= 1:
        return int(value)
    raise ValueError(f'{name} must be a whole number of at least 1 (a positive integer); got {value!r}.')


# more than this fraction of the pixels of every plane at one exact value, the background...
_BACKGROUND_FRACTION = 0.5
# ...and more than this fraction of the others at least half the range away from it: strokes of text
_STROKE_FRACTION = 0.1


def image_content_problem(data, mask=None):
    """Why ``data`` is not a galaxy image at all (blank, or text on a plain background), or None.

    A sky image has noise: no pixel value covers most of it. A blank image has one value
    everywhere; a page of text (such as the error page a web service sends in place of a
    cutout) has one exact background value over most of it and sharp strokes far from it.
    Measured on the real SkyServer error page (72% of its pixels at the background, 21% of
    the others in strokes) against 2,721 real SDSS JPEG and FITS cutouts, none flagged (at
    most 24% of the pixels at one extreme value).

    Parameters
    ----------
    data : `~numpy.ndarray`
        ``(ny, nx)`` or ``(planes, ny, nx)`` pixels.
    mask : `~numpy.ndarray` of bool, optional
        True where a pixel is not to be used.

    Returns
    -------
    str or None

    Examples
    --------
    >>> import numpy as np
    >>> from astro_galsim.utils._checks import image_content_problem
    >>> image_content_problem(np.zeros((64, 64)))[:42]
    'not a galaxy image: every pixel holds 0 (a'
    >>> image_content_problem(np.random.default_rng(0).normal(size=(64, 64))) is None
    True
    """
    data = np.asarray(data)
    planes = data.reshape((-1,) + data.shape[-2:]) if data.ndim >= 2 else data.reshape(1, 1, -1)
    usable = None if mask is None else ~np.broadcast_to(np.asarray(mask, bool), data.shape).reshape(planes.shape)
    constant, strokes = [], []
    for i, plane in enumerate(planes):
        values = plane if usable is None else plane[usable[i]]
        if values.dtype.kind in 'fc':
            values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        if values.dtype == np.uint8:   # a JPEG's or PNG's plane: each count read off its histogram
            histogram = np.bincount(values.ravel(), minlength=256)
            present = np.flatnonzero(histogram)
            lo, hi = present[0], present[-1]
            count_at = histogram.__getitem__
            count_far = lambda level, distance: histogram[np.abs(np.arange(256) - level) >= distance].sum()  # noqa: E731
        else:
            lo, hi = values.min(), values.max()
            count_at = lambda level: np.count_nonzero(values == level)  # noqa: E731
            count_far = lambda level, distance: np.count_nonzero(  # noqa: E731
                np.abs(values.astype(np.float64) - level) >= distance)
        if lo == hi:
            constant.append(lo)
            continue
        at_lo, at_hi = count_at(lo), count_at(hi)
        background = lo if at_lo >= at_hi else hi
        others = values.size - count_at(background)
        # (the background itself is never half the range away from itself)
        far = count_far(float(background), 0.5 * (float(hi) - float(lo)))
        strokes.append(max(at_lo, at_hi) > _BACKGROUND_FRACTION * values.size and far > _STROKE_FRACTION * others)
    if constant and not strokes:
        value = constant[0] if len(set(np.asarray(constant).tolist())) == 1 else 'one value per plane'
        return (f'not a galaxy image: every pixel holds {value:g} (a blank image), so no galaxy '
                'can be found in it' if not isinstance(value, str) else
                'not a galaxy image: each plane holds a single value (a blank image), so no galaxy '
                'can be found in it')
    if strokes and all(strokes):
        return ('not a galaxy image: most pixels hold one exact value and the rest are sharp strokes, as '
                'on a page of text (an error page a server sent instead of a cutout, or a text-only '
                'image); check where the image came from and fetch it again')
    return None


def wcs_problem(wcs, error=None):
    """What makes a WCS unusable for sky positions (not celestial, NaN, zero pixel scale), or None.

    ``error`` is the exception raised where the WCS was made, if it could not be.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> from astro_galsim.utils._checks import wcs_problem
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    >>> w.wcs.cdelt = [-1e-4, 1e-4]
    >>> wcs_problem(w) is None
    True
    >>> w.wcs.cdelt = [0, 1e-4]
    >>> wcs_problem(w)
    'has a zero or undefined pixel scale (CDELT or CD matrix of 0 or NaN)'
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS, SingularMatrixError
    zero_scale = 'has a zero or undefined pixel scale (CDELT or CD matrix of 0 or NaN)'
    if error is not None:
        return zero_scale if isinstance(error, SingularMatrixError) else \
            f'cannot be used ({type(error).__name__}: {" ".join(str(error).split())[:200]})'
    try:
        if isinstance(wcs, WCS):
            if not np.isfinite(wcs.wcs.crval).all():
                return f'has a non-finite reference position (CRVAL {list(wcs.wcs.crval)})'
            if not wcs.has_celestial:
                return (f'is not celestial (its axes are {list(wcs.wcs.ctype)}): it gives no RA/Dec')
            matrix = wcs.celestial.pixel_scale_matrix
            if not np.isfinite(matrix).all() or np.linalg.det(matrix) == 0:
                return zero_scale
            return None
        sky = wcs.pixel_to_world(0, 0)
    except SingularMatrixError:
        return zero_scale
    except Exception as exc:  # noqa: BLE001 - wcslib's errors are many; the reason is what counts
        return f'cannot be evaluated ({type(exc).__name__}: {exc})'
    if not isinstance(sky, SkyCoord):
        return 'is not celestial: it gives no RA/Dec'
    if not (np.isfinite(sky.spherical.lon.deg) and np.isfinite(sky.spherical.lat.deg)):
        return 'gives no finite position'
    return None


_WCS_VALUE = re.compile(r'^(CRVAL|CRPIX|CDELT|CD\d_|PC\d_|CROTA)')


def header_wcs_problem(header):
    """Unreadable or non-finite WCS values of a FITS header (``CRVAL1 = NAN``...), or None.

    astropy reads a WCS card it cannot parse as absent, and wcslib then takes its default
    (a reference position of 0, 0): such a header must not be trusted for positions.
    """
    bad = []
    for card in header.cards:
        if not _WCS_VALUE.match(card.keyword):
            continue
        try:
            value = float(card.value)
        except Exception:  # noqa: BLE001 - an unparsable card (VerifyError) or text
            bad.append(f'{card.keyword} = {card.image[10:].split("/")[0].strip().strip(chr(39)).strip()}')
            continue
        if not np.isfinite(value):
            bad.append(f'{card.keyword} = {value}')
    return f'has unusable values ({", ".join(bad[:4])})' if bad else None


def image_input_problem(image, max_pixels=0):
    """What makes an NDData unusable before its pixels are looked at (size, planes, WCS), or None.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.nddata import NDData
    >>> from astro_galsim.utils._checks import image_input_problem
    >>> image_input_problem(NDData(np.zeros((4, 32, 32)))).split(':')[0]
    'a cube of 4 planes'
    """
    shape = np.shape(image.data)
    size = int(np.prod(shape))
    if max_pixels and size > max_pixels:
        return (f'the image has {size:,} pixels ({" x ".join(map(str, shape))}), more than '
                f'astro_galsim.conf.max_image_pixels = {max_pixels:,}: cut out the galaxy '
                '(astropy.nddata.Cutout2D), or raise conf.max_image_pixels')
    if len(shape) == 3 and shape[0] not in (1, 3) and shape[-1] not in (3, 4):
        return (f'a cube of {shape[0]} planes: the colour form is made of three bands (or one); give the three '
                'planes to use and name their SDSS bands, e.g. NDData(cube[1:4], wcs=wcs, '
                "meta={'bands': ('g', 'r', 'i')}), or one plane")
    wcs = getattr(image, 'wcs', None)
    problem = None if wcs is None else wcs_problem(wcs)
    if problem:
        return (f'the image WCS {problem}; give a celestial WCS (RA/Dec), or none to describe the galaxy at '
                'the image centre')
    return None
