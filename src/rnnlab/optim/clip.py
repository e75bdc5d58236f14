"""Gradient clipping, in place on a dict name -> gradient array, and a non-finite check.

    clip_grad_norm:   n = ||(g_1, ..., g_K)||_2 over every entry of every gradient;
                      g_k *= min(1, max_norm / (n + 1e-6))        (torch.nn.utils.clip_grad_norm_)
    clip_grad_value:  g_k = clip(g_k, -v, v)                      (torch.nn.utils.clip_grad_value_)
"""
from __future__ import annotations

import math

import numpy as np

from ._optimizer import hyper


def _check_grads(grads):
    if not isinstance(grads, dict):
        raise TypeError(f"grads: expected a dict name -> ndarray, got {type(grads).__name__}")
    for name, g in grads.items():
        if not isinstance(g, np.ndarray) or not np.issubdtype(g.dtype, np.floating):
            raise TypeError(f"grads[{name!r}]: expected a float ndarray (clipped in place), got {type(g).__name__}")


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place so the global L2 norm is at most ``max_norm``; return the norm before.

    As torch's ``clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6), clamped to 1),
    except that a non-finite norm leaves the gradients untouched: the caller should
    stop and report it (``find_nonfinite`` names the parameter) rather than step with NaNs.
    """
    _check_grads(grads)
    max_norm = hyper(max_norm, "max_norm")
    # the norm of the per-array norms, as torch computes it; hypot never overflows in the sum
    total = math.hypot(*(float(np.linalg.norm(g.ravel())) for g in grads.values()))
    if not math.isfinite(total):
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total


def clip_grad_value(grads, clip_value):
    """Clip every gradient entry in place to [-clip_value, clip_value]."""
    _check_grads(grads)
    clip_value = hyper(clip_value, "clip_value")
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)


def find_nonfinite(grads):
    """Name of the first array (in dict order) holding a NaN or an infinity, or None."""
    for name, g in grads.items():
        if not np.isfinite(g).all():
            return name
    return None
