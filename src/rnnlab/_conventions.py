"""One place for the conventions every other module imports.

Layout
------
Arrays are batch-first: inputs ``x`` are ``(N, T, D)``, outputs ``(N, T, H)``,
states ``(num_layers * num_directions, N, H)`` exactly as PyTorch. The letters
are fixed everywhere in rnnlab:

    N  batch size            T  sequence length       D  input features
    H  hidden size           P  LSTM projection size  G  number of gates * H

Parameters
----------
PyTorch's names, shapes and gate orders, so that a ``state_dict`` moves between
rnnlab and ``torch.nn.RNN/LSTM/GRU`` with no conversion table:

    weight_ih_l{k}[_reverse]  (G, D_k)     input-to-hidden, gates stacked on rows
    weight_hh_l{k}[_reverse]  (G, H_out)   hidden-to-hidden (the seeds' U)
    bias_ih_l{k}[_reverse]    (G,)
    bias_hh_l{k}[_reverse]    (G,)         PyTorch keeps two biases (for cuDNN);
                                           only their sum matters except in the
                                           GRU's candidate gate n
    weight_hr_l{k}[_reverse]  (P, H)       LSTM projection, only if proj_size > 0

Gate orders: LSTM ``i, f, g, o``; GRU ``r, z, n`` with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and ``h = (1 - z) * n + z * h_prev``.
"""
from __future__ import annotations

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GATE_NAMES = {"rnn": ("a",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def suffix(layer: int, reverse: bool) -> str:
    """Name suffix of layer ``layer``'s parameters: ``_l0``, ``_l1_reverse``..."""
    return f"_l{layer}" + ("_reverse" if reverse else "")


def sigmoid(x, out=None):
    """Logistic function, computed as 0.5 * (1 + tanh(x / 2)).

    The tanh form never overflows (``exp(-x)`` does for x < -88 in float32) and
    costs one transcendental call, like ``1 / (1 + exp(-x))``.
    """
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out
