"""Dropout, inverted as in PyTorch: kept units are scaled by 1/(1-p) at training time,
so evaluation is the identity.

    m ~ Bernoulli(1 - p) elementwise,   y = x * m / (1 - p),   dx = dy * m / (1 - p)
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _validate as V
from ._module import Module


class Dropout(Module):
    """``torch.nn.Dropout(p)``; the mask comes from ``self.rng`` (seeded by ``seed``). No parameters."""

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"p: expected a drop probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)
        self._scale = None        # m / (1 - p) of the last training forward, None in eval

    def forward(self, x):
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"x: expected a float array, got dtype {x.dtype}")
        if not self.training or self.p == 0:
            self._scale = None
            return x
        keep = self.rng.random(x.shape) >= self.p
        self._scale = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._scale

    def backward(self, dout):
        dout = np.asarray(dout)
        if self._scale is None:
            return dout
        V.expect_shape(dout, self._scale.shape, "dout")
        return dout * self._scale                                     # y = x * scale

    def __repr__(self):
        return f"Dropout(p={self.p})"
