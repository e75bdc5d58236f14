"""Float64 central-difference gradient checks for the recurrent layers.

The check builds a scalar loss that touches every output and every final state
through fixed random weights,

    L = sum(out * R) + sum(h_T * S_h) [+ sum(c_T * S_c)]      R, S ~ N(0, 1)

so that ``layer.backward(R, S)`` must return exactly dL/dx and dL/d(state_0)
and put dL/dW into ``layer.grads``. Every entry of x, of the initial state and
of every parameter is then perturbed by +-eps and the derivative estimated as

    dL/dw ~ (L(w + eps) - L(w - eps)) / (2 eps)                 error O(eps^2)

Relative error
--------------
For an analytic gradient ``a`` and a numerical (or reference) gradient ``n`` of
the same shape, rnnlab reports

    rel(a, n) = max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|, 1e-300)

the largest absolute disagreement measured against the largest magnitude in
the array. Unlike an entry-by-entry ratio it does not blow up on entries that
are (legitimately) near zero, such as gradients of padded steps, while a swapped
gate or a missing term still shows up as an error of order 1. Two all-zero
arrays have error 0. ``rnnlab.parity`` uses the same definition.
"""
from __future__ import annotations

import numpy as np

__all__ = ["relative_error", "check_layer_gradients"]


def relative_error(a, n):
    """rel(a, n) = max|a - n| / max(max|a|, max|n|): see the module docstring."""
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: expected two arrays of the same shape, got {a.shape} and {n.shape}")
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max(), np.abs(n).max(), 1e-300)
    return float(np.abs(a - n).max() / scale)


def _state_arrays(state):
    """The arrays of a state, with names: h, or (h, c) for the LSTM."""
    return [("h0", state[0]), ("c0", state[1])] if isinstance(state, tuple) else [("h0", state)]


def check_layer_gradients(layer, x, state=None, lengths=None, seed=0, eps=1e-5):
    """Compare ``layer.backward`` with central differences; return {quantity: relative error}.

    layer: an ``rnnlab.RNN/LSTM/GRU`` built with ``dtype=np.float64``. Its
    parameters are perturbed in place and restored exactly; its ``grads`` are
    zeroed and left holding the analytic gradients of the loss above.
    x, state, lengths: as for ``layer.forward``; a given state is checked too
    (``h0`` and, for the LSTM, ``c0``). seed: draws R and S. eps: the step.

    Dropout: if the layer is in training mode with dropout > 0, ``layer.rng`` is
    re-seeded before every forward so that every evaluation uses the same mask
    (the loss is then a smooth function of the weights).

    Keys of the result: ``dx``, ``h0``/``c0`` (when a state is given) and every
    parameter name.
    """
    if layer.dtype != np.float64:
        raise ValueError(f"layer: expected dtype float64 for a finite-difference check, got {layer.dtype}")
    x = np.array(x, dtype=np.float64)            # a private copy: its entries get perturbed
    if state is not None:
        state = tuple(np.array(s, dtype=np.float64) for s in state) if isinstance(state, (tuple, list)) \
            else np.array(state, dtype=np.float64)
    rng = np.random.default_rng(seed)
    mask_seed = int(rng.integers(2**31))         # one fixed dropout mask for every evaluation
    reseed = layer.training and layer.dropout > 0

    def run():
        if reseed:
            layer.rng = np.random.default_rng(mask_seed)
        return layer.forward(x, state, lengths)

    out, final = run()
    R = rng.standard_normal(out.shape)
    S = tuple(rng.standard_normal(s.shape) for s in final) if isinstance(final, tuple) \
        else rng.standard_normal(final.shape)

    def loss():
        out, final = run()
        total = float(np.sum(out * R))
        for f, s in (zip(final, S) if isinstance(final, tuple) else [(final, S)]):
            total += float(np.sum(f * s))
        return total

    # analytic gradients of the same loss
    layer.zero_grad()
    run()
    dx, dstate = layer.backward(R, S)
    analytic = {"dx": dx}
    if state is not None:
        analytic.update(_state_arrays(dstate))
    analytic.update({name: g.copy() for name, g in layer.grads.items()})

    # numerical gradients: perturb each entry of each array in place
    arrays = {"dx": x, **(dict(_state_arrays(state)) if state is not None else {}), **layer.params}
    errors = {}
    for name, arr in arrays.items():
        numeric = np.empty_like(arr)
        flat, nflat = arr.reshape(-1), numeric.reshape(-1)   # views: writes reach arr
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss()
            flat[i] = old - eps
            down = loss()
            flat[i] = old                         # restore exactly
            nflat[i] = (up - down) / (2 * eps)
        errors[name] = relative_error(analytic[name], numeric)
    return errors
