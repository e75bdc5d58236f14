"""Mean squared error, the loss of a linear output head.

    loss  = sum_{i valid} (pred_i - target_i)^2 / n_valid
    dpred = 2 (pred - target) / n_valid       (0 at masked elements)

as ``torch.nn.functional.mse_loss`` with 'mean'. A mask of shape (N, T) for
predictions (N, T, D) masks whole time steps; n_valid counts elements.
"""
from __future__ import annotations

import numpy as np

from ._mask import check_mask, float_input, valid_count


def mse(pred, target, mask=None):
    """Mean squared error of ``pred`` against ``target`` (same shape). Returns (loss, dpred)."""
    p = float_input(pred, "pred")
    t = float_input(target, "target").astype(p.dtype, copy=False)
    if t.shape != p.shape:
        raise ValueError(f"target: expected the shape of pred {p.shape}, got {t.shape}")
    m = check_mask(mask, p.shape)
    weight = np.ones(p.shape, bool) if m is None else np.broadcast_to(m, p.shape)
    n = valid_count(weight, "mask")
    diff = p - t
    loss = float(np.square(diff[weight]).sum() / n)
    return loss, diff * (2 * weight / n).astype(p.dtype)
