"""Shared pieces of the fast loops: the memory order of their (T, N, .) arrays, the order of a
backward sweep in chunks of steps, W_hh^T, and the backward's recurrent product.

The backward keeps the pre-activation gradients of ``chunk`` steps at a time
(not all T) and turns each full chunk into weight gradients with one GEMM per
weight: memory for dA stays (chunk, N, G) at any T, and with chunk * N in the
thousands the GEMMs are as efficient as one over all steps.
"""
from __future__ import annotations

import math

import numpy as np

from . import _gemm, _mkl


# ---- memory order of the per-step arrays ----------------------------------------------------
# The loops index every per-step array as (T, N, .) and take step t as a[t]. For batch_first
# data (N, T, .) that a[t] can be a view, x.transpose(1, 0, 2)[t]: its N rows are each contiguous
# and the BLAS takes the row stride T * K as they are. Keeping batch_first data batch-major saves
# four transposing copies of (N, T, .) arrays a training step (input, output, dout, dx), 2 ms each
# at N = 64, T = 50, D = H = 512 (measured, 9.4 of a 120 ms RNN step on the 2-core AVX2 machine).
# The loops then make their own per-step arrays in the same order (``empty_steps``), and the
# kernels get their memory (``memory``).

def batch_major(a):
    """Whether the (T, N, K) array a is a time-major view of C-contiguous batch-major (N, T, K)
    memory (and not also C-contiguous itself, as it is when N = 1 or T = 1)."""
    return not a.flags.c_contiguous and a.transpose(1, 0, 2).flags.c_contiguous


def memory(a, bm):
    """The (T, N, K) array a as it lies in memory: (N, T, K) if ``bm`` (batch-major), else a. The
    compiled kernels take it and index rows m[n, t] or m[t, n]: contiguous rows either way, which
    LLVM vectorises, where it does not vectorise rows of the strided view a[t] (8-12x slower,
    measured)."""
    return a.transpose(1, 0, 2) if bm else a


def empty_steps(T, N, K, bm, dtype=np.float32):
    """An empty (T, N, K) array laid out batch-major (a view of (N, T, K) memory) if ``bm``,
    starting on a cache line (``aligned_empty``)."""
    return aligned_empty((N, T, K), dtype).transpose(1, 0, 2) if bm else aligned_empty((T, N, K), dtype)


# Bytes of a cache line: the loops' arrays start on one (``aligned_empty``).
ALIGN = 64


def aligned_empty(shape, dtype=np.float32):
    """``np.empty(shape, dtype)`` whose data starts on an ``ALIGN``-byte boundary (NumPy's own start
    16 bytes along, often not on a cache line). Where two cores write the two halves of one row,
    as ``_pair``'s do (each its hidden units of h W_hh^T, the gates, c, tanh(c) and h), a row that
    starts off a cache line puts a line across the halves' border, written by both cores at
    every step. The tiny LSTM loop on two cores (N=1, T=100, H=128, best / median of 300 calls,
    4 rounds, 2026-12-07 on the Intel machine): 286-295 / 293-303 us with its arrays on cache
    lines against 332-338 / 342-348 us with them 4 or 16 bytes off."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize                   # (np.prod: 3 us more a call)
    buf = np.empty(nbytes + ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def aligned_weight(W, T):
    """W C-contiguous and on a cache line for a loop of T steps that reads it whole at each:
    W itself where it is (the layers make their parameters so), else a copy where T > 8 (a
    (512, 128) W_hh read from L2 row by row at every step, on the Intel machine: 2.81 us from a
    cache line, 3.77 us 16 bytes off, best of 10 x 2000)."""
    if T <= 8:
        return np.ascontiguousarray(W)
    return W if W.flags.c_contiguous and W.ctypes.data % ALIGN == 0 else aligned_copy(W)


def aligned_copy(a):
    """A C-contiguous copy of a, starting on a cache line (``aligned_empty``)."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


def as_order(a, bm):
    """a (T, N, K) laid out batch-major (``bm``) or time-major, copied only if it is not already."""
    if bm:
        return a if batch_major(a) else np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2)
    return np.ascontiguousarray(a)


def rows(a, bm):
    """a (T', N, K) as a (T' N, K) matrix whose rows run batch-major (n, then t) if ``bm``, else
    time-major: a view where the memory allows, else a copy (a chunk of a batch-major array)."""
    K = a.shape[2]
    return a.transpose(1, 0, 2).reshape(-1, K) if bm else a.reshape(-1, K)


def rows_view(a, bm):
    """``rows(a, bm)`` if it is a view of a (so that writing it writes a), else None."""
    r = rows(a, bm)
    return r if np.may_share_memory(r, a) else None


def unrows(M, T, bm):
    """The inverse of ``rows``: a (T N, K) matrix back as (T, N, K) (a view, batch-major if ``bm``)."""
    if bm:
        return M.reshape(-1, T, M.shape[1]).transpose(1, 0, 2)
    return M.reshape(T, -1, M.shape[1])


def project(X, W, out=None):
    """X W^T for every step (T, N, G), one GEMM over all T N rows in X's memory order, the
    result in the same order; or into ``out`` (T, N, G), one GEMM over its rows where they form
    one matrix (``rows_view``; a batch-major part of the sequences does), else one GEMM over X's
    rows gathered time-major and its result copied into out (a time-major part of the sequences;
    ``np.matmul`` over out's steps, a GEMM a step, repacks W at every step: for half of N=64, T=50,
    D=512, G=2048 on one thread 38.6 / 44.7 against 48.3 / 54.3 ms, best / median of 10,
    interleaved)."""
    if out is not None:
        bm = batch_major(out)
        target = rows_view(out, bm)
        if target is None:
            T, n = out.shape[:2]
            out[...] = _gemm.matmul(np.ascontiguousarray(X).reshape(T * n, -1), W.T).reshape(T, n, -1)
        else:
            _gemm.matmul(rows(X, bm), W.T, target)
        return out
    bm = batch_major(X)
    m = memory(X, bm)
    P = _gemm.matmul(m.reshape(-1, m.shape[2]), W.T).reshape(m.shape[:2] + (-1,))
    return memory(P, bm)


def forward_steps(T, reverse):
    """The forward's order of the steps: 0..T-1, or T-1..0 for the reverse direction."""
    return range(T - 1, -1, -1) if reverse else range(T)


def previous_states(Hp, out, h0, reverse):
    """Hp[t] <- h_{t-1} of every step, in one copy after the loop: out[t - 1] (out[t + 1] for the
    reverse direction), and h0 for the first step. Only where no mask carries a state across
    steps, so that h_{t-1} is the previous step's output."""
    if reverse:
        Hp[:-1] = out[1:]
        Hp[-1] = h0
    else:
        Hp[1:] = out[:-1]
        Hp[0] = h0


def kernel_biases(mode, b_ih, b_hh, G, dtype=np.float32):
    """The biases the compiled kernels add, zeros for bias=False: b (G,) = b_ih + b_hh, added to
    x W_ih^T + h W_hh^T; for the GRU b_hh only on r and z, and b_hn (H,) apart, since it sits
    inside r * (W_hn h + b_hn). Returns (b, b_hn), b_hn None for the LSTM and the RNN."""
    if mode != "gru":
        return (np.zeros(G, dtype) if b_ih is None else b_ih + b_hh), None
    H = G // 3
    if b_ih is None:
        return np.zeros(G, dtype), np.zeros(H, dtype)
    b = b_ih.copy()
    b[:2 * H] += b_hh[:2 * H]
    return b, np.ascontiguousarray(b_hh[2 * H:])


def chunks(T, reverse, chunk):
    """The backward's chunks of steps (lo, hi), steps lo..hi-1, in its order: from the end
    (T - chunk..T-1 first), or from the start for the reverse direction."""
    if reverse:
        return [(lo, min(T, lo + chunk)) for lo in range(0, T, chunk)]
    return [(max(0, hi - chunk), hi) for hi in range(T, 0, -chunk)]


def backward_steps(T, reverse, chunk):
    """Yield (t, slot, done) in the backward's order (T-1..0, or 0..T-1 for the reverse direction).

    slot is t's row in a chunk buffer; done is (lo, hi), the chunk's steps
    lo..hi-1, at the chunk's last step, else None.
    """
    for lo, hi in chunks(T, reverse, chunk):
        steps = range(lo, hi) if reverse else range(hi - 1, lo - 1, -1)
        last = hi - 1 if reverse else lo
        for t in steps:
            yield t, t - lo, ((lo, hi) if t == last else None)


def recurrent_weight(W_hh, T):
    """W_hh^T (H_out, G) for the loop's h_prev @ W_hh^T: a contiguous copy when T > 2, else the view.

    OpenBLAS multiplies by a C-contiguous (H_out, G) faster than by the transposed view of
    W_hh (measured on 2 threads: (32, 256) x (256, 1024) 159 -> 129 us, (64, 512) x (512, 2048)
    900 -> 877 us; one thread (1, 128) x (128, 512) 3.9 -> 3.5 us); the copy, made once per
    call, pays for itself after a few steps.
    """
    return transposed(W_hh) if T > 2 else W_hh.T


def transposed(W):
    """A C-contiguous copy of W^T (``transpose_into``), on a cache line (``aligned_empty``)."""
    out = aligned_empty(W.shape[::-1], W.dtype)
    return transpose_into(W, out)


def transpose_into(W, out):
    """out <- W^T, by the tiled compiled transpose for float32 when Numba is there
    (``_compiled.transpose2d``; a (2048, 512) W_hh^T on the 2-core AVX2 machine: NumPy's strided
    copy 6.4 ms, the tiled one 0.49 ms; a (512, 32) step result 15.2 against 8.3 us, measured),
    else by NumPy. Returns out."""
    from . import _compiled          # here, not at the top: _compiled imports this module
    if _compiled.AVAILABLE and W.dtype == np.float32:
        _compiled.transpose2d(W, out)
    else:
        out[...] = W.T
    return out


class StepProduct:
    """out (N, C) <- x (N, K) B, once a step of a loop with B (K, C) the same at every step:
    directly, with B C-contiguous (copied once per call when it is a transposed view, as
    ``recurrent_weight`` says why), or with ``swap`` (and T > 2: then ``transposed``) as B^T x^T
    into a (C, N) buffer turned back by ``transpose_into``. OpenBLAS
    is often faster that way round for a few tens of rows; the windows are below. With MKL in
    use (``_mkl``), T > 2 and N B.size at least ``_mkl.MIN_WORK``, B is packed once by MKL
    instead and neither applies."""

    def __init__(self, B, N, T, swap):
        self.packed = _mkl.Packed(B, N) if T > 2 and _mkl.active(B.dtype, N * B.size) else None
        self.transposed = swap and T > 2 and self.packed is None
        if self.transposed:
            self.BT = B.T if B.T.flags.c_contiguous else transposed(B)
            self.buf = np.empty((B.shape[1], N), B.dtype)
        elif self.packed is None:
            self.B = B if B.flags.c_contiguous else recurrent_weight(B.T, T)

    def __call__(self, x, out):
        """out <- x B; returns out."""
        if self.packed is not None:
            self.packed(x, out)
        elif self.transposed:
            np.matmul(self.BT, x.T, out=self.buf)
            transpose_into(self.buf, out)
        else:
            _mkl.matmul(x, self.B, out)
        return out


# Between these batch sizes the compiled forwards compute h W_hh^T as (W_hh h^T)^T.
PRODUCT_TRANSPOSED_MIN_ROWS = 16
PRODUCT_TRANSPOSED_MAX_ROWS = 32


class RecurrentProduct(StepProduct):
    """The compiled forwards' per-step product hw = h_prev W_hh^T (h_prev (N, H_out), W_hh (G, H_out)).

    For 16 to 32 sequences OpenBLAS computes it faster the other way round, W_hh h^T (no copy
    of W_hh needed). Measured in the loops with their gate kernels on the 2-core AVX2 machine
    (50 steps, two BLAS threads, median of 15 interleaved runs, plain / transposed): LSTM H=256
    N=16 1.03x, N=20 1.15x, N=32 1.19x, N=40 1.00x; H=512 N=24 1.15x, N=32 1.23x, N=48 0.90x,
    N=64 0.9x; GRU H=256 N=16 1.12x, N=32 1.14x, N=40 0.95x; RNN H=256 N=16 1.10x, N=32 1.03x,
    N=40 0.93x. Whole forwards interleaved in one process with the order alternating, medians of
    25: LSTM N=16, 24, 32 1.08x, 1.14x, 1.15x; GRU 1.07x, 1.12x, 1.07x; RNN 0.96x, 1.17x, 1.03x.
    Outside the window h_prev is multiplied by a contiguous W_hh^T.
    """

    def __init__(self, W_hh, N, T):
        super().__init__(W_hh.T, N, T, PRODUCT_TRANSPOSED_MIN_ROWS <= N <= PRODUCT_TRANSPOSED_MAX_ROWS)


# Between these batch sizes the backward's dh = dA W_hh is computed as (W_hh^T dA^T)^T.
TRANSPOSED_MIN_ROWS = 16
TRANSPOSED_MAX_ROWS = 48


class RecurrentGrad(StepProduct):
    """The backward's per-step product dh = dA W_hh (dA (N, G), W_hh (G, H_out)).

    On its own OpenBLAS computes it much faster transposed, as W_hh^T dA^T with a tall,
    narrow result (H_out, N) turned back to (N, H_out) (W_hh^T copied once per call): measured
    on the 2-core machine (AVX-512 kernels, two threads) (32, 1024) x (1024, 256) 167 -> 62 us.
    Inside the backward loop the gain is smaller; whole LSTM backwards, T = 50, best of 7: N = 16,
    H = 256 6.28 -> 5.40 ms; N = 32, H = 256 11.07 -> 10.04 ms; but N = 8 no change and
    N = 64, H = 512 51.8 -> 53.1 ms. Hence the window of batch sizes above, for every cell: for
    the RNN (G = H_out) the two ways tie on the 2-core AVX2 machine (whole backwards, T = 100,
    H = 256, interleaved in one process with the order alternating, medians of 31 and 41: N = 16
    0.98x, N = 32 1.01x and 0.98x, N = 48 1.01x and 0.98x; an earlier measurement that had the
    transposed way lose, N = 48 0.79x, always ran it second).
    """

    def __init__(self, W_hh, N, T):
        super().__init__(W_hh, N, T, TRANSPOSED_MIN_ROWS <= N <= TRANSPOSED_MAX_ROWS)


def grad_from_outputs(matmul, A, previous, lo, hi, seqs, bm, g):
    """g += A^T H_prev for steps lo..hi-1 of the sequences ``seqs``, where A = ``rows(dA, bm)``
    and h_prev is read from the outputs, not from an array of its own: ``previous`` = (out, h0,
    reverse), h_{t-1} = out[t - 1] (out[t + 1] reversed) and h0 for the first step (t = 0, or
    T - 1 reversed).

    Where the chunk holds the first step, the outputs' rows of the chunk, in A's order, are A's
    rows one place along: n rows along time-major (a step's rows lie together), one row
    batch-major (a sequence's steps do). Batch-major, a sequence's first row then faces the
    previous sequence's last output: those rows of A are set to zero first (so this goes last
    of A's uses) and their products with h0 added apart. Results equal the h_prev array's but
    for the order of the sums. ``matmul`` is ``_gemm.matmul``."""
    out, h0, reverse = previous
    T = out.shape[0]
    first = T - 1 if reverse else 0
    if not lo <= first < hi:                                     # every h_prev is an output
        prev = out[lo + 1:hi + 1] if reverse else out[lo - 1:hi - 1]
        matmul(A.T, rows(prev[:, seqs], bm), g, accumulate=True)
        return
    L = hi - lo
    n = A.shape[0] // L
    O = rows(out[lo:hi, seqs], bm)                               # row (t, j) in A's order
    h0 = h0[seqs]
    zero = not h0.any()                                          # no initial state: its products are 0
    if bm:
        A3 = A.reshape(n, L, -1)                                 # a view: A's rows are (j, t)
        k = first - lo
        A0 = None if zero else A3[:, k].copy()
        A3[:, k] = 0
        shift = 1
    else:
        A0 = A[(L - 1) * n:] if reverse else A[:n]
        shift = n
    if L > 1 and reverse:                                        # row r of A faces out's row r + shift
        matmul(A[:-shift].T, O[shift:], g, accumulate=True)
    elif L > 1:                                                  # row r of A faces out's row r - shift
        matmul(A[shift:].T, O[:-shift], g, accumulate=True)
    if not zero:                                                 # (a pass over g: 1.3-1.5 ms at G=2048, H=512)
        matmul(A0.T, h0, g, accumulate=True)
