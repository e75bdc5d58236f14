"""The benchmark of ``rnnlab bench`` as a script: ``python benchmarks/bench.py [--quick] [--json FILE] ...``.

The code lives in ``rnnlab.bench`` (so the installed command and this script
run the same thing); see its docstring for what is timed and how.
"""
import sys

from rnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
