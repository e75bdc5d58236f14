"""How many BLAS threads the per-step GEMMs of the time loop get.

Measured on the 2-core machine while it was otherwise idle (OpenBLAS 0.3.31,
float32, best of 200): a step's recurrent GEMM below about a million
multiply-adds runs no faster on two threads than on one, and a thread woken
for it costs microseconds (e.g. (1, 128) x (128, 512): 3.8 us either way);
from a million up two threads win: (1, 512) x (512, 2048) 60 -> 34 us,
(32, 256) x (256, 1024) 286 -> 159 us, (64, 512) x (512, 2048) 1831 -> 900 us.
So a loop whose step GEMM has fewer than ``STEP_ALL_THREADS_MIN_WORK``
multiply-adds switches the BLAS to ``STEP_THREADS`` threads and back, and the
large GEMMs around it (all steps' input projections, the weight gradients)
get every thread again through ``all_threads``. On a machine whose other
cores are busy, fewer threads can be faster: ``rnnlab train charlm`` runs on
one BLAS thread by default for that reason (``--threads``).

It needs threadpoolctl (the ``speed`` and ``test`` extras); without it nothing
is switched. ``STEP_THREADS = None`` leaves the BLAS alone.
"""
from __future__ import annotations

import contextlib
import os

STEP_THREADS = 1
STEP_ALL_THREADS_MIN_WORK = 2 ** 20
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


_saved = []      # per active step_threads or one_thread block: [(lib, its own thread count)]


def step_threads(work=0):
    """BLAS on ``STEP_THREADS`` threads inside the block (if it has more) when a step's GEMM has
    ``work`` < ``STEP_ALL_THREADS_MIN_WORK`` multiply-adds; as it was after."""
    limit = STEP_THREADS is not None and work < STEP_ALL_THREADS_MIN_WORK
    return _lowered(STEP_THREADS if limit else None, restorable=True)


@contextlib.contextmanager
def _lowered(n, restorable):
    """Every BLAS with more than n threads on n inside the block (none changed if n is None), its
    own count back after. The block's frame on ``_saved`` holds the counts lowered if
    ``restorable`` (``all_threads`` inside then gives them back for a large GEMM), else none."""
    saved = [(lib, lib.num_threads) for lib in _blas_libs() if n is not None and lib.num_threads > n]
    for lib, _ in saved:
        lib.set_num_threads(n)
    _saved.append(saved if restorable else [])
    try:
        yield
    finally:
        _saved.pop()
        for lib, m in saved:
            lib.set_num_threads(m)


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


def one_thread():
    """The BLAS on one thread inside the block (``_split``'s parts each run their own); as it was
    after. ``all_threads`` inside it changes nothing: a part's large GEMMs stay on its thread."""
    return _lowered(1, restorable=False)


def blas_threads():
    """The thread count NumPy's OpenBLAS has now (the BLAS the compiled loops call), or None if
    threadpoolctl sees no OpenBLAS."""
    counts = [lib.num_threads for lib in _blas_libs() if lib.internal_api == "openblas"]
    return min(counts) if counts else None


def outer_blas_threads():
    """NumPy's OpenBLAS thread count as the code around the loops set it: inside ``step_threads``
    the count it saved (it lowered it for the loop), inside ``one_thread`` 1; None if
    threadpoolctl sees no OpenBLAS."""
    if _saved:
        for lib, n in _saved[-1]:
            if lib.internal_api == "openblas":
                return n
    return blas_threads()


def cpus():
    """The CPUs this process may run on (its affinity where the OS tells, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def l2_bytes(default=2 ** 21, base="/sys/devices/system/cpu/cpu0/cache"):
    """The size of one core's L2 cache (Linux's sysfs; ``default`` where it cannot be read)."""
    try:
        for name in sorted(os.listdir(base)):
            d = os.path.join(base, name)
            with open(os.path.join(d, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 2 ** 10, "M": 2 ** 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


L2_BYTES = l2_bytes()
