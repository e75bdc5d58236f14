"""RMSprop, as ``torch.optim.RMSprop``: divide by a running root-mean-square of the gradient.

    g  = grad + weight_decay * p
    v  = alpha * v + (1 - alpha) * g * g
    a  = alpha * a + (1 - alpha) * g                  only if centered
    r  = sqrt(v - a * a) + eps   if centered   else   sqrt(v) + eps
    b  = momentum * b + g / r;   p = p - lr * b       if momentum > 0
    p  = p - lr * g / r                               otherwise
"""
from __future__ import annotations

import numpy as np

from ._optimizer import Optimizer, hyper


class RMSprop(Optimizer):
    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.alpha = hyper(alpha, "alpha", 0.0, 1.0)
        self.eps = hyper(eps, "eps")
        self.weight_decay = hyper(weight_decay, "weight_decay")
        self.momentum = hyper(momentum, "momentum")
        self.centered = bool(centered)
        buffers = ("square_avg",) + (("grad_avg",) if self.centered else ()) \
            + (("momentum_buffer",) if self.momentum else ())
        super().__init__(params, lr, buffers)

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        v = self.state["square_avg"][name]
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        if self.centered:
            a = self.state["grad_avg"][name]
            a += (1 - self.alpha) * (g - a)                # = alpha * a + (1 - alpha) * g
            r = np.sqrt(v - a * a) + self.eps
        else:
            r = np.sqrt(v) + self.eps
        if self.momentum:
            b = self.state["momentum_buffer"][name]
            b *= self.momentum
            b += g / r
            p -= self.lr * b
        else:
            p -= self.lr * g / r
