"""``rnnlab bench``: time rnnlab against PyTorch on this machine's CPU (see ``rnnlab.bench``)."""
from __future__ import annotations

import json
import os

from ..errors import UsageError


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
        formatter_class=__import__("argparse").ArgumentDefaultsHelpFormatter)
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
    p.set_defaults(func=main)


def main(args):
    from .. import bench
    if args.repeats is not None and args.repeats < 1:
        raise UsageError(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.threads < 1:
        raise UsageError(f"--threads: expected a positive integer, got {args.threads}")
    if args.json and os.path.exists(args.json) and not args.force:
        raise UsageError(f"--json: {args.json} exists; choose another name or pass --force to overwrite it")
    result = bench.run(threads=args.threads, quick=args.quick, repeats=args.repeats)
    print(bench.format_table(result))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    return 0
