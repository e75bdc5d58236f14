"""What every rnnlab module shares: ``params``/``grads`` dicts, train/eval, state dicts.

The recurrent layers (``rnnlab.RNN/LSTM/GRU``) follow the same contract without
inheriting from this class; the pieces in ``rnnlab.nn`` inherit it to avoid
repeating the bookkeeping. It is one level deep on purpose.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V


class Module:
    """Holds ``params`` (name -> array) and ``grads`` (same names and shapes, accumulated with +=)."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _add_param(self, name, value):
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """A copy of every parameter, keyed by name."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, mapping):
        """Copy parameters in place from a mapping of array-likes; names and shapes are checked first."""
        load_into(self.params, mapping, type(self).__name__)


def load_into(params, mapping, owner):
    """Check ``mapping`` against ``params`` (same names, same shapes), then copy it in place."""
    missing = [k for k in params if k not in mapping]
    extra = [k for k in mapping if k not in params]
    if missing or extra:
        raise ValueError(f"{owner}.load_state_dict: missing keys {missing}, unexpected keys {extra}")
    new = {}
    for name, p in params.items():
        arr = V.as_float_array(np.asarray(mapping[name]), name, p.dtype)
        if arr.shape != p.shape:
            raise ValueError(f"{name}: expected shape {p.shape}, got {arr.shape}")
        new[name] = arr
    for name, arr in new.items():   # only after every check passed: all or nothing
        params[name][...] = arr
