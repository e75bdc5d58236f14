"""Intel MKL for the fast loops' float32 GEMMs, with the recurrent weights packed once a call.

Optional: ``pip install 'rnnlab[mkl]'`` installs Intel's oneMKL from PyPI (Linux x86-64).
Every step of a recurrent loop multiplies by the same W_hh. A plain GEMM (OpenBLAS's, or
MKL's ``cblas_sgemm``) copies ("packs") W_hh into its blocked layout at every call; MKL's
``cblas_sgemm_pack`` does it once, and ``cblas_sgemm_compute`` then multiplies by the packed
copy at every step. Measured on the 2-core Intel machine (AVX-512, two threads, best of 200;
OpenBLAS's range covers h W_hh^T and W_hh h^T and two runs):

    (32, 256) x (256, 1024)    OpenBLAS 78-121 us    MKL 75 us    MKL packed 51 us
    (64, 512) x (512, 2048)    OpenBLAS 565-681 us   MKL 514 us   MKL packed 386 us
    (64, 512) x (512, 512)     OpenBLAS 175 us       MKL 128 us   MKL packed 98 us

The batch split's parts (``_split``) each run MKL on one thread (``part``).
When MKL is in use the loops run all their GEMMs through it (input projections, per-step
products, weight gradients, dX): OpenBLAS's worker threads spin for about 0.1 s after each
threaded call and would take a core from MKL's. MKL runs on GNU OpenMP when the system has
libgomp (its threads sleep soon after a call), else on one thread (``sequential``).

``RNNLAB_MKL`` chooses: ``0`` never, ``1`` whenever it is installed, unset (``auto``): when it
is installed and the CPU is Intel's (on the 2-core AMD EPYC machine MKL's packed product was
slower than OpenBLAS's plain GEMM the faster way round, W h^T: (32, 256) x (256, 1024) 216
against 152 us, (64, 512) x (512, 2048) 1126 against 890 us, best of 5 turns of 200 calls). ``tests/test_fast.py`` checks the loops through MKL against the readable path.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

import numpy as np

F = np.float32
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_B_MATRIX, _PACKED = 162, 151
_LAYER_SEQUENTIAL, _LAYER_GNU = 1, 3

lib = None            # the loaded libmkl_rt, or None
_raw_lib = None       # the same (tests may wrap ``lib``; compiled loops take addresses from this)
threading_layer = None
error = None          # why MKL could not be loaded, if it is installed but failed


def _find():
    """Path of libmkl_rt from the installed ``mkl`` wheel, or None."""
    try:
        from importlib import metadata
        files = metadata.files("mkl") or []
    except Exception:                  # not installed
        return None
    for f in files:
        if f.name.startswith("libmkl_rt.so"):
            return str(f.locate())
    return None


def _intel_cpu():
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("vendor_id") and "GenuineIntel" in line for line in fh)
    except OSError:
        return False


def _load():
    global lib, _raw_lib, threading_layer, error
    path = _find()
    if path is None:
        return
    try:
        mkl = ctypes.CDLL(path)
    except OSError as e:
        error = f"could not load {path}: {e}"
        return
    try:
        ctypes.CDLL("libgomp.so.1")
        threading_layer = "gnu"
    except OSError:
        threading_layer = "sequential"
    mkl.MKL_Set_Threading_Layer(ctypes.c_int(_LAYER_GNU if threading_layer == "gnu" else _LAYER_SEQUENTIAL))
    c_int, c_float, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    mkl.cblas_sgemm.argtypes = [c_int] * 6 + [c_float, p, c_int, p, c_int, c_float, p, c_int]
    mkl.cblas_sgemm.restype = None
    mkl.cblas_sgemm_pack_get_size.argtypes = [c_int] * 4
    mkl.cblas_sgemm_pack_get_size.restype = ctypes.c_size_t
    mkl.cblas_sgemm_pack.argtypes = [c_int] * 6 + [c_float, p, c_int, p]
    mkl.cblas_sgemm_pack.restype = None
    mkl.cblas_sgemm_compute.argtypes = [c_int] * 6 + [p, c_int, p, c_int, c_float, p, c_int]
    mkl.cblas_sgemm_compute.restype = None
    mkl.MKL_Set_Num_Threads_Local.argtypes = [c_int]
    mkl.MKL_Set_Num_Threads_Local.restype = c_int
    mkl.MKL_Get_Max_Threads.restype = c_int
    lib = _raw_lib = mkl


_load()
_choice = os.environ.get("RNNLAB_MKL", "auto")
ENABLED = lib is not None and (_choice == "1" or (_choice not in ("0", "1") and _intel_cpu()))


# Multiply-adds below which a GEMM stays with NumPy's BLAS: an MKL call costs about 6-7 us more
# than OpenBLAS's (ctypes and MKL's own dispatch), e.g. (8, 128) x (128, 512) OpenBLAS 9.5-10.4 us
# against MKL packed 10-13 us, (16, 128) x (128, 512) 21-23 against 12-19 us (one and two threads,
# best of 300). The layers' small GEMMs run on one BLAS thread (``_threads``), so OpenBLAS's
# workers do not spin beside MKL's.
MIN_WORK = 2 ** 20


_local = threading.local()        # depth: how many ``regime`` blocks this thread is in


def active(dtype, work=MIN_WORK):
    """Whether a GEMM of this dtype and ``work`` multiply-adds goes through MKL: float32, and at
    least ``MIN_WORK`` multiply-adds or any size inside ``regime``."""
    return ENABLED and dtype == F and (work >= MIN_WORK or getattr(_local, "depth", 0) > 0)


@contextlib.contextmanager
def regime(dtype, step_work):
    """A loop whose step's recurrent GEMM has ``step_work`` multiply-adds: if that is MKL's
    (``active``), every float32 GEMM inside goes through MKL, the small ones too (a bias gradient's
    GEMV), so that no threaded OpenBLAS call leaves its workers spinning beside MKL's threads:
    an RNN training step at N=32, T=100, H=256 took 112 ms (median) with that one OpenBLAS GEMV
    in it against 13 ms without MKL (measured, interleaved). Yields whether it is on."""
    on = active(dtype, step_work)
    if on:
        _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield on
    finally:
        if on:
            _local.depth -= 1


@contextlib.contextmanager
def part(depth):
    """Inside the block, on this thread: MKL on one thread (``MKL_Set_Num_Threads_Local``) and
    ``regime`` at ``depth``, the depth of the thread that runs the loop (``_split``'s parts)."""
    prev_depth = getattr(_local, "depth", 0)
    _local.depth = depth
    # only where MKL is in use: each ctypes call lets go of the GIL, and taking it back waited for
    # the other part's Python (0.3-1.6 ms in 2 of 6 calls seen, LSTM inference N=32, MKL off)
    prev = lib.MKL_Set_Num_Threads_Local(1) if lib is not None and ENABLED else None
    try:
        yield
    finally:
        if prev is not None:
            lib.MKL_Set_Num_Threads_Local(prev)
        _local.depth = prev_depth


def depth():
    """How many ``regime`` blocks this thread is in."""
    return getattr(_local, "depth", 0)


def _operand(a):
    """(a, transpose flag, leading dimension) for row-major CBLAS: a itself when one of its axes
    has unit stride (views and transposes included), else a contiguous copy of it."""
    s0, s1 = a.strides
    m, n = a.shape
    if s1 == 4 and s0 % 4 == 0 and s0 >= 4 * n:
        return a, _NO_TRANS, s0 // 4
    if s0 == 4 and s1 % 4 == 0 and s1 >= 4 * m:
        return a, _TRANS, s1 // 4
    return np.ascontiguousarray(a), _NO_TRANS, n


def _ldc(out):
    """The leading dimension of out for CBLAS, or None if its rows are not laid out as CBLAS writes them."""
    s0, s1 = out.strides
    if s1 == 4 and s0 % 4 == 0 and s0 >= 4 * out.shape[1] and out.flags.writeable:
        return s0 // 4
    return None


def matmul(a, b, out=None, accumulate=False):
    """out <- a @ b (out += a @ b if ``accumulate``) for 2-D arrays; returns out.

    Through MKL's ``cblas_sgemm`` when ``active`` (float32, at least ``MIN_WORK`` multiply-adds)
    and out's rows lie as CBLAS writes them, else through NumPy. out must not overlap a or b (the
    loops' never do; NumPy would copy, CBLAS does not)."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
        accumulate = False
    work = a.shape[0] * a.shape[1] * b.shape[1]
    ldc = _ldc(out) if active(out.dtype, work) and a.dtype == b.dtype == out.dtype and work > 0 else None
    if ldc is None:
        if accumulate:
            out += a @ b
        else:
            np.matmul(a, b, out=out)
        return out
    a, ta, lda = _operand(a)
    b, tb, ldb = _operand(b)
    lib.cblas_sgemm(_ROW_MAJOR, ta, tb, a.shape[0], b.shape[1], a.shape[1], 1.0,
                    a.ctypes.data, lda, b.ctypes.data, ldb, 1.0 if accumulate else 0.0,
                    out.ctypes.data, ldc)
    return out


class Packed:
    """x (N, K) @ B (K, C) at every step of a loop, B packed once by ``cblas_sgemm_pack``."""

    def __init__(self, B, N):
        B, tb, ldb = _operand(B)
        self.K, self.C = B.shape
        size = lib.cblas_sgemm_pack_get_size(_B_MATRIX, N, self.C, self.K)
        self.buf = np.empty(size // 4 + 16, F)
        lib.cblas_sgemm_pack(_ROW_MAJOR, _B_MATRIX, tb, N, self.C, self.K, 1.0,
                             B.ctypes.data, ldb, self.buf.ctypes.data)

    def __call__(self, x, out):
        """out <- x @ B; returns out. out: (N, C) with unit column stride."""
        x, tx, ldx = _operand(x)
        lib.cblas_sgemm_compute(_ROW_MAJOR, tx, _PACKED, x.shape[0], self.C, self.K,
                                x.ctypes.data, ldx, self.buf.ctypes.data, self.K, 0.0,
                                out.ctypes.data, _ldc(out))
        return out


def compute_address():
    """The address of ``cblas_sgemm_compute``, for compiled loops that call it (``_compiled``)."""
    return ctypes.cast(_raw_lib.cblas_sgemm_compute, ctypes.c_void_p).value


def sgemm_address():
    """The address of ``cblas_sgemm`` (32-bit integers), for compiled loops that call it."""
    return ctypes.cast(_raw_lib.cblas_sgemm, ctypes.c_void_p).value


def describe():
    """What ``rnnlab bench`` reports."""
    if lib is None:
        return {"enabled": False, "installed": _find() is not None, "error": error}
    version = None
    try:
        buf = ctypes.create_string_buffer(256)
        lib.mkl_get_version_string(buf, 256)
        version = buf.value.decode(errors="replace").strip()
    except Exception:
        pass
    return {"enabled": ENABLED, "installed": True, "threading": threading_layer, "version": version}
