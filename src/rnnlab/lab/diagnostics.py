"""Diagnostics read from inside backprop through time, all opt-in.

The gradient horizon
--------------------
For a loss read at the last step T-1, the gradient reaching an earlier state is

    dL/dh_t = dL/dh_{T-1} * prod_{s=t+1}^{T-1} dh_s/dh_{s-1}

For a simple RNN each factor is diag(f'(a_s)) U, so ||dL/dh_t|| shrinks (or
grows) roughly geometrically with the distance T-1-t: the network cannot learn
from what happened long ago. For the LSTM the cell path contributes
dc_{s-1} = dc_s * f_s, a product of forget gates that stays near 1 when the
gates are open. ``GradientHorizon`` records the batch-mean norm ||dL/dh_t||
(and ||dL/dc_t|| for the LSTM) at every step through the layers' ``recorder``
hook. With no recorder set the layers do no extra work at all.

Also here: gate statistics (mean, fraction saturated), the spectral radius and
largest singular value of each W_hh, per-parameter gradient norms and the
update-to-weight ratio ||delta theta|| / ||theta|| of an optimiser step.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .._conventions import GATE_NAMES, suffix
from ..cells import gru as gru_cell
from ..cells import lstm as lstm_cell
from ..cells import rnn as rnn_cell

SIGMOID_SATURATED = (0.05, 0.95)   # a sigmoid gate below/above these is nearly shut/open
TANH_SATURATED = 0.95              # |tanh| above this has derivative < 0.1


class GradientHorizon:
    """A ``recorder`` for ``layer.recorder``: the norm of dL/dh_t at every step of every backward.

    ``self.dh[(layer, direction)]`` is a dict ``t -> mean over the batch of ||dL/dh_t[n]||``
    for the most recent backward (``self.dc`` likewise for the LSTM's cell).
    """

    def __init__(self):
        self.dh = {}
        self.dc = {}

    def __call__(self, layer, direction, t, dh, dc):
        key = (int(layer), int(direction))
        self.dh.setdefault(key, {})[int(t)] = float(np.linalg.norm(dh, axis=1).mean())
        if dc is not None:
            self.dc.setdefault(key, {})[int(t)] = float(np.linalg.norm(dc, axis=1).mean())

    def clear(self):
        self.dh.clear()
        self.dc.clear()

    def norms(self, layer=0, direction=0, cell=False):
        """The recorded norms as an array indexed by t (0..T-1); NaN where nothing was recorded."""
        rec = (self.dc if cell else self.dh).get((layer, direction), {})
        if not rec:
            return np.zeros(0)
        out = np.full(max(rec) + 1, np.nan)
        for t, v in rec.items():
            out[t] = v
        return out

    def by_distance(self, layer=0, direction=0, cell=False):
        """Norms against the distance back from the last step: index k is ||dL/dh_{T-1-k}||
        (for the reverse direction the last step processed is t = 0, so index k is t = k)."""
        n = self.norms(layer, direction, cell)
        return n if direction == 1 else n[::-1].copy()


@contextmanager
def recording(layer, recorder):
    """Set ``layer.recorder`` for the duration of a ``with`` block, then restore what was there."""
    before = layer.recorder
    layer.recorder = recorder
    try:
        yield recorder
    finally:
        layer.recorder = before


def horizon_ratio(by_distance, near=1, far=100):
    """||dL/dh|| at distance ``near`` over distance ``far`` (inf if the far one is exactly zero)."""
    if far >= len(by_distance) or near >= len(by_distance):
        return float("nan")
    a, b = by_distance[near], by_distance[far]
    return float("inf") if b == 0 else float(a / b)


def gate_trace(layer, x):
    """Re-run ``layer`` on ``x`` (N, T, D) step by step with the pure cell functions, keeping every gate.

    Returns {(layer, direction): {gate name: (T, N, H) array}}; the simple RNN's one
    "gate" is its state h (its activation f(a)). No lengths, no dropout (evaluation mode).
    """
    p = layer.params
    X = np.asarray(x, dtype=layer.dtype)
    X = np.ascontiguousarray(X.transpose(1, 0, 2) if layer.batch_first else X)   # (T, N, D)
    T, N, _ = X.shape
    names = GATE_NAMES[layer.mode]
    traces = {}
    inp = X
    for k in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            s = suffix(k, bool(d))
            W_ih, W_hh = p["weight_ih" + s], p["weight_hh" + s]
            b_ih, b_hh = p.get("bias_ih" + s), p.get("bias_hh" + s)
            XW = inp @ W_ih.T + (0 if b_ih is None else b_ih)                  # (T, N, G)
            h = np.zeros((N, layer.hidden_out), layer.dtype)
            c = np.zeros((N, layer.hidden_size), layer.dtype)
            gates = {g: np.empty((T, N, layer.hidden_size), layer.dtype) for g in names}
            out = np.empty((T, N, layer.hidden_out), layer.dtype)
            for t in (range(T - 1, -1, -1) if d else range(T)):
                if layer.mode == "lstm":
                    h, c, cache = lstm_cell.step_forward(XW[t], h, c, W_hh, b_hh, p.get("weight_hr" + s))
                    for g, v in zip(names, cache[1:5]):
                        gates[g][t] = v
                elif layer.mode == "gru":
                    h, cache = gru_cell.step_forward(XW[t], h, W_hh, b_hh)
                    for g, v in zip(names, cache[1:4]):
                        gates[g][t] = v
                else:
                    h, _ = rnn_cell.step_forward(XW[t], h, W_hh, b_hh, layer.nonlinearity)
                    gates["a"][t] = h
                out[t] = h
            traces[(k, d)] = gates
            outs.append(out)
        inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
    return traces


def _is_tanh(mode, gate, nonlinearity):
    return (mode == "lstm" and gate == "g") or (mode == "gru" and gate == "n") or \
        (mode == "rnn" and nonlinearity == "tanh")


def gate_stats(layer, x):
    """Per layer/direction and gate: mean activation, fraction saturated, and saturation per step.

    Saturated means a sigmoid below 0.05 or above 0.95, a tanh with |value| > 0.95,
    or (for a ReLU RNN) a unit at exactly zero, where no gradient passes.
    """
    out = {}
    for key, gates in gate_trace(layer, x).items():
        for g, v in gates.items():
            if _is_tanh(layer.mode, g, layer.nonlinearity):
                sat = np.abs(v) > TANH_SATURATED
            elif layer.mode == "rnn":
                sat = v <= 0
            else:
                sat = (v < SIGMOID_SATURATED[0]) | (v > SIGMOID_SATURATED[1])
            out[(key, g)] = {"mean": float(v.mean()), "saturated": float(sat.mean()),
                             "saturated_per_step": sat.mean(axis=(1, 2))}
    return out


def recurrent_spectrum(layer):
    """For each W_hh: the spectral radius and largest singular value of every gate's (H, H) block,
    and the largest singular value of the whole matrix. Returns {param name: {...}}."""
    res = {}
    H = layer.hidden_size
    for name, W in layer.params.items():
        if not name.startswith("weight_hh"):
            continue
        W = W.astype(np.float64)
        blocks = {}
        for j, g in enumerate(GATE_NAMES[layer.mode]):
            B = W[j * H:(j + 1) * H]
            entry = {"sigma_max": float(np.linalg.norm(B, 2))}
            if B.shape[0] == B.shape[1]:
                entry["spectral_radius"] = float(np.max(np.abs(np.linalg.eigvals(B))))
            blocks[g] = entry
        res[name] = {"sigma_max": float(np.linalg.norm(W, 2)), "gates": blocks}
    return res


def grad_norms(grads):
    """{name: ||grad||_2} for a dict of gradient arrays."""
    return {k: float(np.linalg.norm(v)) for k, v in grads.items()}


def update_ratios(before, after):
    """{name: ||after - before|| / ||before||}: how big a step was relative to the weights
    (about 1e-3 is the usual healthy size; far above means the step is too large)."""
    out = {}
    for k, b in before.items():
        nb = float(np.linalg.norm(b))
        out[k] = float(np.linalg.norm(after[k] - b)) / nb if nb > 0 else float("inf")
    return out


__all__ = ["GradientHorizon", "recording", "horizon_ratio", "gate_trace", "gate_stats",
           "recurrent_spectrum", "grad_norms", "update_ratios"]
