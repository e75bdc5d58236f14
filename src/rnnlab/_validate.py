"""Checks at public entry points, raising errors that say what was expected and what was given."""
from __future__ import annotations

import numbers

import numpy as np


def as_float_array(x, name, dtype, ndim=None, finite=True):
    """``x`` as a float array of ``dtype``, or a TypeError/ValueError naming ``name``."""
    if (type(x) is np.ndarray and x.dtype == dtype and x.flags.c_contiguous
            and (ndim is None or x.ndim == ndim)):
        # already what is asked for (the common case, e.g. each step of streaming): only the
        # finite check is left; the general path below costs ~3 us a call
        if finite:
            check_finite(x, name)
        return x
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__} that NumPy cannot convert ({e})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real numeric array (float or int), got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {arr.ndim}-D with shape {arr.shape}")
    with np.errstate(over="ignore"):     # float64 values beyond float32's range become inf: reported just below
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if finite:
        check_finite(arr, name)
    return arr


class NonFiniteError(ValueError):
    """An array that must be finite holds NaN or inf (inside training: the run diverged)."""


# A compiled check of a contiguous float array, set by ``rnnlab.fast`` where its compiled kernels
# are available (``fast._compiled.all_finite``: one pass, no temporary), used from FAST_FINITE_MIN
# entries; else NumPy's ``isfinite``.
fast_all_finite = None
FAST_FINITE_MIN = 1024


def check_finite(arr, name):
    """A NonFiniteError naming ``name``, the count and the first bad entry, if arr holds NaN or inf."""
    fast = fast_all_finite
    if (fast is not None and arr.size >= FAST_FINITE_MIN and arr.dtype in (np.float32, np.float64)
            and arr.flags.c_contiguous):
        finite = fast(arr.reshape(-1))
    else:
        finite = np.isfinite(arr).all()
    if not finite:
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(
            f"{name}: contains non-finite values ({int((~np.isfinite(arr)).sum())} of {arr.size}); "
            f"the first is {arr[tuple(bad)]} at index {tuple(int(b) for b in bad)}")


def expect_shape(arr, shape, name):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")


def positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt
