"""Fused simple RNN over a whole sequence: the math of ``rnnlab.cells.rnn``, fewer NumPy calls.

b_ih + b_hh is added once to the input projection of all steps; each step is
one GEMM, one in-place add and one in-place activation written straight into
the output. The backward needs only the outputs and h_prev.
"""
from __future__ import annotations

import numpy as np

from ._steps import RecurrentGrad, StepProduct, backward_steps, forward_steps, project
from ._threads import all_threads


def forward(X, h, W_ih, W_hh, b_ih, b_hh, nonlinearity, reverse, mask):
    """X (T, N, D) time-major, h (N, H). Returns out (T, N, H), h_T and the cache."""
    T, N, D = X.shape
    H = W_hh.shape[0]
    dt = X.dtype
    with all_threads(X.size * W_ih.shape[0]):                    # one large GEMM: every BLAS thread
        A = project(X, W_ih)                                     # pre-activations (T, N, H)
    if b_ih is not None:
        A += b_ih + b_hh
    out = np.empty((T, N, H), dt)
    Hp = np.empty((T, N, H), dt)
    Hn = np.empty((T, N, H), dt) if mask is not None else out    # h_new of each step (out is masked)
    hw = np.empty((N, H), dt)
    product = StepProduct(W_hh.T, N, T, False)                  # h_prev W_hh^T
    for t in forward_steps(T, reverse):
        Hp[t] = h
        a = A[t]
        product(h, hw)
        a += hw
        if nonlinearity == "tanh":
            h_new = np.tanh(a, out=Hn[t])
        else:
            h_new = np.maximum(a, 0, out=Hn[t])
        if mask is None:
            h = h_new
        else:
            mt = mask[t]
            np.multiply(mt, h_new, out=out[t])
            h = mt * h_new + (1 - mt) * h
    return out, h, (Hn, Hp, nonlinearity)


def backward(dY, dh, cache, W_hh, reverse, mask, recorder, chunk, flush):
    """Backward of ``forward``; returns dh_0. After each ``chunk`` of steps lo..hi-1,
    ``flush(lo, hi, dA, None)`` gets dA (hi - lo, N, H)."""
    Hn, Hp, nonlinearity = cache
    T, N, H = Hn.shape
    chunk = min(chunk, T)
    dA = np.empty((chunk, N, H), Hn.dtype)
    tmp = np.empty((N, H), Hn.dtype)
    dh = dh.copy()
    dh_keep = None
    grad = RecurrentGrad(W_hh, N, T)
    for t, k, done in backward_steps(T, reverse, chunk):
        da = np.add(dY[t], dh, out=dA[k])
        if recorder is not None:
            recorder(t, da.copy(), None)                         # a copy: the buffer is reused
        if mask is not None:
            mt = mask[t]
            dh_keep = (1 - mt) * dh
            da *= mt
        h = Hn[t]
        if nonlinearity == "tanh":
            np.multiply(h, h, out=tmp)
            np.subtract(1, tmp, out=tmp)
            da *= tmp                                            # h = tanh(a)
        else:
            da *= h > 0                                          # h = relu(a)
        grad(da, dh)                                             # a = ... + h_prev W_hh^T: dh = da W_hh
        if mask is not None:
            dh += dh_keep
        if done:
            lo, hi = done
            flush(lo, hi, dA[:hi - lo], None)
    return dh
