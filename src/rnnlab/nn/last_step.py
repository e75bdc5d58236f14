"""Many-to-one: pick each sequence's output at its last valid step.

    last[n] = out[n, lengths[n] - 1]          out (N, T, H), lengths (N,) in 1..T

Backward scatters the gradient back to those positions, zero elsewhere:

    dout[n, lengths[n] - 1] = dlast[n]
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V


def _check(lengths, N, T):
    arr = np.asarray(lengths)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"lengths: expected shape ({N},), one length per sequence, got {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        raise ValueError(f"lengths: expected every length in 1..{T}, got min {arr.min()} and max {arr.max()}")
    return arr.astype(np.int64)


def last_valid_step(out, lengths=None):
    """out (N, T, H) -> (N, H), the output at step lengths[n]-1 (the last step if lengths is None)."""
    out = np.asarray(out)
    if out.ndim != 3:
        raise ValueError(f"out: expected a 3-D (N, T, H) array, got shape {out.shape}")
    N, T, _ = out.shape
    if lengths is None:
        return out[:, -1].copy()
    lengths = _check(lengths, N, T)
    return out[np.arange(N), lengths - 1]


def last_valid_step_backward(dlast, lengths, T):
    """Gradient of ``last_valid_step``: dlast (N, H) -> dout (N, T, H), zero except at the picked steps."""
    dlast = np.asarray(dlast)
    if dlast.ndim != 2:
        raise ValueError(f"dlast: expected a 2-D (N, H) array, got shape {dlast.shape}")
    N, H = dlast.shape
    T = V.positive_int(T, "T")
    dout = np.zeros((N, T, H), dlast.dtype)
    if lengths is None:
        dout[:, -1] = dlast
    else:
        dout[np.arange(N), _check(lengths, N, T) - 1] = dlast
    return dout
