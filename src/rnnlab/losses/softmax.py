"""Softmax and log-softmax, stable for any logits by subtracting the row maximum first.

    log_softmax(x)_c = x_c - m - log(sum_k exp(x_k - m)),   m = max_k x_k
    softmax(x)_c     = exp(log_softmax(x)_c)

Subtracting m changes nothing mathematically and keeps every exp() argument <= 0,
so nothing overflows; the largest term is exp(0) = 1, so the log never sees 0.
"""
from __future__ import annotations

import numpy as np


def log_softmax(x, axis=-1):
    x = np.asarray(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1):
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
