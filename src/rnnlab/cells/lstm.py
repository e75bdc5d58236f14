"""The long short-term memory cell (Hochreiter & Schmidhuber 1997; forget gate by Gers et al. 2000).

Gates are stacked in PyTorch's order i, f, g, o on the rows of W_ih (4H, D)
and W_hh (4H, H_out). With xw_t = x_t W_ih^T + b_ih precomputed:

    a_t = xw_t + h_{t-1} W_hh^T + b_hh                   (N, 4H)
    i_t = sigmoid(a_i)       input gate: how much new content to write
    f_t = sigmoid(a_f)       forget gate: how much of the old cell to keep
    g_t = tanh(a_g)          candidate content
    o_t = sigmoid(a_o)       output gate: how much of the cell to show
    c_t = f_t * c_{t-1} + i_t * g_t                      the cell state
    m_t = o_t * tanh(c_t)                                (N, H)
    h_t = m_t                       or, with a projection (proj_size = P > 0),
    h_t = m_t W_hr^T                W_hr (P, H), so h_t is (N, P)

The cell state is updated additively: dc_{t-1} = dc_t * f_t, so with the forget
gate open (f near 1, helped by a forget-gate bias of 1 or more) the gradient
flows back through time without the repeated squashing that makes a simple
RNN forget.

Backward, the forward lines in reverse (dh_t, dc_t: total gradients reaching h_t, c_t):

    dm    = dh W_hr         (or dh when there is no projection)
    do    = dm * tanh(c)
    dc   += dm * o * (1 - tanh(c)^2)
    df    = dc * c_prev;    dc_prev = dc * f
    di    = dc * g;         dg = dc * i
    da    = [di * i(1-i), df * f(1-f), dg * (1-g^2), do * o(1-o)]
    dh_prev = da W_hh
"""
from __future__ import annotations

import numpy as np

from .._conventions import sigmoid


def step_forward(xw, h_prev, c_prev, W_hh, b_hh, W_hr=None):
    """One step. xw (N, 4H); h_prev (N, H_out); c_prev (N, H); W_hh (4H, H_out); b_hh (4H,) or None.

    Returns h (N, H_out), c (N, H) and the cache.
    """
    H = c_prev.shape[1]
    a = xw + h_prev @ W_hh.T                 # (N, 4H)
    if b_hh is not None:
        a += b_hh
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g                   # (N, H)
    tanh_c = np.tanh(c)
    m = o * tanh_c                           # (N, H)
    h = m if W_hr is None else m @ W_hr.T    # (N, H_out)
    return h, c, (c_prev, i, f, g, o, tanh_c, m)


def step_backward(dh, dc, cache, W_hh, W_hr=None):
    """Backward of ``step_forward``. dh (N, H_out), dc (N, H): total gradients reaching h and c.

    Returns da (N, 4H) (the gradient of xw, b_ih and b_hh), dh_prev (N, H_out),
    dc_prev (N, H), and dm (N, H) (needed for dW_hr = dh^T m).
    """
    c_prev, i, f, g, o, tanh_c, m = cache
    dm = dh if W_hr is None else dh @ W_hr   # h = m W_hr^T
    do = dm * tanh_c                         # m = o * tanh(c)
    dc = dc + dm * o * (1 - tanh_c * tanh_c)
    df = dc * c_prev                         # c = f * c_prev + i * g
    dc_prev = dc * f
    di = dc * g
    dg = dc * i
    da = np.concatenate([
        di * i * (1 - i),                    # i = sigmoid(a_i)
        df * f * (1 - f),                    # f = sigmoid(a_f)
        dg * (1 - g * g),                    # g = tanh(a_g)
        do * o * (1 - o),                    # o = sigmoid(a_o)
    ], axis=1)
    dh_prev = da @ W_hh                      # a = ... + h_prev W_hh^T
    return da, dh_prev, dc_prev, dm
