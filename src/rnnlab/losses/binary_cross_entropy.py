"""Sigmoid + binary cross-entropy from logits, stable for any logit.

For logits x and targets y in [0, 1] (same shape):

    loss_i = -y log s(x) - (1 - y) log(1 - s(x))       s = sigmoid
           = max(x, 0) - x y + log(1 + exp(-|x|))      never overflows, never log(0)
    loss   = sum_{i valid} loss_i / n_valid
    dx_i   = (s(x_i) - y_i) / n_valid

as ``torch.nn.functional.binary_cross_entropy_with_logits`` with 'mean'.
"""
from __future__ import annotations

import numpy as np

from .._conventions import sigmoid
from ._mask import check_mask, float_input, valid_count


def sigmoid_binary_cross_entropy(logits, targets, mask=None):
    """Mean BCE of ``logits`` against ``targets`` (same shape, values in [0, 1]). Returns (loss, dlogits)."""
    x = float_input(logits, "logits")
    y = float_input(targets, "targets").astype(x.dtype, copy=False)
    if y.shape != x.shape:
        raise ValueError(f"targets: expected the shape of logits {x.shape}, got {y.shape}")
    if y.size and (y.min() < 0 or y.max() > 1):
        raise ValueError(f"targets: expected probabilities in [0, 1], got min {y.min()} and max {y.max()}")
    m = check_mask(mask, x.shape)
    weight = np.ones(x.shape, bool) if m is None else np.broadcast_to(m, x.shape)
    n = valid_count(weight, "mask")
    per = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    loss = float(per[weight].sum() / n)
    dx = (sigmoid(x) - y) * (weight / n).astype(x.dtype)
    return loss, dx
