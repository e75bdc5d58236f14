"""The gated recurrent unit (Cho et al. 2014), in PyTorch's formulation.

Gates are stacked in the order r, z, n on the rows of W_ih (3H, D) and
W_hh (3H, H). With xw_t = x_t W_ih^T + b_ih precomputed (N, 3H) and
hw_t = h_{t-1} W_hh^T + b_hh (N, 3H):

    r_t = sigmoid(xw_r + hw_r)               reset gate
    z_t = sigmoid(xw_z + hw_z)               update gate
    n_t = tanh(xw_n + r_t * hw_n)            candidate; r scales W_hn h + b_hn
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Because r multiplies ``W_hn h + b_hn`` (not h before the product), the two n
biases are not interchangeable, which is why the input and hidden sides get
separate pre-activation gradients below.

Backward, the forward lines in reverse (dh: total gradient reaching h_t):

    dn      = dh * (1 - z);  dz = dh * (h_prev - n);  dh_prev = dh * z
    da_n    = dn * (1 - n^2)
    dr      = da_n * hw_n
    dxw     = [dr * r(1-r), dz * z(1-z), da_n]
    dhw     = [dr * r(1-r), dz * z(1-z), da_n * r]
    dh_prev += dhw W_hh
"""
from __future__ import annotations

import numpy as np

from .._conventions import sigmoid


def step_forward(xw, h_prev, W_hh, b_hh):
    """One step. xw (N, 3H); h_prev (N, H); W_hh (3H, H); b_hh (3H,) or None.

    Returns h (N, H) and the cache.
    """
    H = h_prev.shape[1]
    hw = h_prev @ W_hh.T                     # (N, 3H)
    if b_hh is not None:
        hw += b_hh
    r = sigmoid(xw[:, :H] + hw[:, :H])
    z = sigmoid(xw[:, H:2 * H] + hw[:, H:2 * H])
    hw_n = hw[:, 2 * H:]
    n = np.tanh(xw[:, 2 * H:] + r * hw_n)
    h = (1 - z) * n + z * h_prev             # (N, H)
    return h, (h_prev, r, z, n, hw_n)


def step_backward(dh, cache, W_hh):
    """Backward of ``step_forward``. dh (N, H) is the total gradient reaching h.

    Returns dxw (N, 3H) (the gradient of xw and b_ih), dhw (N, 3H) (the
    gradient of h_prev W_hh^T + b_hh, hence of b_hh and, over all steps, W_hh),
    and dh_prev (N, H).
    """
    h_prev, r, z, n, hw_n = cache
    dn = dh * (1 - z)                        # h = (1 - z) * n + z * h_prev
    dz = dh * (h_prev - n)
    da_n = dn * (1 - n * n)                  # n = tanh(xw_n + r * hw_n)
    dr = da_n * hw_n
    da_r = dr * r * (1 - r)                  # r = sigmoid(xw_r + hw_r)
    da_z = dz * z * (1 - z)                  # z = sigmoid(xw_z + hw_z)
    dxw = np.concatenate([da_r, da_z, da_n], axis=1)
    dhw = np.concatenate([da_r, da_z, da_n * r], axis=1)
    dh_prev = dh * z + dhw @ W_hh            # both paths from h_prev
    return dxw, dhw, dh_prev
