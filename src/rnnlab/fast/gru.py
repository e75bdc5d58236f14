"""Fused GRU over a whole sequence: the math of ``rnnlab.cells.gru``, fewer NumPy calls.

Same equations as the readable cell. The r and z gates sit side by side in the
(N, 3H) rows, so they are summed, squashed and differentiated as one (N, 2H)
block; every result goes into a buffer allocated once per sequence; the
backward writes the gradients straight into slices of dA (input side) and of a
per-step (N, 3H) buffer for the hidden side (they differ only in the n block,
by the factor r), with no ``concatenate``. The update is written
h = n + z * (h_prev - n), which is (1 - z) * n + z * h_prev.

Saved per step: the gates r, z, n (T, N, 3H), W_hn h_prev + b_hn (T, N, H) and h_prev (T, N, H).
"""
from __future__ import annotations

import numpy as np

from ._steps import RecurrentGrad, StepProduct, backward_steps, forward_steps, project
from ._threads import all_threads


def forward(X, h, W_ih, W_hh, b_ih, b_hh, reverse, mask):
    """X (T, N, D) time-major, h (N, H). Returns out (T, N, H), h_T and the cache."""
    T, N, D = X.shape
    H = W_hh.shape[1]
    dt = X.dtype
    with all_threads(X.size * W_ih.shape[0]):                    # one large GEMM: every BLAS thread
        A = project(X, W_ih)                                     # xw, then the gates r, z, n
    if b_ih is not None:
        A += b_ih
        A[:, :, :2 * H] += b_hh[:2 * H]                          # only b_hn sits inside r * (.)
    out = np.empty((T, N, H), dt)
    Hp = np.empty((T, N, H), dt)
    HWn = np.empty((T, N, H), dt)                                # W_hn h_prev + b_hn
    hw = np.empty((N, 3 * H), dt)
    tmp = np.empty((N, H), dt)
    product = StepProduct(W_hh.T, N, T, False)                  # h_prev W_hh^T
    b_hn = None if b_hh is None else b_hh[2 * H:]
    for t in forward_steps(T, reverse):
        Hp[t] = h
        a = A[t]
        product(h, hw)
        rz = a[:, :2 * H]
        rz += hw[:, :2 * H]
        rz *= 0.5                                                # sigmoid(x) = 0.5 tanh(x / 2) + 0.5
        np.tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5                                                # r, z
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        hwn = HWn[t]
        np.copyto(hwn, hw[:, 2 * H:])
        if b_hn is not None:
            hwn += b_hn
        np.multiply(r, hwn, out=tmp)
        n += tmp
        np.tanh(n, out=n)                                        # n = tanh(xw_n + r * hw_n)
        h_new = np.subtract(Hp[t], n, out=out[t])
        h_new *= z
        h_new += n                                               # h = n + z (h_prev - n)
        if mask is None:
            h = h_new
        else:
            mt = mask[t]
            h = mt * h_new + (1 - mt) * h
            out[t] *= mt
    return out, h, (A, Hp, HWn)


def backward(dY, dh, cache, W_hh, reverse, mask, recorder, chunk, flush):
    """Backward of ``forward``; returns dh_0. After each ``chunk`` of steps lo..hi-1,
    ``flush(lo, hi, dA, dA_hn)`` gets dA (hi - lo, N, 3H) (input side) and
    dA_hn (hi - lo, N, H) (the n block of the hidden side, da_n * r)."""
    A, Hp, HWn = cache
    T, N, G = A.shape
    H = G // 3
    dt = A.dtype
    chunk = min(chunk, T)
    dA = np.empty((chunk, N, G), dt)
    dA_hn = np.empty((chunk, N, H), dt)
    dhw = np.empty((N, G), dt)                                   # gradient of h_prev W_hh^T + b_hh
    dh_new = np.empty((N, H), dt)
    t1 = np.empty((N, H), dt)
    t2 = np.empty((N, H), dt)
    d_rz = np.empty((N, 2 * H), dt)
    s_rz = np.empty((N, 2 * H), dt)
    dh = dh.copy()
    dh_keep = None
    grad = RecurrentGrad(W_hh, N, T)
    for t, k, done in backward_steps(T, reverse, chunk):
        np.add(dY[t], dh, out=dh_new)
        if recorder is not None:
            recorder(t, dh_new.copy(), None)                     # a copy: the buffer is reused
        if mask is not None:
            mt = mask[t]
            dh_keep = (1 - mt) * dh
            dh_new *= mt
        gates = A[t]
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        da = dA[k]
        da_n = da[:, 2 * H:]
        np.subtract(1, z, out=t1)
        t1 *= dh_new                                             # dn = dh (1 - z)
        np.multiply(n, n, out=t2)
        np.subtract(1, t2, out=t2)
        np.multiply(t1, t2, out=da_n)                            # n = tanh(.): da_n = dn (1 - n^2)
        np.multiply(da_n, HWn[t], out=d_rz[:, :H])               # dr = da_n * hw_n
        np.subtract(Hp[t], n, out=t1)
        np.multiply(dh_new, t1, out=d_rz[:, H:])                 # dz = dh (h_prev - n)
        np.subtract(1, gates[:, :2 * H], out=s_rz)
        s_rz *= gates[:, :2 * H]                                 # sigmoid' = s (1 - s)
        np.multiply(d_rz, s_rz, out=dhw[:, :2 * H])              # da_r, da_z (same on both sides)
        np.multiply(da_n, r, out=dhw[:, 2 * H:])                 # hidden side of n: r * (W_hn h + b_hn)
        da[:, :2 * H] = dhw[:, :2 * H]
        dA_hn[k] = dhw[:, 2 * H:]
        grad(dhw, t1)                                            # dhw W_hh
        np.multiply(dh_new, z, out=dh)
        dh += t1                                                 # dh_prev = dh z + dhw W_hh
        if mask is not None:
            dh += dh_keep
        if done:
            lo, hi = done
            flush(lo, hi, dA[:hi - lo], dA_hn[:hi - lo])
    return dh
