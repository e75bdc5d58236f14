"""One BLAS thread for the per-step GEMMs of the time loop.

Profiled on the 2-core machine: the recurrent GEMM of one step, e.g.
(32, 256) x (256, 1024) or (64, 512) x (512, 2048), ran 1.3-2.5x faster on one
OpenBLAS thread than on two (splitting a small GEMM costs more than it gains),
while the large GEMMs around the loop (all steps' input projections, the
weight gradients) gain from every thread. So the loops switch the BLAS to
``STEP_THREADS`` threads and back. It needs threadpoolctl (the ``speed`` and
``test`` extras); without it nothing is switched. ``STEP_THREADS = None``
leaves the BLAS alone.
"""
from __future__ import annotations

import contextlib

STEP_THREADS = 1
_libs = None


def _blas_libs():
    global _libs
    if _libs is None:
        try:
            from threadpoolctl import ThreadpoolController
            _libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:          # threadpoolctl missing or unable to inspect this BLAS
            _libs = []
    return _libs


_saved = []      # per active step_threads block: [(lib, its own thread count)]


@contextlib.contextmanager
def step_threads():
    """BLAS on ``STEP_THREADS`` threads inside the block (if it has more), as it was after."""
    saved = [(lib, lib.num_threads) for lib in _blas_libs()
             if STEP_THREADS is not None and lib.num_threads > STEP_THREADS]
    for lib, _ in saved:
        lib.set_num_threads(STEP_THREADS)
    _saved.append(saved)
    try:
        yield
    finally:
        _saved.pop()
        for lib, n in saved:
            lib.set_num_threads(n)


# Multiply-adds below which a GEMM stays on one thread too: waking a second thread for a
# sub-millisecond GEMM costs more than it saves, and much more when the other core is busy.
ALL_THREADS_MIN_WORK = 2 ** 24


@contextlib.contextmanager
def all_threads(work):
    """Inside ``step_threads``: the BLAS back on its own thread count for a GEMM of ``work`` multiply-adds."""
    saved = (_saved[-1] if _saved else []) if work >= ALL_THREADS_MIN_WORK else []
    for lib, n in saved:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, _ in saved:
            lib.set_num_threads(STEP_THREADS)
