"""The ``rnnlab`` command line (also ``python -m rnnlab``).

Each command lives in ``rnnlab/commands/<name>.py`` and defines
``register(subparsers, train_subparsers)``, adding its parser with
``set_defaults(func=...)``. ``func(args)`` returns an exit code.

Bad input never shows a traceback: a ``UsageError``, ``ValueError``,
``TypeError`` or ``OSError`` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .errors import UsageError

# Every command module; a module that does not exist yet is simply not offered.
COMMANDS = ["check", "charlm", "experiment", "lab_commands", "bench", "tasks"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage + message)
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def build_parser():
    parser = _Parser(prog="rnnlab", description=(
        "Recurrent networks (RNN, LSTM, GRU) from first principles in NumPy. "
        "Run 'rnnlab COMMAND --help' for each command's options."))
    from . import __version__
    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train = sub.add_parser("train", help="train a model: charlm, forecast, classify, sentiment",
                           description="Train a model. Run 'rnnlab train TASK --help' for a task's options.")
    train_sub = train.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    for name in COMMANDS:
        if importlib.util.find_spec(f"rnnlab.commands.{name}") is not None:
            importlib.import_module(f"rnnlab.commands.{name}").register(sub, train_sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr if args.command is None else sys.stdout)
        return 2 if args.command is None else 0
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.stderr.write(f"rnnlab: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("rnnlab: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
