"""Inference in feature-major layout: the recurrent product as W_hh h^T (Numba kernels).

The loops of ``fast/_compiled.py`` keep each step's state batch-major, h (N, H),
and compute the recurrent product as h W_hh^T: a GEMM with a short, wide
result (N, G). OpenBLAS computes the same numbers much faster the other way
round, as W_hh h^T with a tall, narrow result (G, N). Measured on the 2-core
machine with its AVX-512 kernels, two threads, best of 7:

    N = 32, H = 256, G = 1024 (LSTM)    h W^T 74.5 us    W h^T 44.2 us
    N = 32, H = 256, G = 768  (GRU)     h W^T 53.3 us    W h^T 33.0 us
    N = 64, H = 512, G = 2048 (LSTM)    h W^T 407 us     W h^T 320 us

So here the loop runs with everything transposed: the input projections are
W_ih x_t^T (T, G, N); the state is h^T (H, N); and the gate kernels below loop over
the units j (rows) and, innermost and vectorised, over the sequences n.

The equations are those of ``rnnlab.cells.lstm`` and ``rnnlab.cells.gru``; only
the layout differs. The backward (``fast/_compiled.py``) expects the batch-major
cache, so a forward here leaves a cache that is transposed into that layout
only if ``backward`` is called: inference pays nothing for it. Used for float32
batches whose steps are large enough (``MIN_STEP_WORK``), in eval mode only
(``layer.eval()``): in training the cache's transposes cost more than the faster
product saves. A GRU training step (forward, transposes, backward), interleaved,
best / median of 9, feature-major against the batch-major loop: N = 64, T = 50,
H = 512 290 / 317 against 248 / 276 ms; N = 32, T = 100, H = 256 equal (70 / 82 ms)
on the 2-core AVX2 machine, after batch_first data stopped being transposed
(``fast/_steps.py``). Earlier, on the AVX-512 machine, with those transposes in
both, the feature-major GRU had won: 113 -> 97 ms at N = 64, 40.4 -> 31.0 ms at N = 32; the
LSTM had lost (119 -> 128 ms at N = 64: it has one more (T, N, H) array to transpose, and
its batch-major forward is closer to this one). ``tests/test_fast.py`` checks both
against the readable path.
"""
from __future__ import annotations

import numpy as np

from . import _blas, _compiled, _mkl
from ._steps import batch_major, empty_steps, forward_steps, kernel_biases
from ._threads import all_threads

F = np.float32

if _compiled.AVAILABLE:
    _jit = _compiled._jit
    sigmoid32, tanh32 = _compiled.sigmoid32, _compiled.tanh32

    @_jit()
    def lstm_step_fm(a, hw, b, h_prev, hp, c, cp, tc, h):
        """One LSTM step, feature-major. a (4H, N): W_ih x^T in, gates i, f, g, o out;
        hw (4H, N) = W_hh h_prev^T; b (4H,) = b_ih + b_hh; hp <- h_prev; c (H, N): c_prev in,
        c_t out; cp <- c_prev; tc <- tanh(c_t); h <- o * tanh(c_t)."""
        G, N = hw.shape
        H = G // 4
        for g in range(G):                                    # i, f, o = sigmoid(.), g = tanh(.)
            ag, hg, bg = a[g], hw[g], b[g]
            if 2 * H <= g < 3 * H:
                for n in range(N):
                    ag[n] = tanh32(ag[n] + hg[n] + bg)
            else:
                for n in range(N):
                    ag[n] = sigmoid32(ag[n] + hg[n] + bg)
        for j in range(H):
            i, f, gg, o = a[j], a[H + j], a[2 * H + j], a[3 * H + j]
            cj, cpj, tcj, hj, hpj, h_pj = c[j], cp[j], tc[j], h[j], hp[j], h_prev[j]
            for n in range(N):                                # c = f * c_prev + i * g
                hpj[n] = h_pj[n]
                cpj[n] = cj[n]
                cj[n] = f[n] * cj[n] + i[n] * gg[n]
            for n in range(N):                                # h = o * tanh(c)
                t = tanh32(cj[n])
                tcj[n] = t
                hj[n] = o[n] * t

    @_jit()
    def gru_step_fm(a, hw, b, b_hn, h_prev, hp, hwn, h):
        """One GRU step, feature-major. a (3H, N): W_ih x^T in, gates r, z, n out;
        hw (3H, N) = W_hh h_prev^T; b (3H,) = b_ih, plus b_hh for r and z; b_hn (H,);
        hp <- h_prev; hwn <- W_hn h_prev + b_hn; h <- (1 - z) * n + z * h_prev."""
        G, N = hw.shape
        H = G // 3
        for g in range(2 * H):                                # r, z = sigmoid(.)
            ag, hg, bg = a[g], hw[g], b[g]
            for n in range(N):
                ag[n] = sigmoid32(ag[n] + hg[n] + bg)
        for j in range(H):
            r, z, nn = a[j], a[H + j], a[2 * H + j]
            hwnj, hwj, bj, bhn = hwn[j], hw[2 * H + j], b[2 * H + j], b_hn[j]
            for n in range(N):                                # n = tanh(x W_in^T + b_in + r * (W_hn h + b_hn))
                hwnj[n] = hwj[n] + bhn
                nn[n] = tanh32(nn[n] + bj + r[n] * hwnj[n])
            hpj, hj, h_pj = hp[j], h[j], h_prev[j]
            for n in range(N):                                # h = n + z * (h_prev - n)
                p = h_pj[n]
                hpj[n] = p
                hj[n] = nn[n] + z[n] * (p - nn[n])


    # The loops over t with W_hh h^T called from compiled code (NumPy's OpenBLAS, ``_blas``):
    # no Python between the steps. h_prev is h0T at the first step, else the previous step's
    # output block.
    @_jit(inline="always")
    def _product_fm(fn, wide, W_hh, hp, hwT):
        """hwT (G, N) <- W_hh (G, H) hp (H, N), all C-contiguous."""
        G, N = hwT.shape
        H = hp.shape[0]
        _compiled._sgemm(fn, wide, 111, 111, G, N, H, np.int64(W_hh.ctypes.data), H, np.int64(hp.ctypes.data),
                         N, np.int64(hwT.ctypes.data), N, F(0.0))

    @_jit()
    def lstm_loop_fm(fn, wide, W_hh, AT, b, h0T, HpT, cT, CpT, TCT, OutT, hwT, T, reverse):
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h0T if s == 0 else OutT[t + 1 if reverse else t - 1]
            _product_fm(fn, wide, W_hh, hp, hwT)
            lstm_step_fm(AT[t], hwT, b, hp, HpT[t], cT, CpT[t], TCT[t], OutT[t])

    @_jit()
    def gru_loop_fm(fn, wide, W_hh, AT, b, b_hn, h0T, HpT, HWnT, OutT, hwT, T, reverse):
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h0T if s == 0 else OutT[t + 1 if reverse else t - 1]
            _product_fm(fn, wide, W_hh, hp, hwT)
            gru_step_fm(AT[t], hwT, b, b_hn, hp, HpT[t], HWnT[t], OutT[t])


def _compiled_loop(W_hh):
    """(function address, 64-bit integers, W_hh C-contiguous) for the compiled loops, or None
    (``_compiled.blas_loops`` off): then the loop steps from Python."""
    if not _compiled.blas_loops():
        return None
    return _blas.ADDRESS, _blas.WIDE, np.ascontiguousarray(W_hh)

# Below these multiply-adds per step (N H G), or below MIN_BATCH sequences, the batch-major loop
# is faster: the gate kernels here pay per unit for short rows of N. Measured inference, T = 50,
# best of 7 (batch-major -> feature-major ms), when both loops stepped from Python: LSTM N=3
# H=128 0.59 -> 1.33, N=16 H=64 0.57 -> 0.62, N=4 H=256 2.70 -> 2.00, N=8 H=256 4.54 -> 2.69; GRU
# N=3 H=128 0.66 -> 0.87, N=16 H=64 1.05 -> 0.48, N=8 H=256 3.59 -> 1.93. Since both call the BLAS
# from compiled code (``_blas``) the batch-major loop has caught up (2-core AVX2 machine, T = 100,
# D = 64, interleaved, best / median of 30, batch-major against feature-major): at N=4 it wins
# (GRU H=128 2.81 / 3.15 against 4.14 / 5.35 ms, H=256 7.87 / 8.93 against 10.97 / 13.57; LSTM
# H=256 11.06 / 12.65 against 12.78 / 14.54), at N=6 and 8 the two are within 10% either way
# (GRU N=8 H=128 3.81 / 4.15 against 3.78 / 5.02), and from N=16 to 64 (T = 50) within 12%.
MIN_STEP_WORK = {"lstm": 2 ** 19, "gru": 2 ** 19}
MIN_BATCH = 8


# With the compiled BLAS loops (``_blas``) the batch-major loop is as fast as this one or faster
# at the bench's sizes (2-core AVX2 machine, interleaved, best / median of 20, batch-major against
# feature-major: LSTM N=64, T=50, D=H=512 95.9 / 99.3 against 98.9 / 104.6 ms; N=32, T=100, D=64,
# H=256 22.7 / 25.6 against 22.8 / 27.2; GRU N=32, T=50, D=H=512 36.0 / 36.9 against 38.9 / 40.1;
# GRU N=64 70.0 / 72.3 against 71.1 / 73.9), and it keeps no cache to transpose; the feature-major
# loop was faster only for the LSTM at N=8, H=256 (5.32 / 5.88 against 5.87 / 6.61 ms batch-major).
# So the transposed loop runs
# where the loops step from Python (no BLAS address, or ``_compiled.BLAS_LOOPS`` off), where it
# was measured faster, or with WITH_BLAS_LOOPS set (tests, measurements).
WITH_BLAS_LOOPS = False


def usable(layer, X):
    """float32 with the compiled kernels, without MKL (``_mkl``: the batch-major loop with W_hh
    packed by MKL is faster) and without the compiled BLAS loops (unless ``WITH_BLAS_LOOPS``),
    eval mode, a batch and step large enough (``MIN_BATCH``, ``MIN_STEP_WORK``)."""
    N = X.shape[1]
    work = N * layer.hidden_size * layer.weight_rows
    return (_compiled.AVAILABLE and not _mkl.active(X.dtype, work) and not layer.training
            and (WITH_BLAS_LOOPS or not _compiled.blas_loops())
            and layer.mode in MIN_STEP_WORK
            and X.dtype == F and N >= MIN_BATCH
            and work >= MIN_STEP_WORK[layer.mode])


def _input_projection(X, W_ih):
    """W_ih x_t^T for every step: (T, G, N), each step's block contiguous.

    One GEMM per step (NumPy's batched matmul) rather than one (G, T N) GEMM: that was 0.24 ms
    faster (N = 32, T = 100, D = 64, H = 256), but its step blocks are strided, and the gate
    kernel reading them took 27-40 us a step in the loop against 23 us for a contiguous block
    (at N = 64, D = H = 512 the strided blocks doubled the LSTM's inference time, measured).

    Batch-major X (batch_first) goes to the BLAS as it lies, each x_t^T a transposed operand with
    its row stride: gathering it into (T, D, N) first took 7.4 ms of a 136 ms LSTM inference
    (N = 64, T = 50, D = H = 512). Time-major X is gathered: there the gather was the faster
    (62 against 71 ms for the projections alone)."""
    Xt = X.transpose(0, 2, 1)
    if not batch_major(X):
        Xt = np.ascontiguousarray(Xt)
    with all_threads(X.size * W_ih.shape[0]):
        return np.matmul(W_ih, Xt)


def lstm_forward(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse):
    """As ``_compiled.lstm_forward`` (same results and cache), computed feature-major."""
    T, N, _ = X.shape
    G = W_hh.shape[0]
    H = G // 4
    AT = _input_projection(X, W_ih)
    b, _ = kernel_biases("lstm", b_ih, b_hh, G)
    HpT, CpT, TCT, OutT = (np.empty((T, H, N), F) for _ in range(4))
    hwT = np.empty((G, N), F)
    hT = np.ascontiguousarray(h.T)
    cT = np.ascontiguousarray(c.T)
    blas = _compiled_loop(W_hh)
    if blas:
        lstm_loop_fm(*blas, AT, b, hT, HpT, cT, CpT, TCT, OutT, hwT, T, reverse)
    else:
        for t in forward_steps(T, reverse):
            np.matmul(W_hh, hT, out=hwT)
            lstm_step_fm(AT[t], hwT, b, hT, HpT[t], cT, CpT[t], TCT[t], OutT[t])
            hT = OutT[t]
    out = empty_steps(T, N, H, batch_major(X))    # in X's memory order (batch-major for batch_first)
    out[...] = OutT.transpose(0, 2, 1)
    cache = Transposed("lstm", AT, (HpT, CpT, TCT))
    return out, out[0 if reverse else T - 1], np.ascontiguousarray(cT.T), cache


def gru_forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse):
    """As ``_compiled.gru_forward`` (same results and cache), computed feature-major."""
    T, N, _ = X.shape
    G = W_hh.shape[0]
    H = G // 3
    AT = _input_projection(X, W_ih)
    b, b_hn = kernel_biases("gru", b_ih, b_hh, G)
    HpT, HWnT, OutT = (np.empty((T, H, N), F) for _ in range(3))
    hwT = np.empty((G, N), F)
    hT = np.ascontiguousarray(h.T)
    blas = _compiled_loop(W_hh)
    if blas:
        gru_loop_fm(*blas, AT, b, b_hn, hT, HpT, HWnT, OutT, hwT, T, reverse)
    else:
        for t in forward_steps(T, reverse):
            np.matmul(W_hh, hT, out=hwT)
            gru_step_fm(AT[t], hwT, b, b_hn, hT, HpT[t], HWnT[t], OutT[t])
            hT = OutT[t]
    out = empty_steps(T, N, H, batch_major(X))    # in X's memory order (batch-major for batch_first)
    out[...] = OutT.transpose(0, 2, 1)
    cache = Transposed("gru", AT, (HpT, HWnT))
    return out, out[0 if reverse else T - 1], cache


class Transposed:
    """A feature-major forward's cache, turned into the batch-major one only when asked."""
    __slots__ = ("mode", "AT", "rest")

    def __init__(self, mode, AT, rest):
        self.mode, self.AT, self.rest = mode, AT, rest

    def batch_major(self):
        """The cache ``_compiled.lstm_forward`` / ``gru_forward`` would have made: (A, Hp, ...)."""
        A = np.ascontiguousarray(self.AT.transpose(0, 2, 1))                            # (T, N, G)
        rest = [np.ascontiguousarray(a.transpose(0, 2, 1)) for a in self.rest]            # (T, N, H)
        return (A, *rest, None) if self.mode == "lstm" else (A, *rest)
