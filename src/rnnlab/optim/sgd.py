"""Stochastic gradient descent with momentum and Nesterov momentum, as ``torch.optim.SGD``
(dampening 0):

    g = grad + weight_decay * p
    b = momentum * b + g                  (b starts at 0, so b_1 = g as PyTorch's first step)
    d = g + momentum * b   if nesterov else   b          (d = g without momentum)
    p = p - lr * d
"""
from __future__ import annotations

from ._optimizer import Optimizer, hyper


class SGD(Optimizer):
    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.momentum = hyper(momentum, "momentum")
        self.nesterov = bool(nesterov)
        self.weight_decay = hyper(weight_decay, "weight_decay")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0")
        super().__init__(params, lr, ("momentum_buffer",) if self.momentum else ())

    def _update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            b = self.state["momentum_buffer"][name]
            b *= self.momentum
            b += g
            g = g + self.momentum * b if self.nesterov else b
        p -= self.lr * g
