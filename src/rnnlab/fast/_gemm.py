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
dA^T): the kernel then reads it by columns, from a copy of the block (rows ``PAD`` floats
longer) where a's columns lie a multiple of ``COPY_STRIDE`` floats apart.

Why the copy: dA^T's columns are G floats apart (2048 for the LSTM at H=512, 8 KB), so the k
steps of a row tile all fall into one set of the 12-way L1 cache and 16 of the L2's 2048 sets,
and evict each other. Read in place, (2048, 1600) x (1600, 512) (a part's dW_ih at N=64) ran at
176 GFLOP/s on one thread (K_BLOCK 512; 116-120 with b unblocked); from the copy 220-224, where
the product by rows of the same sizes, (1600, 512) x (512, 2048), ran at 235-237. Blocks of b of
up to 2048 rows (512 before) and the copy, against 512 rows and no copy, LSTM training steps
back to back, 10 rounds in turn in one process, median: N=64, T=50, D=H=512 105.1 against 115.9
ms (the new faster in 10 of 10), N=32, T=100, D=64, H=256 23.1 against 24.6 ms (9 of 10); GRU
and RNN at N=64 within 2%. The square (2048, 2048) GEMM on two threads (``rnnlab bench``'s
roofline) ran at 400-406 against 346-382 GFLOP/s (2026-12-07, same machine).

Earlier measurements (same machine, 2026-12-07), two threads, best of 5, GFLOP/s, NumPy /
panels (the blocks tried: 256 x 256, 512 x 128, 128 x 512, 1024 x 64 rows of b x rows of a; no
copy):

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
import threading

import numpy as np

from . import _mkl, _panels, _split, _threads

ENABLED = os.environ.get("RNNLAB_PANELS_GEMM", "1") != "0"
K_BLOCK = 2048          # rows of b packed (and summed over) at a time
M_BLOCK = 128           # rows of a a kernel call takes
COPY_STRIDE = 256       # a transposed a with columns a multiple of this many floats apart is copied
PAD = 16                # floats added to the copy's rows
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
    a's rows: the batch split's mechanism (``_split.run``), its pool and its parts. A transposed
    a whose columns lie a multiple of ``COPY_STRIDE`` floats apart is copied a block at a time
    into this thread's buffer (``_buffer``), its rows ``PAD`` floats longer."""
    kernel = _panels.compiled()
    M, K = a.shape
    if threads is None:
        threads = _threads.blas_threads() or 1
    threads = max(1, min(threads, _threads.cpus(), M // 8 or 1))
    chunks = [(k0, min(K, k0 + K_BLOCK)) for k0 in range(0, K, K_BLOCK)]
    packs = [_panels.pack(b[k0:k1]) for k0, k1 in chunks]
    copy = a.strides[1] != 4 and (a.strides[1] // 4) % COPY_STRIDE == 0

    def part(m0, m1):
        buf = _buffer(min(K, K_BLOCK), min(M_BLOCK, m1 - m0) + PAD) if copy else None
        for r0 in range(m0, m1, M_BLOCK):
            r1 = min(m1, r0 + M_BLOCK)
            for i, (k0, k1) in enumerate(chunks):
                x = a[r0:r1, k0:k1]
                if copy:
                    np.copyto(buf[:k1 - k0, :r1 - r0], x.T)
                    x = buf[:k1 - k0, :r1 - r0].T
                kernel.matmul(x, packs[i], out[r0:r1], accumulate or i > 0)

    _split.run(part, M, threads)
    return out


_buffers = threading.local()


def _buffer(rows, cols):
    """This thread's float32 (rows, cols) array for copied blocks of a, kept from call to call."""
    a = getattr(_buffers, "a", np.empty((0, 0), np.float32))
    if a.shape[0] < rows or a.shape[1] < cols:
        a = _buffers.a = np.empty((max(rows, a.shape[0]), max(cols, a.shape[1])), np.float32)
    return a[:rows, :cols]


def describe():
    """For ``rnnlab.fast.describe``."""
    if not ENABLED:
        return "off (RNNLAB_PANELS_GEMM=0)"
    return "on" if wider_than_blas() else "off (MKL in use, or NumPy's BLAS as wide as the kernel)"
