"""What every optimizer shares: the parameter dict it updates in place, ``lr``, the step
counter, per-parameter state buffers, and a flat state dict that safetensors can store.

An optimizer holds ``params`` (name -> array, the model's own arrays) and, for each
buffer name in ``self.buffers`` (e.g. ``exp_avg``), one array per parameter. Buffers
start at zero; for every update rule here that gives the same numbers as PyTorch's
lazily created buffers (see each rule's comments).
"""
from __future__ import annotations

import math
import numbers

import numpy as np


def hyper(value, name, low=0.0, high=math.inf, high_open=False):
    """A real hyperparameter in [low, high] (or [low, high)), as float, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < low or value > high or (high_open and value == high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name}: expected a number in [{low}, {high}{bracket}, got {value!r}")
    return float(value)


class Optimizer:
    """Base: ``step(grads)`` updates ``params`` in place; ``state_dict``/``load_state_dict`` resume exactly."""

    def __init__(self, params, lr, buffers):
        if not isinstance(params, dict) or not params:
            raise TypeError(f"params: expected a non-empty dict name -> ndarray, got {type(params).__name__}")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"params[{name!r}]: expected a float ndarray (updated in place), got {type(p).__name__}"
                                + (f" of dtype {p.dtype}" if isinstance(p, np.ndarray) else ""))
        self.params = dict(params)       # our own dict of the caller's arrays
        self.lr = lr
        self.step_count = 0
        self.buffers = tuple(buffers)
        self.state = {b: {n: np.zeros_like(p) for n, p in self.params.items()} for b in self.buffers}

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = hyper(value, "lr")

    def step(self, grads):
        """One update of every parameter from ``grads`` (same names and shapes). Does not change ``grads``."""
        if not isinstance(grads, dict) or grads.keys() != self.params.keys():
            have = list(grads) if isinstance(grads, dict) else type(grads).__name__
            raise ValueError(f"grads: expected a dict with the parameters' names {list(self.params)}, got {have}")
        for name, p in self.params.items():
            if np.shape(grads[name]) != p.shape:
                raise ValueError(f"grads[{name!r}]: expected shape {p.shape}, got {np.shape(grads[name])}")
        self.step_count += 1
        for name, p in self.params.items():
            self._update(name, p, np.asarray(grads[name], dtype=p.dtype))

    def _update(self, name, p, g):
        raise NotImplementedError

    def state_dict(self):
        """Flat ``{"<buffer>.<param name>": array, "step": 0-d int64, "lr": 0-d float64}``, all copies."""
        out = {f"{b}.{n}": a.copy() for b, per in self.state.items() for n, a in per.items()}
        out["step"] = np.array(self.step_count, dtype=np.int64)
        out["lr"] = np.array(self.lr, dtype=np.float64)
        return out

    def load_state_dict(self, mapping):
        """Restore what ``state_dict`` returned; every name and shape is checked before anything changes."""
        expected = self.state_dict()
        missing = [k for k in expected if k not in mapping]
        extra = [k for k in mapping if k not in expected]
        if missing or extra:
            raise ValueError(f"optimizer state: missing keys {missing}, unexpected keys {extra} "
                             f"(was it saved by a {type(self).__name__} with the same options and parameters?)")
        for k, ref in expected.items():
            if np.shape(mapping[k]) != ref.shape:
                raise ValueError(f"optimizer state {k}: expected shape {ref.shape}, got {np.shape(mapping[k])}")
        step = int(np.asarray(mapping["step"]))
        if step < 0:
            raise ValueError(f"optimizer state step: expected a non-negative count, got {step}")
        self.lr = float(np.asarray(mapping["lr"]))
        self.step_count = step
        for b, per in self.state.items():
            for n, a in per.items():
                a[...] = np.asarray(mapping[f"{b}.{n}"])

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, {len(self.params)} parameters, step={self.step_count})"
