"""Diagnostics of a trained character model (a run folder of ``rnnlab train charlm``).

``diagnose_charlm(model, vocab, text)`` measures, on a piece of text:

- the gradient horizon: ||dL/dh_t|| for a loss on the last character of a
  window only, against the distance back from it (every layer);
- gate statistics per layer and gate (mean, fraction saturated, per character);
- the spectrum of each W_hh; per-parameter gradient norms of the ordinary
  loss (all positions) and lr * ||g|| / ||theta||, the size of a plain SGD
  step relative to the weights;
- the hidden unit whose activation (tanh(c_t) for an LSTM, h_t otherwise)
  follows the position in the line most closely, and its activation on every
  character, so the report can colour the text as Karpathy, Johnson & Fei-Fei
  (2015) did for their line-length and quote cells.
"""
from __future__ import annotations

import numpy as np

from ..losses import softmax_cross_entropy
from .diagnostics import GradientHorizon, gate_stats, gate_trace, grad_norms, recording, recurrent_spectrum


def unit_activations(model, ids):
    """Activations (T, H) of the last recurrent layer on one stream ``ids`` (T,): tanh(c_t) for an
    LSTM (the cell state, squashed as the output gate sees it), h_t for an RNN or GRU."""
    rnn = model.rnn
    e = model.embed.forward(np.asarray(ids)[None, :])             # (1, T, E)
    gates = gate_trace(rnn, e)[(rnn.num_layers - 1, 0)]
    if rnn.mode == "lstm":
        c = np.zeros(rnn.hidden_size)
        cs = np.empty((len(ids), rnn.hidden_size))
        for t in range(len(ids)):                                  # c_t = f_t c_{t-1} + i_t g_t
            c = gates["f"][t, 0] * c + gates["i"][t, 0] * gates["g"][t, 0]
            cs[t] = c
        return np.tanh(cs), gates
    out, _ = rnn.forward(e)
    return out[0].astype(np.float64), gates


def position_in_line(text):
    """Characters since the last newline, for every character of ``text``."""
    pos, k = np.empty(len(text)), 0
    for j, ch in enumerate(text):
        pos[j] = k
        k = 0 if ch == "\n" else k + 1
    return pos


def best_unit(acts, signal):
    """(unit, correlation): the column of ``acts`` (T, H) most correlated (in absolute value) with ``signal``."""
    a = acts - acts.mean(axis=0)
    s = signal - signal.mean()
    denom = np.sqrt((a * a).sum(axis=0) * (s * s).sum())
    corr = np.where(denom > 0, (a * s[:, None]).sum(axis=0) / np.where(denom > 0, denom, 1), 0.0)
    k = int(np.argmax(np.abs(corr)))
    return k, float(corr[k])


def horizon_windows(model, ids, window, count):
    """Gradient horizon of a loss on the last character of ``count`` windows of ``window`` characters.

    Returns {layer: list of mean ||dL/dh|| by distance}. Parameters are untouched; gradients are cleared."""
    starts = np.linspace(0, len(ids) - window - 1, count).astype(int)
    x = np.stack([ids[s:s + window] for s in starts])              # (N, T)
    y = np.stack([ids[s + 1:s + window + 1] for s in starts])
    rec = GradientHorizon()
    with recording(model.rnn, rec):
        logits, _ = model.forward(x)
        _, dlast = softmax_cross_entropy(logits[:, -1], y[:, -1])
        dlogits = np.zeros_like(logits)
        dlogits[:, -1] = dlast
        model.backward(dlogits)
    model.zero_grad()
    return {k: rec.by_distance(k, 0).tolist() for k in range(model.rnn.num_layers)}


def diagnose_charlm(model, vocab, text, lr=None, unit=None, window=100):
    """All diagnostics of ``model`` on ``text`` (str of known characters). Returns a JSON-ready dict."""
    ids = vocab.encode(text, "text")
    model.eval()
    window = min(window, len(ids) - 2)
    res = {"chars": len(text), "cell": model.rnn.mode, "layers": model.rnn.num_layers,
           "horizon": horizon_windows(model, ids, window, 8)}
    e = model.embed.forward(ids[None, :])
    st = gate_stats(model.rnn, e)
    res["gates"] = [{"layer": k[0], "direction": k[1], "gate": "h" if g == "a" else g, "mean": v["mean"],
                     "saturated": v["saturated"], "saturated_per_char": v["saturated_per_step"].tolist()}
                    for (k, g), v in st.items()]
    res["spectrum"] = recurrent_spectrum(model.rnn)
    # ordinary loss over every position, for gradient sizes
    logits, _ = model.forward(ids[None, :-1])
    loss, dlogits = softmax_cross_entropy(logits, ids[None, 1:])
    model.backward(dlogits)
    norms = grad_norms(model.grads)
    res["loss"] = loss
    res["grad_norms"] = norms
    if lr is not None:
        res["sgd_update_ratio"] = {k: lr * norms[k] / max(float(np.linalg.norm(v)), 1e-30)
                                   for k, v in model.params.items()}
    model.zero_grad()
    acts, _ = unit_activations(model, ids)
    if unit is None:
        unit, corr = best_unit(acts, position_in_line(text))
    else:
        corr = best_unit(acts[:, [unit]], position_in_line(text))[1]
    res["unit"] = {"index": int(unit), "source": "tanh(c)" if model.rnn.mode == "lstm" else "h",
                   "correlation_with_position_in_line": corr, "text": text,
                   "values": acts[:, unit].tolist()}
    return res
