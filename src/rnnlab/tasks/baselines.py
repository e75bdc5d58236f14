"""The baselines a practitioner tries first, on exactly the model's held-out points.

Forecasting (all fitted on data before the held-out part only):
    naive            yhat_{t+h} = y_{t-1}                  (last observed value)
    seasonal naive   yhat_{t+h} = y_{t+h-m*k}, the same point one season (m) earlier
                     that was observed at the forecast origin t
    ARIMA(p, d, q)   order by the lowest AIC over p in 0..5, d in 0..1, q in 0..2
                     (36 fits), statsmodels' default trend (a constant when d = 0);
                     parameters then stay fixed and each forecast conditions on the
                     true values up to its origin, as the network's window does.
Sentiment:
    VADER            the rule-based analyzer's compound score in [-1, 1], positive
                     above a threshold; the threshold is the one that scores best
                     on the training split (a generous VADER: 0 is its usual cut).
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from ._optional import require

ARIMA_GRID = {"p": range(0, 6), "d": range(0, 2), "q": range(0, 3)}


def naive(y, origins, horizon):
    """(len(origins), horizon) forecasts made at each origin t (y_t unknown): the last value y_{t-1}."""
    return np.repeat(y[np.asarray(origins) - 1][:, None], horizon, axis=1)


def seasonal_naive(y, origins, horizon, season):
    """(len(origins), horizon): y_{t+h} forecast by the latest observed value one or more seasons earlier."""
    out = np.empty((len(origins), horizon))
    for i, t in enumerate(origins):
        for h in range(horizon):
            k = h // season + 1                        # whole seasons back so that the value is observed
            out[i, h] = y[t + h - k * season]
    return out


def _single_threaded():
    # statsmodels' small matrix products run several times slower with BLAS
    # threads fighting over 2 cores; threadpoolctl ships with scikit-learn.
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:
        import contextlib
        return contextlib.nullcontext()


def fit_arima(train, grid=None):
    """Choose (p, d, q) by AIC on ``train``; returns (order, fitted results, table of (order, aic))."""
    arima = require("statsmodels.tsa.arima.model", "the ARIMA baseline")
    grid = grid or ARIMA_GRID
    table, best = [], None
    with _single_threaded(), warnings.catch_warnings():
        # non-convergence and non-invertible starts are common over a grid; a
        # fit that fails is skipped, and the AIC decides among the rest.
        warnings.simplefilter("ignore")
        for order in itertools.product(grid["p"], grid["d"], grid["q"]):
            try:
                res = arima.ARIMA(np.asarray(train, np.float64), order=order).fit()
            except (ValueError, np.linalg.LinAlgError):
                continue
            if not np.isfinite(res.aic):
                continue
            table.append((list(order), float(res.aic)))
            if best is None or res.aic < best[1].aic:
                best = (order, res)
    if best is None:
        raise ValueError("ARIMA: no order in the grid could be fitted to the training part")
    return best[0], best[1], table


def arima_forecasts(res, y, origins, horizon):
    """(len(origins), horizon) forecasts with the fitted parameters, conditioning on y[:t] at each origin t."""
    full = res.apply(np.asarray(y, np.float64))          # same parameters, the whole series as data
    out = np.empty((len(origins), horizon))
    with _single_threaded(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if horizon == 1:
            # in-sample predictions of a state-space model are one-step-ahead
            pred = full.get_prediction(start=int(origins[0]), end=int(origins[-1])).predicted_mean
            out[:, 0] = np.asarray(pred)[np.asarray(origins) - origins[0]]
            return out
        for i, t in enumerate(origins):
            out[i] = full.get_prediction(start=int(t), end=int(t) + horizon - 1, dynamic=0).predicted_mean
    return out


def vader_scores(texts):
    """VADER's compound score of each text."""
    vs = require("vaderSentiment.vaderSentiment", "the VADER baseline")
    analyzer = vs.SentimentIntensityAnalyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts])


def vader_threshold(train_scores, train_positive):
    """The cut on the compound score with the best training accuracy (ties: the one nearest 0)."""
    cuts = np.unique(np.concatenate([[0.0], train_scores]))
    acc = np.array([np.mean((train_scores > c) == train_positive) for c in cuts])
    best = np.flatnonzero(acc == acc.max())
    return float(cuts[best[np.argmin(np.abs(cuts[best]))]])
