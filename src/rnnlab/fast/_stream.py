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
from ._steps import kernel_biases
from ._threads import STEP_ALL_THREADS_MIN_WORK

F = np.float32

# From this many multiply-adds in a layer's product the stack's step takes BLAS products on every
# thread (``blas_stack``). A 2-layer LSTM step, N = 1, on the 2-core machine (AVX2, best / median
# of 10 interleaved turns): H = 256 (2^18) compiled 138 / 146 us, BLAS 131 / 192 us; H = 384
# (about 2^19.2) compiled 260 / 685 us, BLAS 202 / 237 us; H = 512 (2^20) 1758 / 2142 against
# 619 / 851 us.
STACK_BLAS_MIN_WORK = 2 ** 19

if _compiled.AVAILABLE:
    # Each step's (1, N, .) arrays go to the kernels whole, as step 0 of a time-major sequence.
    @_compiled._jit()
    def lstm_step(x, h, c, W_ih, W_hh, b, zero, A, hw, Hp, Cp, TC, out):
        """A[0] <- gates of x W_ih^T + b + h W_hh^T; c: c_prev in, c_t out; Hp[0] <- h; out[0] <- h_t."""
        _compiled.matvec(W_ih, x, b, A[0])
        _compiled.matvec(W_hh, h, zero, hw)
        Hp[0] = h
        _compiled.lstm_forward_step(A, Cp, TC, out, 0, False, hw, zero, c)

    @_compiled._jit()
    def gru_step(x, h, W_ih, W_hh, b, zero, b_hn, A, hw, Hp, HWn, out):
        _compiled.matvec(W_ih, x, b, A[0])
        _compiled.matvec(W_hh, h, zero, hw)
        Hp[0] = h
        _compiled.gru_forward_step(A, Hp, 0, HWn, out, 0, False, hw, zero, b_hn)

    @_compiled._jit()
    def rnn_step(x, h, W_ih, W_hh, b, zero, A, hw, Hp, out, relu):
        _compiled.matvec(W_ih, x, b, A[0])
        _compiled.matvec(W_hh, h, zero, hw)
        Hp[0] = h
        _compiled.rnn_forward_step(A, out, 0, False, hw, zero, relu)


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
    b, b_hn = kernel_biases(mode, b_ih, b_hh, G)
    if mode == "lstm":
        Cp = np.empty((1, N, H), F)
        TC = np.empty((1, N, H), F)
        c = c.copy()                                    # updated in place by the kernel
        lstm_step(X[0], h, c, W_ih, W_hh, b, zero, A, hw, Hp, Cp, TC, out)
        return out, out[0], c, (A, Hp, Cp, TC, None)
    if mode == "gru":
        HWn = np.empty((1, N, H), F)
        gru_step(X[0], h, W_ih, W_hh, b, zero, b_hn, A, hw, Hp, HWn, out)
        return out, out[0], c, (A, Hp, HWn)
    rnn_step(X[0], h, W_ih, W_hh, b, zero, A, hw, Hp, out, nonlinearity == "relu")
    return out, out[0], c, (out, Hp, nonlinearity)


# ---- the whole stack in one call ---------------------------------------------------------------
# Streaming a 2-layer LSTM one step at a time through the general ``forward`` cost about 30 us a
# step at H = 128 (measured with another job running), of which the four matrix-vector products
# took about 11 us: the rest was Python (checks, ~10 small arrays, two kernel calls of 13
# arguments, caches). Now it is about 17 us (idle machine; 34-58 us on the later AVX2 machine,
# whose 512 KB L2 holds only half of the four weight matrices). Here a unidirectional stack
# without projection does its whole step in ONE compiled call that also checks the inputs are
# finite. The arrays the backward needs live in a workspace kept by the layer and reused from call
# to call (only the most recent forward is ever backpropagated), and the backward's caches are
# built from it only when ``backward`` asks (``Pending``). Where the products are large the
# BLAS does them on every thread and one compiled call a layer the rest (``blas_stack``).

if _compiled.AVAILABLE:
    @_compiled._jit()
    def _finite(a):
        for v in a.ravel():
            if not np.isfinite(v):
                return False
        return True

    @_compiled._jit(inline="always")
    def _flat(a):
        """(N, 1, D) or (1, N, D), C-contiguous, as (N, D): a view."""
        return a.reshape(a.shape[0] * a.shape[1], a.shape[2])

    # Layer k's step once its two products are in: A[k] = x W_ih^T + b_ih, hw = h_prev W_hh^T + b_hh,
    # so the kernels' own biases are zero (``zero``, (G,); for the GRU hw includes b_hh, so its
    # separate b_hn is zero too: the first H of ``zero``). The (L, N, .) arrays go to the kernels as
    # a time-major sequence whose step k is layer k. Called by the one-call stacks below and, from
    # Python, by ``blas_stack``.
    @_compiled._jit()
    def lstm_layer(A, k, hw, zero, h0, c0, Hp, Cp, TC, O, hT, cT):
        Hp[k] = h0[k]
        cT[k] = c0[k]                                                    # c_prev in, c_t out
        _compiled.lstm_forward_step(A, Cp, TC, O, k, False, hw, zero, cT[k])
        hT[k] = O[k]

    @_compiled._jit()
    def gru_layer(A, k, hw, zero, h0, Hp, HWn, O, hT):
        Hp[k] = h0[k]
        _compiled.gru_forward_step(A, Hp, k, HWn, O, k, False, hw, zero, zero[:h0.shape[2]])
        hT[k] = O[k]

    @_compiled._jit()
    def rnn_layer(A, k, hw, zero, h0, Hp, O, hT, relu):
        Hp[k] = h0[k]
        _compiled.rnn_forward_step(A, O, k, False, hw, zero, relu)
        hT[k] = O[k]

    @_compiled._jit()
    def lstm_stack(x3, h0, c0, Ws, Bs, zero, A, Hp, Cp, TC, O, hw, hT, cT, out3):
        """x3 (N, 1, D) or (1, N, D), seen as x (N, D); out3 likewise (N, H); h0, c0 (L, N, H);
        Ws = (W_ih_l0, W_hh_l0, W_ih_l1, ...), Bs the biases (zeros when bias=False), zero (4H,)
        zeros for the kernels' own bias; A (L, N, 4H), Hp, Cp, TC, O (L, N, H): what the backward
        needs; hw (N, 4H) scratch; writes hT, cT (L, N, H) and out (N, H). False (nothing done)
        if x, h0 or c0 is not finite."""
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0) and _finite(c0)):
            return False
        inp = x
        for k in range(h0.shape[0]):
            _compiled.matvec(Ws[2 * k], inp, Bs[2 * k], A[k])            # x W_ih^T + b_ih
            _compiled.matvec(Ws[2 * k + 1], h0[k], Bs[2 * k + 1], hw)    # h_prev W_hh^T + b_hh
            lstm_layer(A, k, hw, zero, h0, c0, Hp, Cp, TC, O, hT, cT)
            inp = O[k]
        out[:, :] = inp
        return True

    @_compiled._jit()
    def gru_stack(x3, h0, Ws, Bs, zero, A, Hp, HWn, O, hw, hT, out3):
        """As ``lstm_stack``."""
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0)):
            return False
        inp = x
        for k in range(h0.shape[0]):
            _compiled.matvec(Ws[2 * k], inp, Bs[2 * k], A[k])
            _compiled.matvec(Ws[2 * k + 1], h0[k], Bs[2 * k + 1], hw)
            gru_layer(A, k, hw, zero, h0, Hp, HWn, O, hT)
            inp = O[k]
        out[:, :] = inp
        return True

    @_compiled._jit()
    def rnn_stack(x3, h0, Ws, Bs, zero, A, Hp, O, hw, hT, out3, relu):
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0)):
            return False
        inp = x
        for k in range(h0.shape[0]):
            _compiled.matvec(Ws[2 * k], inp, Bs[2 * k], A[k])
            _compiled.matvec(Ws[2 * k + 1], h0[k], Bs[2 * k + 1], hw)
            rnn_layer(A, k, hw, zero, h0, Hp, O, hT, relu)
            inp = O[k]
        out[:, :] = inp
        return True


def blas_stack(mode, x, h0, c0, Ws, Bs, ws, hT, cT, out, relu):
    """The stack's step for large products (N G max(D, H) at least ``STACK_BLAS_MIN_WORK``
    multiply-adds): the products by the BLAS on every thread, the rest of each layer by the same
    compiled layer step as the one-call stacks. Two threads read W from memory about three times
    as fast as one (four (2048, 512) float32 W x, one after the other, took 1.1-1.4 ms on one
    thread and 0.40-0.48 ms on two, measured). False if an input is not finite."""
    N, A, Hp, X2, X3, O, hw = ws
    if not (_finite(x) and _finite(h0) and (c0 is None or _finite(c0))):
        return False
    inp = x.reshape(N, x.shape[2])
    zero = _zeros(hw.shape[1])
    for k in range(h0.shape[0]):
        a = A[k]
        np.add(np.matmul(inp, Ws[2 * k].T, out=a), Bs[2 * k], out=a)
        np.add(np.matmul(h0[k], Ws[2 * k + 1].T, out=hw), Bs[2 * k + 1], out=hw)
        if mode == "lstm":
            lstm_layer(A, k, hw, zero, h0, c0, Hp, X2, X3, O, hT, cT)
        elif mode == "gru":
            gru_layer(A, k, hw, zero, h0, Hp, X2, O, hT)
        else:
            rnn_layer(A, k, hw, zero, h0, Hp, O, hT, relu)
        inp = O[k]
    out.reshape(N, -1)[:, :] = inp
    return True


class Pending:
    """The caches of a stacked step, built only if ``backward`` is called (``materialize``)."""
    __slots__ = ("x", "ws", "mode", "nonlinearity")

    def __init__(self, x, ws, mode, nonlinearity):
        self.x, self.ws, self.mode, self.nonlinearity = x, ws, mode, nonlinearity

    def materialize(self):
        """The ``(layers, mask, out_shape, x_shape)`` cache of ``forward`` (time-major, T = 1)."""
        from . import Cache
        A, Hp, X2, X3, O = self.ws[1:6]
        mode, nonlinearity, x_shape = self.mode, self.nonlinearity, self.x.shape
        layers, inp = [], self.x.reshape(1, -1, x_shape[2])
        for k in range(A.shape[0]):
            if mode == "lstm":
                data = (A[k][None], Hp[k][None], X2[k][None], X3[k][None], None)
            elif mode == "gru":
                data = (A[k][None], Hp[k][None], X2[k][None])
            else:
                data = (O[k][None], Hp[k][None], nonlinearity)
            layers.append((inp, [Cache(data, data[1])], None))
            inp = O[k][None]
        return layers, None, inp.shape, x_shape


def stack_usable(layer):
    """Whether this layer's options allow the one-call stack (checked per call: options can change)."""
    return (_compiled.AVAILABLE and layer.fast and layer.dtype == F and not layer.bidirectional
            and not layer.proj_size and not (layer.training and layer.dropout > 0 and layer.num_layers > 1))


_F32 = np.dtype(F)


def _ready(a, shape, strides):
    """a is a float32 array of this shape and these (C-contiguous) strides: attribute checks only,
    no flags object (0.3 against 0.57 us a call, measured)."""
    return type(a) is np.ndarray and a.dtype is _F32 and a.shape == shape and a.strides == strides


def forward_stack(layer, x, state):
    """``layer.forward(x, state)`` for x with T = 1 in one compiled call, or None where it does not
    apply (then the general path runs, and it also gives the error messages for bad input)."""
    if not (type(x) is np.ndarray and x.ndim == 3 and x.dtype == F and x.flags.c_contiguous
            and x.flags.writeable):
        return None
    if layer.batch_first:
        N, T, D = x.shape
    else:
        T, N, D = x.shape
    H, L = layer.hidden_size, layer.num_layers
    G = layer.weight_rows
    if T != 1 or D != layer.input_size or N == 0:
        return None
    s_shape = (L, N, H)
    s_strides = (4 * N * H, 4 * H, 4)
    lstm = layer.mode == "lstm"
    if state is None:
        h0 = np.zeros(s_shape, F)
        c0 = np.zeros(s_shape, F) if lstm else None
    elif lstm:
        if not (type(state) is tuple and len(state) == 2 and _ready(state[0], s_shape, s_strides)
                and _ready(state[1], s_shape, s_strides)):
            return None
        h0, c0 = state
    else:
        if not _ready(state, s_shape, s_strides):
            return None
        h0, c0 = state, None
    ws = layer._stream_ws
    if ws is None or ws[0] != N:
        ws = layer._stream_ws = (N, np.empty((L, N, G), F), np.empty((L, N, H), F), np.empty((L, N, H), F),
                                 np.empty((L, N, H), F), np.empty((L, N, H), F), np.empty((N, G), F))
    Ws, Bs = layer._stream_weights()
    hT = np.empty(s_shape, F)
    out = np.empty(x.shape[:2] + (H,), F)
    try:
        if N * G * max(D, H) >= STACK_BLAS_MIN_WORK:
            cT = np.empty(s_shape, F) if lstm else None
            ok = blas_stack(layer.mode, x, h0, c0, Ws, Bs, ws, hT, cT, out, layer.nonlinearity == "relu")
            new_state = (hT, cT) if lstm else hT
        else:
            ok, new_state = _call(layer, lstm, x, h0, c0, Ws, Bs, ws, hT, out, s_shape)
    except _compiled.numba.core.errors.TypingError:
        return None                      # a parameter replaced by an array of another layout or dtype
    if not ok:
        return None                      # non-finite input: the general path reports where
    layer._cache = Pending(x, ws, layer.mode, layer.nonlinearity)
    return out, new_state


def _call(layer, lstm, x, h0, c0, Ws, Bs, ws, hT, out, s_shape):
    N, A, Hp, X2, X3, O, hw = ws
    zero = _zeros(hw.shape[1])
    if lstm:
        cT = np.empty(s_shape, F)
        return lstm_stack(x, h0, c0, Ws, Bs, zero, A, Hp, X2, X3, O, hw, hT, cT, out), (hT, cT)
    if layer.mode == "gru":
        return gru_stack(x, h0, Ws, Bs, zero, A, Hp, X2, O, hw, hT, out), hT
    return rnn_stack(x, h0, Ws, Bs, zero, A, Hp, O, hw, hT, out, layer.nonlinearity == "relu"), hT
