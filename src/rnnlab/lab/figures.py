"""matplotlib figures of the memory lab (Agg backend: files only, no display needed).

Each function draws one figure from plain data (the records of results.json)
and saves it as a PNG, returning its path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"rnn": "#d62728", "irnn": "#ff7f0e", "lstm": "#1f77b4", "gru": "#2ca02c"}
LABELS = {"rnn": "tanh RNN", "irnn": "IRNN (ReLU, W_hh = I)", "lstm": "LSTM", "gru": "GRU"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def _by_cell_length(records):
    """{(cell, length): [records over seeds]}, cells and lengths in first-seen order."""
    groups = {}
    for r in records:
        groups.setdefault((r["cell"], r["length"]), []).append(r)
    return groups


def training_curves(records, path):
    """The test metric against training step, one panel per length, one line per cell and seed."""
    plt = _plt()
    lengths = sorted({r["length"] for r in records})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.6 * len(lengths), 3.2), squeeze=False)
    for ax, T in zip(axes[0], lengths):
        for r in (r for r in records if r["length"] == T):
            steps = [p["step"] for p in r["curve"]]
            vals = [p["value"] for p in r["curve"]]
            ax.plot(steps, vals, color=COLORS.get(r["cell"]), alpha=0.9,
                    label=LABELS.get(r["cell"], r["cell"]) if r["seed"] == 0 else None)
        base = records[0]["baseline"]
        if np.isfinite(base):
            ax.axhline(base, color="gray", ls="--", lw=1, label="trivial baseline")
        ax.axhline(records[0]["threshold"], color="black", ls=":", lw=1, label="solved threshold")
        if records[0]["metric"] != "accuracy":
            ax.set_yscale("log")
        ax.set_title(f"{records[0]['task']}, T = {T}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"test {records[0]['metric']}")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def gradient_horizon(records, path, length=None):
    """log ||dL/dh_t|| against the distance from the loss: dashed at initialisation, solid after training."""
    plt = _plt()
    T = length or max(r["length"] for r in records)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (cell, L), rs in _by_cell_length(records).items():
        if L != T or "horizon_init" not in rs[0]:
            continue
        for key, ls, tag in (("horizon_init", "--", "init"), ("horizon_final", "-", "trained")):
            h = np.mean([r[key] for r in rs], axis=0)
            ax.semilogy(np.arange(len(h)), np.maximum(h, 1e-45), ls, color=COLORS.get(cell),
                        label=f"{LABELS.get(cell, cell)} ({tag})")
    ax.set_xlabel("distance back from the loss (steps)")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(f"Gradient horizon, {records[0]['task']} T = {T}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def horizon_heatmap(record, path):
    """log10 ||dL/dh_t|| (columns: distance from the loss) at each evaluation during training (rows)."""
    plt = _plt()
    H = np.array(record["horizon_history"], dtype=float)
    steps = [p["step"] for p in record["curve"]][:len(H)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    im = ax.imshow(np.log10(np.maximum(H, 1e-30)), aspect="auto", origin="lower", cmap="magma",
                   extent=[0, H.shape[1], steps[0] if steps else 0, max(steps[-1] if steps else 1, 1 + (steps[0] if steps else 0))])
    fig.colorbar(im, ax=ax, label="log10 ||dL/dh_t||")
    ax.set_xlabel("distance back from the loss (steps)")
    ax.set_ylabel("training step")
    ax.set_title(f"{LABELS.get(record['cell'], record['cell'])}, T = {record['length']}")
    return _save(fig, path)


def gate_saturation(records, path, length=None):
    """Fraction of saturated gate units (see diagnostics) at each evaluation during training."""
    plt = _plt()
    T = length or max(r["length"] for r in records)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    styles = ["-", "--", ":", "-."]
    for r in records:
        if r["length"] != T or r["seed"] != 0 or not r.get("saturation_history"):
            continue
        steps = [p["step"] for p in r["curve"]][:len(r["saturation_history"])]
        for j, gate in enumerate(r["saturation_history"][0]):
            name = "h" if gate == "a" else gate
            ax.plot(steps, [s[gate] for s in r["saturation_history"]], styles[j % 4],
                    color=COLORS.get(r["cell"]), label=f"{LABELS.get(r['cell'], r['cell'])} {name}")
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction saturated")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Gate saturation, T = {T}")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def update_sizes(records, path, length=None):
    """Global gradient norm (before clipping) and ||delta W_hh|| / ||W_hh|| per step, over training."""
    plt = _plt()
    T = length or max(r["length"] for r in records)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for r in records:
        if r["length"] != T or r["seed"] != 0 or not r.get("update_history"):
            continue
        u = r["update_history"]
        steps = [e["step"] for e in u]
        label = LABELS.get(r["cell"], r["cell"])
        a.semilogy(steps, [max(e["grad_norm"], 1e-30) for e in u], color=COLORS.get(r["cell"]), label=label)
        b.semilogy(steps, [max(e["update_ratio"]["weight_hh_l0"], 1e-30) for e in u],
                   color=COLORS.get(r["cell"]), label=label)
    a.set_title(f"Gradient norm before clipping, T = {T}")
    b.set_title("Update-to-weight ratio of W_hh")
    for ax in (a, b):
        ax.set_xlabel("training step")
    a.legend(fontsize=7)
    return _save(fig, path)


def activations(path):
    """The seeds' pictures: sigmoid and tanh with their derivatives, and repeated sigmoids flattening."""
    plt = _plt()
    x = np.linspace(-6, 6, 401)
    s = 1 / (1 + np.exp(-x))
    t = np.tanh(x)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(x, s, label="sigmoid")
    a.plot(x, s * (1 - s), "--", label="sigmoid' (max 0.25)")
    a.plot(x, t, label="tanh")
    a.plot(x, 1 - t * t, "--", label="tanh' (max 1)")
    a.axhline(0, color="gray", lw=0.5)
    a.set_title("Squashing functions and their derivatives")
    a.legend(fontsize=7)
    y = x.copy()
    for k in range(1, 6):
        y = 1 / (1 + np.exp(-y))
        b.plot(x, y, label=f"sigmoid applied {k}x")
    b.set_title("Repeated sigmoids flatten: the slope shrinks each time")
    b.set_xlabel("x")
    b.legend(fontsize=7)
    return _save(fig, path)


def memory_figures(records, out):
    """Every figure of a memory experiment into folder ``out``; returns {title: path}."""
    out = Path(out)
    figs = {"Training curves": training_curves(records, out / "curves.png")}
    if "horizon_init" in records[0]:
        for T in sorted({r["length"] for r in records}):
            figs[f"Gradient horizon, T = {T}"] = gradient_horizon(records, out / f"horizon_T{T}.png", T)
        T = max(r["length"] for r in records)
        for r in records:
            if r["length"] == T and r["seed"] == 0 and r.get("horizon_history"):
                figs[f"dL/dh_t over training: {r['cell']}, T = {T}"] = horizon_heatmap(
                    r, out / f"heatmap_{r['cell']}_T{T}.png")
        figs["Gate saturation"] = gate_saturation(records, out / "saturation.png")
        if any(r.get("update_history") for r in records):
            figs["Gradient norm and update size"] = update_sizes(records, out / "updates.png")
    figs["Sigmoid and tanh"] = activations(out / "activations.png")
    return figs


# ---- a trained run (rnnlab diagnose / report) -------------------------------------------------
def run_horizon(diag, path):
    """The run's gradient horizon: one line per layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k, h in diag["horizon"].items():
        ax.semilogy(np.arange(len(h)), np.maximum(h, 1e-45), label=f"layer {k}")
    ax.set_xlabel("distance back from the loss (characters)")
    ax.set_ylabel("mean ||dL/dh_t||")
    ax.set_title(f"Gradient horizon of the trained {diag['cell'].upper()}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def run_gate_saturation(diag, path):
    """Fraction of saturated units of each gate at every character of the diagnosed text."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for g in diag["gates"]:
        ax.plot(g["saturated_per_char"], lw=0.8, label=f"layer {g['layer']} {g['gate']}")
    ax.set_xlabel("character of the text")
    ax.set_ylabel("fraction saturated")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Gate saturation along the text")
    ax.legend(fontsize=6, ncol=4)
    return _save(fig, path)


def run_curves(metrics, path):
    """Training and validation loss (nats/char) against step, from metrics.jsonl."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = [m["step"] for m in metrics]
    for key in ("train_loss", "val_loss"):
        if metrics and key in metrics[0]:
            ax.plot(steps, [m[key] for m in metrics], marker=".", label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title("Training curves")
    ax.legend(fontsize=7)
    return _save(fig, path)


def run_figures(diag, out):
    out = Path(out)
    return {"Gradient horizon": run_horizon(diag, out / "horizon.png"),
            "Gate saturation along the text": run_gate_saturation(diag, out / "gate_saturation.png"),
            "Sigmoid and tanh": activations(out / "activations.png")}
