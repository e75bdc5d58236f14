"""One time step without the loop's fixed costs: the streaming path (T = 1).

Streaming inference calls ``forward`` one step at a time, carrying the state.
With T = 1 the sequence machinery costs more than the arithmetic: at N = 1,
H = 128 a layer's two matrix-vector products are 2 x 65k multiply-adds (a few
microseconds), while two BLAS calls, switching the BLAS threads
(threadpoolctl) and the loop's buffers cost ~35 us (measured). Here a
layer's step is ONE compiled call: the matrix-vector products are dot
products along W's contiguous rows, then the same per-step kernel as the loop
(``fast/_compiled.py``) does the gates. It fills the same cache as the loop,
so ``backward`` works after a streamed step as after any forward.

Used for float32 with the compiled kernels, T = 1, no ``lengths`` or
projection, and a step below ``_threads.STEP_ALL_THREADS_MIN_WORK``
multiply-adds: larger steps are faster as BLAS products on every thread (the
loop's path). The dot products are summed in a different order than BLAS's,
so results differ from the loop's in the last bits of float32 (tests/test_fast.py
checks them against the readable path).
"""
from __future__ import annotations

import numpy as np

from . import _compiled
from ._threads import STEP_ALL_THREADS_MIN_WORK

F = np.float32

if _compiled.AVAILABLE:
    @_compiled._jit()
    def lstm_step(x, h, c, W_ih, W_hh, b, zero, a, hw, hp, cp, tc, out):
        """a <- gates of x W_ih^T + b + h W_hh^T; c: c_prev in, c_t out; hp <- h; out <- h_t."""
        _compiled.matvec(W_ih, x, b, a)
        _compiled.matvec(W_hh, h, zero, hw)
        hp[:, :] = h
        _compiled.lstm_forward_step(a, hw, c, cp, tc, out)

    @_compiled._jit()
    def gru_step(x, h, W_ih, W_hh, b, zero, b_hn, a, hw, hp, hwn, out):
        _compiled.matvec(W_ih, x, b, a)
        _compiled.matvec(W_hh, h, zero, hw)
        _compiled.gru_forward_step(a, hw, b_hn, h, hp, hwn, out)

    @_compiled._jit()
    def rnn_step(x, h, W_ih, W_hh, b, zero, a, hw, hp, out, relu):
        _compiled.matvec(W_ih, x, b, a)
        _compiled.matvec(W_hh, h, zero, hw)
        _compiled.rnn_forward_step(a, hw, h, hp, out, relu)


_ZEROS = {}


def _zeros(n):
    """A read-only zero vector of length n (a bias for bias=False and for h W_hh^T), made once."""
    z = _ZEROS.get(n)
    if z is None:
        z = _ZEROS[n] = np.zeros(n, F)
        z.flags.writeable = False
    return z


def usable(layer, X, mask, work):
    """Whether this direction's forward can take the one-step path."""
    return (X.shape[0] == 1 and work < STEP_ALL_THREADS_MIN_WORK and _compiled.AVAILABLE
            and X.dtype == F and mask is None and not layer.proj_size)


def run(mode, X, h, c, W_ih, W_hh, b_ih, b_hh, nonlinearity):
    """One step of one layer and direction. X (1, N, D); h (N, H), c (N, H) or None.

    Returns out (1, N, H), h_1, c_1 and the loop's cache (``fast/_compiled.py``).
    """
    N = X.shape[1]
    G, H = W_hh.shape
    A = np.empty((1, N, G), F)
    hw = np.empty((N, G), F)
    Hp = np.empty((1, N, H), F)
    out = np.empty((1, N, H), F)
    zero = _zeros(G)
    if mode == "lstm":
        b = zero if b_ih is None else b_ih + b_hh
        Cp = np.empty((1, N, H), F)
        TC = np.empty((1, N, H), F)
        c = c.copy()                                    # updated in place by the kernel
        lstm_step(X[0], h, c, W_ih, W_hh, b, zero, A[0], hw, Hp[0], Cp[0], TC[0], out[0])
        return out, out[0], c, (A, Hp, Cp, TC, None)
    if mode == "gru":
        b_hn = _zeros(H)
        b = zero
        if b_ih is not None:
            b = b_ih.copy()
            b[:2 * H] += b_hh[:2 * H]                   # only b_hn sits inside r * (.)
            b_hn = np.ascontiguousarray(b_hh[2 * H:])
        HWn = np.empty((1, N, H), F)
        gru_step(X[0], h, W_ih, W_hh, b, zero, b_hn, A[0], hw, Hp[0], HWn[0], out[0])
        return out, out[0], c, (A, Hp, HWn)
    b = zero if b_ih is None else b_ih + b_hh
    rnn_step(X[0], h, W_ih, W_hh, b, zero, A[0], hw, Hp[0], out[0], nonlinearity == "relu")
    return out, out[0], c, (out, Hp, nonlinearity)
