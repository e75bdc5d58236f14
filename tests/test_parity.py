"""Parity with torch.nn.RNN/LSTM/GRU (PyTorch 2.13) on random configurations, weights, states and gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import rnnlab  # noqa: E402
from rnnlab.gradcheck import relative_error  # noqa: E402
from rnnlab.parity import compare_with_torch, torch_module  # noqa: E402


@st.composite
def problems(draw):
    """A random layer configuration and problem: (kind, layer options, N, T, state?, lengths?, chunks)."""
    kind = draw(st.sampled_from(["RNN", "LSTM", "GRU"]))
    H = draw(st.integers(1, 4))
    opts = dict(num_layers=draw(st.integers(1, 3)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
                batch_first=draw(st.booleans()))
    if kind == "RNN":
        opts["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    if kind == "LSTM" and H > 1:
        opts["proj_size"] = draw(st.integers(0, H - 1))
    D = draw(st.integers(1, 4))
    N, T = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    with_state = draw(st.booleans())
    with_lengths = draw(st.booleans())
    chunks = 1
    if not with_lengths and not opts["bidirectional"] and T > 1:
        chunks = draw(st.integers(1, min(T, 3)))       # several forward calls carrying the state
    fast = draw(st.booleans())                              # the fused path (default) or the readable cells
    return kind, D, H, opts, N, T, with_state, with_lengths, chunks, fast, draw(st.integers(0, 2**31 - 1))


def _run(build, problem, dtype):
    kind, D, H, opts, N, T, with_state, with_lengths, chunks, fast, seed = problem
    rng = np.random.default_rng(seed)
    layer = build.layer(kind, D=D, H=H, rng=rng, dtype=dtype, fast=fast, **opts)
    x = build.input(layer, N, T, rng)
    state = build.state(layer, N, rng) if with_state else None
    lengths = rng.integers(1, T + 1, N) if with_lengths else None
    return compare_with_torch(layer, x, state, lengths, chunks=chunks, seed=seed)


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_float64_parity(build, problem):
    errors = _run(build, problem, np.float64)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, f"{worst}: {errors[worst]:.2e}"


@settings(max_examples=25, deadline=None)
@given(problem=problems())
def test_float32_parity(build, problem):
    errors = _run(build, problem, np.float32)
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-4, f"{worst}: {errors[worst]:.2e}"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_every_quantity_is_compared(build, kind, fast):
    """The parity report covers outputs, final states, dx, initial-state gradients and every parameter."""
    rng = np.random.default_rng(1)
    layer = build.layer(kind, rng=rng, num_layers=2, bidirectional=True, fast=fast,
                        **({"proj_size": 2} if kind == "LSTM" else {}))
    errors = compare_with_torch(layer, build.input(layer, 3, 5, rng), build.state(layer, 3, rng), lengths=[5, 1, 3])
    states = ["h_n", "dh0"] + (["c_n", "dc0"] if kind == "LSTM" else [])
    assert set(errors) == {"out", "dx", *states, *layer.params}
    assert max(errors.values()) < 1e-9


def test_parity_detects_a_swapped_gate(build):
    """Swapping the LSTM's f and g gate rows in rnnlab alone must show up as a large error."""
    rng = np.random.default_rng(2)
    layer = build.layer("LSTM", rng=rng)
    x = build.input(layer, 2, 4, rng)
    reference = torch_module(layer)
    H = layer.hidden_size
    w = layer.params["weight_ih_l0"]
    w[[*range(H, 2 * H), *range(2 * H, 3 * H)]] = w[[*range(2 * H, 3 * H), *range(H, 2 * H)]]
    out, _ = layer.forward(x)
    out_t, _ = reference(torch.from_numpy(x))
    assert relative_error(out, out_t.detach().numpy()) > 1e-2


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_load_state_dict_from_torch(build, kind):
    """A torch module's own state_dict loads as it is (same names and shapes), and the two then agree."""
    torch.manual_seed(0)
    opts = dict(num_layers=2, bidirectional=True, batch_first=True)
    if kind == "LSTM":
        opts["proj_size"] = 2
    module = getattr(torch.nn, kind)(3, 4, **opts).double()
    layer = build.LAYERS[kind](3, 4, dtype=np.float64, seed=0, **opts)
    layer.load_state_dict(module.state_dict())
    for name, p in module.state_dict().items():
        np.testing.assert_array_equal(layer.params[name], p.numpy())
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out, final = layer.forward(x)
    out_t, final_t = module(torch.from_numpy(x))
    assert relative_error(out, out_t.detach().numpy()) < 1e-12
    h, h_t = (final[0], final_t[0]) if kind == "LSTM" else (final, final_t)
    assert relative_error(h, h_t.detach().numpy()) < 1e-12
    # and back: rnnlab's state_dict loads into torch
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})


def test_carried_state_matches_one_long_sequence(build):
    """Three forward calls carrying the state give the outputs and final state of one call over the whole sequence."""
    rng = np.random.default_rng(3)
    layer = build.layer("LSTM", rng=rng, num_layers=2)
    x = build.input(layer, 2, 9, rng)
    full, (h, c) = layer.forward(x)
    state, outs = None, []
    for chunk in np.split(x, 3, axis=1):
        out, state = layer.forward(chunk, state)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=0, atol=1e-14)
    np.testing.assert_allclose(state[0], h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(state[1], c, rtol=0, atol=1e-14)


def test_parity_refuses_what_it_cannot_compare(build):
    layer = build.layer("GRU", num_layers=2, dropout=0.3)
    x = np.zeros((1, 3, 3))
    with pytest.raises(ValueError, match="layer: expected dropout off"):
        compare_with_torch(layer, x)
    assert max(compare_with_torch(layer.eval(), x).values()) < 1e-9     # eval mode: dropout is off
    with pytest.raises(ValueError, match="chunks"):
        compare_with_torch(layer, x, lengths=[2], chunks=2)
    with pytest.raises(ValueError, match="chunks"):
        compare_with_torch(build.layer("GRU", bidirectional=True), x, chunks=2)
