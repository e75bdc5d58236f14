"""Float64 central-difference gradient checks of every layer option, and checks of the checker itself."""
import numpy as np
import pytest

import rnnlab
from rnnlab.cells import lstm as lstm_cell
from rnnlab.fast import gru as fast_gru
from rnnlab.gradcheck import check_layer_gradients, relative_error

TOL = 1e-7
N, T = 2, 4

# (layer options, give an initial state, give lengths); cell-specific options are added below
OPTIONS = {
    "default": ({}, False, False),
    "2 layers": ({"num_layers": 2}, False, False),
    "bidirectional": ({"bidirectional": True}, False, False),
    "bias=False": ({"bias": False}, False, False),
    "batch_first=False": ({"batch_first": False}, True, False),
    "lengths": ({}, False, True),
    "initial state": ({}, True, False),
    "everything": ({"num_layers": 2, "bidirectional": True}, True, True),
}
CASES = [(kind, name) for kind in ("RNN", "LSTM", "GRU") for name in OPTIONS]
CASES += [("RNN", "relu"), ("RNN", "relu everything"), ("LSTM", "proj_size"), ("LSTM", "proj everything"),
          ("LSTM", "forget_bias=5")]
EXTRA = {
    "relu": ({"nonlinearity": "relu"}, True, False),
    "relu everything": ({"nonlinearity": "relu", "num_layers": 2, "bidirectional": True, "bias": False}, True, True),
    "proj_size": ({"proj_size": 2}, True, False),
    "proj everything": ({"proj_size": 2, "num_layers": 2, "bidirectional": True}, True, True),
    "forget_bias=5": ({"forget_bias": 5.0}, True, False),
}


def _case(build, kind, name, seed, fast=None):
    options, with_state, with_lengths = {**OPTIONS, **EXTRA}[name]
    rng = np.random.default_rng(seed)
    if name == "forget_bias=5":       # a saturated forget gate, as trained with: randomise all but the biases
        layer = rnnlab.LSTM(3, 3, dtype=np.float64, forget_bias=5.0, seed=1)
        layer.fast = layer.fast if fast is None else fast
        for k, p in layer.params.items():
            if k.startswith("weight"):
                p[...] = rng.uniform(-0.5, 0.5, p.shape)
    else:
        # the big combinations are the slow ones (two forwards per parameter entry): keep them narrow
        size = 2 if options.get("num_layers", 1) > 1 and options.get("bidirectional") else 3
        layer = build.layer(kind, D=size, H=size + ("proj_size" in options), rng=rng, fast=fast, **options)
    x = build.input(layer, N, T, rng)
    state = build.state(layer, N, rng) if with_state else None
    lengths = np.array([T, 2]) if with_lengths else None
    return layer, x, state, lengths


@pytest.mark.parametrize("path", ["fast", "readable"])
@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_gradients_match_central_differences(build, kind, name, path):
    """Both computation paths: the fused one of rnnlab.fast (the default) and the readable cells."""
    layer, x, state, lengths = _case(build, kind, name, seed=len(name) * 7 + len(kind), fast=path == "fast")
    errors = check_layer_gradients(layer, x, state, lengths)
    expected_keys = {"dx", *layer.params} | ({"h0"} if state is not None else set()) \
        | ({"c0"} if state is not None and kind == "LSTM" else set())
    assert set(errors) == expected_keys
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, f"{worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_gradients_with_a_fixed_mask(build, kind, fast):
    """In training mode with dropout the loss is smooth once the mask is fixed (the checker re-seeds layer.rng)."""
    rng = np.random.default_rng(5)
    layer = build.layer(kind, rng=rng, num_layers=2, dropout=0.4, fast=fast)
    x, state = build.input(layer, N, T, rng), build.state(layer, N, rng)
    errors = check_layer_gradients(layer, x, state, lengths=[T, 3])
    assert max(errors.values()) < TOL, errors
    # the mask really was applied: the same input in eval mode gives a different output
    layer.rng = np.random.default_rng(0)
    train_out, _ = layer.forward(x, state)
    eval_out, _ = layer.eval().forward(x, state)
    assert not np.allclose(train_out, eval_out)


def test_checker_catches_a_wrong_gradient_in_the_readable_path(build, monkeypatch):
    """A backward that is wrong by 1% in one gate must fail the check: the checker is not blind."""
    real = lstm_cell.step_backward

    def off_by_one_percent(dh, dc, cache, W_hh, W_hr=None):
        da, dh_prev, dc_prev, dm = real(dh, dc, cache, W_hh, W_hr)
        H = dc.shape[1]
        da[:, H:2 * H] *= 1.01          # the forget gate's pre-activation gradient
        return da, dh_prev, dc_prev, dm

    monkeypatch.setattr(lstm_cell, "step_backward", off_by_one_percent)
    rng = np.random.default_rng(3)
    layer = build.layer("LSTM", rng=rng, fast=False)
    layer.fast = False                  # the patched cell is on the readable path (rnnlab.fast bypasses it)
    x, state = build.input(layer, N, T, rng), build.state(layer, N, rng)
    errors = check_layer_gradients(layer, x, state)
    assert errors["weight_hh_l0"] > 1e-4
    assert max(errors.values()) > 1e-3


def test_checker_restores_parameters_and_leaves_the_analytic_gradients(build):
    rng = np.random.default_rng(4)
    layer = build.layer("GRU", rng=rng)
    before = layer.state_dict()
    x = build.input(layer, N, T, rng)
    check_layer_gradients(layer, x)
    for name, value in before.items():
        np.testing.assert_array_equal(layer.params[name], value)   # bit for bit
    assert all(np.abs(g).max() > 0 for g in layer.grads.values())


def test_checker_refuses_float32(build):
    layer = build.layer("RNN", dtype=np.float32)
    with pytest.raises(ValueError, match="layer: expected dtype float64"):
        check_layer_gradients(layer, np.zeros((1, 2, 3), np.float32))


def test_relative_error_definition():
    a = np.array([1.0, -2.0, 0.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    # max |a - n| / max(max|a|, max|n|) = 0.5 / 2
    assert relative_error(a, np.array([1.0, -2.0, 0.5])) == pytest.approx(0.5 / 2.0)
    assert relative_error(np.array([4.0, 0.0]), np.array([4.0, 1e-12])) == pytest.approx(2.5e-13)
    assert relative_error(np.array([1.0]), np.array([-1.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.zeros(2), np.zeros(3))


def test_checker_catches_a_wrong_gradient_in_the_fast_path(build, monkeypatch):
    real = fast_gru.backward

    def off_by_one_percent(*args):
        *rest, flush = args            # the fast backward hands dA to flush(lo, hi, dA, dA_hn) chunk by chunk

        def wrong_flush(lo, hi, dA, dA_hn):
            H = dA_hn.shape[-1]
            dA[..., H:2 * H] *= 1.01   # the update gate's pre-activation gradient
            flush(lo, hi, dA, dA_hn)
        return real(*rest, wrong_flush)

    monkeypatch.setattr(fast_gru, "backward", off_by_one_percent)
    rng = np.random.default_rng(3)
    layer = build.layer("GRU", rng=rng, fast=True)
    errors = check_layer_gradients(layer, build.input(layer, N, T, rng))
    assert errors["weight_ih_l0"] > 1e-4 and errors["dx"] > 1e-4
