"""Forecasting preprocessing: chronological split, scaling fitted on the training part, sliding windows.

The series y_0..y_{T-1} is cut in time order, never shuffled across the cuts:

    train  y_0 .. y_{a-1}        fits the scaler, the network and every baseline
    val    y_a .. y_{b-1}        picks the training epoch to keep (early stopping)
    test   y_b .. y_{T-1}        held out; only ever predicted

A window example predicts y_t from the W values before it, x = (y_{t-W} .. y_{t-1}).
A target belongs to the part that holds y_t; its inputs may reach back into an
earlier part, exactly as a forecaster at time t would know them. The scaler
z = (y - mean) / std uses the mean and std of the training part alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class Split:
    val_start: int      # a: first index of the validation part
    test_start: int     # b: first index of the held-out part
    end: int            # T


def chronological_split(T, window, test_fraction=0.2, val_fraction=0.15):
    """Indices of the three parts. The test part is the last ``test_fraction`` of the series,
    the validation part the last ``val_fraction`` of what remains."""
    if not 0 < test_fraction < 1:
        raise UsageError(f"--test-fraction: expected a number in (0, 1), got {test_fraction}")
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction: expected a number in [0, 1), got {val_fraction}")
    b = T - max(1, round(test_fraction * T))
    a = b - round(val_fraction * b)
    # the first training target needs a full window before it, and training needs a few targets
    min_train = window + 2
    if a < min_train:
        raise UsageError(f"series: {T} values are too few for --window {window}: the training part "
                         f"({a} values after the split) needs at least window + 2 = {min_train}; "
                         f"use a shorter window or a longer series")
    return Split(a, b, T)


@dataclass(frozen=True)
class Scaler:
    mean: float
    std: float

    @classmethod
    def fit(cls, train_values):
        train_values = np.asarray(train_values, dtype=np.float64)
        std = float(train_values.std())
        return cls(float(train_values.mean()), std if std > 0 else 1.0)   # a flat series keeps unit scale

    def transform(self, y):
        return (np.asarray(y, dtype=np.float64) - self.mean) / self.std

    def inverse(self, z):
        return np.asarray(z, dtype=np.float64) * self.std + self.mean


def windows(z, window, start, stop):
    """Inputs and targets for every target index t in [start, stop), with t >= window.

    Returns X (N, W, 1) holding z[t-W:t], y (N,) holding z[t], and the indices t.
    """
    t = np.arange(max(start, window), stop)
    X = np.stack([z[i - window:i] for i in t])[:, :, None] if len(t) else np.empty((0, window, 1))
    return X, z[t], t
