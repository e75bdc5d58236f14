"""Compiled per-step kernels (Numba, optional: ``pip install 'rnnlab[speed]'``).

At small batch sizes a NumPy step costs its ~15 calls' overhead, not their
arithmetic: at N = 1, H = 128 each call touches a few hundred numbers. Here all
of a step's elementwise work (gates, cell update, their derivatives) is ONE
compiled loop, so a step is one BLAS call for the recurrent product plus one
kernel call. The loops of ``fast/lstm.py`` etc. are reused as they are; only
their per-step bodies change, and the caches are the same, so the NumPy
backward can run on a compiled forward's cache (the diagnostics' recorder does).

Used for float32 only, without ``lengths`` or an LSTM projection (those take
the NumPy fused path). tanh and sigmoid are evaluated with ``tanh32`` and
``sigmoid32`` below, vectorisable float32 formulas accurate to ~3 units in the
last place (max relative error 2e-7, checked over millions of points in
tests/test_fast.py), in the spirit of the approximations oneDNN and Eigen use:
libm's scalar tanhf would cost more than the whole step. Float64 keeps NumPy's tanh (exact to the last bit, which
the 1e-12 tests need).

For one or two sequences (``LOOP_MAX_BATCH``) with a small step, the whole
loop over t is compiled too (``lstm_loop`` etc.): the recurrent product is then
a matrix-vector product done in the kernel (``matvec``, dot products with
reassociated sums), cheaper than a BLAS call per step (measured N = 1,
H = 128, T = 100 LSTM inference: 0.68 -> 0.43 ms). The forward with T = 1
(streaming) uses the same ``matvec`` (``fast/_stream.py``). The tiny LSTM loop
with H >= 128 runs half of each step's hidden units on a second core where one
is free (``fast/_pair.py``, with ``matvec_rows`` and ``lstm_units``).

Kernels are compiled on first use and cached on disk (``cache=True``).
Set ``RNNLAB_NUMBA=0`` to do without them.
"""
from __future__ import annotations

import math
import os
import threading

import numpy as np

from . import _blas, _matvec, _mkl, _panels, _split, _threads
from ._steps import (RecurrentGrad, RecurrentProduct, aligned_copy, aligned_empty, aligned_weight, as_order,
                     backward_steps, batch_major, chunks, empty_steps, forward_steps, kernel_biases, memory,
                     previous_states, project, transposed)
from ._threads import all_threads, blas_threads, one_thread

try:
    if os.environ.get("RNNLAB_NUMBA", "1") == "0":
        raise ImportError("disabled by RNNLAB_NUMBA=0")
    import numba
except ImportError:
    numba = None

AVAILABLE = numba is not None


def _drop_stale_caches():
    """Numba keys a kernel's cache on disk to its own source file only, but the kernels of this
    package inline each other across files (the streaming stacks of ``_stream.py`` inline
    ``matvec`` from here and ``_helper.recurrent``): after an edit of one file, another file's
    cached kernels would go on running the old code (it happened, silently). So a stamp of every
    file's size and modification time is kept beside the caches, and the caches are dropped
    whenever it changes. Where the package directory is not writable Numba keeps its caches
    elsewhere and this does nothing."""
    here = os.path.dirname(os.path.abspath(__file__))
    cache = os.path.join(here, "__pycache__")
    try:
        stats = [(f, os.stat(os.path.join(here, f))) for f in sorted(os.listdir(here)) if f.endswith(".py")]
        stamp = repr([(f, st.st_size, st.st_mtime_ns) for f, st in stats])
        path = os.path.join(cache, "rnnlab-fast-sources.stamp")
        try:
            with open(path) as fh:
                if fh.read() == stamp:
                    return
        except OSError:
            pass
        for f in os.listdir(cache) if os.path.isdir(cache) else ():
            if f.endswith((".nbi", ".nbc")):
                os.remove(os.path.join(cache, f))
        os.makedirs(cache, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(stamp)
    except OSError:
        pass


if AVAILABLE:
    _drop_stale_caches()

F = np.float32
LOG2E = F(1.4426950408889634)
LN2_HI = F(0.693145751953125)          # ln 2 split in two so that k * LN2_HI is exact
LN2_LO = F(1.428606765330187e-06)
ROUND = F(12582912.0)                  # 1.5 * 2^23: (v + ROUND) - ROUND rounds v to an integer
# coefficients of r^2 .. r^6 in polynomials for |r| <= ln2 / 2 (``tanh32``, ``sigmoid32``), fitted
# here by iteratively reweighted least squares on Chebyshev points (the constant and linear terms
# held at exp's 1 and 1, and expm1's 0 and 1)
EXPM1_2, EXPM1_3, EXPM1_4, EXPM1_5, EXPM1_6 = (F(0.4999999701976776), F(0.1666654348373413), F(0.04166720062494278),
                                               F(0.008366547524929047), F(0.0013882514322176576))
EXP_2, EXP_3, EXP_4, EXP_5, EXP_6 = (F(0.49999988), F(0.16666518), F(0.04166948), F(0.00836894), F(0.00137543))


def _jit(**kw):
    # error_model="numpy": no ZeroDivisionError checks, which would stop vectorisation.
    # fastmath without nnan/ninf: NaN and inf still propagate (divergence stays visible).
    return numba.njit(cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz", "afn"}, **kw)


if AVAILABLE:
    from llvmlite import ir as _ir
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _pow2(typingctx, k):
        """2^k for a float32 k that holds an integer in -126..127, made from its exponent bits:
        (k + 127) << 23 read as a float32 (four vector instructions in LLVM IR; the selects over
        the binary digits of k this replaced took ten, and tanh32 ran 1.55x as fast with it)."""
        if k != _types.float32:
            return None

        def codegen(context, builder, signature, args):
            i32 = _ir.IntType(32)
            e = builder.add(builder.fptosi(args[0], i32), _ir.Constant(i32, 127))
            return builder.bitcast(builder.shl(e, _ir.Constant(i32, 23)), _ir.FloatType())
        return _types.float32(_types.float32), codegen

    @_jit(inline="always")
    def _reduce(y):
        """y = k ln2 + r with k the nearest integer to y / ln2 (a float32, rounded with the
        1.5 * 2^23 trick: math.floor's int64 result would pull the arithmetic into int64 and
        float64 and stop LLVM from vectorising the loops that call this) and |r| <= ln2 / 2,
        ln2 in two parts so that k LN2_HI is exact. Returns (k, r)."""
        k = (y * LOG2E + ROUND) - ROUND
        return k, (y - k * LN2_HI) - k * LN2_LO

    @_jit(inline="always")
    def tanh32(x):
        """tanh of a float32: tanh|x| = -e / (2 + e), e = expm1(-2|x|), |x| clipped at 9.

        expm1(y) = 2^k (expm1(r) + 1) - 1 with y = k ln2 + r (``_reduce``); expm1(r) = r + r^2
        q(r), q of degree 4 fitted here to expm1's relative error on |r| <= ln2 / 2 (largest
        1.3e-8, evaluated in float64; the degree-7 Taylor series it replaced, 5e-9, took two more
        operations); 2^k (k in -26..0) from its exponent bits (``_pow2``). Every quantity stays
        float32. Largest relative error over the test's points 2.03e-7, as before.
        """
        ax = min(abs(x), F(9.0))                  # tanh(9) rounds to 1 in float32
        k, r = _reduce(F(-2.0) * ax)
        p = r * (F(1.0) + r * (EXPM1_2 + r * (EXPM1_3 + r * (EXPM1_4 + r * (EXPM1_5 + r * EXPM1_6)))))
        s = _pow2(k)
        e = s * p + (s - F(1.0))                  # expm1(-2|x|)
        t = math.copysign(-e / (F(2.0) + e), x)
        return t if x == x else x                 # NaN stays NaN (vector min(NaN, 9) gives 9)

    @_jit(inline="always")
    def sigmoid32(x):
        """sigmoid of a float32: 1 / (1 + exp(-x)), -x clipped to [-87, 87] (so exp(-x) and the
        result stay normal numbers: sigmoid(-87) = 1.6e-38).

        exp(y) = 2^k exp(r) (``_reduce``), exp(r) = 1 + r + r^2 q(r), q of degree 4 fitted here to
        exp's relative error on |r| <= ln2 / 2 (largest 3.6e-9 in float64). Largest relative error
        over the test's points 1.5e-7, at every x: the 0.5 tanh(x / 2) + 0.5 it replaced lost all
        relative accuracy below x = -17 (it gave 0 there) and cost a third more (0.198 against
        0.306 ns a value, 4096 values, here).
        """
        k, r = _reduce(min(max(-x, F(-87.0)), F(87.0)))
        p = F(1.0) + r * (F(1.0) + r * (EXP_2 + r * (EXP_3 + r * (EXP_4 + r * (EXP_5 + r * EXP_6)))))
        s = F(1.0) / (F(1.0) + _pow2(k) * p)
        return s if x == x else x

    @_jit()
    def tanh_array(x, out):
        """``tanh32`` over a 1-D array (for the accuracy test)."""
        for k in range(x.shape[0]):
            out[k] = tanh32(x[k])

    @_jit()
    def sigmoid_array(x, out):
        """``sigmoid32`` over a 1-D array (for the accuracy test)."""
        for k in range(x.shape[0]):
            out[k] = sigmoid32(x[k])

    # Each kernel is a few simple loops over one row, each touching few arrays: LLVM then
    # vectorises them (it must check at run time that the arrays do not overlap, and gives up
    # on a loop that would need too many such checks).

    # ---- matrix-vector products for tiny steps (fast/_stream.py and the loops below) ------
    # reassoc lets LLVM keep 16 partial sums of a dot product in one vector register
    _jit_dot = numba.njit(cache=True, error_model="numpy",
                                    fastmath={"reassoc", "contract", "arcp", "nsz", "afn"})

    @_jit_dot
    def matvec_rows(W, x, b, out, r0, r1):
        """out[:, r0:r1] = x (N, K) W[r0:r1]^T + b[r0:r1], W (G, K): dot products along the rows
        of W, four rows at a time (one pass over x for four outputs: 2.7 against 3.7 us a call at
        G = 512, K = 128, measured). A row's sum does not depend on r0 and r1 where r0 is a
        multiple of 4 (the two cores of ``_pair`` each take a range of rows)."""
        N, K = x.shape
        for n in range(N):
            xn, on = x[n], out[n]
            g = r0
            while g + 4 <= r1:
                W0, W1, W2, W3 = W[g], W[g + 1], W[g + 2], W[g + 3]
                a0 = F(0.0)
                a1 = F(0.0)
                a2 = F(0.0)
                a3 = F(0.0)
                for k in range(K):
                    xk = xn[k]
                    a0 += W0[k] * xk
                    a1 += W1[k] * xk
                    a2 += W2[k] * xk
                    a3 += W3[k] * xk
                on[g] = a0 + b[g]
                on[g + 1] = a1 + b[g + 1]
                on[g + 2] = a2 + b[g + 2]
                on[g + 3] = a3 + b[g + 3]
                g += 4
            for r in range(g, r1):                      # the last rows, fewer than 4
                Wr = W[r]
                acc = F(0.0)
                for k in range(K):
                    acc += Wr[k] * xn[k]
                on[r] = acc + b[r]

    @_jit_dot
    def all_finite(a):
        """Whether every entry of the 1-D array a is finite (the layers' input checks, ``_validate``,
        and the streamed step's, ``_stream``): the sum of a * 0 is 0 where all are,
        NaN where any is NaN or inf (inf * 0 is NaN). One vectorised pass and no temporary, where
        ``np.isfinite(a).all()`` writes a boolean array first. On the Intel machine (2026-12-07),
        best of 5 x 200 calls: 238 against 374 us for the 1.6M float32 of an N=64, T=50, D=512
        input, 10.8 against 21.3 us for 204,800. fastmath without nnan and ninf, so LLVM may not
        fold a * 0 to 0; ``reassoc`` lets it keep partial sums in vectors."""
        if a.shape[0] == 0:
            return True
        acc = a[0] * F(0.0)                              # a's dtype: float32 or float64
        for i in range(1, a.shape[0]):
            acc += a[i] * F(0.0)
        return acc == 0

    @_jit_dot
    def matvec(W, x, b, out):
        """out (N, G) = x (N, K) W^T + b, W (G, K) (``matvec_rows`` over all G rows)."""
        matvec_rows(W, x, b, out, 0, W.shape[0])

    # ---- per-step kernels ------------------------------------------------------------------
    # Each per-step array comes as its memory m (``_steps.memory``): (T, N, K) time-major or
    # (N, T, K) batch-major (``bm``), and a kernel takes row (t, n) as ``_at(m, t, n, bm)``,
    # a contiguous row either way. The state (h W_hh^T, c, dh, dc) is a plain (N, K) array.
    @_jit(inline="always")
    def _at(m, t, n, bm):
        return m[n, t] if bm else m[t, n]

    # ---- LSTM ------------------------------------------------------------------------------
    @_jit()
    def lstm_forward_step(A, Cp, TC, O, t, bm, hw, b, c):
        """Step t. A: x W_ih^T in, gates i, f, g, o out; hw (N, 4H) = h_prev W_hh^T; b (4H,) =
        b_ih + b_hh; c (N, H): c_prev in, c_t out; Cp <- c_prev; TC <- tanh(c_t); O <- h_t =
        o * tanh(c_t).

        The bias is added here, not to all of A before the loop: one pass less over the (T, N, 4H)
        array (LSTM forward N=64, T=50, H=512, 50 steps of this kernel, best of 15: 14.7 ms
        against 18.3 ms with ``A += b`` first; N=32, T=100, H=256 6.9 against 8.5 ms)."""
        N, G = hw.shape
        H = G // 4
        for n in range(N):
            lstm_units(_at(A, t, n, bm), hw[n], b, c[n], _at(Cp, t, n, bm), _at(TC, t, n, bm), _at(O, t, n, bm),
                       H, 0, H)

    @_jit(inline="always")
    def lstm_units(an, hwn, b, cn, cpn, tcn, hn, H, u0, u1):
        """Units u0..u1-1 of one sequence's step (``lstm_forward_step``; ``_pair`` splits a step's
        units between two cores): an (4H,) x W_ih^T in, gates out; hwn (4H,) = h_prev W_hh^T;
        cn (H,) c_prev in, c_t out; cpn <- c_prev, tcn <- tanh(c_t), hn <- h_t."""
        # Each loop runs over slices from index 0. Indexed with a run-time offset instead (an[o + j],
        # where Numba cannot rule out a negative index, the likely cause) the same loops over two
        # halves of the units were 4.6x slower (measured, best of 11: N=1, H=128 3.94 against 0.85
        # us a step; N=32, H=256 268 against 58 us).
        for q in range(4):                                     # i, f, g, o
            aq, hq, bq = an[q * H + u0:q * H + u1], hwn[q * H + u0:q * H + u1], b[q * H + u0:q * H + u1]
            if q == 2:
                for j in range(aq.shape[0]):
                    aq[j] = tanh32(aq[j] + hq[j] + bq[j])
            else:
                for j in range(aq.shape[0]):
                    aq[j] = sigmoid32(aq[j] + hq[j] + bq[j])
        _lstm_state(an[u0:u1], an[H + u0:H + u1], an[2 * H + u0:2 * H + u1], an[3 * H + u0:3 * H + u1],
                    cn[u0:u1], cpn[u0:u1], tcn[u0:u1], hn[u0:u1])

    @_jit(inline="always")
    def _lstm_state(i, f, g, o, cu, cpu, tcu, hu):
        """From the gates i, f, g, o of some units: cu (c_prev in) <- c = f * c_prev + i * g, with
        c_prev kept in cpu; tcu <- tanh(c); hu <- h = o * tanh(c)."""
        for j in range(cu.shape[0]):
            cpu[j] = cu[j]
            cu[j] = f[j] * cu[j] + i[j] * g[j]
        for j in range(cu.shape[0]):
            v = tanh32(cu[j])
            tcu[j] = v
            hu[j] = o[j] * v

    @_jit(inline="always")
    def lstm_units_from(src, an, b, cn, cpn, tcn, hn, H):
        """One sequence's step of a loop that makes the cache from its whole pre-activation src (4H,),
        x W_ih^T + h W_hh^T: ``lstm_units`` with the gates written into an (the cache's row) from
        src + b, not from an + hwn + b. (Its gate loop is ``lstm_infer_units``'s with a separate
        destination; one helper for both, called in place there, left that loop unvectorised:
        the inference gates of 32 sequences at H=512 took 156-160 against 18 us.)"""
        for q in range(4):                                     # i, f, g, o
            sq, aq, bq = src[q * H:(q + 1) * H], an[q * H:(q + 1) * H], b[q * H:(q + 1) * H]
            if q == 2:
                for j in range(H):
                    aq[j] = tanh32(sq[j] + bq[j])
            else:
                for j in range(H):
                    aq[j] = sigmoid32(sq[j] + bq[j])
        _lstm_state(an[:H], an[H:2 * H], an[2 * H:3 * H], an[3 * H:], cn, cpn, tcn, hn)

    @_jit()
    def lstm_backward_step(dY, A, TC, Cp, dA, t, k, bm, dh, dc):
        """Step t, its gradients into slot k of dA. dh: the recurrent gradient in, the total
        gradient reaching h_t out (the caller then overwrites it with da W_hh); dc: dc_t in,
        dc_{t-1} out."""
        N, H = dh.shape
        for n in range(N):
            dyn, dhn, dcn = _at(dY, t, n, bm), dh[n], dc[n]
            an, tcn, cpn, dan = _at(A, t, n, bm), _at(TC, t, n, bm), _at(Cp, t, n, bm), _at(dA, k, n, bm)
            for j in range(H):
                dhn[j] += dyn[j]                               # out_t and h_t are both h_new
            for j in range(H):                                 # m = o * tanh(c)
                v = tcn[j]
                o = an[3 * H + j]
                dan[3 * H + j] = dhn[j] * v * o * (F(1.0) - o)
                dcn[j] += dhn[j] * o * (F(1.0) - v * v)
            for j in range(H):                                 # c = f * c_prev + i * g
                i = an[j]
                f = an[H + j]
                g = an[2 * H + j]
                d = dcn[j]
                dan[j] = d * g * i * (F(1.0) - i)
                dan[H + j] = d * cpn[j] * f * (F(1.0) - f)
                dan[2 * H + j] = d * i * (F(1.0) - g * g)
                dcn[j] = d * f

    # ---- GRU -------------------------------------------------------------------------------
    @_jit()
    def gru_forward_step(A, P, tp, HWn, O, t, bm, hw, b, b_hn):
        """Step t. A: x W_ih^T in, gates r, z, n out; b (3H,): b_ih, plus b_hh for r and z
        (``_steps.kernel_biases``), added here as in ``lstm_forward_step``; h_prev is row (tp, n)
        of P (the outputs O at the previous step, or the initial state); hw (N, 3H) = h_prev
        W_hh^T; HWn <- W_hn h_prev + b_hn; O <- h_t."""
        N, G = hw.shape
        H = G // 3
        for n in range(N):
            an, hwr = _at(A, t, n, bm), hw[n]
            for j in range(2 * H):                             # r, z
                an[j] = sigmoid32(an[j] + hwr[j] + b[j])
            hwnn = _at(HWn, t, n, bm)
            for j in range(H):                                 # W_hn h + b_hn
                hwnn[j] = hwr[2 * H + j] + b_hn[j]
            for j in range(H):                                 # n = tanh(xw_n + b_n + r * hw_n)
                an[2 * H + j] = tanh32(an[2 * H + j] + b[2 * H + j] + an[j] * hwnn[j])
            hpn, hn = _at(P, tp, n, bm), _at(O, t, n, bm)
            for j in range(H):                                 # h = n + z (h_prev - n)
                hn[j] = an[2 * H + j] + an[H + j] * (hpn[j] - an[2 * H + j])

    @_jit(inline="always")
    def gru_units(an, hwr, b, b_hn, hpn, hwnn, hn, H, u0, u1):
        """Units u0..u1-1 of one sequence's step (``gru_forward_step``'s arithmetic, for ``_pair``):
        an (3H,) x W_ih^T in, gates r, z, n out; hwr (3H,) = h_prev W_hh^T; hpn (H,) h_prev;
        hwnn <- W_hn h_prev + b_hn; hn <- h_t. Slices from index 0, as in ``lstm_units``.
        ``gru_forward_step`` keeps its own loops over whole rows (the same arithmetic, the same
        bits): through this kernel, its eleven slices a row and a step, the tiny GRU loop at N=1,
        T=100, H=128 took 0.313-0.321 against 0.298-0.307 ms (best of 15, three processes each way
        in turn, 2026-12-08; the batch loops at N=32 and 64 unchanged). The RNN's step does go
        through ``rnn_units`` (N=1 0.133-0.138 against 0.132-0.138 ms)."""
        r, z, nn = an[u0:u1], an[H + u0:H + u1], an[2 * H + u0:2 * H + u1]
        hr, hz, hn_ = hwr[u0:u1], hwr[H + u0:H + u1], hwr[2 * H + u0:2 * H + u1]
        br, bz, bn, bhn = b[u0:u1], b[H + u0:H + u1], b[2 * H + u0:2 * H + u1], b_hn[u0:u1]
        wn, hp, ho = hwnn[u0:u1], hpn[u0:u1], hn[u0:u1]
        for j in range(r.shape[0]):
            r[j] = sigmoid32(r[j] + hr[j] + br[j])
        for j in range(r.shape[0]):
            z[j] = sigmoid32(z[j] + hz[j] + bz[j])
        for j in range(r.shape[0]):
            wn[j] = hn_[j] + bhn[j]
        for j in range(r.shape[0]):
            nn[j] = tanh32(nn[j] + bn[j] + r[j] * wn[j])
        for j in range(r.shape[0]):
            ho[j] = nn[j] + z[j] * (hp[j] - nn[j])

    @_jit()
    def gru_backward_step(dY, A, HWn, Hp, dA, dA_hn, t, k, bm, dh, dhw):
        """Step t, its gradients into slot k of dA and dA_hn. dh: recurrent gradient in,
        dh_total * z out (the caller adds dhw W_hh)."""
        N, H = dh.shape
        for n in range(N):
            dyn, dhn, dhwn = _at(dY, t, n, bm), dh[n], dhw[n]
            an, hwnn, hpn = _at(A, t, n, bm), _at(HWn, t, n, bm), _at(Hp, t, n, bm)
            dan, dahn = _at(dA, k, n, bm), _at(dA_hn, k, n, bm)
            for j in range(H):
                dhn[j] += dyn[j]
            for j in range(H):                                 # h = (1 - z) n + z h_prev; n = tanh(.)
                z = an[H + j]
                nn = an[2 * H + j]
                dan[2 * H + j] = dhn[j] * (F(1.0) - z) * (F(1.0) - nn * nn)
                dan[H + j] = dhn[j] * (hpn[j] - nn) * z * (F(1.0) - z)
            for j in range(H):                                 # r = sigmoid(.), dr = da_n * hw_n
                r = an[j]
                dhwn[j] = dan[2 * H + j] * hwnn[j] * r * (F(1.0) - r)
            for j in range(H):
                dan[j] = dhwn[j]
                dhwn[H + j] = dan[H + j]
                x = dan[2 * H + j] * an[j]                     # hidden side of n: r * (W_hn h + b_hn)
                dhwn[2 * H + j] = x
                dahn[j] = x
            for j in range(H):
                dhn[j] *= an[H + j]                            # the direct path h_prev -> h

    # ---- RNN -------------------------------------------------------------------------------
    @_jit()
    def rnn_forward_step(A, O, t, bm, hw, b, relu):
        """Step t: O <- f(A + hw + b), A = x W_ih^T, hw (N, H) = h_prev W_hh^T, b = b_ih + b_hh
        (added here as in ``lstm_forward_step``)."""
        N, H = hw.shape
        for n in range(N):
            rnn_units(_at(A, t, n, bm), hw[n], b, _at(O, t, n, bm), 0, H, relu)

    @_jit(inline="always")
    def rnn_units(an, hwn, b, hn, u0, u1, relu):
        """Units u0..u1-1 of one sequence's step (``rnn_forward_step``; ``_pair`` splits the units)."""
        a, w, bb, h = an[u0:u1], hwn[u0:u1], b[u0:u1], hn[u0:u1]
        for j in range(a.shape[0]):
            v = a[j] + w[j] + bb[j]
            if relu:
                h[j] = v if v > F(0.0) else F(0.0)
            else:
                h[j] = tanh32(v)

    @_jit()
    def rnn_backward_step(dY, Hn, dA, t, k, bm, dh, relu):
        N, H = dh.shape
        for n in range(N):
            dyn, dhn, hn, dan = _at(dY, t, n, bm), dh[n], _at(Hn, t, n, bm), _at(dA, k, n, bm)
            for j in range(H):
                d = dyn[j] + dhn[j]
                v = hn[j]
                if relu:
                    dan[j] = d if v > F(0.0) else F(0.0)
                else:
                    dan[j] = d * (F(1.0) - v * v)


    # ---- whole loops for tiny steps (one or two sequences) ----------------------------------
    # At N <= LOOP_MAX_BATCH a step's h_prev W_hh^T is a matrix-vector product that costs less
    # than calling BLAS for it, so the loop over t runs here and Python is left once a sequence.
    # These take time-major arrays (the caller makes them so: at N <= 2 a copy costs nothing).
    @_jit()
    def lstm_loop(A, h, c, W_hh, b, zero, reverse, hw, Cp, TC, out, mv):
        T = A.shape[0]
        for s in range(T):                                     # h_prev: ``previous_states`` after
            t = T - 1 - s if reverse else s
            matvec_turns(mv, W_hh, h, zero, hw, 0, W_hh.shape[0], s)    # mv: ``_matvec``'s kernel, or 0
            lstm_forward_step(A, Cp, TC, out, t, False, hw, b, c)
            h = out[t]

    @_jit()
    def gru_loop(A, h, W_hh, b, zero, b_hn, reverse, hw, Hp, HWn, out, mv):
        T = A.shape[0]
        for s in range(T):
            t = T - 1 - s if reverse else s
            Hp[t] = h
            matvec_turns(mv, W_hh, h, zero, hw, 0, W_hh.shape[0], s)
            gru_forward_step(A, Hp, t, HWn, out, t, False, hw, b, b_hn)
            h = out[t]

    @_jit()
    def rnn_loop(A, h, W_hh, b, zero, reverse, hw, Hp, out, relu, mv):
        T = A.shape[0]
        for s in range(T):
            t = T - 1 - s if reverse else s
            Hp[t] = h
            matvec_turns(mv, W_hh, h, zero, hw, 0, W_hh.shape[0], s)
            rnn_forward_step(A, out, t, False, hw, b, relu)
            h = out[t]


if AVAILABLE:
    @_intrinsic
    def _sgemm_compute(typingctx, fn, m, n, k, a, lda, b, c, ldc, beta):
        """c (m, n) <- a (m, k) times the MKL-packed B (k, n) at address b, plus beta c: MKL's
        ``cblas_sgemm_compute`` (row-major, a not transposed), called through the function
        pointer fn (``_mkl.compute_address``). Integers and addresses come as ints, beta as a
        float32."""
        if not all(isinstance(v, _types.Integer) for v in (fn, m, n, k, a, lda, b, c, ldc)) \
                or beta != _types.float32:
            return None

        def codegen(context, builder, signature, args):
            i32, vp = _ir.IntType(32), _ir.IntType(8).as_pointer()
            fnty = _ir.FunctionType(_ir.VoidType(), [i32] * 6 + [vp, i32, vp, i32, _ir.FloatType(), vp, i32])
            f, m_, n_, k_, a_, lda_, b_, c_, ldc_, beta_ = args
            i = lambda v: builder.trunc(v, i32) if v.type.width > 32 else v
            ptr = lambda v: builder.inttoptr(v, vp)
            const = lambda v: _ir.Constant(i32, v)
            builder.call(builder.inttoptr(f, fnty.as_pointer()),
                         [const(101), const(111), const(151), i(m_), i(n_), i(k_), ptr(a_), i(lda_),
                          ptr(b_), i(k_), beta_, ptr(c_), i(ldc_)])
            return context.get_dummy_value()
        return _types.void(fn, m, n, k, a, lda, b, c, ldc, beta), codegen

    @_intrinsic
    def _sgemm(typingctx, fn, wide, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, beta):
        """c (m, n) <- op(a) op(b) + beta c, row-major, alpha 1: a BLAS's ``cblas_sgemm`` called
        through the function pointer fn (``_blas.ADDRESS``), with 64-bit integers if ``wide``
        (NumPy's OpenBLAS), else 32-bit. ta, tb: 111 (no transpose) or 112 (transpose).
        Integers and addresses come as ints, beta as a float32."""
        ints = (fn, ta, tb, m, n, k, a, lda, b, ldb, c, ldc)
        if not all(isinstance(v, _types.Integer) for v in ints) or beta != _types.float32 \
                or wide != _types.boolean:
            return None

        def codegen(context, builder, signature, args):
            i32, i64, vp, f32 = _ir.IntType(32), _ir.IntType(64), _ir.IntType(8).as_pointer(), _ir.FloatType()
            f, wide_, ta_, tb_, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_, beta_ = args
            ptr = lambda v: builder.inttoptr(v, vp)
            enum = lambda v: builder.trunc(v, i32) if v.type.width > 32 else v
            one = _ir.Constant(f32, 1.0)

            def call(it):
                size = lambda v: (builder.trunc(v, it) if v.type.width > it.width
                                  else builder.sext(v, it) if v.type.width < it.width else v)
                fnty = _ir.FunctionType(_ir.VoidType(), [i32, i32, i32, it, it, it, f32, vp, it, vp, it,
                                                         f32, vp, it])
                builder.call(builder.inttoptr(f, fnty.as_pointer()),
                             [_ir.Constant(i32, 101), enum(ta_), enum(tb_), size(m_), size(n_), size(k_),
                              one, ptr(a_), size(lda_), ptr(b_), size(ldb_), beta_, ptr(c_), size(ldc_)])
            with builder.if_else(wide_) as (then, otherwise):
                with then:
                    call(i64)
                with otherwise:
                    call(i32)
            return context.get_dummy_value()
        return _types.void(fn, wide, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, beta), codegen

    def _call_address(builder, fn, kinds, values):
        """Call the C function at address ``fn`` (an integer) with ``values``, passed as ``kinds``
        says, one letter each: i an int64, p a pointer (from an integer address), b a boolean as
        an int32."""
        i32, i64, vp = _ir.IntType(32), _ir.IntType(64), _ir.IntType(8).as_pointer()
        types = {"i": i64, "p": vp, "b": i32}
        convert = {"i": lambda v: builder.sext(v, i64) if v.type.width < 64 else v,
                   "p": lambda v: builder.inttoptr(v, vp), "b": lambda v: builder.zext(v, i32)}
        fnty = _ir.FunctionType(_ir.VoidType(), [types[k] for k in kinds])
        builder.call(builder.inttoptr(fn, fnty.as_pointer()), [convert[k](v) for k, v in zip(kinds, values)])

    def _kernel_typing(kinds, fn, values):
        """An intrinsic's typing for a call of the C function at address fn with ``values``
        (``_call_address``): the signature and codegen, or None for other argument types."""
        if not isinstance(fn, _types.Integer) or not all(
                v == _types.boolean if k == "b" else isinstance(v, _types.Integer) for k, v in zip(kinds, values)):
            return None

        def codegen(context, builder, signature, args):
            _call_address(builder, args[0], kinds, args[1:])
            return context.get_dummy_value()
        return _types.void(fn, *values), codegen

    @_intrinsic
    def _panels_call(typingctx, fn, n, c, k, x, ldx, w, out, ldc, acc):
        """out (n, c) <- x (n, k) B, or += if acc, B packed into panels at address w: ``_panels``'s
        kernel through the function pointer fn (``_panels.address``)."""
        return _kernel_typing("iiipippib", fn, (n, c, k, x, ldx, w, out, ldc, acc))

    @_intrinsic
    def _panels2_call(typingctx, fn, n, c, k1, x1, ldx1, w1, k2, x2, ldx2, w2, out, ldc, acc):
        """out (n, c) <- (or += if acc) x1 (n, k1) B1 + x2 (n, k2) B2, the B's packed into panels at
        w1, w2: ``_panels``'s two-source kernel through the function pointer fn (``Compiled.two``)."""
        return _kernel_typing("iiipipipippib", fn, (n, c, k1, x1, ldx1, w1, k2, x2, ldx2, w2, out, ldc, acc))

    @_intrinsic
    def _matvec_call(typingctx, fn, x, w, K, R, b, out):
        """out[r] <- b[r] + sum_k x[k] w[r K + k] for r < R: ``_matvec``'s kernel through the function
        pointer fn (``_matvec.usable``)."""
        return _kernel_typing("ppiipp", fn, (x, w, K, R, b, out))

    @_jit(inline="always")
    def matvec_rows_mv(mv, W, x, b, out, r0, r1):
        """``matvec_rows`` by ``_matvec``'s kernel at address mv where mv is not 0 (W and b
        C-contiguous, x's and out's rows contiguous: the tiny loops' arrays), else by
        ``matvec_rows``. A row's sum is the same bits whatever r0 and r1 (either kernel)."""
        K = W.shape[1]
        if mv == 0 or W.strides[1] != 4 or W.strides[0] != 4 * K or x.strides[1] != 4 or out.strides[1] != 4 \
                or b.strides[0] != 4:                          # (the kernel takes rows by address)
            matvec_rows(W, x, b, out, r0, r1)
            return
        w = np.int64(W.ctypes.data) + r0 * K * 4
        bb = np.int64(b.ctypes.data) + r0 * 4
        for n in range(x.shape[0]):
            _matvec_call(mv, np.int64(x[n].ctypes.data), w, K, r1 - r0, bb, np.int64(out[n].ctypes.data) + r0 * 4)

    @_jit(inline="always")
    def matvec_turns(mv, W, x, b, out, r0, r1, s):
        """``matvec_rows_mv`` over rows r0..r1-1 of W for each row n of x, the rows of W read
        first to last where s + n is even and last to first (blocks of SERPENTINE_ROWS) where it
        is odd: a loop that calls this with s = its step number reads W back and forth, so the
        rows it read last are still in cache as it starts again (W larger than the cache is
        otherwise read from L3 whole at every pass: an LRU cache keeps none of it). The same
        bits either way (a row's sum does not depend on the rows computed with it). Measured on
        the Intel machine (2026-12-07), ``_matvec``'s kernel, one thread, best of 5 x 200 calls,
        back and forth against first to last: W (1536, 512) 51.4 against 96.6 us, (2048, 512)
        89.2 against 139.3, (1024, 512) 21.7 against 29.7."""
        for n in range(x.shape[0]):
            xn, on = x[n:n + 1], out[n:n + 1]
            if (s + n) % 2 == 0:
                matvec_rows_mv(mv, W, xn, b, on, r0, r1)
            else:
                hi = r1
                while hi > r0:
                    lo = max(r0, hi - SERPENTINE_ROWS)
                    matvec_rows_mv(mv, W, xn, b, on, lo, hi)
                    hi = lo

    # The loops over t with the per-step product called from compiled code: no Python between
    # the steps. The product is one of these kinds (``_blas_loop`` picks it from the loop's
    # ``_steps.StepProduct`` and, where the loop runs on one core, ``_one_core_panels``):
    #   PACKED   MKL's cblas_sgemm_compute with W packed once a call (``_mkl``), B its buffer;
    #   PANELS   ``_panels``'s one-core kernel, B packed once a call into its panels;
    #   PLAIN    the BLAS's cblas_sgemm, x (N, K) times B (K, C) contiguous;
    #   SWAPPED  the same product as B (C, K) x^T into buf (C, N), turned back by ``transpose2d``
    #            (the windows of batch sizes where OpenBLAS is faster that way: ``_steps``).
    # Each loop takes the per-step arrays as their memory (``_steps.memory``), batch-major or
    # not (bm), and h_prev as the previous step's rows of the output (the initial state h0
    # (N, H), C-contiguous, at the first step).
    @_jit(inline="always")
    def _rows_at(m, t, bm):
        """Address and row stride (in elements) of step t's (N, K) rows in the memory m."""
        base = np.int64(m.ctypes.data)          # int64, not uint64: uint64 + int64 is a float
        if bm:
            return base + t * m.strides[1], m.strides[0] // 4
        return base + t * m.strides[0], m.strides[1] // 4

    @_jit(inline="always")
    def _product(kind, fn, wide, B, buf, a, lda, K, out, beta):
        """out (N, C) <- x B + beta out, x (N, K) the rows at address a with row stride lda."""
        N, C = out.shape
        o = np.int64(out.ctypes.data)
        if kind == PACKED:
            _sgemm_compute(fn, N, C, K, a, lda, np.int64(B.ctypes.data), o, C, beta)
        elif kind == PLAIN:
            _sgemm(fn, wide, 111, 111, N, C, K, a, lda, np.int64(B.ctypes.data), C, o, C, beta)
        elif kind == PANELS:
            _panels_call(fn, N, C, K, a, lda, np.int64(B.ctypes.data), o, C, beta != F(0.0))
        else:
            _sgemm(fn, wide, 111, 112, C, N, K, np.int64(B.ctypes.data), K, a, lda,
                   np.int64(buf.ctypes.data), N, F(0.0))
            if beta == F(0.0):
                transpose2d(buf, out)
            else:
                for n in range(N):
                    for j in range(C):
                        out[n, j] += buf[j, n]

    @_jit(inline="always")
    def _h_prev_at(h0, mO, s, t, reverse, bm):
        """Address and row stride of h_prev at loop step s (step t): h0 (N, H) at the first, else
        the output's rows of the previous step."""
        if s == 0:
            return np.int64(h0.ctypes.data), h0.shape[1]
        return _rows_at(mO, t + 1 if reverse else t - 1, bm)

    @_jit(inline="always")
    def _step_product(kind, fn, wide, B, buf, h0, mO, s, t, reverse, bm, hw, beta=F(0.0)):
        """hw <- h_prev W_hh^T + beta hw at loop step s (step t) (``_h_prev_at``)."""
        a, lda = _h_prev_at(h0, mO, s, t, reverse, bm)
        _product(kind, fn, wide, B, buf, a, lda, h0.shape[1], hw, beta)

    @_jit(nogil=True)
    def gru_loop_blas(kind, fn, wide, B, buf, h0, first, mA, mHWn, mO, bm, hw, b, b_hn, T, reverse):
        for s in range(T):
            t = T - 1 - s if reverse else s
            _step_product(kind, fn, wide, B, buf, h0, mO, s, t, reverse, bm, hw)
            if s == 0:
                gru_forward_step(mA, first, 0, mHWn, mO, t, bm, hw, b, b_hn)
            else:
                gru_forward_step(mA, mO, t + 1 if reverse else t - 1, mHWn, mO, t, bm, hw, b, b_hn)

    @_jit(nogil=True)
    def rnn_loop_blas(kind, fn, wide, B, buf, h0, mA, mO, bm, hw, b, relu, T, reverse):
        for s in range(T):
            t = T - 1 - s if reverse else s
            _step_product(kind, fn, wide, B, buf, h0, mO, s, t, reverse, bm, hw)
            rnn_forward_step(mA, mO, t, bm, hw, b, relu)


    # ---- the LSTM's step loops, with or without a cache --------------------------------------
    # Each step multiplies [x_t | h_{t-1}] (a staging row per sequence, S (n, D + H)) by
    # [W_ih | W_hh]^T in one product, or x_t and h_{t-1} by their weights in two summed in one
    # register tile, and runs the gates from that, in L2. An eval-mode forward keeps nothing for a
    # backward (``Recompute`` makes it if one comes); a training forward writes the gates, c_prev
    # and tanh(c) into the cache as the gate kernel goes, instead of first writing every step's
    # x W_ih^T into the (T, N, G) cache array and reading it back in the loop. Training forwards
    # against that way (processes of each in turn, three rounds, median of 8 best-of-3): N=32,
    # T=100, D=64, H=256 6.34-6.55 against 7.38-8.35 ms (whole steps 21.0-21.8 against 22.6-24.6
    # ms); N=64, T=50, D=H=512 32.8-34.1 against 33.2-35.6 ms (steps within the noise).
    @_jit(inline="always")
    def _stage_x(Xm, S, t, bm):
        """S[:, :D] <- x_t, the rows of step t of the inputs' memory Xm."""
        D = Xm.shape[2]
        for r in range(S.shape[0]):
            xr, sr = _at(Xm, t, r, bm), S[r]
            for j in range(D):
                sr[j] = xr[j]

    @_jit(inline="always")
    def _gates_in_place(an, b, H):
        """an (4H,) <- the gates [i, f, g, o] of the whole pre-activation in an, plus b."""
        for q in range(4):                                     # i, f, g, o
            aq, bq = an[q * H:(q + 1) * H], b[q * H:(q + 1) * H]
            if q == 2:
                for j in range(H):
                    aq[j] = tanh32(aq[j] + bq[j])
            else:
                for j in range(H):
                    aq[j] = sigmoid32(aq[j] + bq[j])

    @_jit(inline="always")
    def lstm_infer_units(an, b, cn, hn, H):
        """One sequence's inference step from its whole pre-activation an (4H,), x W_ih^T + h W_hh^T
        in, gates out: ``lstm_units`` without the recurrent product's separate array or the
        cache's c_prev and tanh(c_t) (the same numbers, bit for bit; 20.1 against 21.6 us a step
        of 32 sequences, H=512, here). cn (H,): c_prev in, c_t out; hn <- h_t."""
        _gates_in_place(an, b, H)
        i, f, g, o = an[:H], an[H:2 * H], an[2 * H:3 * H], an[3 * H:4 * H]
        for j in range(H):                                     # c = f * c_prev + i * g, h = o * tanh(c)
            cj = f[j] * cn[j] + i[j] * g[j]
            cn[j] = cj
            hn[j] = o[j] * tanh32(cj)

    @_jit(inline="always")
    def _lstm_gates(hw, b, c, mO, t, bm, cache, mA, mCp, mTC):
        """The step loops' gates of step t on hw (n, 4H), which holds the whole pre-activation; h_t
        into the output's rows (mO). With ``cache`` the gates, c_prev and tanh(c_t) go into the
        cache's rows (mA, mCp, mTC: ``lstm_units_from``), else nowhere (``lstm_infer_units``)."""
        H = c.shape[1]
        for r in range(hw.shape[0]):
            if cache:
                lstm_units_from(hw[r], _at(mA, t, r, bm), b, c[r], _at(mCp, t, r, bm), _at(mTC, t, r, bm),
                                _at(mO, t, r, bm), H)
            else:
                lstm_infer_units(hw[r], b, c[r], _at(mO, t, r, bm), H)

    @_jit(nogil=True)
    def lstm_loop2(kx, fx, wx, Bx, bufx, kind, fn, wide, B, buf, Xm, h0, hw, b, c, mO, bm,
                   T, reverse, fn2, cache, mA, mCp, mTC, zero_h0):
        """The LSTM's steps, two products a step: hw <- x_t W_ih^T (x_t read in place; kx..bufx),
        hw += h_{t-1} W_hh^T (kind..buf), then the gates (``_lstm_gates``: with ``cache``, into
        mA, mCp, mTC too). ``fn2``: the panels kernel's two-source kernel (``_panels.Compiled.two``)
        where both products are that kernel's (Bx and B their panels), else 0; then one call of it
        does both, summed in one register tile. ``zero_h0``: h_0 is all zeros, so the first step
        has only x_0 W_ih^T (the default initial state: one product of 2T saved)."""
        (n, G), D, H = hw.shape, Xm.shape[2], h0.shape[1]
        px, ph, o = np.int64(Bx.ctypes.data), np.int64(B.ctypes.data), np.int64(hw.ctypes.data)
        for s in range(T):
            t = T - 1 - s if reverse else s
            a, lda = _rows_at(Xm, t, bm)
            if s == 0 and zero_h0:
                _product(kx, fx, wx, Bx, bufx, a, lda, D, hw, F(0.0))
            elif fn2 != 0:
                a2, lda2 = _h_prev_at(h0, mO, s, t, reverse, bm)
                _panels2_call(fn2, n, G, D, a, lda, px, H, a2, lda2, ph, o, G, False)
            else:
                _product(kx, fx, wx, Bx, bufx, a, lda, D, hw, F(0.0))
                _step_product(kind, fn, wide, B, buf, h0, mO, s, t, reverse, bm, hw, F(1.0))
            _lstm_gates(hw, b, c, mO, t, bm, cache, mA, mCp, mTC)

    @_jit(inline="always")
    def lstm_cache_units(an, b, cn, cpn, tcn, hn, H):
        """``lstm_infer_units`` that also keeps the cache: the gates in place in an (the cache's
        row, which holds the whole pre-activation), cpn <- c_prev, tcn <- tanh(c_t)."""
        _gates_in_place(an, b, H)
        _lstm_state(an[:H], an[H:2 * H], an[2 * H:3 * H], an[3 * H:], cn, cpn, tcn, hn)

    @_jit(nogil=True)
    def lstm_loop_ahead(fn, B, mZ, h0, b, c, mO, bm, T, reverse, zero_h0, cache, mCp, mTC):
        """The LSTM's steps after x_t W_ih^T of all T steps was written into the rows of mZ
        (``_lstm_steps``: one GEMM before the loop): h_{t-1} W_hh^T added into step t's rows
        by MKL's packed product (fn, B; beta 1, the rows read and written in place), then the gates
        from those rows (``lstm_infer_units``), h_t into the output's rows (mO). With ``cache``
        mZ is the cache's gates array and the gates stay there, c_prev and tanh(c_t) go into mCp
        and mTC (``lstm_cache_units``). ``zero_h0``: h_0 is all zeros, so the first step adds
        nothing."""
        n, H = c.shape
        G = 4 * H
        pb = np.int64(B.ctypes.data)
        for s in range(T):
            t = T - 1 - s if reverse else s
            if not (s == 0 and zero_h0):
                z, ldz = _rows_at(mZ, t, bm)
                a, lda = _h_prev_at(h0, mO, s, t, reverse, bm)
                _sgemm_compute(fn, n, G, H, a, lda, pb, z, ldz, F(1.0))
            for r in range(n):
                if cache:
                    lstm_cache_units(_at(mZ, t, r, bm), b, c[r], _at(mCp, t, r, bm), _at(mTC, t, r, bm),
                                     _at(mO, t, r, bm), H)
                else:
                    lstm_infer_units(_at(mZ, t, r, bm), b, c[r], _at(mO, t, r, bm), H)

    @_jit(nogil=True)
    def lstm_loop1(kind, fn, wide, B, buf, Xm, S, hw, b, c, mO, bm, T, reverse, cache, mA, mCp, mTC):
        """The LSTM's steps, one product a step: hw <- [x_t | h_{t-1}] [W_ih | W_hh]^T (B), then the
        gates (``_lstm_gates``: with ``cache``, into mA, mCp, mTC too), h_t into the output's rows
        (mO) and into S for the next step. S[:, D:] holds h_0 at the start."""
        n, K = S.shape
        D = K - c.shape[1]
        for s in range(T):
            t = T - 1 - s if reverse else s
            _stage_x(Xm, S, t, bm)
            _product(kind, fn, wide, B, buf, np.int64(S.ctypes.data), K, K, hw, F(0.0))
            _lstm_gates(hw, b, c, mO, t, bm, cache, mA, mCp, mTC)
            for r in range(n):
                hr, sr = _at(mO, t, r, bm), S[r, D:]
                for j in range(K - D):
                    sr[j] = hr[j]


if AVAILABLE:
    # The backward's steps lo..hi-1 of one chunk (T-1..0 order, 0..T-1 for the reverse
    # direction), each the step kernel and then dh = dA_k W_hh by the loop's product, called
    # from compiled code like the forward loops above; the chunk's weight gradients (``flush``)
    # stay in Python.
    @_jit(inline="always")
    def _chunk_step(s, lo, hi, reverse):
        return lo + s if reverse else hi - 1 - s

    @_jit(inline="always")
    def _grad_product(kind, fn, wide, B, buf, mdA, k, bm, dh, s):
        """dh <- the rows of slot k of the chunk buffer mdA (N, G) times W_hh (G, H) (s: the
        step's number, for ``matvec_turns``)."""
        if kind == MATVEC:                                     # tiny steps: time-major (``_tiny_grad``;
            matvec_turns(fn, B, mdA[k], buf[dh.shape[0]], dh, 0, B.shape[0], s)    # fn: ``_matvec``'s or 0)
        else:
            a, lda = _rows_at(mdA, k, bm)
            _product(kind, fn, wide, B, buf, a, lda, mdA.shape[2], dh, F(0.0))

    @_jit(nogil=True)
    def lstm_chunk_blas(kind, fn, wide, B, buf, lo, hi, reverse, mdY, mA, mTC, mCp, mdA, bm, dh, dc):
        for s in range(hi - lo):
            t = _chunk_step(s, lo, hi, reverse)
            lstm_backward_step(mdY, mA, mTC, mCp, mdA, t, t - lo, bm, dh, dc)
            _grad_product(kind, fn, wide, B, buf, mdA, t - lo, bm, dh, s)

    @_jit(nogil=True)
    def gru_chunk_blas(kind, fn, wide, B, buf, lo, hi, reverse, mdY, mA, mHWn, mHp, mdA, mdA_hn, bm, dh, dhw):
        G = dhw.shape[1]
        for s in range(hi - lo):
            t = _chunk_step(s, lo, hi, reverse)
            gru_backward_step(mdY, mA, mHWn, mHp, mdA, mdA_hn, t, t - lo, bm, dh, dhw)
            if kind == MATVEC:                                 # dh += dhw W_hh
                N, H = dh.shape
                tmp = buf[:N]
                matvec_turns(fn, B, dhw, buf[N], tmp, 0, B.shape[0], s)
                for n in range(N):
                    for j in range(H):
                        dh[n, j] += tmp[n, j]
            else:
                _product(kind, fn, wide, B, buf, np.int64(dhw.ctypes.data), G, G, dh, F(1.0))

    @_jit(nogil=True)
    def rnn_chunk_blas(kind, fn, wide, B, buf, lo, hi, reverse, mdY, mHn, mdA, bm, dh, relu):
        for s in range(hi - lo):
            t = _chunk_step(s, lo, hi, reverse)
            rnn_backward_step(mdY, mHn, mdA, t, t - lo, bm, dh, relu)
            _grad_product(kind, fn, wide, B, buf, mdA, t - lo, bm, dh, s)


def _tiny_grad(W_hh, N, bm):
    """The backward chunks' product arguments for tiny steps (``_tiny``: one or two sequences,
    time-major, as the tiny forwards always leave the cache), else None: dh = dA_k W_hh as
    ``matvec`` with W_hh^T (H_out, G), in compiled code as the forward's tiny loops do (from
    Python the BLAS call cost 10.7 us a step, cProfile, LSTM N=1, H=128; the training step went
    from 1.66 to 1.28 ms, best of 300). buf: rows :N scratch for the GRU's sum, row N zeros
    (``matvec``'s bias)."""
    if bm or not _tiny(N, W_hh):
        return None
    return (MATVEC, _matvec.usable(W_hh.shape[0]), False, transposed(W_hh),     # fn: ``_matvec``'s kernel
            np.zeros((N + 1, W_hh.shape[1]), W_hh.dtype))


PACKED, PLAIN, SWAPPED, MATVEC, PANELS = 0, 1, 2, 3, 4     # the kinds of per-step product (``_product``, ``_tiny_grad``)
_NO_BUF = np.empty((1, 1), F)


def _blas_loop(product, panels=None):
    """The compiled loops' product arguments (kind, function address, 64-bit integers, B, buf)
    for the loop's product (a ``_steps.StepProduct``, or None with ``panels``), or None where the
    loop steps from Python: ``BLAS_LOOPS`` off or no BLAS address (``_blas``; so the batch
    split's parts, which need one, always get these). ``panels``: B packed for ``_panels``
    (``_one_core_panels``)."""
    if panels is not None:
        return PANELS, _panels.address(), False, panels, _NO_BUF
    if product.packed is not None and BLAS_LOOPS:
        # the packed buffer as a (1, size) matrix: every kind's B is 2-D, so each loop compiles
        # once for all kinds
        return PACKED, _mkl.compute_address(), False, product.packed.buf[None], _NO_BUF
    if not blas_loops():
        return None
    if product.transposed:
        return SWAPPED, _blas.ADDRESS, _blas.WIDE, product.BT, product.buf
    # PLAIN reads B as C-contiguous: at T <= 2 the product holds the transposed view of W_hh
    # (``recurrent_weight``), copied here (the view read as rows gave wrong results, 0.08 off
    # at N=32, T=2, H=256, before this copy)
    B = product.B if product.B.flags.c_contiguous else transposed(product.B.T)
    if _mkl.active(F, 0):                                   # inside an MKL regime: MKL's GEMMs only
        return PLAIN, _mkl.sgemm_address(), False, B, _NO_BUF    # (unpacked: T <= 2)
    return PLAIN, _blas.ADDRESS, _blas.WIDE, B, _NO_BUF


def _one_core_panels(B, N, P=1, slot="h"):
    """B (K, C), the per-step product's of a loop over N sequences, packed for ``_panels``'s
    kernel where that loop runs its products on one core (the batch split's parts, P > 1, or a
    one-thread BLAS), calls the BLAS from compiled code (not MKL's) and the kernel fits C; else
    None (the BLAS then). B may be a tuple of blocks (K_i, C), stacked along K. The panels go
    into this thread's buffer for ``slot`` (``_pack_buffer``)."""
    blocks = B if isinstance(B, tuple) else (B,)
    K, C = sum(b.shape[0] for b in blocks), blocks[0].shape[1]
    if not _numpy_blas_loops(N * K * C) or not _panels.usable(C):
        return None
    if P == 1 and blas_threads() != 1:
        return None
    return _panels.pack_rows(blocks, _pack_buffer(slot, _panels.layout().panels_shape(K, C)))


_buffers = threading.local()


def _pack_buffer(slot, shape):
    """This thread's float32 array of ``shape`` for the panels of ``slot``, kept from call to
    call: a new 1-8 MB array each call cost its page faults (LSTM inference N=32, T=100, D=64,
    H=256: the pack, with [W_ih | W_hh] copied first, took 0.30 ms of a 6.1 ms forward,
    cProfile over 200; into this buffer, the blocks packed in place, 0.17 of 5.5 ms). A loop's
    panels are used only during the call that packs them; the loops alive at once in one
    thread use different slots ("h", "x", "xh"; the backward's "dh"), and the batch split's
    parts only read the caller's. The slot "ahead" holds a part's input products for
    ``lstm_loop_ahead`` (written and read by the part's own thread, during its loop only)."""
    cache = getattr(_buffers, "arrays", None)
    if cache is None:
        cache = _buffers.arrays = {}
    a = cache.get(slot)
    if a is None or a.shape != shape:
        a = cache[slot] = np.empty(shape, F)
    return a


# The loops call the BLAS from compiled code (``lstm_loop1`` etc., ``_blas``);
# ``BLAS_LOOPS = False`` keeps them in Python (a BLAS call and a kernel call a step).
BLAS_LOOPS = True


def blas_loops():
    """Whether the loops call NumPy's BLAS from compiled code: ``BLAS_LOOPS`` and an address."""
    return BLAS_LOOPS and _blas.ADDRESS is not None


if AVAILABLE:
    TILE = 16

    @_jit()
    def transpose2d(a, out):
        """out <- a^T, in TILE x TILE tiles (used by ``_steps.transposed``).

        The full tiles are views of a constant size, their loops over ranges from 0 (the edges,
        rows and columns past the last full tile, are copied one by one). Measured on the 2-core
        AVX2 machine, best of 30, against the 32 x 32 tiles with variable bounds this replaced:
        (2048, 512) 494 against 3283 us, (1024, 256) 102 against 278 us. Constant 8 x 8 and 4 x 4
        tiles (1926 and 2721 us at (2048, 512)) and 32 x 32 tile views of variable size (3251 us)
        were slower than 16 x 16; at (2048, 512) out's rows lie 8 KB apart, in the same L1 sets.
        """
        R, C = a.shape
        Rf, Cf = R - R % TILE, C - C % TILE
        for i0 in range(0, Rf, TILE):
            for j0 in range(0, Cf, TILE):
                ta = a[i0:i0 + TILE, j0:j0 + TILE]
                to = out[j0:j0 + TILE, i0:i0 + TILE]
                for j in range(TILE):
                    for i in range(TILE):
                        to[j, i] = ta[i, j]
        for i in range(R):                                   # the columns past the last full tile
            for j in range(C - Cf):
                out[Cf + j, i] = a[i, Cf + j]
        for i in range(R - Rf):                              # the rows past the last full tile
            for j in range(Cf):
                out[j, Rf + i] = a[Rf + i, j]


LOOP_MAX_BATCH = 2
SERPENTINE_ROWS = 64             # rows a call of the kernel where ``matvec_turns`` reads W backwards
LOOP_MAX_WORK = 2 ** 20          # multiply-adds of a step's h_prev W_hh^T (above: BLAS on all threads)


def _tiny(N, W_hh):
    return N <= LOOP_MAX_BATCH and N * W_hh.size < LOOP_MAX_WORK


# An eval-mode forward of one sequence whose W_hh (float32) takes from LOOP_MAX_WORK
# multiply-adds up to PAIR_MAX_BYTES runs the tiny loop too where ``_pair`` can put half of every
# step's units on a second core: each core then reads only its rows of W_hh (``lstm_forward``'s
# ``infer``, ``gru_forward``'s ``defer``, ``rnn_forward``'s ``infer``). LSTM inference N=1,
# T=100, D=128, 10 turns each way in turn with PyTorch, best / median ms, against the BLAS loops:
# H=512 5.75 / 5.98 against 7.51 / 7.83 (PyTorch 5.25 / 5.42); H=768 15.30 / 15.98 against 22.96 /
# 23.53 (18.89 / 19.18); H=1024 28.46 / 29.17 against 41.99 / 43.59 (32.36 / 33.03); H=2048, left
# out, 125.7 / 202.8 against 168.7 / 182.7 (143.8 / 145.5). The GRU and the RNN at N=1, D=128, the
# bench's turns, PyTorch's time over ours: GRU H=768 1.55x, H=1024 1.34x; RNN H=1024 1.29x (0.91,
# 0.93 and 0.67x on the BLAS loops). Training keeps the BLAS loops: the tiny backward runs on one
# core.
PAIR_MAX_BYTES = 2 ** 24


def _tiny_pair(N, W_hh, cell="lstm"):
    """Whether an eval-mode forward of this cell over N sequences takes the tiny loop on two cores
    although its step is not tiny (``PAIR_MAX_BYTES``)."""
    return (N == 1 and W_hh.dtype == F and not _tiny(N, W_hh) and 4 * W_hh.size <= PAIR_MAX_BYTES
            and _pair.usable(W_hh.shape[1], cell))


def _tiny_loop(N, W_hh, cell, infer):
    """Whether a forward of this cell over N sequences runs the tiny loop: a tiny step, or in eval
    mode (``infer``) one sequence that the pair takes (``_tiny_pair``)."""
    return _tiny(N, W_hh) or (infer and _tiny_pair(N, W_hh, cell))


# ---- whole-direction loops (same caches as the NumPy fused path) ----------------------------
# The per-step arrays follow X's memory order (``_steps.batch_major``): batch-major for batch_first
# input, so that neither x, nor out, nor dout, nor dx is transposed; the kernels get the memory
# and the order. The tiny loops run time-major (at N <= 2 the copies are a few hundred numbers).
def _start(X, W_ih, tiny):
    """The array for the input projections of all steps, x W_ih^T (T, N, G), in X's memory order
    (time-major if tiny), that order (bm), and X so (contiguous if tiny). The loops fill it
    (``_project``), each part of the batch split its own rows; the kernels add the biases
    (``kernel_biases``)."""
    if tiny:
        X = np.ascontiguousarray(X)
    bm = batch_major(X)
    return empty_steps(X.shape[0], X.shape[1], W_ih.shape[0], bm), bm, X


def tiny_blas(work, cell, H):
    """The BLAS threads for a large GEMM (``work`` multiply-adds) next to a tiny loop of this cell
    (H units; ``_tiny_loop``): where the loop runs on the pair (``_pair.usable``), this thread's
    alone (``one_thread``), whatever its size; elsewhere every thread as ``all_threads`` gives.
    A threaded GEMM leaves its other thread spinning on the other core for a while after it
    (MKL's OpenMP worker, OpenBLAS's), and the pair runs its helper there next, which then runs
    late at every step (the caller took about a third of its halves back). Used for a tiny
    loop's input products (``_project_tiny``) and, after its backward, for its dX and weight
    gradients (``fast.TINY_FLUSH_ONE_THREAD``). Eval-mode forwards, 8-10 rounds each way in
    turn with PyTorch, best / median ms, one thread against every thread (2026-12-08, Intel
    VM): LSTM N=1, T=1000, D=65, H=256 7.66 / 7.99 against 9.17 / 10.12 (PyTorch 9.17 / 9.57);
    N=1, T=100, D=128, H=512 3.34 / 3.39 against 5.23 / 5.67 (5.28 / 5.62); GRU H=512 2.16 /
    2.23 against 3.59 / 3.65; RNN H=1024 2.87 / 2.90 against 4.97 / 5.38. (Projections under
    ``all_threads``'s limit, the bench's tiny sizes among them, ran on one thread before too.)
    Where the pair does not run: LSTM N=1, T=5000, D=512, H=64 (under the pair's MIN_H) 11.02 /
    11.31 ms with every thread against 15.19 / 15.51 on one."""
    return one_thread() if _pair.usable(H, cell) else all_threads(work)


def _project_tiny(X, W_ih, A, cell, H):
    """A <- X W_ih^T for a tiny loop of this cell (H units), with the BLAS threads of ``tiny_blas``."""
    with tiny_blas(X.size * W_ih.shape[0], cell, H):
        project(X, W_ih, A)


def _project(X, W_ih, A, rows):
    """A[:, rows] <- X[:, rows] W_ih^T: the input projections of the sequences ``rows``, on every
    BLAS thread (``all_threads``; in a part of the batch split that is the part's one thread)."""
    x = X[:, rows]
    with all_threads(x.size * W_ih.shape[0]):
        project(x, W_ih, A[:, rows])


def _numpy_blas_loops(work):
    """Whether a loop whose step product has ``work`` multiply-adds calls NumPy's BLAS from
    compiled code (``blas_loops``), outside MKL's regime (``_mkl``)."""
    return blas_loops() and not _mkl.active(F, 0) and not _mkl.active(F, work)


def _parts(N, W_hh, tiny):
    """How many parts a loop over N sequences runs in (``_split``): 1 for a tiny one, or where
    the loops do not call the BLAS from compiled code (``blas_loops``). With MKL each part runs
    MKL's packed product on one thread (``_split.MKL_MIN_WORK``)."""
    if tiny or not blas_loops():
        return 1
    return _split.parts(N, N * W_hh.size, mkl=_mkl.active(F, 0))


def backward_parts(N, W_hh):
    """How many parts a backward over N sequences runs in (``_split``), as ``_parts`` for a
    forward; called where the BLAS has the backward loop's thread count."""
    return _parts(N, W_hh, _tiny(N, W_hh))


def _forward_product(W_hh, n, T, panels):
    """A loop over n sequences' product h_prev W_hh^T: the compiled loops' arguments
    (``_blas_loop``, or None where the loop steps from Python) and the ``RecurrentProduct`` for
    that Python loop (None with ``panels``)."""
    product = None if panels is not None else RecurrentProduct(W_hh, n, T)
    return _blas_loop(product, panels), product


def _backward_product(W_hh, N, n, T, bm, panels):
    """As ``_forward_product`` for the backward's dh = dA W_hh over n of the N sequences (the
    tiny backward's ``matvec`` where N is tiny)."""
    grad = None if panels is not None else RecurrentGrad(W_hh, n, T)
    return _tiny_grad(W_hh, N, bm) or _blas_loop(grad, panels), grad


def lstm_forward(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse, infer=False):
    """The LSTM's forward; its cache a ``PreviousStates`` without an h_prev array. Where the loops
    call the BLAS from compiled code (``blas_loops``) the step loops make the cache
    (``_lstm_steps``): each step's products feed the gate kernel, which writes the gates into A,
    instead of all steps' x W_ih^T into A first. ``infer``: an eval-mode forward, which takes the
    tiny loop on two cores for one sequence of a larger step too (``_tiny_pair``)."""
    T, N, D = X.shape
    H = W_hh.shape[0] // 4
    tiny = _tiny_loop(N, W_hh, "lstm", infer)
    P = _parts(N, W_hh, tiny)
    A, bm, X = _start(X, W_ih, tiny)
    b, _ = kernel_biases("lstm", b_ih, b_hh, 4 * H)
    out, Cp, TC = (empty_steps(T, N, H, bm) for _ in range(3))
    c = aligned_copy(c)                                         # on cache lines: _steps.aligned_empty
    h0 = np.ascontiguousarray(h)
    if tiny:
        _project_tiny(X, W_ih, A, "lstm", W_hh.shape[1])
        _lstm_tiny(A, h0, c, W_hh, b, reverse, Cp, TC, out)
    elif blas_loops():
        _lstm_steps(X, h0, c, W_ih, W_hh, b, reverse, out, bm, P, (A, Cp, TC))
    else:
        def loop(n0, n1):                                        # steps from Python (P = 1 here)
            rows = slice(n0, n1)
            _project(X, W_ih, A, rows)
            mA, mCp, mTC, mO = (memory(a[:, rows], bm) for a in (A, Cp, TC, out))
            hw = np.empty((n1 - n0, 4 * H), F)
            product = RecurrentProduct(W_hh, n1 - n0, T)
            h = h0
            for t in forward_steps(T, reverse):
                product(h, hw)
                lstm_forward_step(mA, mCp, mTC, mO, t, bm, hw, b, c)
                h = out[t]

        _split.run(loop, N, P)
    return out, out[0 if reverse else T - 1], c, PreviousStates((A, None, Cp, TC, None), out, h0, reverse, needs=False)


# The LSTM's eval-mode forwards run its step loops without a cache (``lstm_infer``);
# ``INFER_LOOPS = False`` (or ``RNNLAB_INFER_LOOPS=0``) makes the cache as in training.
INFER_LOOPS = os.environ.get("RNNLAB_INFER_LOOPS", "1") != "0"


# The LSTM's step loops multiply [x_t | h_{t-1}] by [W_ih | W_hh]^T in one product a step
# (``lstm_loop1``, the weights packed side by side into the panels at every call, or copied
# side by side where the BLAS takes the product) where x_t W_ih^T
# over the batch has fewer than INFER_ONE_PRODUCT_MAX multiply-adds, else as two products, x_t read
# in place (``lstm_loop2``). Measured here, 15 rounds each way in one process, best / median
# (ms) of the caching loop, one product and two: N=32, T=100, H=256, D=64 (2^21 multiply-adds)
# 10.34 / 12.63, 8.54 / 11.53, 10.04 / 12.53; D=256 15.85 / 20.54, 13.91 / 14.49, 13.37 / 13.89;
# H=512, D=128 48.11 / 60.43, 35.50 / 38.31, 33.40 / 37.09; N=64, T=50, H=512, D=64 37.73 / 58.40,
# 28.16 / 29.13, 27.14 / 29.47; D=512 50.77 / 67.24, 47.09 / 51.20, 45.06 / 47.06 and 50.86 /
# 56.29, 44.91 / 51.69, 41.93 / 47.05.
INFER_ONE_PRODUCT_MAX = 2 ** 22
# ...and where [W_ih | W_hh] (float32) is no larger than one core's L2: a larger one is read from L3
# at every step, where two products read only W_hh (x_t W_ih^T of all steps in one GEMM first,
# with MKL). LSTM inference, T=100, D=128, H=512, 8 rounds each way in turn with PyTorch, best /
# median ms: N=1 7.28 / 7.76 against 10.19 / 10.48 (PyTorch 4.99 / 5.22); N=2 5.29 / 5.39 against
# 8.35 / 8.52 (PyTorch 8.00 / 8.23); H=768, N=1 22.72 / 23.03 against 26.05 / 26.91 (18.58 / 18.68).
# Training steps (6 rounds): N=1 14.33 / 15.02 against 17.78 / 18.39 (PyTorch 15.27 / 15.47); N=2 12.96 /
# 13.30 against 16.17 / 16.73 (17.34 / 18.17).
ONE_PRODUCT_MAX_BYTES = _threads.L2_BYTES
# ...and with MKL where a part of the loop (the whole batch, or a part of the batch split) has at
# most AHEAD_MAX_ROWS sequences: the input products of all steps first (``lstm_loop_ahead``), and
# [W_ih | W_hh] neither copied side by side nor packed at every call. LSTM, T=100, H=256, 8 rounds
# in turn with PyTorch, best / median ms against one product: inference N=4, D=64 1.71 / 1.74
# against 2.06 / 2.08 (PyTorch 1.85 / 1.89); N=8 2.90 / 2.99 against 3.38 / 3.45 (2.77 / 2.89);
# N=16 (two parts of 8), D=128 5.42 / 5.52 against 5.78 / 6.12 (5.98 / 6.10), D=64 4.59 / 4.72
# against 4.65 / 4.77; training N=8, D=64 8.65 / 8.94 against 9.06 / 9.84. At N=32 (parts of
# 16), D=64 it lost: 8.70 / 8.88 against 8.53 / 8.76.
AHEAD_MAX_ROWS = 8

# With MKL, an eval-mode loop of two products a step runs the input products of all its steps first,
# one GEMM over the part's T n rows into a buffer kept by the thread (``_pack_buffer``), and then
# only h_{t-1} W_hh^T a step, added into those rows (``lstm_loop_ahead``), where that buffer takes
# at most AHEAD_MAX_BYTES. On one core of the Intel machine (2026-12-07) a part's projection at
# N=64, T=50, D=H=512, (1600, 512) x (512, 2048), took 22 ms in the forward (152 GFLOP/s, 8
# forwards), and MKL's packed step product (32, 512) x (512, 2048) ran at 147 GFLOP/s (best of
# 5 x 200 calls); the two-product step also reads W_ih's 4 MB from L3 (28.5 GB/s a core there).
# LSTM inference at that size, 15 rounds each way in turn, best of 3 a round, best / median:
# 46.3 / 47.4 against 48.5 / 50.4 ms (outputs equal, bit for bit). The buffer is kept because a
# fresh 13 MB one would fault in 3,200 pages at every call (not timed here; the RNN's 3.2 MB
# h_prev copy cost 784 page faults and about 2 ms a step: ``PreviousStates``). A loop that makes
# the cache (training) projects into the cache's gates array instead, whatever its size, and the
# gates stay there: LSTM training steps at N=64, T=50, D=H=512, 10 rounds each way in turn,
# best / median 154.6 / 157.8 against 156.2 / 161.3 ms.
AHEAD = os.environ.get("RNNLAB_AHEAD", "1") != "0"
AHEAD_MAX_BYTES = 2 ** 25


def infer_usable(mode, N, W_hh):
    """Whether an eval-mode forward runs a loop without a cache: the LSTM's, not tiny. (The GRU's and
    the RNN's, two products a step, x_t W_ih^T read in place and h_{t-1} W_hh^T, gained nothing:
    N=32, T=100, D=64, H=256, 15 rounds each way, best / median, against the caching loops: GRU
    7.93 / 12.64 against 7.53 / 10.40 ms, RNN 2.90 / 3.05 against 2.82 / 2.95 ms; at N=64, T=50,
    D=H=512 GRU 36.5 / 39.4 against 36.6 / 44.5 ms, RNN 11.7 / 12.6 against 10.9 / 11.5 ms.)"""
    return INFER_LOOPS and mode == "lstm" and blas_loops() and not _tiny_loop(N, W_hh, "lstm", True)


def lstm_infer(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse):
    """The LSTM's eval-mode forward without a cache (split by units on two cores where turned on,
    ``_units``; else ``_lstm_steps`` without a cache, whole or in the batch split's
    parts): out, h_T, c_T and a ``Recompute`` that makes the cache if a backward asks."""
    T, N, D = X.shape
    H = W_hh.shape[1]
    P = _parts(N, W_hh, False)
    bm = batch_major(X)
    b, _ = kernel_biases("lstm", b_ih, b_hh, 4 * H)
    out = empty_steps(T, N, H, bm)
    h0, c0 = np.ascontiguousarray(h), c                         # the layer's own (recurrent._own)
    c = aligned_copy(c)                                         # the loops' c_t, on cache lines
    from . import _units                                        # (it imports this module)
    units = (_units.lstm_infer_mkl if _units.usable_mkl(T, N, D, H, P)       # by units on two cores
             else _units.lstm_infer if _units.usable(N, D, H, P) else None)   # (fast/_units.py)
    if units is not None:
        if units(X, h0, c, W_ih, W_hh, b, reverse, out, bm, memory(X, bm), memory(out, bm)):
            return out, out[0 if reverse else T - 1], c, Recompute((X, h0, c0, W_ih, W_hh, b_ih, b_hh, reverse))
        c[...] = c0                                             # the second core never started
    _lstm_steps(X, h0, c, W_ih, W_hh, b, reverse, out, bm, P)
    return out, out[0 if reverse else T - 1], c, Recompute((X, h0, c0, W_ih, W_hh, b_ih, b_hh, reverse))


def _lstm_steps(X, h0, c, W_ih, W_hh, b, reverse, out, bm, P, cache=None):
    """The LSTM's step loops over X (T, N, D), whole or in the batch split's P parts: h_t into
    out, c (N, H) from c_0 to c_T in place; with ``cache`` = (A, Cp, TC) the gates, c_prev and
    tanh(c_t) of every step into those. One product a step over [x_t | h_{t-1}] (``lstm_loop1``)
    where x_t W_ih^T over the batch has fewer than INFER_ONE_PRODUCT_MAX multiply-adds and
    [W_ih | W_hh] takes at most ONE_PRODUCT_MAX_BYTES, else two (``lstm_loop2``, or with MKL
    ``lstm_loop_ahead``)."""
    T, N, D = X.shape
    H = W_hh.shape[1]
    two = (N * W_ih.size >= INFER_ONE_PRODUCT_MAX or 4 * (W_ih.size + W_hh.size) > ONE_PRODUCT_MAX_BYTES
           or (AHEAD and _mkl.active(F, 0) and -(-N // P) <= AHEAD_MAX_ROWS))
    ahead = (AHEAD and two and _mkl.active(F, 0)                # with a cache, into its gates array
             and (cache is not None or T * -(-N // P) * 4 * H * 4 <= AHEAD_MAX_BYTES))
    panels = None if two else _one_core_panels((W_ih.T, W_hh.T), N, P, "xh")   # [W_ih | W_hh]^T
    W = None if two or panels is not None else np.concatenate([W_ih, W_hh], axis=1)    # (4H, D + H)
    panels_x = _one_core_panels(W_ih.T, N, P, "x") if two else None
    panels_h = _one_core_panels(W_hh.T, N, P) if two else None

    def loop(n0, n1):                                            # sequences n0..n1-1
        rows, n = slice(n0, n1), n1 - n0
        mO = memory(out[:, rows], bm)
        zero_h0 = not h0[rows].any()
        if two:
            bh, _ = _forward_product(W_hh, n, T, panels_h)      # h_{t-1} W_hh^T, either loop below
            if ahead and bh[0] == PACKED:                        # x W_ih^T of all steps first
                if cache is None:
                    Z = _pack_buffer("ahead", (n, T, 4 * H) if bm else (T, n, 4 * H))
                    steps = Z.transpose(1, 0, 2) if bm else Z    # as (T, n, 4H) steps
                    mCp = mTC = mO
                else:
                    steps = cache[0][:, rows]
                    mCp, mTC = (memory(a[:, rows], bm) for a in cache[1:])
                project(X[:, rows], W_ih, steps)
                lstm_loop_ahead(bh[1], bh[3], memory(steps, bm), h0[rows], b, c[rows], mO, bm, T, reverse,
                                zero_h0, cache is not None, mCp, mTC)
                return
        hw = np.empty((n, 4 * H), F)
        Xm = memory(X[:, rows], bm)
        mA, mCp, mTC = (mO, mO, mO) if cache is None else (memory(a[:, rows], bm) for a in cache)
        made = cache is not None
        if two:
            bx, _ = _forward_product(W_ih, n, T, panels_x)
            lstm_loop2(*bx, *bh, Xm, h0[rows], hw, b, c[rows], mO, bm, T, reverse,
                       _panels.compiled().two if panels_x is not None and panels_h is not None else 0,
                       made, mA, mCp, mTC, zero_h0)
            return
        S = np.empty((n, D + H), F)
        S[:, D:] = h0[rows]
        blas, _ = _forward_product(W, n, T, panels)             # x W^T: the product takes W (G, K)
        lstm_loop1(*blas, Xm, S, hw, b, c[rows], mO, bm, T, reverse, made, mA, mCp, mTC)

    _split.run(loop, N, P)


class Recompute:
    """An LSTM inference loop's cache: ``lstm_forward`` run again, when a backward asks (inside
    the backward's BLAS settings, ``fast._step_blas``), on the same input array and initial
    state (the layer's own copy: ``recurrent._own``) and the weights as they are then (a
    backward reads the input and the current W_hh for its gradients anyway). Its outputs equal
    the inference loop's (the same step loops, with the cache made; up to rounding where the
    BLAS settings differ)."""
    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args

    def run(self):
        """The training forward's cache (a ``PreviousStates``)."""
        return lstm_forward(*self.args)[-1]

    def batch_major(self):
        """The full cache, h_prev included (``fast.Cache`` calls this name for every deferred cache)."""
        return self.run().batch_major()


def _lstm_tiny(A, h0, c, W_hh, b, reverse, Cp, TC, out):
    """The tiny loop over all steps (time-major arrays): half of each step's hidden units on a
    second core where ``_pair`` can take them, else ``lstm_loop`` on this one."""
    N, G = A.shape[1:]
    hw = aligned_empty((N, G))                                  # on cache lines: _steps.aligned_empty
    zero = np.zeros(G, F)
    W_hh = aligned_weight(W_hh, A.shape[0])
    mv = _matvec.usable(W_hh.shape[1])                          # its kernel's address, or 0
    if not (_pair.usable(G // 4, "lstm") and _pair.PAIR.lstm_loop(A, h0, c, W_hh, b, zero, reverse,
                                                           hw, Cp, TC, out, mv)):
        lstm_loop(A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out, mv)


class Flush:
    """What a backward hands its pre-activation gradients to (``fast.backprop_direction`` makes
    it). Called as ``flush(lo, hi, dA, extra, bm, rows)`` after each chunk of steps: dX and the
    weight gradients of that chunk (of the part ``rows`` of the batch split, into that part's own
    gradient arrays, added up after all parts). With ``after_parts`` (set where the batch split
    runs and one chunk holds all the steps) the parts write their rows of one dA array
    (``_chunk_arrays``), each computes its rows of dX (``dx``, called as ``flush`` is), and after
    all parts
    ``weights(lo, hi, dA, extra, bm, P)`` adds the weight gradients of every sequence, each of P
    threads a share of the rows of each gradient: no part needs gradient arrays of its own, so
    none is zeroed or added up. LSTM backward at N=64, T=50, D=H=512 on the 2-core Intel machine
    (2026-12-07): the zeroing and adding took 5.8 of 108.6 ms, 2.6 of them ``zeros_like``."""
    __slots__ = ("chunk", "dx", "weights", "after_parts")

    def __init__(self, chunk, dx=None, weights=None, after_parts=False):
        self.chunk, self.dx, self.weights, self.after_parts = chunk, dx, weights, after_parts

    def __call__(self, *args):
        return self.chunk(*args)


def _flush_after_parts(flush, P):
    """Whether the parts hand the weight gradients to ``flush.weights`` after the split (``Flush``)."""
    return P > 1 and flush.after_parts


def _chunk_arrays(whole, rows, chunk, n, bm, widths):
    """A part's chunk arrays (chunk, n, K), one per width K (the sequences ``rows``, n of them):
    its rows of the whole batch's arrays ``whole`` where the parts share them (``Flush``), else
    its own. ``whole``: ``_chunk_arrays(None, None, chunk, N, bm, widths)`` (the shared ones) or None."""
    if whole is not None:
        return [a[:, rows] for a in whole]
    return [empty_steps(chunk, n, K, bm) for K in widths]


def _grads_in_order(dY, cache, chunk):
    """The cache's memory order (bm), dY in that order, and the chunk length: the backward's chunk
    buffers are (chunk, N, .) in the same order, so that a whole chunk's rows line up with X's."""
    bm = batch_major(cache[0])
    return bm, as_order(dY, bm), min(chunk, cache[0].shape[0])


def lstm_backward(dY, dh, dc, cache, W_hh, reverse, chunk, flush, P=1):
    """The LSTM's backward; with P > 1 its sequences in P parts (``_split``), each its own chunk
    loop and ``flush(lo, hi, dA, None, bm, (n0, n1))`` on its own thread."""
    A, Hp, Cp, TC, _ = cache
    T, N, G = A.shape
    bm, dY, chunk = _grads_in_order(dY, cache, chunk)
    dh = dh.copy()
    dc = dc.copy()
    panels = None if _tiny(N, W_hh) else _one_core_panels(W_hh, N, P, "dh")
    after = _flush_after_parts(flush, P)
    whole = _chunk_arrays(None, None, chunk, N, bm, (G,)) if after else None     # every part's rows of dA
    hand = flush.dx if after else flush                         # a part's chunk: its dX only, or all

    def part(n0, n1):
        rows = slice(n0, n1)
        dA, = _chunk_arrays(whole, rows, chunk, n1 - n0, bm, (G,))
        mdY, mA, mTC, mCp = (memory(a[:, rows], bm) for a in (dY, A, TC, Cp))
        mdA = memory(dA, bm)
        blas, grad = _backward_product(W_hh, N, n1 - n0, T, bm, panels)
        split = (n0, n1) if P > 1 else None
        if blas:
            for lo, hi in chunks(T, reverse, chunk):
                lstm_chunk_blas(*blas, lo, hi, reverse, mdY, mA, mTC, mCp, mdA, bm, dh[rows], dc[rows])
                hand(lo, hi, dA[:hi - lo], None, bm, split)
            return
        for t, k, done in backward_steps(T, reverse, chunk):     # P = 1 here
            lstm_backward_step(mdY, mA, mTC, mCp, mdA, t, k, bm, dh, dc)
            grad(dA[k], dh)                                     # dh = dA W_hh
            if done:
                flush(done[0], done[1], dA[:done[1] - done[0]], None, bm)

    _split.run(part, N, P)
    if after:
        flush.weights(0, T, whole[0], None, bm, P)
    return dh, dc


def gru_forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse, defer=False):
    """The GRU's forward. With ``defer`` (eval mode) the cache's h_prev array is not made here
    but by a backward, if one comes: the cache is then a ``PreviousStates`` (but for the tiny
    loop, which writes the array as it goes). Else each part of the batch split copies its rows
    of h_prev from its outputs after its loop, on its own core (GRU training forwards, 30 rounds
    each way in turn, best / median: N=64, T=50, D=H=512 37.25 / 38.26 against 38.09 / 38.96 ms
    with the whole copy after the split; N=32, T=100, D=64, H=256 7.84 / 8.31 against 7.99 / 8.43)."""
    T, N, D = X.shape
    H = W_hh.shape[1]
    tiny = _tiny_loop(N, W_hh, "gru", defer)
    P = _parts(N, W_hh, tiny)
    A, bm, X = _start(X, W_ih, tiny)
    b, b_hn = kernel_biases("gru", b_ih, b_hh, 3 * H)
    out, HWn = (empty_steps(T, N, H, bm) for _ in range(2))
    if tiny:
        _project_tiny(X, W_ih, A, "gru", W_hh.shape[1])
        hw = aligned_empty((N, 3 * H))
        Hp = empty_steps(T, N, H, bm)
        W, zero, mv, h0 = aligned_weight(W_hh, T), np.zeros(3 * H, F), _matvec.usable(H), np.ascontiguousarray(h)
        if not (_pair.usable(H, "gru") and _pair.PAIR.gru_loop(A, h0, W, b, zero, b_hn, reverse, hw, Hp, HWn, out,
                                                                 mv)):
            gru_loop(A, h0, W, b, zero, b_hn, reverse, hw, Hp, HWn, out, mv)
        return out, out[0 if reverse else T - 1], (A, Hp, HWn)
    h0, step = np.ascontiguousarray(h), (1 if reverse else -1)
    panels = _one_core_panels(W_hh.T, N, P)
    Hp = None if defer else empty_steps(T, N, H, bm)           # training: h_prev, each part its rows

    def loop(n0, n1):                                            # sequences n0..n1-1
        rows = slice(n0, n1)
        _project(X, W_ih, A, rows)
        mA, mHWn, mO = (memory(a[:, rows], bm) for a in (A, HWn, out))
        first = h0[rows, None] if bm else h0[None, rows]         # h0 as a one-step sequence
        hw = np.empty((n1 - n0, 3 * H), F)
        blas, product = _forward_product(W_hh, n1 - n0, T, panels)
        if blas:
            gru_loop_blas(*blas, h0[rows], first, mA, mHWn, mO, bm, hw, b, b_hn, T, reverse)
        else:
            h = h0                                               # P = 1 here
            for i, t in enumerate(forward_steps(T, reverse)):
                product(h, hw)
                prev, tp = (first, 0) if i == 0 else (mO, t + step)  # h_prev: row (tp, n) of prev
                gru_forward_step(mA, prev, tp, mHWn, mO, t, bm, hw, b, b_hn)
                h = out[t]
        if Hp is not None:                                       # this part's rows, on its own core
            previous_states(Hp[:, rows], out[:, rows], h0[rows], reverse)

    _split.run(loop, N, P)
    if Hp is not None:
        return out, out[0 if reverse else T - 1], (A, Hp, HWn)
    return out, out[0 if reverse else T - 1], PreviousStates((A, None, HWn), out, h0, reverse)



def gru_backward(dY, dh, cache, W_hh, reverse, chunk, flush, P=1):
    """The GRU's backward; P as in ``lstm_backward``."""
    A, Hp, HWn = cache
    T, N, G = A.shape
    H = G // 3
    bm, dY, chunk = _grads_in_order(dY, cache, chunk)
    dh = dh.copy()
    panels = None if _tiny(N, W_hh) else _one_core_panels(W_hh, N, P, "dh")
    after = _flush_after_parts(flush, P)
    whole = _chunk_arrays(None, None, chunk, N, bm, (G, H)) if after else None
    hand = flush.dx if after else flush

    def part(n0, n1):
        rows, n = slice(n0, n1), n1 - n0
        dA, dA_hn = _chunk_arrays(whole, rows, chunk, n, bm, (G, H))
        mdY, mA, mHWn, mHp = (memory(a[:, rows], bm) for a in (dY, A, HWn, Hp))
        mdA, mdA_hn = memory(dA, bm), memory(dA_hn, bm)
        dhw = np.empty((n, G), F)
        blas, grad = _backward_product(W_hh, N, n, T, bm, panels)
        split = (n0, n1) if P > 1 else None
        if blas:
            for lo, hi in chunks(T, reverse, chunk):
                gru_chunk_blas(*blas, lo, hi, reverse, mdY, mA, mHWn, mHp, mdA, mdA_hn, bm, dh[rows], dhw)
                hand(lo, hi, dA[:hi - lo], dA_hn[:hi - lo], bm, split)
            return
        tmp = np.empty((n, H), F)
        for t, k, done in backward_steps(T, reverse, chunk):     # P = 1 here
            gru_backward_step(mdY, mA, mHWn, mHp, mdA, mdA_hn, t, k, bm, dh, dhw)
            dh[...] += grad(dhw, tmp)                           # + dhw W_hh
            if done:
                m = done[1] - done[0]
                flush(done[0], done[1], dA[:m], dA_hn[:m], bm)

    _split.run(part, N, P)
    if after:
        flush.weights(0, T, whole[0], whole[1], bm, P)
    return dh


def rnn_forward(X, h, W_ih, W_hh, b_ih, b_hh, nonlinearity, reverse, infer=False):
    """The RNN's forward; its cache a ``PreviousStates`` without an h_prev array (but for the tiny
    loop, which writes one as it goes). ``infer``: as ``lstm_forward``'s."""
    T, N, D = X.shape
    H = W_hh.shape[0]
    tiny = _tiny_loop(N, W_hh, "rnn", infer)
    P = _parts(N, W_hh, tiny)
    A, bm, X = _start(X, W_ih, tiny)
    b, _ = kernel_biases("rnn", b_ih, b_hh, H)
    out = empty_steps(T, N, H, bm)
    relu = nonlinearity == "relu"
    if tiny:                                                     # the tiny loop writes h_prev as it goes
        _project_tiny(X, W_ih, A, "rnn", W_hh.shape[1])
        hw = aligned_empty((N, H))
        Hp = empty_steps(T, N, H, bm)
        W, zero, mv, h0 = aligned_weight(W_hh, T), np.zeros(H, F), _matvec.usable(H), np.ascontiguousarray(h)
        if not (_pair.usable(H, "rnn") and _pair.PAIR.rnn_loop(A, h0, W, b, zero, reverse, hw, Hp, out, relu, mv)):
            rnn_loop(A, h0, W, b, zero, reverse, hw, Hp, out, relu, mv)
        return out, out[0 if reverse else T - 1], (out, Hp, nonlinearity)
    h0 = np.ascontiguousarray(h)
    panels = _one_core_panels(W_hh.T, N, P)

    def loop(n0, n1):                                            # sequences n0..n1-1
        rows = slice(n0, n1)
        _project(X, W_ih, A, rows)
        mA, mO = memory(A[:, rows], bm), memory(out[:, rows], bm)
        hw = np.empty((n1 - n0, H), F)
        blas, product = _forward_product(W_hh, n1 - n0, T, panels)
        if blas:
            rnn_loop_blas(*blas, h0[rows], mA, mO, bm, hw, b, relu, T, reverse)
            return
        h = h0                                                   # P = 1 here
        for t in forward_steps(T, reverse):
            product(h, hw)
            rnn_forward_step(mA, mO, t, bm, hw, b, relu)
            h = out[t]

    _split.run(loop, N, P)
    return out, out[0 if reverse else T - 1], PreviousStates((out, None, nonlinearity), out, h0, reverse, needs=False)


class PreviousStates:
    """A forward's cache without its h_prev array (index 1 of ``data``, None): h_{t-1} of every
    step is the output of the step before (out[t - 1], out[t + 1] for the reverse direction),
    h0 for the first.

    The GRU's backward kernel reads h_prev (``needs``): the array is made from the outputs
    and h0 when a backward asks (``batch_major``), so an eval-mode forward pays neither the copy
    nor the array (RNN N=32, T=100, H=256: 0.25 ms of copying and 0.13 ms of fresh memory, of a
    4 ms inference; GRU N=32 inference 20.7 and 17.0 against 21.2 and 17.3 ms, median of 15
    rounds' best of 10, interleaved, two runs). The LSTM's and the RNN's backward kernels do not
    read it, and their weight gradient dW_hh = dA^T H_prev takes the outputs themselves, one row
    apart (``_steps.grad_from_outputs``): no array at all, in training too. RNN training steps
    at N=32, T=100, D=64, H=256 (2-core Zen 4 VM, 30 steps, mean, three runs each way in turn):
    10.0-10.2 against 12.1-12.9 ms, the array's 3.2 MB copy into fresh memory (784 page faults a
    step, 0 after) gone; LSTM steps at N=32 and N=64 unchanged (36.1-37.2 ms both ways at N=32);
    the T=1000 LSTM step of ``rnnlab bench`` at N=32, H=256 peaked at 299 against 324 MB.
    ``fast.Cache.later`` takes it."""
    __slots__ = ("data", "out", "h0", "reverse", "needs")

    def __init__(self, data, out, h0, reverse, needs=True):
        self.data, self.out, self.h0, self.reverse, self.needs = data, out, h0, reverse, needs

    def batch_major(self):
        """The full cache (``fast.Cache`` calls this name for every deferred cache)."""
        T, N, H = self.out.shape
        Hp = empty_steps(T, N, H, batch_major(self.out))
        previous_states(Hp, self.out, self.h0, self.reverse)
        return self.data[:1] + (Hp,) + self.data[2:]


def rnn_backward(dY, dh, cache, W_hh, reverse, chunk, flush, P=1):
    """The RNN's backward; P as in ``lstm_backward``."""
    Hn, Hp, nonlinearity = cache
    T, N, H = Hn.shape
    bm, dY, chunk = _grads_in_order(dY, cache, chunk)
    dh = dh.copy()
    relu = nonlinearity == "relu"
    panels = None if _tiny(N, W_hh) else _one_core_panels(W_hh, N, P, "dh")
    after = _flush_after_parts(flush, P)
    whole = _chunk_arrays(None, None, chunk, N, bm, (H,)) if after else None
    hand = flush.dx if after else flush

    def part(n0, n1):
        rows = slice(n0, n1)
        dA, = _chunk_arrays(whole, rows, chunk, n1 - n0, bm, (H,))
        mdY, mHn = memory(dY[:, rows], bm), memory(Hn[:, rows], bm)
        mdA = memory(dA, bm)
        blas, grad = _backward_product(W_hh, N, n1 - n0, T, bm, panels)
        split = (n0, n1) if P > 1 else None
        if blas:
            for lo, hi in chunks(T, reverse, chunk):
                rnn_chunk_blas(*blas, lo, hi, reverse, mdY, mHn, mdA, bm, dh[rows], relu)
                hand(lo, hi, dA[:hi - lo], None, bm, split)
            return
        for t, k, done in backward_steps(T, reverse, chunk):     # P = 1 here
            rnn_backward_step(mdY, mHn, mdA, t, k, bm, dh, relu)
            grad(dA[k], dh)                                     # dh = dA W_hh
            if done:
                flush(done[0], done[1], dA[:done[1] - done[0]], None, bm)

    _split.run(part, N, P)
    if after:
        flush.weights(0, T, whole[0], None, bm, P)
    return dh


from . import _pair  # noqa: E402  (imports this module: the tiny LSTM loop's second core)
