"""The memory experiment: train each cell on a long-range task at several lengths and measure.

For every (cell, length, seed) the run trains ``layer -> linear head`` with Adam
and gradient-norm clipping on fresh random batches, evaluates on a fixed test
set, and records the gradient horizon ||dL/dh_t|| (see ``diagnostics``) at
initialisation, at every evaluation, and after training. Runs are independent
and are spread over worker processes.

Cells: ``rnn`` (tanh), ``lstm``, ``gru`` and ``irnn``, the ReLU RNN of Le, Jaitly
& Hinton (2015) with W_hh = I, zero biases and small input weights, so that at
initialisation it copies its state forward unchanged.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..losses import mse, softmax_cross_entropy
from ..nn import Linear
from ..optim import Adam, clip_grad_norm
from ..recurrent import GRU, LSTM, RNN
from . import memory_tasks as tasks
from .diagnostics import GradientHorizon, gate_stats, grad_norms, recording, update_ratios
from .forensics import describe, investigate, save_reproducer

CELLS = ("rnn", "lstm", "gru", "irnn")


@dataclass
class MemoryConfig:
    task: str = "adding"
    lengths: tuple = (10, 50, 100, 200)
    cells: tuple = ("rnn", "lstm", "gru")
    init: str = "default"        # "identity" turns the rnn cell into the IRNN
    hidden: int = 64             # enough for the adding problem; 128 trains slower per step on 2 cores
    steps: int = 3000            # Adam steps per run (early stop once well past the threshold)
    seeds: int = 1
    batch: int = 32
    lr: float = 3e-3             # Adam; with this the GRU solved T = 200 in 1,000 steps in a pilot run
    irnn_lr: float = 1e-3        # the IRNN's unbounded ReLU state needs a smaller step
    # LSTM gate biases. "chrono" (Tallec & Ollivier 2018): b_f = log(U(1, T - 1)) per unit and b_i = -b_f,
    # so the cells start with memory time scales spread up to the task's length T, and the input gate
    # mostly shut (the cell does not fill with the T irrelevant inputs). "forget_bias": PyTorch's uniform
    # init with b_f = forget_bias. In a pilot at T = 200 (lr 3e-3, seed 0) chrono reached MSE 0.017 by
    # step 500, while b_f = 3 stayed at the baseline for 3,000 steps and b_f = 1 for 2,400.
    lstm_init: str = "chrono"
    forget_bias: float = 1.0
    clip: float = 1.0            # global gradient-norm clip (Pascanu et al. 2013)
    eval_every: int = 100
    eval_size: int = 500
    probe_size: int = 64         # batch used to measure the gradient horizon and gates
    early_stop: float = 0.5      # stop when the metric is this fraction of the solved threshold
    workers: int = 2

    def runs(self):
        cells = ["irnn" if (c == "rnn" and self.init == "identity") else c for c in self.cells]
        lengths = (8,) if self.task == "digits" else self.lengths
        return [(c, T, s) for c in cells for T in lengths for s in range(self.seeds)]


def quick_config(**over):
    """The ``--quick`` setting: lengths 10 and 50, few steps, so it finishes well under two minutes."""
    # 1500 steps: enough for the LSTM and GRU to solve T = 50 and the tanh RNN T = 10 (measured, seed 0);
    # at 800 the LSTM stopped at MSE 0.0100, a hair above the threshold
    base = dict(lengths=(10, 50), steps=1500, eval_every=100, eval_size=256, hidden=32)
    base.update(over)
    return MemoryConfig(**base)


# ---- model: a recurrent layer and a linear head ------------------------------------------------
def make_layer(cell, input_size, hidden, seed, forget_bias=1.0, dtype=np.float32, chrono_T=None):
    """The recurrent layer of ``cell``; for the LSTM, ``chrono_T`` selects the chrono init for length T."""
    if cell == "lstm":
        layer = LSTM(input_size, hidden, seed=seed, forget_bias=forget_bias, dtype=dtype)
        if chrono_T is not None:
            p, H = layer.params, hidden
            b_f = np.log(layer.rng.uniform(1, max(chrono_T - 1, 2), H))   # gates i, f, g, o on the rows
            p["bias_ih_l0"][H:2 * H] = b_f
            p["bias_ih_l0"][:H] = -b_f
            p["bias_hh_l0"][:2 * H] = 0              # only b_ih + b_hh matters
        return layer
    if cell == "gru":
        return GRU(input_size, hidden, seed=seed, dtype=dtype)
    if cell == "rnn":
        return RNN(input_size, hidden, seed=seed, dtype=dtype)
    if cell == "irnn":
        layer = RNN(input_size, hidden, nonlinearity="relu", seed=seed, dtype=dtype)
        p = layer.params
        p["weight_hh_l0"][...] = np.eye(hidden)
        p["weight_ih_l0"][...] = layer.rng.normal(0, 1e-3, p["weight_ih_l0"].shape)
        p["bias_ih_l0"][...] = 0
        p["bias_hh_l0"][...] = 0
        return layer
    raise ValueError(f"cells: expected names from {', '.join(CELLS)}, got {cell!r}")


class Model:
    """``layer`` followed by ``Linear`` on the steps the task reads (the last one, or the copy task's last K)."""

    def __init__(self, task, cell, hidden, seed, forget_bias=1.0, dtype=np.float32, chrono_T=None):
        self.spec = tasks.spec(task)
        self.task = task
        self.layer = make_layer(cell, self.spec.input_size, hidden, seed, forget_bias, dtype, chrono_T)
        self.head = Linear(hidden, self.spec.output_size, dtype=dtype, seed=seed + 1_000_003)
        self.read = tasks.COPY_K if task == "copy" else 1    # how many final steps the head reads
        self.params = {**{"head." + k: v for k, v in self.head.params.items()}, **self.layer.params}
        self.grads = {**{"head." + k: v for k, v in self.head.grads.items()}, **self.layer.grads}

    def predict(self, x):
        out, _ = self.layer.forward(x)                            # (N, T, H)
        return self.head.forward(out[:, -self.read:])             # (N, K, O)

    def loss(self, x, y):
        """Forward and backward; returns the loss. Gradients land in ``self.grads``."""
        self.layer.zero_grad()
        self.head.zero_grad()
        pred = self.predict(x)
        loss, dpred = self.task_loss(pred, y)
        if not np.isfinite(loss):
            return loss                                           # nothing sensible to backpropagate
        dout = np.zeros((x.shape[0], x.shape[1], self.layer.hidden_out), self.layer.dtype)
        dout[:, -self.read:] = self.head.backward(dpred)
        self.layer.backward(dout)
        return loss

    def task_loss(self, pred, y):
        """adding: MSE of (N, 1, 1) against y (N, 1); copy, digits: cross-entropy, mean over (N, K)."""
        if self.task == "adding":
            return mse(pred, y[:, :, None])
        return softmax_cross_entropy(pred, y.reshape(pred.shape[0], -1))

    def evaluate(self, x, y):
        self.layer.eval()
        pred = self.predict(x)
        self.layer.train()
        if self.spec.metric == "accuracy":
            return float(np.mean(pred[:, -1].argmax(axis=1) == y))
        return float(self.task_loss(pred, y)[0])


def data_length(task, T):
    """Number of steps the network reads for a task of length ``T`` (the copy task adds 2K)."""
    return T + 2 * tasks.COPY_K if task == "copy" else T


# ---- data -----------------------------------------------------------------------------------------
class TaskData:
    """Training batches and a fixed test set for one task and length."""

    def __init__(self, task, T, seed, eval_size):
        self.task, self.T = task, T
        self.rng = np.random.default_rng([seed, T, 1])
        test_rng = np.random.default_rng([seed, T, 2])
        if task == "digits":
            self.xtr, self.ytr, self.xte, self.yte = tasks.load_digits_split(seed)
            self.baseline = tasks.majority_baseline(self.ytr, self.yte)
            self.test = (self.xte.astype(np.float32), self.yte)
        else:
            self.baseline = tasks.spec(task).baseline
            self.test = self.batch(eval_size, test_rng)

    def batch(self, N, rng=None):
        rng = rng or self.rng
        if self.task == "adding":
            x, y = tasks.adding_batch(rng, N, self.T)
        elif self.task == "copy":
            x, y = tasks.copy_batch(rng, N, self.T)
        else:
            idx = rng.integers(0, len(self.ytr), N)
            x, y = self.xtr[idx], self.ytr[idx]
        return x.astype(np.float32), y


# ---- one run ---------------------------------------------------------------------------------------
def horizon(model, x, y):
    """Gradient horizon by distance from the last step on one batch (parameters untouched)."""
    rec = GradientHorizon()
    with recording(model.layer, rec):
        model.loss(x, y)
    model.layer.zero_grad()
    dc = rec.by_distance(cell=True)
    return rec.by_distance(), (dc if dc.size else None)


def train_run(cfg, cell, T, seed, diagnostics=True, progress=None, out=None):
    """Train one model; returns its results.json record (and the model, for tests).

    If a loss or gradient becomes non-finite, training stops, the record says where
    (see ``forensics``) and, if ``out`` is a folder, a reproducer is saved there."""
    spec = tasks.spec(cfg.task)
    data = TaskData(cfg.task, T, seed, cfg.eval_size)
    chrono_T = data_length(cfg.task, T) if cfg.lstm_init == "chrono" else None
    model = Model(cfg.task, cell, cfg.hidden, seed, cfg.forget_bias, chrono_T=chrono_T)
    opt = Adam(model.params, cfg.irnn_lr if cell == "irnn" else cfg.lr)
    probe = data.batch(cfg.probe_size, np.random.default_rng([seed, T, 3]))
    rec = {"task": cfg.task, "cell": cell, "length": T, "seed": seed, "metric": spec.metric,
           "baseline": data.baseline, "threshold": spec.threshold, "solved_rule": spec.solved_rule,
           "hidden": cfg.hidden, "lr": opt.lr, "batch": cfg.batch, "clip": cfg.clip,
           "lstm_init": (cfg.lstm_init if cell == "lstm" else None)}
    curve, horizons, saturation, updates = [], [], [], []
    if diagnostics:
        h0, c0 = horizon(model, *probe)
        rec["horizon_init"] = h0.tolist()
        rec["horizon_cell_init"] = None if c0 is None else c0.tolist()
    target = spec.threshold * cfg.early_stop if spec.lower_is_better else 1 - (1 - spec.threshold) * cfg.early_stop
    t0 = time.perf_counter()
    train_losses = []
    step = 0
    for step in range(1, cfg.steps + 1):
        x, y = data.batch(cfg.batch)
        loss = model.loss(x, y)
        watch = diagnostics and step % cfg.eval_every == 0
        if watch:
            norms = grad_norms(model.grads)                       # before clipping
            before = {k: v.copy() for k, v in model.params.items()}
        norm = clip_grad_norm(model.grads, cfg.clip)
        if not (np.isfinite(loss) and np.isfinite(norm)):
            _diverged(rec, model, x, y, step, seed, out)
            break
        train_losses.append(loss)
        opt.step(model.grads)
        if watch:
            updates.append({"step": step, "grad_norm": norm, "grad_norms": norms,
                            "update_ratio": update_ratios(before, model.params)})
        if progress is not None:
            progress()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            value = model.evaluate(*data.test)
            curve.append({"step": step, "train_loss": float(np.mean(train_losses[-cfg.eval_every:])),
                          "value": value})
            if diagnostics:
                horizons.append(horizon(model, *probe)[0].tolist())
                st = gate_stats(model.layer, probe[0])
                saturation.append({f"{g}": v["saturated"] for (key, g), v in st.items() if key == (0, 0)})
            done = value < target if spec.lower_is_better else value >= target
            if done or not np.isfinite(value):
                break
    value = model.evaluate(*data.test) if np.all(np.isfinite(model.layer.params["weight_hh_l0"])) else float("nan")
    rec["value"] = value
    rec["solved"] = bool(np.isfinite(value) and (value < spec.threshold if spec.lower_is_better
                                                 else value >= spec.threshold))
    rec["steps_run"] = step
    rec["seconds"] = time.perf_counter() - t0
    rec["curve"] = curve
    if diagnostics:
        h1, c1 = horizon(model, *probe)
        rec["horizon_final"] = h1.tolist()
        rec["horizon_cell_final"] = None if c1 is None else c1.tolist()
        rec["horizon_history"] = horizons
        rec["saturation_history"] = saturation
        rec["update_history"] = updates       # per evaluation step: gradient norms, update-to-weight ratios
    return rec, model


def _diverged(rec, model, x, y, step, seed, out):
    report = investigate(model, x, y, step)
    rec["diverged_at_step"] = step
    rec["nonfinite"] = report
    rec["nonfinite_summary"] = describe(report)
    if out is not None:
        folder = Path(out) / f"nonfinite_{rec['cell']}_T{rec['length']}_s{seed}"
        # the parameters are those of this step: the optimiser has not moved them yet
        save_reproducer(folder, report, seed, model.params, x, y)
        rec["reproducer"] = str(folder)


def _worker(args):
    cfg, cell, T, seed, out = args
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(1)     # small GEMMs: one BLAS thread per worker process is faster
    except ImportError:
        limiter = None
    with np.errstate(over="ignore", invalid="ignore"):
        rec, _ = train_run(cfg, cell, T, seed, out=out)
    del limiter
    return rec


def run(cfg, log=None, out=None):
    """All runs of ``cfg``; returns the list of records (in the order of ``cfg.runs()``)."""
    from tqdm import tqdm
    jobs = [(cfg, c, T, s, out) for c, T, s in cfg.runs()]
    # longest first so the two workers finish together
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][2])
    results = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="memory runs", unit="run", file=log)
    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ctx.Pool(min(cfg.workers, len(jobs))) as pool:
            for i, rec in zip(order, pool.imap(_worker, [jobs[i] for i in order])):
                results[i] = rec
                bar.set_postfix_str(f"{rec['cell']} T={rec['length']} {rec['metric']}={rec['value']:.4g}")
                bar.update()
    else:
        for i in order:
            results[i] = _worker(jobs[i])
            bar.update()
    bar.close()
    return results


def config_dict(cfg):
    return asdict(cfg)
