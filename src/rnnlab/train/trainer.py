"""The training loop for stateful sequence models: TBPTT steps, evaluation, checkpoints, metrics.

One step:

    x, y, reset = streams.batch(step)          chunk ``step`` of every stream (N, k1)
    state       = state with reset streams zeroed
    loss        = tbptt_step(model, x, y, state, k2)   forward k1, backward k2 (see tbptt.py)
    stop if the loss or a gradient is not finite (nothing is saved, the last checkpoint stays)
    clip each gradient entry to [-clip_value, clip_value] if clip_value is set, then
    clip the gradients' global norm to ``clip``
    optimizer.lr = lr * schedule(step); optimizer.step(grads)

Every ``eval_every`` steps (and at the end) the model is evaluated on the
validation streams, the checkpoint is rewritten atomically, then one line is
appended to ``metrics.jsonl``. Everything a run depends on is in the
checkpoint (parameters, optimizer moments, dropout RNG states, the streams'
carried state and the step), so a resumed run continues bit for bit.

A run folder holds ``model.safetensors`` and ``metrics.jsonl``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import numpy as np

from .. import optim
from .._validate import NonFiniteError
from ..errors import UsageError
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .metrics import MetricsLog, Tally
from .tbptt import Streams, tbptt_step

__all__ = ["TrainConfig", "Trainer", "Diverged", "evaluate", "load_run", "CHECKPOINT", "METRICS", "SAVED_META"]

CHECKPOINT = "model.safetensors"
METRICS = "metrics.jsonl"
OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD,
              "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


class Diverged(UsageError):
    """The loss or a gradient became NaN or infinite."""


@dataclasses.dataclass
class TrainConfig:
    """How to train; saved in the checkpoint. Fields marked * must match on --resume."""
    seq_len: int = 100            # * k1: characters per chunk; 100 covers a line or two of verse
    bptt: int = 0                 # * k2: backward window (0 means = seq_len, plain truncated BPTT)
    batch: int = 32               # * N parallel streams; 32 keeps the GEMMs efficient on two cores
    lr: float = 2e-3              # * Adam's step size; 2e-3 is the usual fast setting for char LSTMs
    optimizer: str = "adam"       # * Adam: robust to the very different gradient scales of embedding and head
    schedule: str = "constant"    # * 'constant' or 'cosine' (warm-up, then cosine down to 10% at schedule_steps)
    warmup: int = 0               # * warm-up steps of the cosine schedule
    schedule_steps: int = 0       # * cosine horizon, fixed when the run starts (so --resume keeps it)
    clip: float = 5.0             # * global-norm clipping: rare exploding steps are cut, normal ones untouched
    clip_value: float = 0.0       # * clip each gradient entry to [-v, v] before the norm clip; 0 or None: off,
                                  #   since clipping by norm alone keeps each step's direction
    val_fraction: float = 0.05    # * the last 5% of the corpus is held out for validation
    eval_every: int = 200         # steps between evaluations/checkpoints (~6% of the time at the defaults)
    patience: int = 5             # stop after this many evaluations without a better val loss (0: never)

    MUST_MATCH = ("seq_len", "bptt", "batch", "lr", "optimizer", "schedule", "warmup", "schedule_steps",
                  "clip", "clip_value", "val_fraction")
    # Fields added after checkpoints were first written: an older checkpoint lacks them and ran with
    # the feature off, which is each one's default (load_run fills it in).
    ADDED_LATER = ("clip_value",)

    @property
    def k2(self):
        return self.bptt or self.seq_len

    def validate(self):
        for name in ("seq_len", "batch", "eval_every"):
            _positive(getattr(self, name), "--" + name.replace("_", "-"))
        if self.bptt < 0 or self.bptt > self.seq_len:
            raise UsageError(f"--bptt: expected a backward window in 1..--seq-len={self.seq_len} "
                             f"(or 0 for all of it), got {self.bptt}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr: expected a positive number, got {self.lr}")
        if not (self.clip > 0):
            raise UsageError(f"--clip: expected a positive max gradient norm, got {self.clip}")
        if self.clip_value is not None and not (self.clip_value >= 0 and math.isfinite(self.clip_value)):
            raise UsageError(f"--clip-value: expected 0 (off) or a positive bound on each gradient entry, "
                             f"got {self.clip_value}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise UsageError(f"--schedule: expected 'constant' or 'cosine', got {self.schedule!r}")
        if self.schedule == "cosine" and self.schedule_steps <= self.warmup:
            raise UsageError(f"--schedule cosine: needs --steps larger than --warmup={self.warmup} "
                             f"(the cosine's horizon), got {self.schedule_steps}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"--val-fraction: expected a number in (0, 1), got {self.val_fraction}")
        if self.patience < 0:
            raise UsageError(f"--patience: expected 0 (off) or a positive number of evaluations, got {self.patience}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name}: expected a positive integer, got {value!r}")
    return value


def evaluate(model, streams):
    """Loss, perplexity, bits per character and accuracy of ``model`` over every character of ``streams``.

    Runs in eval mode from zero states, resetting at document boundaries, and
    restores the previous mode. Uses no random numbers.
    """
    was_training = model.training
    model.eval()
    tally = Tally()
    state = model.initial_state(streams.num_streams)
    try:
        for i in range(len(streams)):
            x, y, reset = streams.batch(i)
            state = model.reset_state(state, reset)
            logits, state = model.forward(x, state)
            if not all(np.isfinite(a).all() for a in _state_arrays(state)):
                raise FloatingPointError(f"the hidden state became non-finite in evaluation chunk {i}")
            tally.add(logits, y)
    finally:
        model.train(was_training)
    return tally.summary()


def _state_arrays(state):
    return state if isinstance(state, tuple) else (state,)


class Trainer:
    """Trains ``model`` on ``train_streams``; writes ``run_dir/model.safetensors`` and ``metrics.jsonl``.

    ``meta`` is extra JSON saved in every checkpoint (the model config, the
    vocabulary, where the corpus came from), so the run can be rebuilt alone.
    """

    def __init__(self, model, train_streams, val_streams, config, run_dir, meta, quiet=False, log=None):
        self.model, self.train_streams, self.val_streams = model, train_streams, val_streams
        self.config = config.validate()
        self.run_dir = os.fspath(run_dir)
        self.meta = dict(meta)
        self.quiet = quiet
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        c = self.config
        self.optimizer = OPTIMIZERS[c.optimizer](model.params, lr=c.lr)
        self.schedule = (optim.cosine_with_warmup(c.warmup, c.schedule_steps, 0.1) if c.schedule == "cosine"
                         else optim.constant())
        self.metrics = MetricsLog(os.path.join(self.run_dir, METRICS))
        self.step = 0
        self.state = model.initial_state(train_streams.num_streams)
        self.best_val = math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.elapsed = 0.0          # training seconds over all sessions of the run
        self.saved_step = None

    @property
    def checkpoint_path(self):
        return os.path.join(self.run_dir, CHECKPOINT)

    # ---- checkpoints ------------------------------------------------------------------
    def save(self):
        tensors = {f"model.{k}": v for k, v in self.model.params.items()}
        tensors.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        tensors.update({f"state.{i}": a for i, a in enumerate(_state_arrays(self.state))})
        meta = dict(self.meta)
        meta.update(step=self.step, train=self.config.to_dict(),
                    rng={k: rng_state(g) for k, g in self.model.rngs.items()},
                    progress={"best_val": None if math.isinf(self.best_val) else self.best_val,
                              "best_step": self.best_step, "bad_evals": self.bad_evals,
                              "elapsed": self.elapsed})
        save_checkpoint(self.checkpoint_path, tensors, meta)
        self.saved_step = self.step

    def restore(self, tensors, meta):
        """Continue from a checkpoint written by ``save`` (its config was checked by the caller)."""
        def part(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            self.model.load_state_dict(part("model."))
            self.optimizer.load_state_dict(part("optim."))
            arrays = part("state.")
            state = tuple(arrays[str(i)] for i in range(len(arrays)))
            for a, ref in zip(state, _state_arrays(self.state)):
                if a.shape != ref.shape:
                    raise ValueError(f"carried state: expected shape {ref.shape}, got {a.shape}")
            if len(state) != len(_state_arrays(self.state)):
                raise ValueError(f"carried state: expected {len(_state_arrays(self.state))} arrays, got {len(state)}")
            self.state = state if isinstance(self.state, tuple) else state[0]
            for k, g in self.model.rngs.items():
                set_rng_state(g, meta["rng"][k])
            p = meta["progress"]
            self.step = int(meta["step"])
            self.best_val = math.inf if p["best_val"] is None else float(p["best_val"])
            self.best_step, self.bad_evals = int(p["best_step"]), int(p["bad_evals"])
            self.elapsed = float(p["elapsed"])
        except (KeyError, ValueError, TypeError) as e:
            raise UsageError(f"{self.checkpoint_path}: cannot resume from this checkpoint ({e})") from None
        self.saved_step = self.step

    # ---- the loop ---------------------------------------------------------------------
    def _train_step(self):
        x, y, reset = self.train_streams.batch(self.step)
        state = self.model.reset_state(self.state, reset)
        self.model.zero_grad()
        # A diverging run overflows somewhere; that is detected and reported just below
        # (naming the parameter and step), so NumPy's warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                loss, _, _, self.state = tbptt_step(self.model, x, y, state, self.config.k2)
            except NonFiniteError as e:      # a layer's backward refused a non-finite gradient
                raise Diverged(f"training stopped at step {self.step + 1}: a gradient is not finite ({e}); "
                               f"{self._kept()}; try a lower --lr, --clip or --clip-value") from None
        grads = self.model.grads
        bad = optim.find_nonfinite(grads)
        state_ok = all(np.isfinite(a).all() for a in _state_arrays(self.state))
        if bad is not None or (loss is not None and not math.isfinite(loss)) or not state_ok:
            what = (f"the gradient of {bad!r}" if bad else "the loss" if state_ok else "the hidden state")
            raise Diverged(f"training stopped at step {self.step + 1}: {what} is not finite (loss {loss}); "
                           f"{self._kept()}; try a lower --lr, --clip or --clip-value")
        if self.config.clip_value:
            # By value first: an outlier entry (one saturated gate, one rare character's embedding row)
            # is cut to +-clip_value before it can dominate the global norm, where it would make
            # clip_grad_norm shrink every other gradient with it. The norm clip then bounds the step.
            optim.clip_grad_value(grads, self.config.clip_value)
        optim.clip_grad_norm(grads, self.config.clip)
        optim.apply_schedule(self.optimizer, self.config.lr, self.schedule, self.step)
        self.optimizer.step(grads)
        self.step += 1
        return loss, int((y != -100).sum())

    def _kept(self):
        return (f"the last good checkpoint (step {self.saved_step}) is kept in {self.checkpoint_path}"
                if self.saved_step is not None else "no checkpoint was written")

    def _evaluate(self, train_losses, chars, seconds):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                val = evaluate(self.model, self.val_streams)
            except FloatingPointError:
                val = {"loss": math.nan}
        if not math.isfinite(val["loss"]):
            bad = optim.find_nonfinite(self.model.params)
            where = f"parameter {bad!r} is not finite" if bad else "the parameters grew too large"
            raise Diverged(f"training stopped at step {self.step}: the validation loss is {val['loss']} "
                           f"({where}); {self._kept()}; try a lower --lr or --clip")
        record = {"step": self.step,
                  "epoch": round(self.step / len(self.train_streams), 4),
                  "train_loss": float(np.mean(train_losses)) if train_losses else None,
                  "val_loss": val["loss"], "val_bpc": val["bpc"], "val_ppl": val["ppl"], "val_acc": val["acc"],
                  "lr": self.optimizer.lr,
                  "chars_per_sec": chars / seconds if seconds > 0 else None,
                  "elapsed_s": round(self.elapsed, 3)}
        if val["loss"] < self.best_val:
            self.best_val, self.best_step, self.bad_evals = val["loss"], self.step, 0
        else:
            self.bad_evals += 1
        self.save()                      # checkpoint first: a metrics line never refers to an unsaved step
        self.metrics.append(record)
        return record

    def _report(self, bar, record):
        """One line per evaluation: above the progress bar, or on stderr when there is no bar (a log file)."""
        if bar is not None:
            bar.write(_line(record), file=sys.stderr)
        elif not self.quiet:
            self.log(_line(record))

    def fit(self, steps=None, time_budget=None):
        """Train until ``step == steps`` or ``time_budget`` seconds pass, or early stopping. Returns a summary."""
        if (steps is None) == (time_budget is None):
            raise ValueError("fit: give exactly one of steps and time_budget")
        c = self.config
        os.makedirs(self.run_dir, exist_ok=True)
        if self.saved_step is None:
            self.save()                  # step 0: a good checkpoint exists before anything can go wrong
        bar = _progress(steps, time_budget, self.step, self.quiet)
        start = time.perf_counter()
        losses, chars, t_last, stop_reason = [], 0, start, None
        last = None
        try:
            while True:
                now = time.perf_counter()
                if steps is not None and self.step >= steps:
                    stop_reason = f"reached --steps {steps}"
                    break
                if time_budget is not None and now - start >= time_budget:
                    stop_reason = f"time budget of {time_budget:g}s used"
                    break
                loss, n = self._train_step()
                if loss is not None:
                    losses.append(loss)
                chars += n
                t = time.perf_counter()
                self.elapsed += t - now
                if bar is not None:
                    bar.update(1 if steps is not None else t - now)
                    bar.set_postfix({"loss": f"{loss if loss is not None else float('nan'):.3f}",
                                     "chars/s": f"{chars / max(t - t_last, 1e-9):,.0f}"}, refresh=False)
                if self.step % c.eval_every == 0:
                    last = self._evaluate(losses, chars, t - t_last)
                    losses, chars, t_last = [], 0, time.perf_counter()
                    self._report(bar, last)
                    if c.patience and self.bad_evals >= c.patience:
                        stop_reason = (f"early stop: no better val loss in {c.patience} evaluations "
                                       f"(best {self.best_val:.4f} at step {self.best_step})")
                        break
            if self.saved_step != self.step:
                last = self._evaluate(losses, chars, time.perf_counter() - t_last)
                self._report(bar, last)
        finally:
            if bar is not None:
                bar.close()
        return {"stop": stop_reason, "step": self.step, "last": last, "best_val": self.best_val,
                "best_step": self.best_step, "seconds": time.perf_counter() - start}


def _line(r):
    train = f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-"
    cps = f"{r['chars_per_sec']:,.0f}" if r["chars_per_sec"] else "-"
    return (f"step {r['step']:>6}  train {train}  val {r['val_loss']:.4f} nats  {r['val_bpc']:.3f} bpc  "
            f"acc {r['val_acc']:.3f}  {cps} chars/s")


def _progress(steps, time_budget, start_step, quiet):
    """A tqdm bar on stderr, or None when quiet, not a terminal, or tqdm is missing."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    if steps is not None:
        return tqdm(total=steps, initial=start_step, unit="step", file=sys.stderr, dynamic_ncols=True)
    return tqdm(total=float(time_budget), unit="s", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")


# The metadata Trainer.save writes and restore (and a resuming command) reads; load_run checks it all.
SAVED_META = ("step", "rng", "progress.best_val", "progress.best_step", "progress.bad_evals", "progress.elapsed",
              *(f"train.{f.name}" for f in dataclasses.fields(TrainConfig) if f.name not in TrainConfig.ADDED_LATER))


def load_run(run_dir, kind, required=()):
    """(tensors, meta) of the checkpoint in ``run_dir``, with a one-line UsageError if there is none.

    The metadata must hold ``SAVED_META`` and the caller's own ``required`` keys
    (dotted, as ``"corpus.digest"``); a checkpoint lacking any is refused here.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        if not (os.path.isfile(run_dir) and run_dir.endswith(".safetensors")):
            raise UsageError(f"RUN: no run folder {run_dir!r}; expected the --out folder of 'rnnlab train {kind}'")
        path = run_dir
    else:
        path = os.path.join(run_dir, CHECKPOINT)
    tensors, meta = load_checkpoint(path, kind, SAVED_META + tuple(required))
    defaults = TrainConfig().to_dict()
    for name in TrainConfig.ADDED_LATER:
        meta["train"].setdefault(name, defaults[name])
    return tensors, meta
