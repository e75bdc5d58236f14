"""``rnnlab bench``: time rnnlab against PyTorch on this machine's CPU (see ``rnnlab.bench``)."""
from __future__ import annotations

import argparse
import json
import os

from ..bench import CELLS
from ..errors import UsageError

PARTS = ("grid", "stream", "sample", "memory")     # what --skip can leave out


def register(subparsers, train_subparsers):
    p = subparsers.add_parser(
        "bench", help="time rnnlab against PyTorch (CPU) side by side",
        description=(
            "Time rnnlab and PyTorch in one process on the same shapes, weights and thread count, "
            "taking turns and keeping the best of several runs: RNN/LSTM/GRU training steps and "
            "inference over a grid of sizes, one-step streaming of a 2-layer LSTM, character-model "
            "sampling and the peak memory of a T=1000 training step. Prints a table; ratio = "
            "torch time / rnnlab time (> 1: rnnlab faster); roofline = rnnlab's GFLOP/s over one "
            "large float32 GEMM's. Needs PyTorch. The full grid takes a few minutes."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the results as JSON to FILE (refuses to overwrite an existing file "
                        "unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite the --json FILE if it exists")
    p.add_argument("--quick", action="store_true",
                   help="a reduced grid (the two smaller sizes, H=128 streaming, fewer repeats, "
                        "memory at T=200) that runs in under a minute")
    p.add_argument("--repeats", type=int, default=None, metavar="K",
                   help="turns per library and point; the best counts (5, or 3 with --quick)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="threads for both libraries (torch.set_num_threads and the BLAS through threadpoolctl)")
    p.add_argument("--cell", action="append", choices=CELLS, default=argparse.SUPPRESS,
                   help="time only this cell on the grid (repeat the option for several; default all three)")
    p.add_argument("--size", action="append", default=argparse.SUPPRESS, metavar="N,T,D,H",
                   help="a grid point of your own: batch N, sequence length T, input size D, hidden size H "
                        "(repeat for several; default the three sizes of the README's table)")
    p.add_argument("--skip", action="append", choices=PARTS, default=argparse.SUPPRESS,
                   help="leave out a part of the benchmark: the grid, the streaming steps, the sampling "
                        "or the memory measurement (repeat for several)")
    p.set_defaults(func=main)


def parse_size(text):
    """"N,T,D,H" as four positive ints, or a UsageError saying what was expected."""
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise UsageError(f"--size: expected four positive integers N,T,D,H (batch, steps, inputs, hidden), "
                         f"e.g. 32,100,64,256; got {text!r}")
    return values


def main(args):
    from .. import bench
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.threads < 1:
        raise UsageError(f"--threads: expected a positive integer, got {args.threads}")
    if args.json and os.path.exists(args.json) and not args.force:
        raise UsageError(f"--json: {args.json} exists; choose another name or pass --force to overwrite it")
    skip = set(getattr(args, "skip", ()))
    if skip >= set(PARTS):
        raise UsageError("--skip: every part is skipped, so there is nothing to time; leave at least one of "
                         + ", ".join(PARTS))
    sizes = [parse_size(t) for t in args.size] if hasattr(args, "size") else None
    cells = tuple(dict.fromkeys(args.cell)) if hasattr(args, "cell") else CELLS
    result = bench.run(threads=args.threads, quick=args.quick, repeats=args.repeats, cells=cells,
                       sizes=[] if "grid" in skip else sizes, stream_sizes=() if "stream" in skip else None,
                       sampling="sample" not in skip, memory="memory" not in skip)
    print(bench.format_table(result))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0
