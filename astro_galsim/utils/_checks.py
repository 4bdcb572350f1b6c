"""Checks of plain arguments shared by the modules: one rule each, one message each."""
import numbers

import numpy as np

__all__ = ['positive_integer']


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
