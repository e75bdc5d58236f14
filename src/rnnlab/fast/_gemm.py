"""The fast path's large float32 GEMMs: input projections, weight gradients and dX.

``matmul`` sends each to the fastest of three routes:

* **MKL** (``_mkl.matmul``) where the loops run on MKL (an Intel CPU with the ``mkl`` extra);
* **the panels kernel on every core** (``panels_matmul``) where that kernel has wider vectors
  than NumPy's BLAS runs: an AVX-512 CPU whose OpenBLAS is held to its 256-bit Haswell kernels
  (``OPENBLAS_CORETYPE``, which some machines set because older OpenBLAS builds fail on their
  CPU); rnnlab's own kernel (``_panels``) is compiled for the CPU as it is;
* else NumPy's ``matmul``.

The panels route: out (M, C) = a (M, K) b (K, C), b packed into the kernel's panels in
blocks of ``K_BLOCK`` rows, the rows of a split between the threads (as many as NumPy's
BLAS has now, so a batch split's part, on one BLAS thread, stays on its own), each thread
working through blocks of ``M_BLOCK`` rows. a may be a transposed view (the weight gradients'
dA^T): the kernel then reads it by columns. Measured on the 2-core AMD EPYC with AVX-512 (Zen
5, 2026-12-07), OpenBLAS held to Haswell kernels, two threads, best of 5, GFLOP/s, NumPy /
panels (the blocks tried: 256 x 256, 512 x 128, 128 x 512, 1024 x 64 rows of b x rows of a):

    (3200, 512) x (512, 2048)       236 / 391  463  332  454    (X W_ih^T, N=64)
    (3200, 2048) x (2048, 512)      236 / 386  423  391  451    (dA W_ih)
    (2048, 3200) x (3200, 512)      236 / 352  343  373  283    (dA^T X)
    (1024, 3200) x (3200, 256)      232 / 184  315  331  263    (dA^T H_prev, N=32)
    (3200, 64) x (64, 1024)         234 / 226  216  235  203    (X W_ih^T, N=32)
    (1024, 3200) x (3200, 64)       190 / 166  149  162  117    (dA^T X, N=32)

Where K or C is below ``MIN_SIDE`` the kernel gains nothing (the last two rows), and NumPy
keeps them. With OpenBLAS's own AVX-512 kernels (``OPENBLAS_CORETYPE`` unset) NumPy ran the
first three at 440, 454 and 436 against 392, 420 and 359: there this route is not taken.
``RNNLAB_PANELS_GEMM=0`` turns it off. Results differ from NumPy's only by rounding.
"""
from __future__ import annotations

import os

import numpy as np

from . import _mkl, _panels, _split, _threads

ENABLED = os.environ.get("RNNLAB_PANELS_GEMM", "1") != "0"
K_BLOCK = 512           # rows of b packed (and summed over) at a time
M_BLOCK = 128           # rows of a a kernel call takes
MIN_SIDE = 128          # K and C at least this
MIN_WORK = 2 ** 24      # multiply-adds at least this (below, NumPy's call is cheaper than the packing)
_NARROW = ("haswell", "zen", "sandybridge", "nehalem", "core2", "prescott", "atom", "bulldozer",
           "piledriver", "steamroller", "excavator")    # OpenBLAS kernels without 512-bit vectors

_wider = None


def wider_than_blas():
    """Whether the panels kernel runs 512-bit vectors while NumPy's OpenBLAS runs narrower
    kernels (threadpoolctl's ``architecture``), MKL not in use."""
    global _wider
    if _wider is None:
        archs = [(lib.architecture or "").lower() for lib in _threads._blas_libs()
                 if lib.internal_api == "openblas"]
        _wider = bool(archs) and all(a in _NARROW for a in archs) and _panels.address() is not None \
            and _panels.layout().vector == 16
    return ENABLED and _wider and not _mkl.ENABLED


def takes(a, b, out):
    """Whether ``matmul`` sends out = a b to the panels kernel."""
    M, K = a.shape
    C = b.shape[1]
    return (wider_than_blas() and a.dtype == b.dtype == out.dtype == np.float32
            and M * K * C >= MIN_WORK and K >= MIN_SIDE and C >= MIN_SIDE
            and C % _panels.layout().width == 0 and (a.strides[1] == 4 or a.strides[0] == 4)
            and out.strides[1] == 4 and not np.may_share_memory(out, a) and not np.may_share_memory(out, b))


def matmul(a, b, out=None, accumulate=False):
    """out <- a @ b (out += a @ b if ``accumulate``) for 2-D float arrays, by the route above;
    returns out. out must not overlap a or b."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
        accumulate = False
    if takes(a, b, out):
        return panels_matmul(a, b, out, accumulate)
    return _mkl.matmul(a, b, out, accumulate)


def panels_matmul(a, b, out, accumulate=False, threads=None):
    """out (M, C) <- (or +=) a (M, K) b (K, C) through ``_panels``'s kernel on ``threads``
    threads (default: NumPy's BLAS thread count now, at most the CPUs), each taking a share of
    a's rows: the batch split's mechanism (``_split.run``), its pool and its parts."""
    kernel = _panels.compiled()
    M, K = a.shape
    if threads is None:
        threads = _threads.blas_threads() or 1
    threads = max(1, min(threads, _threads.cpus(), M // 8 or 1))
    chunks = [(k0, min(K, k0 + K_BLOCK)) for k0 in range(0, K, K_BLOCK)]
    packs = [_panels.pack(b[k0:k1]) for k0, k1 in chunks]

    def part(m0, m1):
        for i, (k0, k1) in enumerate(chunks):
            for r0 in range(m0, m1, M_BLOCK):
                r1 = min(m1, r0 + M_BLOCK)
                kernel.matmul(a[r0:r1, k0:k1], packs[i], out[r0:r1], accumulate or i > 0)

    _split.run(part, M, threads)
    return out


def describe():
    """For ``rnnlab.fast.describe``."""
    if not ENABLED:
        return "off (RNNLAB_PANELS_GEMM=0)"
    return "on" if wider_than_blas() else "off (MKL in use, or NumPy's BLAS as wide as the kernel)"
