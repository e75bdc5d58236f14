"""Batch split: a compiled loop's sequences as independent loops, one per core.

The sequences of a batch never meet in a recurrent layer: h_t of sequence n
depends on sequence n's inputs only. So a forward over N sequences can run as P
loops over t, each over N / P of the sequences (its rows of every (T, N, .)
array), on P threads at once, each with a single-threaded BLAS for its own input
projection and its own per-step product. Nothing is shared between the loops
while they run: no thread waits for another until the end.

With one loop and a two-threaded BLAS, the other core helps with the step's GEMM
but sits idle through the step's gate kernel; split, each core does both for its
half. Measured on the 2-core AVX2 machine (LSTM inference, batch-first, 15 runs
in turn with the unsplit loop, best / median): N=32, T=100, D=64, H=256 24.7 /
34.1 against 27.9 / 41.5 ms; N=64, T=50, D=H=512 105.6 / 118.3 against 116.6 /
128.1 ms. The input projection must be split too: done on both BLAS threads
first, it leaves OpenBLAS's worker spinning on the second core (for up to 2^28
cycles) while the loops start there: 39.2 against 33.0 ms at N=32 (best of 15).

The backward splits the same way: each part runs its own chunks of steps
backwards and its own weight-gradient GEMMs into its own gradient arrays (added
up, in part order, when all are done) and its rows of dX. So a training step
calls no threaded BLAS at all, which matters: OpenBLAS's workers spin for up to
2^28 cycles (~0.1 s here) after each threaded call, and a spinning worker takes
a core from the parts. A split forward right after a threaded GEMM took 115.4 /
157.7 ms against the whole loop's 107.3 / 127.9 ms (LSTM N=64, T=50, D=H=512,
best / median of 15); with the forward split and the backward whole, training
steps at N=32 took 70.7 against 63.1 ms. Hence the parts go only onto idle
cores: one per CPU not taken by another running thread (``/proc/loadavg``
counts them, a spinning OpenBLAS worker too; reading it costs ~25 us), so a
forward or backward that would start beside a busy thread runs whole. Training
steps back to back (two of three timed per turn, 10 turns, 6 at N=64; best / median), with
the batch split and ``_panels`` against without: LSTM N=32, T=100, D=64, H=256
48.9 / 59.3 against 58.5 / 69.4 ms; N=64, T=50, D=H=512 283.8 / 328.3 against
313.9 / 339.0 ms; GRU N=32 41.8 / 48.2 against 53.6 / 61.4 ms.

With MKL (``_mkl``, on Intel CPUs) each part runs MKL's packed product on one
thread (``MKL_Set_Num_Threads_Local``, per thread: ``_mkl.part``), where the whole
loop would run it on two, its gate kernel on one. Measured on the 2-core Intel
machine (AVX-512), 15 rounds each way in one process, order alternating, best /
median, split against whole: LSTM inference N=32, T=100, D=64, H=256 10.1 / 10.5
against 12.7 / 13.0 ms, training 30.5 / 31.6 against 34.0 / 35.8 ms; GRU inference
N=32 7.5 / 8.9 against 10.4 / 10.8 ms; LSTM inference N=64, T=50, D=H=512 44.9 /
48.5 against 48.4 / 50.1 ms; GRU training N=64 105.5 / 108.5 against 109.9 / 113.4
ms; LSTM training N=64 a tie. The RNN's light step lost split then (training N=32,
H=256, 2^21 multiply-adds a step: 10.0 / 12.2 against 8.0 / 8.5 ms), and with MKL the
split needed 2^22 multiply-adds a step (``MKL_MIN_WORK``); with the threads pinned apart
(below) it wins there and lower, and needs 2^20 as without MKL. 12-14 rounds each way in
turn, best / median, split against whole: RNN N=32, T=100, D=64, H=256 inference 2.73 / 2.90
against 3.21 / 3.42 ms, training 8.26 / 8.77 against 9.08 / 9.48; N=16 inference 1.51 / 1.72
against 1.76 / 1.88; LSTM N=16, H=128 (2^20) inference 1.98 / 2.03 against 2.70 / 2.75
(PyTorch 2.16 / 2.24); GRU N=16, H=256 training 12.9 / 14.3 against 15.3 / 15.9.

A loop that finds a core busy still splits, in as many parts as there are idle
cores but at least two (``Parts.crowded`` marks it, and the units split, ``_units``,
does not start then): the parts never wait for each other, so a part on a busy
core runs at the share of it the OS gives (half, beside one other thread), and a
part that no pool thread has started when the caller is done with its own runs
on the caller. Until 2026-12-07 such a loop ran whole on one thread (a threaded
BLAS beside a busy core waits for it every step, hence not that). Measured on the
2-core Zen 5 VM, LSTM inference 0.3 s after the last call, right after one
PyTorch forward (whose OpenMP worker spins for ~10 ms after it: /proc/loadavg
showed it running up to 7.9-20 ms after a GEMM, median 10.3 of 30, 20 being the
end of the window watched), median of 12: N=64, T=50, D=H=512 43.9 against
73.5 ms whole; right after a NumPy (1024, 1024) GEMM (OpenBLAS's worker spinning)
59.7 against 74.9 ms; N=32, T=100, D=64, H=256 11.5 against 12.0 and 12.3 against
12.5 ms; beside a process spinning all the time (40 calls each way) 65.1 against
66.8 ms (N=64) and 11.5 against 12.0 ms (N=32). The split's own pool thread,
still running for a moment after its part, is not counted as busy.

While the parts run side by side, the calling thread and the pool's are pinned to
different CPUs (``_affinity``): left to the OS, two parts shared a core in 20-40 %
of the calls at N=32 on the 2-core Intel machine and took up to twice as long.

Used for float32 loops that call the BLAS from compiled code (``_compiled``) when
the BLAS may use two threads or more (its threadpoolctl count at the call, so
``rnnlab bench --threads 1`` or ``threadpool_limits(1)`` keep one loop), each part
has at least ``MIN_ROWS`` sequences, and a step's recurrent GEMM over the whole
batch has at least ``MIN_WORK`` (with MKL ``MKL_MIN_WORK``) multiply-adds (below that the BLAS runs the step
on one thread anyway: ``_threads``). ``ENABLED = False`` (or
``RNNLAB_SPLIT=0``) keeps one loop; ``PARTS`` forces a number of parts (tests).
Each part's results are those of the whole loop on its rows, and the weight
gradients the sums of the parts', up to the order of the sums (rounding).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from . import _affinity, _mkl, _threads

ENABLED = os.environ.get("RNNLAB_SPLIT", "1") != "0"
MIN_ROWS = 8
MIN_WORK = 2 ** 20
MKL_MIN_WORK = 2 ** 20
PARTS = None

_pool = None            # (executor, its number of threads, their native ids)
_pool_lock = threading.Lock()
_workers = []           # native thread ids of the pool's threads


class Parts(int):
    """A number of parts (an int). ``crowded``: a core was busy when the loop was split (it splits
    anyway: module docstring)."""
    crowded = False


def parts(N, work, mkl=False):
    """How many loops a forward over N sequences runs as, with ``work`` multiply-adds in a step's
    recurrent GEMM over all N (1: no split), as a ``Parts``; ``mkl``: the loops' GEMMs are MKL's."""
    if PARTS is not None:
        return Parts(max(1, min(PARTS, N)))
    if not ENABLED or work < (MKL_MIN_WORK if mkl else MIN_WORK):
        return Parts(1)
    threads = _threads.blas_threads()
    if threads is None:               # threadpoolctl cannot see NumPy's OpenBLAS: its threads unknown
        return Parts(1)
    P = min(threads, _threads.cpus(), N // MIN_ROWS)
    if P <= 1:
        return Parts(1)
    idle = _idle_cpus()
    if idle >= P:
        return Parts(P)
    result = Parts(max(2, idle))      # a core busy: split anyway (module docstring)
    result.crowded = True
    return result


_loadavg = []            # /proc/loadavg's file descriptor, kept open (``_running``)


def _running():
    """Threads running or ready to run on this machine now, this one included (Linux: field 4 of
    /proc/loadavg), or None where that cannot be read. The file stays open and is read with
    pread: opening it each time took 90-130 us when it came after a long loop here (10 us when
    repeated at once), reading the open file 17-32 us."""
    try:
        if not _loadavg:
            _loadavg.append(os.open("/proc/loadavg", os.O_RDONLY))
        return int(os.pread(_loadavg[0], 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_running():
    """How many of the pool's threads are running now (state R): one that has just finished its
    part is still on its way back to wait for the next, and counts in ``/proc/loadavg``."""
    n = 0
    for tid in _workers:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        n += stat[stat.rindex(")") + 2] == "R"
    return n


def _idle_cpus():
    """CPUs of this process not taken by another running thread, the split's own ones aside (all
    of them if unknown)."""
    cpus, running = _threads.cpus(), _running()
    if running is None:
        return cpus
    if running > 1:
        running -= _own_running()
    return max(1, cpus - (running - 1))


def _executor(workers):
    """A pool of at least ``workers`` threads, made once (again only if more are needed), its
    threads started at once (``_start``)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[1] < workers:
            tids = []
            pool = ThreadPoolExecutor(workers, thread_name_prefix="rnnlab-split", initializer=_enlist,
                                      initargs=(tids,))
            _start(pool, workers)
            _pool = (pool, workers, tuple(tids))
        return _pool[0]


def _start(pool, workers):
    """Make the pool start all its threads now, not one at a time as jobs come: each job waits for
    the others, so each takes a thread of its own. Their ids are then known (``_affinity.pin``) and
    none is started inside a split's pinned phase (where it would inherit a one-CPU mask)."""
    barrier = threading.Barrier(workers + 1)
    jobs = [pool.submit(barrier.wait, 10) for _ in range(workers)]
    barrier.wait(10)
    for job in jobs:
        job.result()


def _enlist(tids):
    tid = threading.get_native_id()
    tids.append(tid)
    _workers.append(tid)


def _after_fork():
    """In a forked child the pool's threads do not exist (their ids are the parent's): a new pool
    when one is needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    _workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def cuts(N, P):
    """The first sequence of each of P parts, and N: as even as integers allow."""
    return [N * i // P for i in range(P + 1)]


def run(body, N, P):
    """body(n0, n1) for the P parts of range(N): parts 1.. on the pool's threads, part 0 on
    this one, each with the BLAS on one thread (NumPy's and MKL's: ``_mkl.part``), this thread
    and the pool's on different CPUs until this one is done with its own part (``_affinity``);
    a part that no pool thread has started by then (that thread's core busy) runs here after it.
    Returns when all are done and raises the first error any raised. With P = 1 just
    body(0, N), the BLAS as it is."""
    if P <= 1:
        body(0, N)
        return
    depth = _mkl.depth()

    def one(n0, n1):
        with _mkl.part(depth):
            body(n0, n1)

    c = cuts(N, P)
    with _threads.one_thread():
        pool = _executor(P - 1)
        futures = []
        pinned = _affinity.pin(_pool[2])
        try:
            futures += [pool.submit(one, c[i], c[i + 1]) for i in range(1, P)]
            one(c[0], c[1])
            _affinity.restore(pinned)           # the pool's threads free to take this core now
            pinned = []
            for i, f in enumerate(futures, 1):
                if f.cancel():                  # not started yet (its core busy): run it here
                    one(c[i], c[i + 1])
        finally:
            _affinity.restore(pinned)
            errors = [None if f.cancelled() else f.exception() for f in futures]   # waits for every part
    for e in errors:
        if e is not None:
            raise e
