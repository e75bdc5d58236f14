"""Linear: an affine map of the last axis, so it applies per time step to (N, T, D).

    y = x W^T + b               x (..., D_in), W (D_out, D_in), b (D_out,)

Backward, with every leading axis flattened into rows (M = N*T for sequences):

    dW += dy^T x                (D_out, D_in)   one GEMM over all rows
    db += sum_rows dy           (D_out,)
    dx  = dy W                  (..., D_in)
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from ._module import Module


class Linear(Module):
    """``torch.nn.Linear``: ``weight`` (out, in) and ``bias`` (out,) ~ U(-1/sqrt(in), 1/sqrt(in)) like PyTorch."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        super().__init__()
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        self.dtype = V.float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        self._add_param("weight", rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(self.dtype))
        if bias:
            self._add_param("bias", rng.uniform(-bound, bound, (self.out_features,)).astype(self.dtype))
        self._x = None

    def forward(self, x):
        """x (..., in_features) -> (..., out_features)."""
        x = V.as_float_array(x, "x", self.dtype, finite=False)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected {self.in_features} features in the last dimension, got shape {x.shape}")
        self._x = x
        y = x @ self.params["weight"].T                               # (..., D_out)
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dout):
        """dout (..., out_features) -> dx (..., in_features); adds dW, db into ``grads``."""
        if self._x is None:
            raise ValueError("backward: called before forward; run forward(x) first")
        x = self._x
        dout = V.as_float_array(dout, "dout", self.dtype, finite=False)
        V.expect_shape(dout, x.shape[:-1] + (self.out_features,), "dout")
        dy = dout.reshape(-1, self.out_features)                      # (M, D_out)
        self.grads["weight"] += dy.T @ x.reshape(-1, self.in_features)  # y = x W^T
        if "bias" in self.grads:
            self.grads["bias"] += dy.sum(axis=0)                      # y = ... + b
        return dout @ self.params["weight"]                           # (..., D_in)

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={'bias' in self.params}, "
                f"dtype={self.dtype.name})")
