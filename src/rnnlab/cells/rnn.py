"""The simple (Elman) recurrent cell.

The seeds write one step of a simple RNN as

    h_t = f(W x_t + U h_{t-1} + b)

with the same W, U and b shared by every time step. In PyTorch's names
W = weight_ih (H, D), U = weight_hh (H, H) and b = bias_ih + bias_hh:

    a_t = xw_t + h_{t-1} U^T + b_hh          xw_t = x_t W^T + b_ih   (N, H)
    h_t = f(a_t)                             f = tanh or relu

Backward (the seeds' delta recursion): with dh_t the total gradient reaching h_t,

    da_t      = dh_t * f'(a_t)               tanh' = 1 - h_t^2, relu' = [a_t > 0]
    dh_{t-1}  = da_t U                       what flows to the previous step
    dU       += da_t^T h_{t-1}               (formed by the caller over all t)

Repeated multiplication by ``f'(a) U`` is why a simple RNN's gradient vanishes
(or explodes) through time: its size after k steps scales like the k-th power
of that Jacobian's largest singular value.
"""
from __future__ import annotations

import numpy as np


def step_forward(xw, h_prev, W_hh, b_hh, nonlinearity="tanh"):
    """One step. xw (N, H) = x_t W_ih^T + b_ih; h_prev (N, H); W_hh (H, H); b_hh (H,) or None.

    Returns h (N, H) and the cache the backward needs.
    """
    a = xw + h_prev @ W_hh.T                 # (N, H) pre-activation
    if b_hh is not None:
        a += b_hh
    if nonlinearity == "tanh":
        h = np.tanh(a)
    else:
        h = np.maximum(a, 0)
    return h, (h_prev, h, nonlinearity)


def step_backward(dh, cache, W_hh):
    """Backward of ``step_forward``. dh (N, H) is the total gradient reaching h.

    Returns da (N, H), the gradient of the pre-activation (which is also the
    gradient of xw, b_ih and b_hh), and dh_prev (N, H).
    """
    h_prev, h, nonlinearity = cache
    if nonlinearity == "tanh":
        da = dh * (1 - h * h)                # backprop through h = tanh(a)
    else:
        da = dh * (h > 0)                    # backprop through h = relu(a)
    dh_prev = da @ W_hh                      # a = ... + h_prev W_hh^T
    return da, dh_prev
