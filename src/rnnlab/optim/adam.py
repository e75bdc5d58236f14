"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` (amsgrad off).

    Adam:   g = grad + weight_decay * p              (L2 penalty folded into the gradient)
    AdamW:  p = p * (1 - lr * weight_decay)          (decoupled decay, applied first)
    then, at step t = 1, 2, ...:
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

m and v start at zero, which is what the bias corrections 1 - beta^t undo.
"""
from __future__ import annotations

import math

import numpy as np

from ._optimizer import Optimizer, hyper


def adam_update(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam step of p in place, updating the moments m and v in place; t counts from 1."""
    m += (1 - beta1) * (g - m)                          # = beta1 * m + (1 - beta1) * g, as torch's lerp
    v *= beta2
    v += (1 - beta2) * g * g
    step_size = lr / (1 - beta1 ** t)
    denom = np.sqrt(v)
    denom /= math.sqrt(1 - beta2 ** t)
    denom += eps
    p -= step_size * m / denom


def _betas(betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    return (hyper(betas[0], "betas[0]", 0.0, 1.0, high_open=True), hyper(betas[1], "betas[1]", 0.0, 1.0, high_open=True))


class Adam(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.betas = _betas(betas)
        self.eps = hyper(eps, "eps")
        self.weight_decay = hyper(weight_decay, "weight_decay")
        super().__init__(params, lr, ("exp_avg", "exp_avg_sq"))

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        adam_update(p, g, self.state["exp_avg"][name], self.state["exp_avg_sq"][name],
                    self.step_count, self.lr, *self.betas, self.eps)


class AdamW(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.betas = _betas(betas)
        self.eps = hyper(eps, "eps")
        self.weight_decay = hyper(weight_decay, "weight_decay")
        super().__init__(params, lr, ("exp_avg", "exp_avg_sq"))

    def _update(self, name, p, g):
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay
        adam_update(p, g, self.state["exp_avg"][name], self.state["exp_avg_sq"][name],
                    self.step_count, self.lr, *self.betas, self.eps)
