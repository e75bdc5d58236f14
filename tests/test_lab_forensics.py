"""Non-finite forensics: the reported place is the one an independent loop finds first."""
import json

import numpy as np
import pytest

from rnnlab import LSTM, RNN
from rnnlab.lab import forensics as F
from rnnlab.lab.diagnostics import recording
from rnnlab.lab.experiment import MemoryConfig, Model, train_run


def _exploding_relu(T=8):
    """ReLU RNN in float32 whose batch row 3 alone overflows: a spike at t=4, then W_hh = 1e10 I."""
    layer = RNN(3, 4, nonlinearity="relu", seed=0)
    layer.params["weight_ih_l0"][...] = 0.5
    layer.params["weight_hh_l0"][...] = 1e10 * np.eye(4)
    layer.params["bias_ih_l0"][...] = 0.0
    layer.params["bias_hh_l0"][...] = 0.0
    x = np.zeros((5, T, 3), np.float32)
    x[3, 4] = 1e30
    return layer, x


def test_first_nonfinite_activation_matches_a_plain_loop():
    layer, x = _exploding_relu()
    rep = F.first_nonfinite_activation(layer, x)
    # independent loop: h_t = relu(x_t W^T + h_{t-1} U^T), first non-finite (t, row)
    W, U = layer.params["weight_ih_l0"], layer.params["weight_hh_l0"]
    h = np.zeros((5, 4), np.float32)
    expected = None
    with np.errstate(all="ignore"):
        for t in range(x.shape[1]):
            h = np.maximum(x[:, t] @ W.T + h @ U.T, 0)
            if expected is None and not np.isfinite(h).all():
                expected = (t, int(np.argwhere(~np.isfinite(h))[0][0]))
    assert expected == (5, 3)          # 1.5e30 at t=4, times 1e10 overflows float32 (max 3.4e38) at t=5
    assert (rep["t"], rep["row"], rep["layer"], rep["direction"], rep["gate"]) == (*expected, 0, 0, "h")


def test_watch_finds_the_first_exploding_gradient_step_and_row():
    layer = RNN(2, 3, nonlinearity="relu", seed=0)
    layer.params["weight_ih_l0"][...] = 1.0
    layer.params["weight_hh_l0"][...] = 10 * np.eye(3)
    layer.params["bias_ih_l0"][...] = 0.0
    layer.params["bias_hh_l0"][...] = 0.0
    x = np.full((4, 6, 2), 1e-6, np.float32)
    out, _ = layer.forward(x)
    dout = np.zeros_like(out)
    dout[1, -1] = 1e38                     # only row 1 gets a gradient; x10 per step overflows at once
    watch = F.NonFiniteWatch()
    with np.errstate(all="ignore"), recording(layer, watch):
        layer.backward(dout)
    assert watch.first["gradient"] == "dh"
    assert (watch.first["t"], watch.first["row"]) == (4, 1)
    assert np.isinf(watch.first["value"])


def test_first_nonfinite_names_the_parameter_and_index():
    grads = {"a": np.zeros(3), "b": np.array([[0.0, 1.0], [np.nan, 2.0]]), "c": np.array([np.inf])}
    assert F.first_nonfinite(grads) == {"name": "b", "index": [1, 0], "value": pytest.approx(np.nan, nan_ok=True)}
    assert F.first_nonfinite({"a": np.ones(2)}) is None


def test_diverging_run_stops_reports_and_saves_a_reproducer(tmp_path):
    cfg = MemoryConfig(steps=5, eval_every=5, hidden=4, batch=4, eval_size=8, probe_size=4)
    model_holder = {}
    orig = Model.__init__

    def poisoned(self, *a, **k):            # an LSTM forget-gate bias of NaN poisons step 1
        orig(self, *a, **k)
        self.layer.params["bias_hh_l0"][5] = np.nan
        model_holder["m"] = self
    Model.__init__ = poisoned
    try:
        with np.errstate(all="ignore"):
            rec, model = train_run(cfg, "lstm", 6, seed=0, diagnostics=False, out=tmp_path)
    finally:
        Model.__init__ = orig
    assert rec["diverged_at_step"] == 1
    rep = rec["nonfinite"]
    assert rep["stage"] == "activation" and rep["gate"] == "f" and rep["t"] == 0 and rep["unit"] == 1
    meta, tensors = F.load_reproducer(rec["reproducer"])
    assert meta["seed"] == 0 and meta["step"] == 1
    assert "activation f became nan" in meta["summary"] and "t=0" in meta["summary"]
    assert np.isnan(tensors["param.bias_hh_l0"][5])
    assert tensors["batch.x"].shape == (4, 6, 2)
    json.loads((tmp_path / "nonfinite_lstm_T6_s0" / "nonfinite.json").read_text())
