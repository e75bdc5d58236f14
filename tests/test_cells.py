"""The pure one-step cells: equations against PyTorch's cells, backward against central differences, purity."""
import numpy as np
import pytest

from rnnlab._conventions import sigmoid
from rnnlab.cells import gru, lstm, rnn
from rnnlab.gradcheck import relative_error

torch = pytest.importorskip("torch")

N, D, H, P = 3, 4, 5, 2


def _weights(rng, G, H_in):
    u = lambda *s: rng.uniform(-0.5, 0.5, s)
    return u(G, D), u(G, H_in), u(G), u(G)        # W_ih, W_hh, b_ih, b_hh


def _step(kind, xw, h, c, W_hh, b_hh, W_hr=None, nonlinearity="tanh"):
    """(new state arrays, cache) of one cell, whatever its state structure."""
    if kind == "lstm":
        h, c, cache = lstm.step_forward(xw, h, c, W_hh, b_hh, W_hr)
        return [h, c], cache
    if kind == "gru":
        h, cache = gru.step_forward(xw, h, W_hh, b_hh)
        return [h], cache
    h, cache = rnn.step_forward(xw, h, W_hh, b_hh, nonlinearity)
    return [h], cache


CELLS = [("rnn", "tanh", 0), ("rnn", "relu", 0), ("lstm", None, 0), ("lstm", None, P), ("gru", None, 0)]
IDS = ["rnn-tanh", "rnn-relu", "lstm", "lstm-proj", "gru"]


def _problem(kind, proj, seed):
    rng = np.random.default_rng(seed)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind] * H
    H_out = proj or H
    W_ih, W_hh, b_ih, b_hh = _weights(rng, G, H_out)
    W_hr = rng.uniform(-0.5, 0.5, (P, H)) if proj else None
    x = rng.standard_normal((N, D))
    h = rng.standard_normal((N, H_out))
    c = rng.standard_normal((N, H)) if kind == "lstm" else None
    return x, h, c, W_ih, W_hh, b_ih, b_hh, W_hr


@pytest.mark.parametrize("kind,nonlinearity,proj", CELLS, ids=IDS)
def test_step_forward_matches_torch_cell(kind, nonlinearity, proj):
    x, h, c, W_ih, W_hh, b_ih, b_hh, W_hr = _problem(kind, proj, seed=1)
    xw = x @ W_ih.T + b_ih
    new, _ = _step(kind, xw, h, c, W_hh, b_hh, W_hr, nonlinearity)
    t = lambda a: torch.from_numpy(a)
    if kind == "lstm":
        # torch has no projected LSTMCell: one step of nn.LSTM is the same function
        m = torch.nn.LSTM(D, H, proj_size=proj).double()
        sd = {"weight_ih_l0": W_ih, "weight_hh_l0": W_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
        if proj:
            sd["weight_hr_l0"] = W_hr
        m.load_state_dict({k: t(v) for k, v in sd.items()})
        _, (h_t, c_t) = m(t(x)[None], (t(h)[None], t(c)[None]))
        expected = [h_t[0], c_t[0]]
    else:
        cell = (torch.nn.GRUCell(D, H) if kind == "gru" else torch.nn.RNNCell(D, H, nonlinearity=nonlinearity)).double()
        cell.load_state_dict({"weight_ih": t(W_ih), "weight_hh": t(W_hh), "bias_ih": t(b_ih), "bias_hh": t(b_hh)})
        expected = [cell(t(x), t(h))]
    for a, b in zip(new, expected):
        assert relative_error(a, b.detach().numpy()) < 1e-14


@pytest.mark.parametrize("kind,nonlinearity,proj", CELLS, ids=IDS)
def test_step_backward_matches_central_differences(kind, nonlinearity, proj):
    """step_backward's gradients of xw, h_prev (and c_prev) for the loss sum(h * R) [+ sum(c * S)]."""
    x, h, c, W_ih, W_hh, b_ih, b_hh, W_hr = _problem(kind, proj, seed=2)
    rng = np.random.default_rng(3)
    xw = x @ W_ih.T + b_ih
    new, cache = _step(kind, xw, h, c, W_hh, b_hh, W_hr, nonlinearity)
    weights = [rng.standard_normal(a.shape) for a in new]

    def loss():
        out, _ = _step(kind, xw, h, c, W_hh, b_hh, W_hr, nonlinearity)
        return sum(float(np.sum(a * w)) for a, w in zip(out, weights))

    if kind == "lstm":
        da, dh_prev, dc_prev, _ = lstm.step_backward(weights[0], weights[1], cache, W_hh, W_hr)
        analytic = {"xw": da, "h_prev": dh_prev, "c_prev": dc_prev}
    elif kind == "gru":
        dxw, _, dh_prev = gru.step_backward(weights[0], cache, W_hh)
        analytic = {"xw": dxw, "h_prev": dh_prev}
    else:
        da, dh_prev = rnn.step_backward(weights[0], cache, W_hh)
        analytic = {"xw": da, "h_prev": dh_prev}
    arrays = {"xw": xw, "h_prev": h, "c_prev": c}
    eps = 1e-6
    for name, grad in analytic.items():
        arr, numeric = arrays[name], np.empty_like(arrays[name])
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            up = loss()
            arr[i] = old - eps
            down = loss()
            arr[i] = old
            numeric[i] = (up - down) / (2 * eps)
        assert relative_error(grad, numeric) < 1e-8, name


@pytest.mark.parametrize("kind,nonlinearity,proj", CELLS, ids=IDS)
def test_cells_are_pure(kind, nonlinearity, proj):
    """Neither step changes its inputs, and the same inputs give the same outputs."""
    x, h, c, W_ih, W_hh, b_ih, b_hh, W_hr = _problem(kind, proj, seed=4)
    xw = x @ W_ih.T + b_ih
    inputs = [a for a in (xw, h, c, W_hh, b_hh, W_hr) if a is not None]
    copies = [a.copy() for a in inputs]
    first, cache = _step(kind, xw, h, c, W_hh, b_hh, W_hr, nonlinearity)
    second, _ = _step(kind, xw, h, c, W_hh, b_hh, W_hr, nonlinearity)
    dh = np.ones_like(first[0])
    if kind == "lstm":
        lstm.step_backward(dh, np.ones_like(first[1]), cache, W_hh, W_hr)
    elif kind == "gru":
        gru.step_backward(dh, cache, W_hh)
    else:
        rnn.step_backward(dh, cache, W_hh)
    for a, b in zip(inputs, copies):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_sigmoid_is_stable_and_exact():
    x = np.array([-1000.0, -30.0, -1.0, 0.0, 2.0, 1000.0])
    with np.errstate(all="raise"):
        s = sigmoid(x)
        s32 = sigmoid(x.astype(np.float32))
    # absolute, not relative: 0.5 * (1 + tanh(x / 2)) cancels for very negative x (sigmoid(-30) is off by
    # 2e-4 relative but 1.6e-17 absolute); a gate value is only ever good to an ulp of 1 (1.1e-16) anyway
    np.testing.assert_allclose(s[1:-1], 1 / (1 + np.exp(-x[1:-1])), rtol=0, atol=4e-16)
    assert s[0] == 0.0 and s[-1] == 1.0 and s32.dtype == np.float32
