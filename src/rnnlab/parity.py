"""Run an rnnlab layer and ``torch.nn.RNN/LSTM/GRU`` on the same problem and measure how far apart they are.

The torch module is built with the same options and a copy of the layer's
parameters (the names and shapes are PyTorch's, so this is a plain
``load_state_dict``). Both sides then run the same loss,

    L = sum(out * dout) + sum(h_T * dh_T) [+ sum(c_T * dc_T)]

and the function reports the relative error (``rnnlab.gradcheck.relative_error``)
of the outputs, the final states, dL/dx, dL/d(initial state) and every
parameter gradient. Variable lengths go through
``pack_padded_sequence(..., enforce_sorted=False)`` on the torch side.

``chunks > 1`` splits the sequence in time and runs it as several forward calls
that carry the state; the backward then goes through the chunks in reverse,
feeding each chunk's initial-state gradient into the previous chunk as its
final-state gradient. Because ``layer.backward`` differentiates the most recent
forward, each earlier chunk is re-run forward just before its backward. The
torch side is one uninterrupted graph, so this checks that the state and
gradient interface composes exactly into full backprop through time.

torch is imported only when a function here is called.
"""
from __future__ import annotations

import warnings

import numpy as np

from .gradcheck import relative_error

__all__ = ["torch_module", "compare_with_torch"]


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("rnnlab.parity needs PyTorch: pip install 'rnnlab[test]'") from e
    return torch


def torch_module(layer):
    """A ``torch.nn.RNN/LSTM/GRU`` with ``layer``'s options, dtype and a copy of its parameters."""
    torch = _torch()
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
              dropout=layer.dropout, bidirectional=layer.bidirectional)
    dtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    if layer.mode == "lstm":
        module = torch.nn.LSTM(layer.input_size, layer.hidden_size, proj_size=layer.proj_size, **kw)
    elif layer.mode == "gru":
        module = torch.nn.GRU(layer.input_size, layer.hidden_size, **kw)
    else:
        module = torch.nn.RNN(layer.input_size, layer.hidden_size, nonlinearity=layer.nonlinearity, **kw)
    module = module.to(dtype)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
    module.train(layer.training)
    return module


def _quiet(module, *args):
    # torch warns that oneDNN has no projected LSTM and falls back to its reference code: expected here
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        return module(*args)


def _split(state):
    return list(state) if isinstance(state, tuple) else [state]


def compare_with_torch(layer, x, state=None, lengths=None, dout=None, dstate=None, chunks=1, seed=0):
    """Run ``layer`` and its torch twin on the same input; return {quantity: relative error}.

    x, state, lengths: as for ``layer.forward`` (state None means zeros).
    dout, dstate: gradients of the loss with respect to ``out`` and the final
    state; those not given are drawn from N(0, 1) with ``seed``.
    chunks: run the time axis as this many consecutive forward calls carrying
    the state (see the module docstring); only for unidirectional layers
    without ``lengths``.

    Calls ``layer.zero_grad()`` first; afterwards ``layer.grads`` holds the
    gradients of this loss. Keys of the result: ``out``, ``h_n`` (and ``c_n``),
    ``dx``, ``dh0`` (and ``dc0``) and every parameter name. Dropout cannot be
    compared (the two libraries draw different masks), so a layer in training
    mode with dropout > 0 is refused.
    """
    torch = _torch()
    if layer.training and layer.dropout > 0:
        raise ValueError("layer: expected dropout off (layer.eval() or dropout=0) for a parity check, "
                         f"got training mode with dropout={layer.dropout}")
    if chunks != 1 and (lengths is not None or layer.bidirectional):
        # a reverse direction run chunk by chunk is a different computation from one run over the whole sequence
        raise ValueError(f"chunks: expected 1 when lengths are given or the layer is bidirectional, got {chunks}")
    x = np.asarray(x, dtype=layer.dtype)
    time_axis = 1 if layer.batch_first else 0
    T = x.shape[time_axis]
    if not 1 <= chunks <= T:
        raise ValueError(f"chunks: expected 1..{T} (the sequence length), got {chunks}")
    rng = np.random.default_rng(seed)
    L, N = layer.num_layers * layer.num_directions, x.shape[1 - time_axis]
    zero_state = [np.zeros((L, N, layer.hidden_out), layer.dtype)]
    if layer.mode == "lstm":
        zero_state.append(np.zeros((L, N, layer.hidden_size), layer.dtype))
    state0 = zero_state if state is None else [np.asarray(s, layer.dtype) for s in _split(state)]
    if dout is None:
        out_width = layer.num_directions * layer.hidden_out
        dout = rng.standard_normal(x.shape[:2] + (out_width,)).astype(layer.dtype)
    dfinal = [rng.standard_normal(s.shape).astype(layer.dtype) for s in zero_state] if dstate is None \
        else [np.asarray(s, layer.dtype) for s in _split(dstate)]

    # ---- rnnlab: forward chunk by chunk carrying the state, then backward in reverse
    bounds = np.linspace(0, T, chunks + 1).astype(int)
    pieces = [np.take(x, range(a, b), axis=time_axis) for a, b in zip(bounds[:-1], bounds[1:])]
    douts = [np.take(dout, range(a, b), axis=time_axis) for a, b in zip(bounds[:-1], bounds[1:])]
    pack = (lambda s: tuple(s)) if layer.mode == "lstm" else (lambda s: s[0])
    layer.zero_grad()
    starts, outs, s = [], [], state0
    for piece in pieces:
        starts.append(s)
        out, final = layer.forward(piece, pack(s), lengths)
        outs.append(out)
        s = _split(final)
    final_np = s
    grad, dxs = dfinal, [None] * chunks
    for i in range(chunks - 1, -1, -1):
        if i != chunks - 1:
            layer.forward(pieces[i], pack(starts[i]), lengths)   # backward differentiates the latest forward
        dxs[i], dstart = layer.backward(douts[i], pack(grad))
        grad = _split(dstart)
    out_np = np.concatenate(outs, axis=time_axis)
    dx_np = np.concatenate(dxs, axis=time_axis)

    # ---- torch: one graph over the whole sequence
    module = torch_module(layer)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    st = [torch.from_numpy(a.copy()).requires_grad_(True) for a in state0]
    hx = tuple(st) if layer.mode == "lstm" else st[0]
    if lengths is None:
        out_t, final_t = _quiet(module, xt, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.as_tensor(np.asarray(lengths), dtype=torch.int64), batch_first=layer.batch_first,
            enforce_sorted=False)
        out_p, final_t = _quiet(module, packed, hx)
        out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=layer.batch_first, total_length=T)
    final_t = list(final_t) if layer.mode == "lstm" else [final_t]
    loss = (out_t * torch.from_numpy(dout)).sum()
    for f, g in zip(final_t, dfinal):
        loss = loss + (f * torch.from_numpy(g)).sum()
    loss.backward()

    names = ["h", "c"]
    errors = {"out": relative_error(out_np, out_t.detach().numpy())}
    for k, (a, b) in enumerate(zip(final_np, final_t)):
        errors[f"{names[k]}_n"] = relative_error(a, b.detach().numpy())
    errors["dx"] = relative_error(dx_np, xt.grad.numpy())
    for k, (a, b) in enumerate(zip(grad, st)):
        errors[f"d{names[k]}0"] = relative_error(a, b.grad.numpy())
    for name, p in module.named_parameters():
        errors[name] = relative_error(layer.grads[name], p.grad.numpy())
    return errors
