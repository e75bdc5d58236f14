"""``rnnlab experiment memory``: long-range memory experiments (see ``rnnlab.lab.experiment``)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import UsageError


def _positive_ints(text, name):
    items = [s.strip() for s in str(text).split(",")]
    out = []
    for s in items:
        if not s.isdigit() or int(s) < 1:
            raise UsageError(f"--{name}: expected comma-separated positive integers such as 10,50,100, got {text!r}")
        out.append(int(s))
    return tuple(out)


def register(sub, train_sub):
    from ..lab.experiment import CELLS, MemoryConfig
    from ..lab.memory_tasks import TASKS
    d = MemoryConfig()
    p = sub.add_parser("experiment", help="research experiments: memory (vanishing gradients, long-term memory)",
                       description="Research experiments. Run 'rnnlab experiment memory --help'.")
    esub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    m = esub.add_parser(
        "memory", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train cells on long-range memory tasks and measure their gradient horizon",
        description=(
            "Train each cell at each sequence length on a long-range memory task, and measure how far back "
            "the gradient reaches (||dL/dh_t|| against the distance from the loss). Writes DIR/results.json "
            "(one record per task, cell, length and seed: metric, value, the trivial baseline, solved), "
            "PNG figures and DIR/report.html. Tasks: adding (MSE; always answering 1.0 scores 0.167; "
            "solved below 0.01), copy (cross-entropy per recalled symbol; memoryless baseline log 8; "
            "solved below 0.05), digits (8x8 digits read row by row; accuracy; solved at 0.9)."))
    m.add_argument("--task", default=d.task, help=f"one of {', '.join(TASKS)}")
    m.add_argument("--lengths", default=",".join(map(str, d.lengths)),
                   help="comma-separated sequence lengths / delays (ignored by digits, which has 8 rows)")
    m.add_argument("--cells", default=",".join(d.cells),
                   help=f"comma-separated cells from {', '.join(CELLS)} (irnn = identity-initialised ReLU RNN)")
    m.add_argument("--init", default=d.init, choices=["default", "identity"],
                   help="identity: the rnn cell becomes the IRNN of Le, Jaitly & Hinton 2015 (ReLU, W_hh = I)")
    m.add_argument("--hidden", type=int, default=d.hidden, help="hidden units")
    m.add_argument("--steps", type=int, default=d.steps,
                   help="Adam steps per run (a run stops early once its metric is half the solved threshold)")
    m.add_argument("--seeds", type=int, default=d.seeds, help="seeds per cell and length")
    m.add_argument("--batch", type=int, default=d.batch, help="batch size")
    m.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (the IRNN uses --irnn-lr)")
    m.add_argument("--irnn-lr", type=float, default=d.irnn_lr, help="Adam learning rate of the IRNN")
    m.add_argument("--lstm-init", default=d.lstm_init, choices=["chrono", "forget_bias"],
                   help="LSTM gate biases: chrono (Tallec & Ollivier 2018: b_f = log U(1, T-1), b_i = -b_f) "
                        "or forget_bias (PyTorch's init with b_f = --forget-bias)")
    m.add_argument("--forget-bias", type=float, default=d.forget_bias,
                   help="initial LSTM forget-gate bias with --lstm-init forget_bias")
    m.add_argument("--workers", type=int, default=d.workers, help="worker processes (runs are independent)")
    m.add_argument("--quick", action="store_true",
                   help="a small version (lengths 10,50, 1500 steps, hidden 32) that finishes in under two minutes")
    m.add_argument("--out", default="runs/memory", help="output folder DIR")
    m.set_defaults(func=run_memory)
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])


def config_from_args(a):
    """Check every option and build the ``MemoryConfig`` (UsageError names the option)."""
    from ..lab.experiment import CELLS, MemoryConfig, quick_config
    from ..lab.memory_tasks import TASKS
    if a.task not in TASKS:
        raise UsageError(f"--task: expected one of {', '.join(TASKS)}, got {a.task!r}")
    cells = tuple(c.strip() for c in a.cells.split(","))
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise UsageError(f"--cells: expected names from {', '.join(CELLS)}, got {a.cells!r}")
    for name in ("hidden", "steps", "seeds", "batch", "workers"):
        v = getattr(a, name)
        if v < 1:
            raise UsageError(f"--{name}: expected a positive integer, got {v}")
    for name in ("lr", "irnn_lr"):
        v = getattr(a, name)
        if not v > 0:
            raise UsageError(f"--{name.replace('_', '-')}: expected a positive number, got {v}")
    lengths = _positive_ints(a.lengths, "lengths")
    if a.task == "adding" and min(lengths) < 2:
        raise UsageError(f"--lengths: the adding problem needs lengths of at least 2, got {a.lengths!r}")
    given = {k: v for k, v in dict(task=a.task, lengths=lengths, cells=cells, init=a.init, hidden=a.hidden,
                                    steps=a.steps, seeds=a.seeds, batch=a.batch, lr=a.lr, irnn_lr=a.irnn_lr,
                                    forget_bias=a.forget_bias, lstm_init=a.lstm_init,
                                    workers=a.workers).items()}
    if a.quick:
        # --quick replaces only what the user did not set explicitly
        defaults = MemoryConfig()
        over = {k: v for k, v in given.items()
                if k in ("task", "cells", "init", "seeds", "workers", "lr", "irnn_lr", "batch", "forget_bias", "lstm_init")
                or v != getattr(defaults, k)}
        return quick_config(**over)
    return MemoryConfig(**given)


def run_memory(a):
    from ..lab.experiment import config_dict, run
    from ..lab.figures import memory_figures
    from ..lab.report import memory_report
    cfg = config_from_args(a)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a folder, got the file {out}")
    if (out / "results.json").exists():
        raise UsageError(f"--out: {out}/results.json already exists; choose another folder or move it away")
    if cfg.task == "digits":
        from ..lab.memory_tasks import load_digits_split
        load_digits_split()          # fail now, with one line, if scikit-learn is missing
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = run(cfg, out=out)
    wall = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(records, indent=1))
    (out / "config.json").write_text(json.dumps({**config_dict(cfg), "wall_seconds": wall}, indent=1))
    figs = memory_figures(records, out)
    memory_report(records, config_dict(cfg), figs, out / "report.html", wall)
    print(summary_table(records))
    print(f"wall time {wall:.1f} s; wrote {out}/results.json, {len(figs)} figures and {out}/report.html")
    return 0


def summary_table(records):
    """Text table: one row per cell and length, the mean metric over seeds and how many seeds solved it."""
    from ..lab.report import aggregate
    rows = aggregate(records)
    lines = [f"{'task':8} {'cell':5} {'T':>5} {'seeds':>5} {'metric':>8} {'value':>10} {'baseline':>9} "
             f"{'solved':>7} {'decay@init':>11} {'decay@end':>10}   (decay: ||dL/dh|| at distance 1 / at min(100, T-1))"]
    for r in rows:
        lines.append(f"{r['task']:8} {r['cell']:5} {r['length']:5d} {r['seeds']:5d} {r['metric']:>8} "
                     f"{r['value']:10.4g} {r['baseline']:9.4g} {r['solved']:>7} {r['decay_init']:11.3g} {r['decay']:10.3g}")
    return "\n".join(lines)
