"""Softmax + cross-entropy from logits, averaged over the positions that count.

For logits z (..., C) and integer targets y (...):

    loss_p  = -log_softmax(z_p)[y_p] = logsumexp(z_p) - z_p[y_p]
    loss    = sum_{p valid} loss_p / n_valid
    dz_p    = (softmax(z_p) - onehot(y_p)) / n_valid     for valid p, 0 otherwise

A position is valid if ``y_p != ignore_index`` and ``mask`` (if given) is true;
this is ``torch.nn.functional.cross_entropy(..., ignore_index=...)`` with its
default 'mean' reduction over the class axis last.
"""
from __future__ import annotations

import numpy as np

from ._mask import check_mask, float_input, valid_count
from .softmax import log_softmax


def softmax_cross_entropy(logits, targets, ignore_index=-100, mask=None):
    """Mean cross-entropy of ``logits`` (..., C) against int ``targets`` (...). Returns (loss float, dlogits)."""
    z = float_input(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits: expected shape (..., C) with the classes last, got a scalar")
    C = z.shape[-1]
    y = np.asarray(targets)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"targets: expected integer class ids, got dtype {y.dtype}")
    if y.shape != z.shape[:-1]:
        raise ValueError(f"targets: expected shape {z.shape[:-1]} (logits' shape without the class axis), got {y.shape}")
    valid = y != ignore_index
    m = check_mask(mask, y.shape)
    if m is not None:
        valid &= m
    if valid.any() and (y[valid].min() < 0 or y[valid].max() >= C):
        raise ValueError(f"targets: expected class ids in 0..{C - 1} (or ignore_index={ignore_index}), "
                         f"got min {y[valid].min()} and max {y[valid].max()}")
    n = valid_count(valid, "targets")
    logp = log_softmax(z)                                          # (..., C)
    y_safe = np.where(valid, y, 0)[..., None]                      # ignored positions pick class 0, then weigh 0
    nll = -np.take_along_axis(logp, y_safe, axis=-1)[..., 0]       # (...)
    loss = float(nll[valid].sum() / n)
    dz = np.exp(logp)                                              # softmax
    np.put_along_axis(dz, y_safe, np.take_along_axis(dz, y_safe, axis=-1) - 1, axis=-1)  # - onehot
    dz *= (valid / n).astype(z.dtype)[..., None]
    return loss, dz
