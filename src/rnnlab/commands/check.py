"""``rnnlab check``: prove this install's layers right, in a few seconds.

For each cell (RNN, LSTM, GRU), each layer option and both computation paths
(the fused kernels of ``rnnlab.fast``, used by default, and the readable
``rnnlab.cells``) it builds a small layer with random non-zero weights and
biases (U(-0.5, 0.5)), a random input and a random initial state, and runs

  * a float64 central-difference gradient check (``rnnlab.gradcheck``) of dx,
    the initial state and every parameter: pass if the relative error < 1e-7;
  * when PyTorch is importable, parity with ``torch.nn.RNN/LSTM/GRU``
    (``rnnlab.parity``) of outputs, final states and every gradient, in float64
    (pass < 1e-9) and float32 (pass < 1e-4). Unidirectional cases without
    lengths run as two forward calls carrying the state.

It prints one row per cell and check with the largest error and where it
occurred, and exits 0 if every check passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

from ..errors import UsageError
from ..gradcheck import check_layer_gradients
from ..recurrent import GRU, LSTM, RNN

CELLS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
TOLERANCE = {"gradient f64": 1e-7, "torch f64": 1e-9, "torch f32": 1e-4}
N, T, D, H, P = 2, 4, 3, 3, 2      # small: a finite-difference check runs 2 forwards per parameter entry

# Layer options, one idea each, then all together. Keys starting with "_" are not layer arguments:
# _state: give a random initial state; _lengths: random lengths in 1..T; _cells: the cells it applies to.
OPTIONS = {
    "default": {},
    "2 layers": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "bias=False": {"bias": False},
    "batch_first=False": {"batch_first": False},
    "lengths": {"_lengths": True},
    "initial state": {"_state": True},
    "relu": {"nonlinearity": "relu", "_cells": ("RNN",)},
    "proj_size": {"proj_size": P, "_cells": ("LSTM",)},
    "dropout (fixed mask)": {"num_layers": 2, "dropout": 0.5, "_gradient_only": True},
    "all": {"num_layers": 2, "bidirectional": True, "_lengths": True, "_state": True},
}
QUICK = ("default", "all")
PATHS = {"fast": True, "readable": False}     # value: layer.fast


def build_case(cell, option, dtype, rng):
    """A layer with random U(-0.5, 0.5) weights and biases and its random inputs: (layer, x, state, lengths)."""
    opts = OPTIONS[option]
    kwargs = {k: v for k, v in opts.items() if not k.startswith("_")}
    if option == "all":     # every cell-specific option too
        kwargs.update({"RNN": {"nonlinearity": "relu"}, "LSTM": {"proj_size": P}, "GRU": {}}[cell])
    layer = CELLS[cell](D, H, dtype=dtype, seed=int(rng.integers(2**31)), **kwargs)
    for p in layer.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    x = rng.standard_normal((N, T, D) if layer.batch_first else (T, N, D)).astype(dtype)
    state = None
    if opts.get("_state"):
        L = layer.num_layers * layer.num_directions
        h = rng.standard_normal((L, N, layer.hidden_out)).astype(dtype)
        state = (h, rng.standard_normal((L, N, H)).astype(dtype)) if cell == "LSTM" else h
    lengths = None
    if opts.get("_lengths"):
        lengths = rng.integers(1, T + 1, N)
        lengths[0] = T                      # the longest one fills the padded length, as in a real batch
    return layer, x, state, lengths


def cases(cell, quick):
    names = QUICK if quick else tuple(OPTIONS)
    return [o for o in names if cell in OPTIONS[o].get("_cells", CELLS)]


def run_checks(quick=False, use_torch=True, seed=0, progress=True):
    """Run every check; return rows (cell, check, n_cases, largest error, where, tolerance, passed)."""
    checks = ["gradient f64"] + (["torch f64", "torch f32"] if use_torch else [])
    jobs = [(cell, check, option, path) for cell in CELLS for check in checks for option in cases(cell, quick)
            for path in PATHS if check == "gradient f64" or not OPTIONS[option].get("_gradient_only")]
    if use_torch:
        from ..parity import compare_with_torch
    bar = _progress(jobs, progress)
    worst = {}
    for cell, check, option, path in bar:
        # every job draws from its own generator, so a row does not depend on which others ran
        rng = np.random.default_rng([seed, list(CELLS).index(cell), list(OPTIONS).index(option)])
        dtype = np.float32 if check == "torch f32" else np.float64
        layer, x, state, lengths = build_case(cell, option, dtype, rng)
        layer.fast = PATHS[path]
        if check == "gradient f64":
            errors = check_layer_gradients(layer, x, state, lengths, seed=int(rng.integers(2**31)))
        else:
            chunks = 2 if lengths is None and not layer.bidirectional else 1
            errors = compare_with_torch(layer, x, state, lengths, chunks=chunks, seed=int(rng.integers(2**31)))
        quantity = max(errors, key=errors.get)
        n, best = worst.get((cell, check), (0, (-1.0, "")))
        worst[(cell, check)] = (n + 1, max(best, (errors[quantity], f"{quantity} ({option}, {path})")))
    rows = []
    for (cell, check), (n, (err, where)) in worst.items():
        rows.append((cell, check, n, err, where, TOLERANCE[check], err < TOLERANCE[check]))
    return rows


def torch_available():
    return importlib.util.find_spec("torch") is not None


def _progress(jobs, enabled):
    if not enabled or importlib.util.find_spec("tqdm") is None:
        return jobs
    from tqdm import tqdm
    return tqdm(jobs, desc="rnnlab check", unit="case", file=sys.stderr, leave=False, disable=None)


def format_table(rows):
    head = ("cell", "check", "cases", "largest rel. error", "where (quantity, option, path)", "tolerance", "result")
    body = [(c, k, str(n), f"{e:.2e}", w, f"{t:.0e}", "ok" if ok else "FAIL") for c, k, n, e, w, t, ok in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    line = lambda r: "  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in body])


def main(args):
    if args.seed < 0:
        raise UsageError(f"--seed: expected a non-negative integer, got {args.seed}")
    use_torch = not args.no_torch and torch_available()
    start = time.perf_counter()
    rows = run_checks(quick=args.quick, use_torch=use_torch, seed=args.seed)
    print(format_table(rows))
    failed = [r for r in rows if not r[-1]]
    note = "" if use_torch else (" (PyTorch parity skipped: --no-torch)" if args.no_torch
                                 else " (PyTorch parity skipped: torch is not installed; pip install 'rnnlab[test]')")
    print(f"\n{len(rows) - len(failed)} of {len(rows)} checks passed in {time.perf_counter() - start:.1f} s{note}."
          " Relative error = max|a - b| / max(max|a|, max|b|) over each array (see rnnlab.gradcheck).")
    return 1 if failed else 0


def register(subparsers, train_subparsers):
    p = subparsers.add_parser(
        "check", help="verify the layers: gradient checks and PyTorch parity (seconds)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=("Check that the RNN, LSTM and GRU layers of this install are exact: float64 "
                     "central-difference gradient checks over every layer option (tolerance 1e-7), and, "
                     "when PyTorch is installed, parity with torch.nn.RNN/LSTM/GRU on random weights "
                     "(float64 tolerance 1e-9, float32 1e-4). Prints the largest error per cell and check; "
                     "exit code 0 if all pass, 1 if any fails."))
    p.add_argument("--quick", action="store_true",
                   help=f"only the options {', '.join(QUICK)} (instead of all {len(OPTIONS)} options)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch parity even if torch is installed")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, inputs and states")
    p.set_defaults(func=main)
