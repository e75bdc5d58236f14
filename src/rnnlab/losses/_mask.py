"""Shared input checks of the losses: float arrays and an optional 0/1 mask."""
from __future__ import annotations

import numpy as np

from .. import _validate as V


def float_input(x, name):
    """A float array (float64 stays float64, anything else becomes float32 unless already float)."""
    arr = np.asarray(x)
    if arr.dtype == bool or arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a float array, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    # Non-finite values are not rejected here: a diverging model should produce a
    # non-finite loss that the trainer reports with the step and parameter.
    return V.as_float_array(arr, name, arr.dtype, finite=False)


def check_mask(mask, shape, name="mask"):
    """``mask`` as a bool array whose shape is a leading part of ``shape`` (e.g. (N, T) for (N, T, D))."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != bool:
        if m.dtype == object or not np.issubdtype(m.dtype, np.number):
            raise TypeError(f"{name}: expected a bool or 0/1 array, got dtype {m.dtype}")
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name}: expected only 0 and 1 (or booleans), got other values")
        m = m.astype(bool)
    if m.shape != tuple(shape[:m.ndim]):
        raise ValueError(f"{name}: expected shape {tuple(shape)} or a leading part of it, got {m.shape}")
    return m.reshape(m.shape + (1,) * (len(shape) - m.ndim))


def valid_count(weights, name):
    n = int(weights.sum())
    if n == 0:
        raise ValueError(f"{name}: every position is masked or ignored; the mean loss over no targets is undefined")
    return n
