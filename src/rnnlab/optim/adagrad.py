"""Adagrad, as ``torch.optim.Adagrad``: a per-entry learning rate shrinking with the
sum of all squared gradients seen.

    g   = grad + weight_decay * p
    s   = s + g * g                          (s starts at initial_accumulator_value)
    p   = p - lr_t * g / (sqrt(s) + eps),    lr_t = lr / (1 + (t - 1) * lr_decay)
"""
from __future__ import annotations

import numpy as np

from ._optimizer import Optimizer, hyper


class Adagrad(Optimizer):
    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        self.lr_decay = hyper(lr_decay, "lr_decay")
        self.weight_decay = hyper(weight_decay, "weight_decay")
        self.eps = hyper(eps, "eps")
        init = hyper(initial_accumulator_value, "initial_accumulator_value")
        super().__init__(params, lr, ("sum",))
        for s in self.state["sum"].values():
            s.fill(init)

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = self.state["sum"][name]
        s += g * g
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        p -= clr * g / (np.sqrt(s) + self.eps)
