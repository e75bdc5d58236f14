"""Fast paths for the recurrent layers, tested equal to the readable ones.

The readable path (``rnnlab.cells`` called step by step from
``rnnlab.recurrent``) documents the math and stays the reference. This package
evaluates the same math over a whole sequence with fewer, in-place NumPy calls
(``fast/lstm.py``, ``fast/gru.py``, ``fast/rnn.py``). The layers use it unless

* ``layer.fast = False`` (per layer), or
* the environment variable ``RNNLAB_FAST=0`` is set when rnnlab is imported.

With Numba installed (``pip install 'rnnlab[speed]'``), float32 layers without
``lengths`` or a projection run each step's elementwise work as one compiled
kernel (``fast/_compiled.py``); ``COMPILED = False`` (or ``RNNLAB_NUMBA=0``)
keeps them on the NumPy fused path. The core needs NumPy alone.

``tests/test_fast.py`` checks that both paths agree (float64: within 1e-12
relative) for every layer option: lengths, bidirectional, several layers,
proj_size, bias=False, initial state and dstate. The diagnostics' ``recorder``
hook is called at every backward step on both paths.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .. import _validate
from .._conventions import GATES
from . import _affinity, _blas, _matvec, _compiled, _feature_major, _gemm, _helper, _mkl, _pair, _panels, _split, _stream, _threads, _units, gru, lstm, rnn
from ._steps import grad_from_outputs, rows, rows_view, unrows

__all__ = ["ENABLED", "COMPILED", "Cache", "run_direction", "backprop_direction", "describe"]

ENABLED = os.environ.get("RNNLAB_FAST", "1") != "0"
COMPILED = _compiled.AVAILABLE
if ENABLED and COMPILED:                   # the inputs' finite checks in one compiled pass
    _validate.fast_all_finite = _compiled.all_finite


class Cache:
    """What the fast forward of one layer and direction keeps for its backward.

    ``data`` is the loop's tuple (gates or pre-activations, h_prev, ...) and ``H_prev``
    its h_prev (T, N, H_out). ``Cache.later(t)`` holds a deferred cache, a feature-major
    forward's (``fast/_feature_major.py``), a compiled forward's without h_prev
    (``_compiled.PreviousStates``) or an LSTM inference loop's, which kept nothing
    (``_compiled.Recompute``, run at first use), and makes ``data`` from it (``t.batch_major()``)
    at first use. Where the backward needs no h_prev array (``previous``: the LSTM's and the RNN's
    compiled loops) ``data`` holds None in its place and none is made."""
    __slots__ = ("_data", "_H_prev", "_later")

    def __init__(self, data, H_prev):
        self._data, self._H_prev, self._later = data, H_prev, None

    @classmethod
    def later(cls, transposed):
        cache = cls(None, None)
        cache._later = transposed
        return cache

    def _shifted(self):
        """The deferred ``PreviousStates`` whose backward needs no h_prev array, or None (a
        ``Recompute`` is run here first)."""
        if isinstance(self._later, _compiled.Recompute):
            self._later = self._later.run()
        later = self._later
        return later if isinstance(later, _compiled.PreviousStates) and not later.needs else None

    @property
    def previous(self):
        """(out, h0, reverse) where the weight gradients read h_prev from the outputs
        (``_steps.grad_from_outputs``), else None (they read ``H_prev``)."""
        later = self._shifted()
        return None if later is None else (later.out, later.h0, later.reverse)

    def _materialize(self):
        if self._later is not None:
            self._data = self._later.batch_major()
            self._H_prev, self._later = self._data[1], None

    @property
    def data(self):
        later = self._shifted()
        if later is not None:
            return later.data
        self._materialize()
        return self._data

    @property
    def H_prev(self):
        self._materialize()
        return self._H_prev


def run_direction(layer, X, h, c, s, reverse, mask):
    """Fast ``_Recurrent._run_direction``: returns out (T, N, H_out), h_T, c_T and a ``Cache``."""
    work = _step_work(layer, X)
    if COMPILED and _stream.usable(layer, X, mask, work):                # T = 1: one compiled call (fast/_stream.py)
        p = layer.params
        out, h, c, data = _stream.run(layer.mode, X, h, c, p["weight_ih" + s], p["weight_hh" + s],
                                      p.get("bias_ih" + s), p.get("bias_hh" + s), layer.nonlinearity)
        return out, h, c, Cache(data, data[1])
    with _step_blas(X, work):
        return _run_direction(layer, X, h, c, s, reverse, mask)


@contextlib.contextmanager
def _step_blas(X, work):
    """The BLAS for a loop whose step GEMM has ``work`` multiply-adds: a small one on one thread
    (``_threads.step_threads``), a large one MKL's, with every GEMM around it, when MKL is in use
    (``_mkl.regime``)."""
    with _threads.step_threads(work), _mkl.regime(X.dtype, work):
        yield


def _step_work(layer, X):
    """Multiply-adds of one step's recurrent GEMM, h_prev (N, H_out) x W_hh^T (H_out, G)."""
    return X.shape[1] * layer.hidden_out * GATES[layer.mode] * layer.hidden_size


def _run_direction(layer, X, h, c, s, reverse, mask):
    p = layer.params
    W_ih, W_hh = p["weight_ih" + s], p["weight_hh" + s]
    b_ih, b_hh = p.get("bias_ih" + s), p.get("bias_hh" + s)
    if _use_compiled(layer, X, mask):
        if _feature_major.usable(layer, X):                  # W_hh h^T (fast/_feature_major.py)
            if layer.mode == "lstm":
                out, h, c, t = _feature_major.lstm_forward(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse)
            else:
                out, h, t = _feature_major.gru_forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse)
            return out, h, c, Cache.later(t)
        defer = not layer.training                       # eval mode: the GRU's h_prev made at backward, if any
        if defer and _compiled.infer_usable(layer.mode, X.shape[1], W_hh):    # no cache (made at backward)
            out, h, c, later = _compiled.lstm_infer(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse)
            return out, h, c, Cache.later(later)
        if layer.mode == "lstm":                         # the sequences may run in parts (fast/_split.py)
            out, h, c, data = _compiled.lstm_forward(X, h, c, W_ih, W_hh, b_ih, b_hh, reverse, defer)
        elif layer.mode == "gru":
            out, h, data = _compiled.gru_forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse, defer)
        else:
            out, h, data = _compiled.rnn_forward(X, h, W_ih, W_hh, b_ih, b_hh, layer.nonlinearity, reverse, defer)
        if isinstance(data, _compiled.PreviousStates):
            return out, h, c, Cache.later(data)
        return out, h, c, Cache(data, data[1])
    if layer.mode == "lstm":
        out, h, c, data = lstm.forward(X, h, c, W_ih, W_hh, b_ih, b_hh, p.get("weight_hr" + s), reverse, mask)
        H_prev = data[1]
    elif layer.mode == "gru":
        out, h, data = gru.forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse, mask)
        H_prev = data[1]
    else:
        out, h, data = rnn.forward(X, h, W_ih, W_hh, b_ih, b_hh, layer.nonlinearity, reverse, mask)
        H_prev = data[1]
    return out, h, c, Cache(data, H_prev)


# Where the batch split runs a backward whose steps make one chunk, the weight gradients of all
# sequences come after the parts, shared out by rows between the threads (``_compiled.Flush``);
# False: each part adds them into gradient arrays of its own, added up at the end.
WEIGHTS_AFTER_PARTS = True

# After a tiny loop's backward (one or two sequences) whose layer runs on the pair, its dX and
# weight-gradient GEMMs stay on the loop's one BLAS thread, however large (``_compiled.tiny_blas``):
# a threaded GEMM leaves its other thread spinning where the next forward's pair runs its helper.
# Training steps, 8 rounds each way in turn with PyTorch, best / median ms, against every thread: LSTM N=1, T=1000, D=65, H=256
# 24.70 / 25.09 against 26.85 / 37.17; N=2, T=500, D=64, H=256 23.83 / 24.12 against 27.96 / 41.50;
# GRU N=1, T=1000 18.54 / 18.90 against 21.36 / 28.05. False gives them every thread again.
TINY_FLUSH_ONE_THREAD = True

# Rows (steps x batch) of pre-activation gradients kept before they become weight gradients:
# bounds the backward's dA buffer at long T, while each GEMM still has thousands of rows.
CHUNK_ROWS = 4096


def backprop_direction(layer, X, dY, dh, dc, cache, s, reverse, mask, dX, k, write_dX=False):
    """Fast ``_Recurrent._backprop_direction``: adds dX (or writes it: ``write_dX``, every step is
    written once) and the parameter gradients, returns dh_0, dc_0."""
    p, g = layer.params, layer.grads
    W_ih, W_hh, W_hr = p["weight_ih" + s], p["weight_hh" + s], p.get("weight_hr" + s)
    T, N, D = X.shape
    recorder = None
    if layer.recorder is not None:
        def recorder(t, dh_t, dc_t, _rec=layer.recorder, _d=int(reverse)):
            _rec(k, _d, t, dh_t, dc_t)
    compiled = recorder is None and _use_compiled(layer, X, mask)
    tiny = TINY_FLUSH_ONE_THREAD and compiled and _compiled._tiny(N, W_hh)
    chunk = max(1, CHUNK_ROWS // N)
    g_ih, g_hh = g["weight_ih" + s], g["weight_hh" + s]
    g_bih, g_bhh = g.get("bias_ih" + s), g.get("bias_hh" + s)
    H = layer.hidden_size

    own = (g_ih, g_hh, g_bih, g_bhh)
    private = {}                       # per part of the batch split: its own weight gradients

    def flush(lo, hi, dA, extra, bm=False, rows=None):
        """Weight gradients and dX of steps lo..hi-1 from their pre-activation gradients dA
        (hi - lo, N, G), laid out batch-major if ``bm`` (``_steps.rows``), else time-major.
        ``rows`` (n0, n1): one part of the batch split (``_split``), on its own thread and
        one-thread BLAS: dA holds sequences n0..n1-1 only, its weight gradients go to that part's
        own arrays (added up after all parts are done)."""
        seqs, grads = (slice(None), own) if rows is None else (slice(*rows), private[rows[0]])
        work = dA.size * (D + W_hh.shape[1])                     # large GEMMs: every BLAS thread,
        with (_compiled.tiny_blas(work, layer.mode, H) if tiny    # but after a tiny loop on the pair
              else _threads.all_threads(work)):                  # its one (``tiny_blas``)
            _flush_dx(lo, hi, dA, bm, seqs)                          # (a part's own, in a part)
            _flush_weights(lo, hi, dA, extra, bm, seqs, grads)

    def flush_dx(lo, hi, dA, extra, bm, rows):
        """A part's rows of dX only (``Flush.dx``, called as ``flush``; ``extra`` goes to the
        weights, after the parts): dA holds sequences rows = (n0, n1)."""
        _flush_dx(lo, hi, dA, bm, slice(*rows))

    def flush_weights(lo, hi, dA, extra, bm, P):
        """The weight gradients of dA, every sequence's (``Flush.weights``), on P threads, each
        adding its share of every gradient's rows (``_split.run`` over range(P): one index a
        thread)."""
        _split.run(lambda k, _: _flush_weights(lo, hi, dA, extra, bm, slice(None), own, (k, P)), P, P)

    def _flush_dx(lo, hi, dA, bm, seqs):
        A = rows(dA, bm)                                         # ((hi - lo) n, G)
        dXc = dX[lo:hi, seqs]
        target = rows_view(dXc, bm) if write_dX else None       # None: dX's chunk is no block of rows
        if target is not None:
            _gemm.matmul(A, W_ih, target)                        # straight into dX
        elif write_dX:
            dXc[...] = unrows(_gemm.matmul(A, W_ih), hi - lo, bm)
        else:
            dXc += unrows(_gemm.matmul(A, W_ih), hi - lo, bm)

    def _flush_weights(lo, hi, dA, extra, bm, seqs, grads, share=None):
        """The weight gradients of dA (sequences ``seqs``) added into ``grads``; with ``share`` (k,
        P) only share k of P of each gradient's rows (the GRU's r, z and n blocks each cut apart,
        so that a share's rows of g_hh and both biases come from one block). Goes after dX:
        ``grad_from_outputs`` may zero rows of dA (of the share's columns)."""
        g_ih, g_hh, g_bih, g_bhh = grads
        A = rows(dA, bm)                                         # ((hi - lo) n, G)
        Xc = rows(X[lo:hi, seqs], bm)
        mm = _gemm.matmul                                        # MKL, the panels kernel or NumPy
        ones = np.ones((1, A.shape[0]), A.dtype) if g_bih is not None else None
        G = A.shape[1]
        r = _share(G, share)
        mm(A[:, r].T, Xc, g_ih[r], accumulate=True)              # XW = X W_ih^T
        if layer.mode == "gru":                                  # extra: the n block of the hidden side
            Hp = rows(cache.H_prev[lo:hi, seqs], bm)
            A_hn = rows(extra, bm)
            for b0, b1 in ((0, 2 * H), (2 * H, G)):              # r, z: the same gradient on both sides;
                r = _share(b1 - b0, share, b0)                   # n: the hidden side carries the factor r
                A_h = A[:, r] if b0 == 0 else A_hn[:, r.start - b0:r.stop - b0]
                mm(A_h.T, Hp, g_hh[r], accumulate=True)
                if g_bih is not None:                            # GEMVs: 0.4 against 1.6 ms for
                    db = mm(ones, A[:, r])[0]                    # A.sum(axis=0) at (3200, 1536)
                    g_bih[r] += db
                    g_bhh[r] += db if b0 == 0 else mm(ones, A_h)[0]     # r, z: the same sums
            return
        Ar = A[:, r]
        if g_bih is not None:
            db = mm(ones, Ar)[0]                                 # a GEMV: twice as fast as A.sum(axis=0)
            g_bih[r] += db
            g_bhh[r] += db
        if extra is not None:                                    # LSTM projection: h = m W_hr^T (the
            M = rows(cache.data[4][lo:hi], bm)                   # compiled loops, which split, take
            mm(rows(extra, bm).T, M, g["weight_hr" + s], accumulate=True)     # none: no share here)
        if previous is None:                                     # a = ... + h_prev W_hh^T
            mm(Ar.T, rows(cache.H_prev[lo:hi, seqs], bm), g_hh[r], accumulate=True)
        else:                                                    # last: it may zero rows of A
            grad_from_outputs(mm, Ar, previous, lo, hi, seqs, bm, g_hh[r])

    with _step_blas(X, _step_work(layer, X)):
        previous = cache.previous                                # a deferred cache resolved here, not in a part
        P = _compiled.backward_parts(N, W_hh) if compiled else 1
        after = WEIGHTS_AFTER_PARTS and P > 1 and chunk >= T    # one chunk: weights after the parts
        if P > 1:
            if previous is None:
                cache.H_prev                                     # made here, not in a part
            if not after:
                for n0 in _split.cuts(N, P)[:-1]:
                    private[n0] = tuple(None if a is None else np.zeros_like(a) for a in own)
        handoff = _compiled.Flush(flush, flush_dx, flush_weights, after)
        dh, dc = _backprop(layer, dY, dh, dc, cache, W_hh, W_hr, reverse, mask, recorder, compiled, chunk, handoff, P)
    for grads in private.values():                               # the parts' weight gradients, in order
        for a, b in zip(own, grads):
            if a is not None:
                a += b
    return dh, dc


def _share(R, share, start=0):
    """Rows start.. start + R - 1 of a gradient, or with ``share`` (k, P) share k of P of them (as
    even as integers allow: ``_split.cuts``), as a slice."""
    if share is None:
        return slice(start, start + R)
    c = _split.cuts(R, share[1])
    return slice(start + c[share[0]], start + c[share[0] + 1])


def _backprop(layer, dY, dh, dc, cache, W_hh, W_hr, reverse, mask, recorder, compiled, chunk, flush, P):
    if layer.mode == "lstm":
        if compiled:
            dh, dc = _compiled.lstm_backward(dY, dh, dc, cache.data, W_hh, reverse, chunk, flush, P)
        else:
            dh, dc = lstm.backward(dY, dh, dc, cache.data, W_hh, W_hr, reverse, mask, recorder, chunk, flush)
    elif layer.mode == "gru":
        if compiled:
            dh = _compiled.gru_backward(dY, dh, cache.data, W_hh, reverse, chunk, flush, P)
        else:
            dh = gru.backward(dY, dh, cache.data, W_hh, reverse, mask, recorder, chunk, flush)
    else:
        if compiled:
            dh = _compiled.rnn_backward(dY, dh, cache.data, W_hh, reverse, chunk, flush, P)
        else:
            dh = rnn.backward(dY, dh, cache.data, W_hh, reverse, mask, recorder, chunk, flush)
    return dh, dc


def describe():
    """Which fast paths this install has (reported by ``rnnlab bench``)."""
    return {"enabled": ENABLED, "compiled": COMPILED,
            "numba": None if _compiled.numba is None else _compiled.numba.__version__,
            "stream_helper": COMPILED and _helper.ENABLED, "mkl": _mkl.describe(),
            "blas_loops": COMPILED and _compiled.blas_loops(), "blas": _blas.describe(),
            "panels": _panels.describe() if COMPILED else "off (no Numba)",
            "panels_gemm": _gemm.describe() if COMPILED else "off (no Numba)",
            "split": "on" if _split.ENABLED else "off (RNNLAB_SPLIT=0)",
            "pin": "on" if _affinity.ENABLED else "off (RNNLAB_PIN=0)",
            "tiny_matvec": _matvec.describe() if COMPILED else "off (no Numba)",
            "pair": "on" if COMPILED and _pair.ENABLED else "off (RNNLAB_PAIR=0 or no Numba)",
            "infer_loops": ("on" if COMPILED and _compiled.INFER_LOOPS
                            else "off (RNNLAB_INFER_LOOPS=0 or no Numba)"),
            "ahead": "on" if COMPILED and _compiled.AHEAD else "off (RNNLAB_AHEAD=0 or no Numba)",
            "units_mkl": ("on" if COMPILED and _units.MKL_ENABLED
                          else "off (RNNLAB_UNITS_MKL=0 or no Numba)")}


def keeps_batch_major(layer, x, lengths):
    """Whether ``forward`` hands batch_first x to the loops as a batch-major view (``_steps``):
    where the compiled loops run; the NumPy loops want time-major steps."""
    return layer.fast and _use_compiled(layer, x, lengths)     # no lengths: no mask


def _use_compiled(layer, X, mask):
    # At every batch size: with each loop vectorised the compiled step beats the NumPy fused
    # step's ~15 calls (measured LSTM N=32, H=256: 28 us against ~100 us a step).
    return COMPILED and X.dtype == np.float32 and mask is None and not layer.proj_size
