"""Fused LSTM over a whole sequence: the math of ``rnnlab.cells.lstm``, fewer NumPy calls.

Same equations as the readable cell (see its docstring); what changes is how
they are evaluated:

* b_ih + b_hh is added once to the input projection of all steps, so a step's
  pre-activation is one GEMM plus one in-place add: a_t = XW'_t + h_{t-1} W_hh^T.
* the four gates go through ONE tanh call: sigmoid(x) = 0.5 tanh(x / 2) + 0.5,
  so with the per-column scale s = (1/2, 1/2, 1, 1/2) (gates i, f, g, o)
      gates = s * tanh(s * a) + shift,   shift = (1/2, 1/2, 0, 1/2)
  gives i, f, o (sigmoid) and g (tanh) in four calls on a contiguous (N, 4H) row.
* every result is written with ``out=`` into buffers allocated once per
  sequence ((T, N, .) for what the backward needs, (N, .) scratch for the rest).
* the backward writes each step's pre-activation gradient straight into its
  slice of dA (T, N, 4H): no ``concatenate``.

Saved per step for the backward: the gates (T, N, 4H), the cell state entering
the step c_prev (T, N, H), tanh(c_t) (T, N, H), h_prev (T, N, H_out), and with a
projection m_t = o * tanh(c_t) (T, N, H).
"""
from __future__ import annotations

import numpy as np

from . import _mkl
from ._steps import RecurrentGrad, StepProduct, backward_steps, forward_steps, project
from ._threads import all_threads


def _gate_affine(H, dtype):
    scale = np.full(4 * H, 0.5, dtype)
    scale[2 * H:3 * H] = 1.0
    shift = np.full(4 * H, 0.5, dtype)
    shift[2 * H:3 * H] = 0.0
    return scale, shift


def forward(X, h, c, W_ih, W_hh, b_ih, b_hh, W_hr, reverse, mask):
    """X (T, N, D) time-major; h (N, H_out), c (N, H) the initial state.

    Returns out (T, N, H_out), h_T, c_T and the cache for ``backward``.
    """
    T, N, D = X.shape
    H = W_hh.shape[0] // 4
    Ho = W_hh.shape[1]
    dt = X.dtype
    with all_threads(X.size * W_ih.shape[0]):                    # one large GEMM: every BLAS thread
        A = project(X, W_ih)                                     # pre-activations, then gates
    if b_ih is not None:
        A += b_ih + b_hh
    scale, shift = _gate_affine(H, dt)
    out = np.empty((T, N, Ho), dt)
    Hp = np.empty((T, N, Ho), dt)                                # h_{t-1} of each step
    Cp = np.empty((T, N, H), dt)                                 # c_{t-1} of each step
    TC = np.empty((T, N, H), dt)                                 # tanh(c_t)
    M = np.empty((T, N, H), dt) if W_hr is not None else None    # m_t before the projection
    hw = np.empty((N, 4 * H), dt)
    ig = np.empty((N, H), dt)
    c = c.copy()                                                 # updated in place below
    product = StepProduct(W_hh.T, N, T, False)                  # h_prev W_hh^T
    for t in forward_steps(T, reverse):
        Hp[t] = h
        Cp[t] = c
        a = A[t]
        product(h, hw)
        a += hw                                                  # a = xw + b + h W_hh^T
        a *= scale
        np.tanh(a, out=a)
        a *= scale
        a += shift                                               # a = [i, f, g, o]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.multiply(i, g, out=ig)
        c_new = np.multiply(f, Cp[t], out=c if mask is None else np.empty_like(c))
        c_new += ig                                              # c = f * c_prev + i * g
        tc = np.tanh(c_new, out=TC[t])
        if W_hr is None:
            h_new = np.multiply(o, tc, out=out[t])               # h = o * tanh(c)
        else:
            m = np.multiply(o, tc, out=M[t])
            h_new = _mkl.matmul(m, W_hr.T, out[t])               # h = m W_hr^T
        if mask is None:
            h = h_new
        else:
            mt = mask[t]
            h = mt * h_new + (1 - mt) * h                        # padded steps carry the state
            c[...] = mt * c_new + (1 - mt) * c
            out[t] *= mt
    return out, h, c, (A, Hp, Cp, TC, M)


def backward(dY, dh, dc, cache, W_hh, W_hr, reverse, mask, recorder, chunk, flush):
    """Backward of ``forward``. dY (T, N, H_out); dh, dc the gradients of the final state.

    After each ``chunk`` of steps lo..hi-1, ``flush(lo, hi, dA, dH)`` gets dA (hi - lo, N, 4H), the gradient of the
    pre-activations (input and hidden side alike), and dH, the gradient reaching
    each projected h (or None). Returns dh_0 and dc_0.
    """
    A, Hp, Cp, TC, M = cache
    T, N, G = A.shape
    H = G // 4
    dt = A.dtype
    chunk = min(chunk, T)
    dA_c = np.empty((chunk, N, G), dt)
    dH_c = np.empty((chunk,) + dY.shape[1:], dt) if W_hr is not None else None
    dh_new = np.empty(dY.shape[1:], dt)
    dh = dh.copy()
    dc = dc.copy()
    dm = np.empty((N, H), dt) if W_hr is not None else dh_new
    tmp = np.empty((N, H), dt)
    local = np.empty((N, G), dt)
    dh_keep = dc_keep = None
    grad = RecurrentGrad(W_hh, N, T)
    for t, k, done in backward_steps(T, reverse, chunk):
        np.add(dY[t], dh, out=dh_new)                            # out_t and the state h_t are both h_new
        if recorder is not None:
            recorder(t, dh_new.copy(), dc.copy())                # copies: the buffers are reused
        if mask is not None:
            mt = mask[t]
            dh_keep = (1 - mt) * dh
            dc_keep = (1 - mt) * dc
            dh_new *= mt                                         # h_t = m h_new + (1 - m) h_{t-1}
            dc *= mt
        gates = A[t]
        i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
        tc = TC[t]
        da = dA_c[k]
        if W_hr is not None:
            dH_c[k] = dh_new
            _mkl.matmul(dh_new, W_hr, dm)                        # h = m W_hr^T
        np.multiply(tc, tc, out=tmp)                             # m = o * tanh(c):
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dm
        dc += tmp                                                #   dc += dm * o * (1 - tanh(c)^2)
        np.multiply(dm, tc, out=da[:, 3 * H:])                   #   do = dm * tanh(c)
        np.multiply(dc, g, out=da[:, :H])                        # c = f * c_prev + i * g: di
        np.multiply(dc, Cp[t], out=da[:, H:2 * H])               #   df
        np.multiply(dc, i, out=da[:, 2 * H:3 * H])               #   dg
        dc *= f                                                  #   dc_prev
        np.subtract(1, gates, out=local)                         # sigmoid' = s (1 - s) on i, f, o
        local *= gates
        lg = local[:, 2 * H:3 * H]
        np.multiply(g, g, out=lg)                                # tanh' = 1 - g^2 on g
        np.subtract(1, lg, out=lg)
        da *= local
        grad(da, dh)                                             # a = ... + h_prev W_hh^T: dh = da W_hh
        if mask is not None:
            dh += dh_keep
            dc += dc_keep
        if done:
            lo, hi = done
            flush(lo, hi, dA_c[:hi - lo], None if dH_c is None else dH_c[:hi - lo])
    return dh, dc
