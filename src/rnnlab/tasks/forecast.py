"""Forecasting: a recurrent network reads the last W values and predicts the next one.

Training is one-step (y_t from y_{t-W} .. y_{t-1}, mean squared error on the
scaled values). Multi-step forecasts are *recursive*: each prediction is fed
back as the newest input, h steps for horizon h. One model serves every
horizon, and the baselines are recursive too (ARIMA's dynamic forecast), so the
comparison is like for like. The held-out figures are computed on the original
scale, at every origin t in the test part: one-step for the top-level figures,
all H steps for ``multi_step`` when --horizon H > 1.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from ..losses import mse
from . import baselines as B
from .fit import fit
from .metrics import forecast_errors
from .model import SequenceModel
from .windows import Scaler, chronological_split, windows


@dataclass
class ForecastConfig:
    window: int = 24            # inputs per forecast; two solar cycles of yearly sunspots
    horizon: int = 1            # steps ahead for the multi-step figures (recursive)
    cell: str = "gru"
    hidden: int = 32            # small: sunspots has ~200 training windows
    layers: int = 1
    epochs: int = 300
    batch: int = 16
    lr: float = 3e-3
    clip: float = 1.0
    patience: int = 50          # epochs without a better validation RMSE before stopping
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    seed: int = 0
    arima_grid: str = "full"    # "full" (36 orders, see baselines.py) or "small" (for quick tests)


def recursive_forecast(model, z, origins, window, horizon):
    """(len(origins), horizon) scaled forecasts; each step's prediction becomes the next input."""
    hist = np.stack([z[t - window:t] for t in origins])                 # (n, W)
    out = np.empty((len(origins), horizon))
    for h in range(horizon):
        out[:, h] = model.predict(hist[:, :, None])[:, 0]
        hist = np.concatenate([hist[:, 1:], out[:, h:h + 1]], axis=1)
    return out


def train_forecast(series, cfg: ForecastConfig, quiet=False):
    """Fit the network and the baselines on ``series``; returns (model, meta, results, curves)."""
    start = time.perf_counter()
    y, W, H = series.values, cfg.window, cfg.horizon
    T = len(y)
    split = chronological_split(T, W, cfg.test_fraction, cfg.val_fraction)
    a, b = split.val_start, split.test_start
    if T - b < H:
        raise ValueError(f"--horizon: the held-out part has {T - b} values, fewer than horizon {H}")
    scaler = Scaler.fit(y[:a])                                          # training part only
    z = scaler.transform(y)
    Xtr, ytr, _ = windows(z, W, W, a)
    Xva, yva, _ = windows(z, W, a, b)

    model = SequenceModel(1, cfg.hidden, 1, cell=cfg.cell, num_layers=cfg.layers, seed=cfg.seed,
                          dtype=np.float64)

    def loss_fn(pred, target):
        return mse(pred, target[:, None])

    def val_rmse(m):
        return float(np.sqrt(np.mean((m.predict(Xva)[:, 0] - yva) ** 2)))

    history = fit(model, loss_fn, Xtr, ytr, val_score=val_rmse if len(Xva) else None,
                  epochs=cfg.epochs, batch_size=cfg.batch, lr=cfg.lr, clip=cfg.clip,
                  patience=cfg.patience, seed=cfg.seed, desc=f"forecast {series.name}", quiet=quiet)

    # held-out part: one-step at every origin, and H steps where they fit
    origins = np.arange(b, T)
    fc = {"model": scaler.inverse(recursive_forecast(model, z, origins, W, 1))[:, 0]}
    fc["naive"] = B.naive(y, origins, 1)[:, 0]
    has_season = series.season is not None and b - series.season >= 1
    if has_season:
        fc["seasonal_naive"] = B.seasonal_naive(y, origins, 1, series.season)[:, 0]
    grid = B.ARIMA_GRID if cfg.arima_grid == "full" else {"p": range(0, 3), "d": range(0, 2), "q": range(0, 2)}
    order, arima_res, aic_table = B.fit_arima(y[:b], grid)              # everything before the held-out part
    fc["arima"] = B.arima_forecasts(arima_res, y, origins, 1)[:, 0]

    truth, train_part = y[b:], y[:b]
    results = {"task": "forecast", "dataset": series.name, "n_values": T,
               "split": {"train": [series.labels[0], series.labels[a - 1]],
                         "validation": [series.labels[a], series.labels[b - 1]],
                         "test": [series.labels[b], series.labels[-1]], "test_points": T - b},
               "missing_interpolated": series.missing, "missing_at": series.missing_at,
               "forecast": "one-step for rmse/mae/mase; recursive for multi_step",
               **forecast_errors(truth, fc["model"], train_part), "baselines": {}}
    for name in ("naive", "seasonal_naive", "arima"):
        results["baselines"][name] = forecast_errors(truth, fc[name], train_part) if name in fc else None
    results["baselines_notes"] = {
        "seasonal_naive": f"season {series.season}" if has_season else "no season in this series",
        "arima": {"order": list(order), "aic": float(arima_res.aic),
                  "grid": {k: [min(v), max(v)] for k, v in grid.items()}, "orders_fitted": len(aic_table)}}
    if H > 1:
        hor = np.arange(b, T - H + 1)
        truth_h = np.stack([y[t:t + H] for t in hor])
        multi = {"model": scaler.inverse(recursive_forecast(model, z, hor, W, H)),
                 "naive": B.naive(y, hor, H), "arima": B.arima_forecasts(arima_res, y, hor, H)}
        if has_season:
            multi["seasonal_naive"] = B.seasonal_naive(y, hor, H, series.season)
        results["multi_step"] = {"horizon": H, "origins": len(hor), "method": "recursive",
                                 **forecast_errors(truth_h, multi["model"], train_part), "baselines": {
                                     k: forecast_errors(truth_h, v, train_part) for k, v in multi.items() if k != "model"}}
    results["epochs_run"] = len(history)
    results["best_val_rmse_scaled"] = min((r["val"] for r in history if "val" in r), default=None)
    results["config"] = asdict(cfg)
    results["wall_seconds"] = round(time.perf_counter() - start, 2)
    meta = {"model": model.config, "config": asdict(cfg), "scaler": asdict(scaler),
            "series": {"name": series.name, "values": y.tolist(), "labels": series.labels,
                       "season": series.season}}
    curves = {"labels": series.labels, "y": y, "test_start": b, "forecasts": fc}
    return model, meta, results, curves
