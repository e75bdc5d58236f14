"""Keep the threads of a split apart: each on its own core while they run side by side.

A split (``_split``: the batch's parts, ``_units``: a step's units) runs one part
on the calling thread and the others on pool threads at the same time. Linux may
put a woken pool thread on the core of the thread that woke it, and threads that
hand each other Python's GIL (as the parts do while they set up) keep waking each
other there; two parts then share one core for milliseconds until the load
balancer moves one, and the call takes up to twice as long. Measured on the
2-core Intel machine (2026-12-07), LSTM inference N=32, T=100, D=64, H=256 run as
``rnnlab bench`` runs it (calls back to back for 0.05 s, 0.2 s after PyTorch's
turn): 40 % of calls took 15-18 ms where the others took 8.5-9.5; the slow ones
had both parts on one CPU (``/proc/thread-self/stat``, field 39, at each part's
start and end) or one part starting 2-4 ms late. Pinning only the pool thread to
the other core changed nothing (turns' median 13.5 against 14.1 ms): the calling
thread followed it. Pinning both for the parallel phase: turns' median 9.41
against 15.44 ms, best 9.14 against 9.71 (12 turns each way, in turn).

``pin(tids)`` pins the calling thread to the CPU it is on and the threads ``tids``
to the other CPUs it may use, ``restore`` gives them all the calling thread's CPUs
back (``apart``: both around a block). The split gives them back as soon as the calling thread is
done with its own part, so that a pool thread still at work can move to the core
that thread leaves idle.
Threads created inside the block would inherit the one-CPU mask: the split's pool
threads are made before (``_split._executor``), and its parts run the BLAS on
their own thread (no OpenMP team is made there). Nothing is pinned where the
process may use one CPU only, where the OS does not tell which CPU a thread is on,
or with ``ENABLED = False`` (``RNNLAB_PIN=0``).
"""
from __future__ import annotations

import contextlib
import ctypes
import os

ENABLED = os.environ.get("RNNLAB_PIN", "1") != "0"

_getcpu = []            # libc's sched_getcpu, or None where there is none


def current_cpu():
    """The CPU the calling thread runs on now (glibc's ``sched_getcpu``), or None where unknown."""
    if not _getcpu:
        try:
            fn = ctypes.CDLL(None, use_errno=True).sched_getcpu
            fn.restype = ctypes.c_int
            fn.argtypes = []
        except (OSError, AttributeError):
            fn = None
        _getcpu.append(fn)
    fn = _getcpu[0]
    if fn is None:
        return None
    cpu = fn()
    return cpu if cpu >= 0 else None


@contextlib.contextmanager
def apart(tids):
    """Inside the block: this thread on its current CPU only, the threads ``tids`` (native ids of
    this process's threads) on the other CPUs this thread may use; after it, all of them on the
    CPUs this thread might use before. Yields whether the threads were pinned."""
    saved = pin(tids)
    try:
        yield bool(saved)
    finally:
        restore(saved)


def pin(tids):
    """Pin as ``apart`` says; returns [(tid, the mask to give it back)] for the masks changed (0:
    this thread), [] where nothing was pinned (for ``restore``)."""
    if not (ENABLED and tids):
        return []
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return []
    cpu = current_cpu()
    others = allowed - {cpu}
    if cpu not in allowed or not others:
        return []
    saved = []
    try:
        os.sched_setaffinity(0, {cpu})
        saved.append((0, allowed))
        for tid in tids:                                # given back this thread's CPUs, not the mask
            os.sched_setaffinity(tid, others)           # they had: two callers pinning the same pool
            saved.append((tid, allowed))                # at once would hand each other's pin back
    except OSError:                    # a thread gone, or the OS refused: leave it as it is
        pass
    return saved


def restore(saved):
    """Every mask ``pin`` changed back to this thread's CPUs before it."""
    for tid, mask in saved:
        try:
            os.sched_setaffinity(tid, mask)
        except OSError:
            pass
