"""One time step without the loop's fixed costs: the streaming path (T = 1).

Streaming inference calls ``forward`` one step at a time, carrying the state.
With T = 1 the sequence machinery costs more than the arithmetic: at N = 1,
H = 128 a layer's two matrix-vector products are 2 x 65k multiply-adds (a few
microseconds), while two BLAS calls, switching the BLAS threads
(threadpoolctl) and the loop's buffers cost ~35 us (measured). Here a
layer's step is ONE compiled call: the matrix-vector products are dot
products along W's contiguous rows, then the same per-step kernel as the loop
(``fast/_compiled.py``) does the gates. It fills the same cache as the loop,
so ``backward`` works after a streamed step as after any forward. A stack's
recurrent products can run on a second core meanwhile (``fast/_helper.py``).

Used for float32 with the compiled kernels, T = 1, no ``lengths`` or
projection, and a step below ``_threads.STEP_ALL_THREADS_MIN_WORK``
multiply-adds: larger steps are faster as BLAS products on every thread (the
loop's path). The dot products are summed in a different order than BLAS's,
so results differ from the loop's in the last bits of float32 (tests/test_fast.py
checks them against the readable path).
"""
from __future__ import annotations

import numpy as np

from . import _compiled, _helper
from ._steps import kernel_biases
from ._threads import STEP_ALL_THREADS_MIN_WORK

F = np.float32

# From this many multiply-adds in a layer's product the stack's step takes BLAS products on every
# thread (``blas_stack``). A 2-layer LSTM step, N = 1, on the 2-core machine (AVX2, best / median
# of 10 interleaved turns): H = 256 (2^18) compiled 138 / 146 us, BLAS 131 / 192 us; H = 384
# (about 2^19.2) compiled 260 / 685 us, BLAS 202 / 237 us; H = 512 (2^20) 1758 / 2142 against
# 619 / 851 us.
STACK_BLAS_MIN_WORK = 2 ** 19
# ...except for one sequence with the helper (``_helper``) on the second core, below this many:
# the helper's matrix-vector products then read the weights on both cores, faster than the BLAS's
# two-thread products, a call each. On the 2-core Zen 5 VM (2026-12-07, fourth session; 32 MB of
# L3), a 2-layer LSTM step at N=1, D=H, 12 turns of 400 steps 0.2 s apart, interleaved, best /
# median, us: H=384 65.0 / 74.1 against the BLAS's 79.5 / 85.4; H=512 103.2 / 104.6 against
# 134.3 / 144.4; H=768 433 / 453 against 584 / 594; H=1024 (2^22) 1103 / 1395 against 1270 /
# 1337. (Two cores read 188 GB/s from L3 there, one 110; four (2048, 512) products by NumPy on
# two threads took 103 us, 163 GB/s.)
STACK_HELPER_MAX_WORK = 2 ** 22

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
# built from it only when ``backward`` asks (``Pending``). The recurrent products go through
# ``_helper.recurrent``: on a second core when the helper thread serves this workspace, else
# here. Where the products are large the BLAS does them on every thread and one compiled call a
# layer the rest (``blas_stack``).

if _compiled.AVAILABLE:
    @_compiled._jit(inline="always")
    def _finite(a):
        """Whether a holds no NaN or inf: ``_compiled.all_finite`` over its entries."""
        return _compiled.all_finite(a.ravel())

    @_compiled._jit(inline="always")
    def _flat(a):
        """(N, 1, D) or (1, N, D), C-contiguous, as (N, D): a view."""
        return a.reshape(a.shape[0] * a.shape[1], a.shape[2])

    # Layer k's step once its two products are in: A[k] = x W_ih^T + b_ih, hw = h_prev W_hh^T + b_hh,
    # so the kernels' own biases are zero (``zero``, (G,); for the GRU hw includes b_hh, so its
    # separate b_hn is zero too: the first H of ``zero``). The (L, N, .) arrays go to the kernels as
    # a time-major sequence whose step k is layer k; Hp[k] already holds layer k's h_prev. Called by
    # the one-call stacks below and, from Python, by ``blas_stack``.
    @_compiled._jit()
    def lstm_layer(A, k, hw, zero, c0, Cp, TC, O, hT, cT):
        cT[k] = c0[k]                                                    # c_prev in, c_t out
        _compiled.lstm_forward_step(A, Cp, TC, O, k, False, hw, zero, cT[k])
        hT[k] = O[k]

    @_compiled._jit()
    def gru_layer(A, k, hw, zero, Hp, HWn, O, hT):
        _compiled.gru_forward_step(A, Hp, k, HWn, O, k, False, hw, zero, zero[:Hp.shape[2]])
        hT[k] = O[k]

    @_compiled._jit()
    def rnn_layer(A, k, hw, zero, O, hT, relu):
        _compiled.rnn_forward_step(A, O, k, False, hw, zero, relu)
        hT[k] = O[k]

    @_compiled._jit(inline="always")
    def _begin(ctl, h0, Hp, Ws, Bs):
        """Every layer's h_prev into Hp (where the helper reads it), then the step numbered and
        published (``_helper.begin``): its number and the status the stack returns."""
        for k in range(h0.shape[0]):
            Hp[k] = h0[k]
        return _helper.begin(ctl, Ws, Bs)

    # The stacks hold the interpreter lock while they run: a workspace (its arrays, its ctl and
    # step numbers) serves one step at a time, and two threads streaming one layer would
    # otherwise run their steps in it at once.
    @_compiled._jit()
    def lstm_stack(ctl, x3, h0, c0, Ws, Bs, zero, A, Hp, Cp, TC, O, HW, hT, cT, out3):
        """x3 (N, 1, D) or (1, N, D), seen as x (N, D); out3 likewise (N, H); h0, c0 (L, N, H);
        Ws = (W_ih_l0, W_hh_l0, W_ih_l1, ...), Bs the biases (zeros when bias=False), zero (4H,)
        zeros for the kernels' own bias; A (L, N, 4H), Hp, Cp, TC, O (L, N, H): what the backward
        needs; HW (L, N, 4H) the recurrent products; ctl the helper's control array (``_helper``);
        writes hT, cT (L, N, H) and out (N, H). Returns ``_helper.NOT_FINITE`` (nothing done) if
        x, h0 or c0 is not finite, else ``DONE_OK`` or what ``_helper.begin`` said."""
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0) and _finite(c0)):
            return _helper.NOT_FINITE
        s, status = _begin(ctl, h0, Hp, Ws, Bs)
        inp = x
        for k in range(h0.shape[0]):
            _helper.input_product(ctl, k, Ws[2 * k], inp, Bs[2 * k], A[k], s)           # x W_ih^T + b_ih
            _helper.recurrent(ctl, s, k, Ws[2 * k + 1], Hp[k], Bs[2 * k + 1], HW[k])   # h_prev W_hh^T + b_hh
            lstm_layer(A, k, HW[k], zero, c0, Cp, TC, O, hT, cT)
            inp = O[k]
        out[:, :] = inp
        return status

    @_compiled._jit()
    def gru_stack(ctl, x3, h0, Ws, Bs, zero, A, Hp, HWn, O, HW, hT, out3):
        """As ``lstm_stack``."""
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0)):
            return _helper.NOT_FINITE
        s, status = _begin(ctl, h0, Hp, Ws, Bs)
        inp = x
        for k in range(h0.shape[0]):
            _helper.input_product(ctl, k, Ws[2 * k], inp, Bs[2 * k], A[k], s)
            _helper.recurrent(ctl, s, k, Ws[2 * k + 1], Hp[k], Bs[2 * k + 1], HW[k])
            gru_layer(A, k, HW[k], zero, Hp, HWn, O, hT)
            inp = O[k]
        out[:, :] = inp
        return status

    @_compiled._jit()
    def rnn_stack(ctl, x3, h0, Ws, Bs, zero, A, Hp, O, HW, hT, out3, relu):
        x, out = _flat(x3), _flat(out3)
        if not (_finite(x) and _finite(h0)):
            return _helper.NOT_FINITE
        s, status = _begin(ctl, h0, Hp, Ws, Bs)
        inp = x
        for k in range(h0.shape[0]):
            _helper.input_product(ctl, k, Ws[2 * k], inp, Bs[2 * k], A[k], s)
            _helper.recurrent(ctl, s, k, Ws[2 * k + 1], Hp[k], Bs[2 * k + 1], HW[k])
            rnn_layer(A, k, HW[k], zero, O, hT, relu)
            inp = O[k]
        out[:, :] = inp
        return status


def blas_stack(mode, x, h0, c0, Ws, Bs, ws, hT, cT, out, relu):
    """The stack's step for large products (N G max(D, H) at least ``STACK_BLAS_MIN_WORK``
    multiply-adds, but for one sequence with the helper below ``STACK_HELPER_MAX_WORK``): the
    products by the BLAS on every thread, the rest of each layer by the same
    compiled layer step as the one-call stacks. Two threads read W from memory about three times
    as fast as one (four (2048, 512) float32 W x, one after the other, took 1.1-1.4 ms on one
    thread and 0.40-0.48 ms on two, measured). False if an input is not finite."""
    N, A, Hp, X2, X3, O, HW = ws.N, ws.A, ws.Hp, ws.X2, ws.X3, ws.O, ws.HW
    if not (_finite(x) and _finite(h0) and (c0 is None or _finite(c0))):
        return False
    inp = x.reshape(N, x.shape[2])
    zero = ws.zero
    Hp[...] = h0
    for k in range(h0.shape[0]):
        a, hw = A[k], HW[k]
        np.add(np.matmul(inp, Ws[2 * k].T, out=a), Bs[2 * k], out=a)
        np.add(np.matmul(h0[k], Ws[2 * k + 1].T, out=hw), Bs[2 * k + 1], out=hw)
        if mode == "lstm":
            lstm_layer(A, k, hw, zero, c0, X2, X3, O, hT, cT)
        elif mode == "gru":
            gru_layer(A, k, hw, zero, Hp, X2, O, hT)
        else:
            rnn_layer(A, k, hw, zero, O, hT, relu)
        inp = O[k]
    out.reshape(N, -1)[:, :] = inp
    return True


class Workspace:
    """What a layer's streamed steps reuse from call to call for one input shape (only the most
    recent forward is ever backpropagated): the backward's arrays A (L, N, G), Hp, X2, X3, O
    (L, N, H) (X2, X3: the LSTM's c_prev and tanh(c_t), the GRU's n-gate products), the
    recurrent products HW (L, N, G), the helper's control array and state (``_helper``), and
    what a call's input must look like to go straight to the kernel: x's shape and strides,
    the state's, and whether the products go to the BLAS (``blas_stack``). Working these out
    once, not per call, matters more than it seems: between two kernel calls that stream the
    weights (1 MB at H = 128, two layers) the interpreter's own data has left the caches, and
    the Python around the call measured 14 us of a 42 us step."""
    __slots__ = ("x_shape", "batch_first", "N", "x_strides", "s_shape", "s_strides", "out_shape", "blas",
                 "lstm", "relu", "zero", "A", "Hp", "X2", "X3", "O", "HW", "ctl", "helper", "off_until",
                 "pending")

    def __init__(self, layer, x_shape, N, D):
        H, L, G = layer.hidden_size, layer.num_layers, layer.weight_rows
        self.x_shape, self.batch_first, self.N = x_shape, layer.batch_first, N
        self.x_strides = (4 * D, 4 * D, 4) if layer.batch_first else (4 * N * D, 4 * D, 4)
        self.s_shape, self.s_strides = (L, N, H), (4 * N * H, 4 * H, 4)
        self.out_shape = self.x_shape[:2] + (H,)
        work = N * G * max(D, H)
        self.blas = work >= STACK_BLAS_MIN_WORK and not (N == 1 and work < STACK_HELPER_MAX_WORK
                                                         and _helper.allowed(L))
        self.lstm, self.relu = layer.mode == "lstm", layer.nonlinearity == "relu"
        self.zero = _zeros(G)
        self.A, self.HW = np.empty((L, N, G), F), np.empty((L, N, G), F)
        self.Hp, self.X2, self.X3, self.O = (np.empty((L, N, H), F) for _ in range(4))
        self.ctl = _helper.new_ctl(D, H)
        self.helper = not self.blas and _helper.allowed(L)
        self.off_until = 0.0
        self.pending = Pending(None, self, layer.mode, layer.nonlinearity)


class Pending:
    """The caches of a stacked step, built only if ``backward`` is called (``materialize``)."""
    __slots__ = ("x", "ws", "mode", "nonlinearity")

    def __init__(self, x, ws, mode, nonlinearity):
        self.x, self.ws, self.mode, self.nonlinearity = x, ws, mode, nonlinearity

    def materialize(self):
        """The ``(layers, mask, out_shape, x_shape)`` cache of ``forward`` (time-major, T = 1)."""
        from . import Cache
        ws = self.ws
        A, Hp, X2, X3, O = ws.A, ws.Hp, ws.X2, ws.X3, ws.O
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
    return (_compiled.AVAILABLE and layer.fast and layer.dtype is _F32 and not layer.bidirectional
            and not layer.proj_size and not (layer.training and layer.dropout > 0 and layer.num_layers > 1))


_F32 = np.dtype(F)


def _workspace(layer, x):
    """The layer's ``Workspace`` for x, made when there is none for x's shape, or None where the
    one-call step does not apply: not a writeable C-contiguous float32 (N, 1, D) or (1, N, D)
    array of the layer's input size (a slice such as X[:, t:t + 1] of one sequence is one)."""
    if not (type(x) is np.ndarray and x.ndim == 3 and x.dtype is _F32 and x.flags.c_contiguous):
        return None
    if layer.batch_first:
        N, T, D = x.shape
    else:
        T, N, D = x.shape
    if T != 1 or D != layer.input_size or N == 0:
        return None
    ws = layer._stream_ws
    if ws is None or ws.x_shape != x.shape or ws.batch_first is not layer.batch_first:
        if ws is not None and _helper.HELPER.ws is ws:
            _helper.HELPER.retire(ws)
        ws = layer._stream_ws = Workspace(layer, x.shape, N, D)
    return ws


def forward_stack(layer, x, state):
    """``layer.forward(x, state)`` for x with T = 1 in one compiled call, or None where it does not
    apply (then the general path runs, and it also gives the error messages for bad input)."""
    ws = layer._stream_ws
    if (ws is None or type(x) is not np.ndarray or x.shape != ws.x_shape or x.strides != ws.x_strides
            or x.dtype is not _F32 or ws.batch_first is not layer.batch_first):
        ws = _workspace(layer, x)
        if ws is None:
            return None
    if not x.flags.writeable:
        return None
    s_shape, s_strides, lstm = ws.s_shape, ws.s_strides, ws.lstm
    if state is None:
        h0 = np.zeros(s_shape, F)
        c0 = np.zeros(s_shape, F) if lstm else None
    elif lstm:
        if type(state) is not tuple or len(state) != 2:
            return None
        h0, c0 = state
        if not (type(h0) is np.ndarray and type(c0) is np.ndarray and h0.strides == s_strides
                and c0.strides == s_strides and h0.shape == s_shape and c0.shape == s_shape
                and h0.dtype is _F32 and c0.dtype is _F32):
            return None
    else:
        h0, c0 = state, None
        if not (type(h0) is np.ndarray and h0.strides == s_strides and h0.shape == s_shape
                and h0.dtype is _F32):
            return None
    Ws, Bs = layer._stream_weights()
    out = np.empty(ws.out_shape, F)
    hT, cT = _new_state(ws)
    try:
        if ws.blas:
            if not blas_stack(layer.mode, x, h0, c0, Ws, Bs, ws, hT, cT, out, ws.relu):
                return None              # non-finite input: the general path reports where
        else:
            status = _stack(layer.mode, ws, x, h0, c0, Ws, Bs, hT, cT, out)
            if status == _helper.NOT_FINITE:
                return None              # non-finite input: the general path reports where
            _helper.HELPER.after_step(ws, status, Ws, Bs)
    except _compiled.numba.core.errors.TypingError:
        return None                      # a parameter replaced by an array of another layout or dtype
    pending = ws.pending
    pending.x = x
    layer._cache = pending
    return out, ((hT, cT) if ws.lstm else hT)


def _new_state(ws):
    """Fresh arrays for a step's final state: (h_T, c_T), one allocation for the two of the LSTM;
    (h_T, None) for the others."""
    if ws.lstm:
        st = np.empty((2,) + ws.s_shape, F)
        return st[0], st[1]
    return np.empty(ws.s_shape, F), None


def _stack(mode, ws, x, h0, c0, Ws, Bs, hT, cT, out):
    """The one-call stack of this cell: the status it returns (``_helper``)."""
    if mode == "lstm":
        return lstm_stack(ws.ctl, x, h0, c0, Ws, Bs, ws.zero, ws.A, ws.Hp, ws.X2, ws.X3, ws.O, ws.HW, hT, cT, out)
    if mode == "gru":
        return gru_stack(ws.ctl, x, h0, Ws, Bs, ws.zero, ws.A, ws.Hp, ws.X2, ws.O, ws.HW, hT, out)
    return rnn_stack(ws.ctl, x, h0, Ws, Bs, ws.zero, ws.A, ws.Hp, ws.O, ws.HW, hT, out, ws.relu)
