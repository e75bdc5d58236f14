"""The gradient horizon, gate statistics and W_hh spectrum, checked against independent computations;
and the proof that recording never changes training."""
import numpy as np
import pytest

import rnnlab.fast
from rnnlab import GRU, LSTM, RNN
from rnnlab.lab.diagnostics import (GradientHorizon, gate_stats, gate_trace, grad_norms, horizon_ratio,
                                    recording, recurrent_spectrum, update_ratios)
from rnnlab.lab.experiment import MemoryConfig, make_layer, train_run


def _layer(cls, seed=0, **kw):
    layer = cls(3, 5, dtype=np.float64, seed=seed, **kw)
    rng = np.random.default_rng(seed + 10)
    for v in layer.params.values():      # non-zero weights and biases everywhere
        v[...] = rng.uniform(-0.8, 0.8, v.shape)
    return layer


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_horizon_equals_gradient_of_the_state_from_a_restarted_run(cls):
    """dL/dh_t recorded inside BPTT equals the gradient of the initial state of a run that restarts
    at step t+1 from h_t (and c_t): an independent way to get the same derivative."""
    N, T = 4, 7
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, T, 3))
    w = rng.normal(size=(N, 5))                  # L = sum(h_{T-1} * w)
    layer = _layer(cls)
    rec = GradientHorizon()
    with recording(layer, rec):
        out, _ = layer.forward(x)
        dout = np.zeros_like(out)
        dout[:, -1] = w
        layer.backward(dout)
    assert layer.recorder is None
    for t in range(T - 1):
        _, state = layer.forward(x[:, :t + 1])
        out2, _ = layer.forward(x[:, t + 1:], state=state)
        d2 = np.zeros_like(out2)
        d2[:, -1] = w
        _, dstate = layer.backward(d2)
        dh = dstate[0] if cls is LSTM else dstate
        np.testing.assert_allclose(rec.norms()[t], np.linalg.norm(dh[0], axis=1).mean(), rtol=1e-10)
        if cls is LSTM:
            np.testing.assert_allclose(rec.norms(cell=True)[t], np.linalg.norm(dstate[1][0], axis=1).mean(),
                                       rtol=1e-10)
    assert rec.norms()[T - 1] == pytest.approx(np.linalg.norm(w, axis=1).mean())
    assert rec.by_distance()[0] == rec.norms()[T - 1]


def test_horizon_records_both_directions_and_layers():
    layer = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    rec = GradientHorizon()
    with recording(layer, rec):
        out, _ = layer.forward(np.random.default_rng(0).normal(size=(2, 6, 3)))
        layer.backward(np.ones_like(out))
    assert set(rec.dh) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(len(v) == 6 for v in rec.dh.values())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "irnn"])
def test_recording_never_changes_training(cell):
    cfg = MemoryConfig(steps=12, eval_every=4, hidden=6, batch=8, eval_size=16, probe_size=8)
    rec_on, m_on = train_run(cfg, cell, 9, seed=3, diagnostics=True)
    rec_off, m_off = train_run(cfg, cell, 9, seed=3, diagnostics=False)
    assert "horizon_final" in rec_on and "horizon_final" not in rec_off
    for name, p in m_on.params.items():
        assert np.array_equal(p, m_off.params[name]), name
    assert rec_on["value"] == rec_off["value"]


def _forward_backward(layer, x, state, lengths, dout, dstate):
    """out, final state, dx, dstate_0 and a copy of every parameter gradient of one forward + backward."""
    layer.zero_grad()
    out, final = layer.forward(x, state=state, lengths=lengths)
    dx, dstate0 = layer.backward(dout, dstate=dstate)
    flat = lambda s: list(s) if isinstance(s, tuple) else [s]              # h, or (h, c) for the LSTM
    return [out, *flat(final), dx, *flat(dstate0)], {k: g.copy() for k, g in layer.grads.items()}


@pytest.mark.parametrize("lengths", [None, [6, 3, 1, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_a_recorder_never_changes_the_layer_gradients(build, kind, fast, dtype, lengths):
    """Forward + backward with a GradientHorizon set gives the same dx, dstate and parameter
    gradients as without one, bit for bit, on both paths (random non-zero weights and biases,
    two bidirectional layers, an initial state and a gradient of the final state)."""
    rng = np.random.default_rng(7)
    layer = build.layer(kind, D=3, H=5, rng=rng, dtype=dtype, fast=fast, num_layers=2, bidirectional=True)
    N, T = 4, 6
    x, state = build.input(layer, N, T, rng), build.state(layer, N, rng)
    dout = rng.standard_normal((N, T, 2 * layer.hidden_out)).astype(dtype)
    dstate = build.state(layer, N, rng)
    plain, grads = _forward_backward(layer, x, state, lengths, dout, dstate)
    rec = GradientHorizon()
    with recording(layer, rec):
        recorded, grads_rec = _forward_backward(layer, x, state, lengths, dout, dstate)
    assert set(rec.dh) == {(0, 0), (0, 1), (1, 0), (1, 1)}        # the recorder did run
    # With float32, no lengths and a batch this small, the fast path without a recorder runs
    # the compiled (Numba) backward kernels, which the recorder hook cannot enter, so with a
    # recorder it runs the NumPy fused backward: the same math in a different order of
    # floating-point operations. There the two agree to float32 rounding, not bit for bit.
    compiled_without_recorder = fast and dtype == np.float32 and lengths is None and rnnlab.fast.COMPILED
    for a, b in zip(plain + list(grads.values()), recorded + list(grads_rec.values())):
        if compiled_without_recorder:
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        else:
            assert np.array_equal(a, b)


def test_recorder_is_called_only_when_set():
    layer = _layer(RNN)
    calls = []
    out, _ = layer.forward(np.ones((2, 4, 3)))
    layer.backward(np.ones_like(out))
    layer.recorder = lambda *a: calls.append(a[2])
    layer.forward(np.ones((2, 4, 3)))
    layer.backward(np.ones_like(out))
    assert calls == [3, 2, 1, 0]


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_gate_trace_rebuilds_the_layer_output(cls):
    layer = _layer(cls, num_layers=2)
    x = np.random.default_rng(2).normal(size=(3, 5, 3))
    out, _ = layer.forward(x)
    gates = gate_trace(layer, x)[(1, 0)]
    if cls is RNN:
        h = gates["a"]
    elif cls is LSTM:
        c = np.zeros((3, 5))
        h = np.empty_like(gates["i"])
        for t in range(5):
            c = gates["f"][t] * c + gates["i"][t] * gates["g"][t]
            h[t] = gates["o"][t] * np.tanh(c)
    else:
        hp = np.zeros((3, 5))
        h = np.empty_like(gates["r"])
        for t in range(5):
            hp = (1 - gates["z"][t]) * gates["n"][t] + gates["z"][t] * hp
            h[t] = hp
    np.testing.assert_allclose(h.transpose(1, 0, 2), out, rtol=1e-12, atol=1e-12)


def test_gate_stats_saturation_follows_the_thresholds():
    layer = _layer(LSTM)
    layer.params["bias_ih_l0"][5:10] = 50.0      # forget gate forced open: every f > 0.95
    layer.params["bias_ih_l0"][0:5] = 0.0
    layer.params["weight_ih_l0"][0:5] = 0.0
    layer.params["weight_hh_l0"][0:5] = 0.0
    layer.params["bias_hh_l0"][0:5] = 0.0        # input gate exactly 0.5: never saturated
    st = gate_stats(layer, np.random.default_rng(0).normal(size=(4, 6, 3)))
    assert st[((0, 0), "f")]["saturated"] == 1.0
    assert st[((0, 0), "i")]["saturated"] == 0.0
    assert st[((0, 0), "i")]["mean"] == pytest.approx(0.5)
    assert st[((0, 0), "f")]["saturated_per_step"].shape == (6,)


def test_spectrum_separates_radius_from_largest_singular_value():
    layer = RNN(2, 2, dtype=np.float64, seed=0)
    layer.params["weight_hh_l0"][...] = [[0.0, 2.0], [0.0, 0.0]]   # nilpotent: radius 0, sigma 2
    s = recurrent_spectrum(layer)["weight_hh_l0"]
    assert s["gates"]["a"]["spectral_radius"] == pytest.approx(0.0, abs=1e-12)
    assert s["sigma_max"] == pytest.approx(2.0)
    irnn = make_layer("irnn", 2, 4, seed=0)
    s = recurrent_spectrum(irnn)["weight_hh_l0"]
    assert s["gates"]["a"]["spectral_radius"] == pytest.approx(1.0)
    lstm = LSTM(2, 3, seed=0)
    assert set(recurrent_spectrum(lstm)["weight_hh_l0"]["gates"]) == {"i", "f", "g", "o"}


def test_grad_norms_and_update_ratios():
    before = {"a": np.array([3.0, 4.0]), "b": np.array([1.0, 0.0])}
    after = {"a": np.array([3.0, 4.5]), "b": np.array([1.0, 0.0])}
    assert grad_norms(before) == {"a": 5.0, "b": 1.0}
    assert update_ratios(before, after) == {"a": pytest.approx(0.1), "b": 0.0}
    assert horizon_ratio(np.array([1.0, 0.5, 1e-3]), 1, 2) == pytest.approx(500.0)
    assert np.isnan(horizon_ratio(np.array([1.0, 0.5]), 1, 100))
