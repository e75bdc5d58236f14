"""Held-out figures: forecast errors and classification reports.

    RMSE = sqrt(mean((y - yhat)^2))      MAE = mean(|y - yhat|)
    MASE = MAE / mean_t |y_t - y_{t-1}| over the training part

MASE divides by the in-sample error of the one-step naive forecast (Hyndman and
Koehler, 2006), for every data set alike, so MASE < 1 beats "tomorrow equals today"
as it did on the training part.
"""
from __future__ import annotations

import numpy as np


def forecast_errors(y, yhat, train):
    y, yhat = np.asarray(y, np.float64), np.asarray(yhat, np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"yhat: expected shape {y.shape}, got {yhat.shape}")
    err = yhat - y
    scale = np.mean(np.abs(np.diff(np.asarray(train, np.float64))))
    mae = float(np.mean(np.abs(err)))
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": mae,
            "mase": float(mae / scale) if scale > 0 else None}


def classification_report(y_true, y_pred, class_names):
    """Accuracy, per-class precision and recall, and the confusion matrix (rows true, columns predicted)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    K = len(class_names)
    cm = np.zeros((K, K), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    per_class = {}
    for k, name in enumerate(class_names):
        per_class[str(name)] = {
            # precision is undefined for a class never predicted: reported as None, not 0
            "precision": float(cm[k, k] / predicted[k]) if predicted[k] else None,
            "recall": float(cm[k, k] / actual[k]) if actual[k] else None,
            "support": int(actual[k]),
        }
    return {"test_accuracy": float(np.trace(cm) / cm.sum()), "per_class": per_class,
            "confusion_matrix": cm.tolist()}
