"""Figures: forecast against the truth, a future forecast, and a confusion matrix (matplotlib, PNG)."""
from __future__ import annotations

import numpy as np

from ._optional import require


def _pyplot():
    mpl = require("matplotlib", "plotting")
    mpl.use("Agg")                      # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def check_available():
    """Fail before training, not after, when matplotlib is missing."""
    require("matplotlib", "the figures of a run")


def _ticks(ax, labels, positions):
    step = max(1, len(positions) // 8)
    ax.set_xticks(positions[::step])
    ax.set_xticklabels([labels[i] for i in positions[::step]], rotation=30, ha="right", fontsize=8)


def forecast_figure(curves, results, path):
    """The held-out part: truth, the network's and the baselines' one-step forecasts, with RMSEs."""
    plt = _pyplot()
    y, b, fc = curves["y"], curves["test_start"], curves["forecasts"]
    start = max(0, b - 2 * (len(y) - b))                 # show some history before the held-out part
    t = np.arange(start, len(y))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(t, y[start:], color="black", lw=1.5, label="truth")
    ax.axvline(b - 0.5, color="grey", ls=":", lw=1)
    styles = {"model": ("C3", "-", "RNN"), "arima": ("C0", "--", "ARIMA"), "naive": ("C2", ":", "naive"),
              "seasonal_naive": ("C1", ":", "seasonal naive")}
    for name, (color, ls, label) in styles.items():
        if name not in fc:
            continue
        fig_rmse = results["rmse"] if name == "model" else results["baselines"][name]["rmse"]
        ax.plot(np.arange(b, len(y)), fc[name], color=color, ls=ls, lw=1.3,
                label=f"{label} (RMSE {fig_rmse:.3g})")
    _ticks(ax, curves["labels"], t)
    ax.set_title(f"{results['dataset']}: one-step forecasts on the held-out part (right of the dotted line)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def future_figure(labels, y, forecast, path, name):
    plt = _pyplot()
    start = max(0, len(y) - 4 * len(forecast) - 20)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(np.arange(start, len(y)), y[start:], color="black", label="observed")
    ax.plot(np.arange(len(y) - 1, len(y) + len(forecast)), np.r_[y[-1], forecast], color="C3", marker=".",
            label=f"forecast, {len(forecast)} steps (recursive)")
    _ticks(ax, labels, np.arange(start, len(y)))
    ax.set_title(f"{name}: forecast beyond the last observation")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_figure(cm, classes, title, path):
    plt = _pyplot()
    cm = np.asarray(cm)
    K = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * K, 0.8 + 0.5 * K))
    ax.imshow(cm, cmap="Blues")
    for i in range(K):
        for j in range(K):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(K), classes, fontsize=8)
    ax.set_yticks(range(K), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
