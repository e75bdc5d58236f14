"""The layer API: shapes, parameters and their initialisation, state_dict, batch_first, lengths, dropout, gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnlab
from rnnlab.gradcheck import relative_error

torch = pytest.importorskip("torch")


# ---- shapes -------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["RNN", "LSTM", "GRU"]), N=st.integers(1, 3), T=st.integers(1, 4), D=st.integers(1, 3),
       H=st.integers(2, 4), layers=st.integers(1, 3), bidirectional=st.booleans(), batch_first=st.booleans(),
       proj=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_shapes_and_dtypes(build, kind, N, T, D, H, layers, bidirectional, batch_first, proj, dtype):
    opts = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    if kind == "LSTM" and proj:
        opts["proj_size"] = H - 1
    layer = build.layer(kind, D=D, H=H, dtype=dtype, **opts)
    H_out = opts.get("proj_size", H)
    dirs = 2 if bidirectional else 1
    x = build.input(layer, N, T, np.random.default_rng(0))
    out, state = layer.forward(x)
    assert out.shape == ((N, T, dirs * H_out) if batch_first else (T, N, dirs * H_out))
    states = state if kind == "LSTM" else (state,)
    assert states[0].shape == (layers * dirs, N, H_out)
    if kind == "LSTM":
        assert states[1].shape == (layers * dirs, N, H)
    dx, dstate = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape
    for s, d in zip(states, dstate if kind == "LSTM" else (dstate,)):
        assert d.shape == s.shape
    for a in (out, dx, *states, *layer.grads.values()):
        assert a.dtype == dtype


def test_float32_is_the_default():
    layer = rnnlab.LSTM(3, 4)
    assert layer.dtype == np.float32 and all(p.dtype == np.float32 for p in layer.params.values())
    out, (h, c) = layer.forward(np.ones((2, 3, 3)))          # float64 input is converted
    assert out.dtype == h.dtype == c.dtype == np.float32


# ---- parameters -----------------------------------------------------------------------------------
CONFIGS = [("RNN", {}), ("RNN", {"num_layers": 3, "bidirectional": True, "bias": False}),
           ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": 2}), ("LSTM", {"bias": False}),
           ("GRU", {"num_layers": 2, "bidirectional": True})]


@pytest.mark.parametrize("kind,opts", CONFIGS)
def test_parameter_names_shapes_and_order_match_torch(kind, opts):
    layer = getattr(rnnlab, kind)(3, 5, **opts)
    module = getattr(torch.nn, kind)(3, 5, **opts)
    assert list(layer.params) == [name for name, _ in module.named_parameters()]
    assert {k: v.shape for k, v in layer.params.items()} == {k: tuple(p.shape) for k, p in module.named_parameters()}
    assert list(layer.grads) == list(layer.params)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_initialisation_is_pytorchs_uniform(kind):
    """Every parameter ~ U(-1/sqrt(H), 1/sqrt(H)) (the LSTM's forget bias aside): in bounds and filling them."""
    H = 16
    layer = getattr(rnnlab, kind)(8, H, num_layers=2, seed=0, **({"forget_bias": None} if kind == "LSTM" else {}))
    bound = 1 / np.sqrt(H)
    values = np.concatenate([p.ravel() for p in layer.params.values()])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound                   # not a narrower distribution
    assert abs(values.mean()) < 0.05 * bound                     # centred
    assert abs(values.std() - bound / np.sqrt(3)) < 0.05 * bound  # uniform: std = bound / sqrt(3)


def test_seed_makes_initialisation_reproducible():
    a, b, c = rnnlab.GRU(3, 4, seed=7), rnnlab.GRU(3, 4, seed=7), rnnlab.GRU(3, 4, seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["weight_hh_l0"], c.params["weight_hh_l0"])


@pytest.mark.parametrize("forget_bias", [1.0, 5.0])
def test_forget_bias_sets_the_total_forget_gate_bias(forget_bias):
    H = 6
    kwargs = {} if forget_bias == 1.0 else {"forget_bias": forget_bias}     # 1.0 is the default
    layer = rnnlab.LSTM(3, H, num_layers=2, bidirectional=True, seed=0, **kwargs)
    for name in layer.params:
        if name.startswith("bias_ih"):
            total = layer.params[name] + layer.params[name.replace("bias_ih", "bias_hh")]
            np.testing.assert_array_equal(total[H:2 * H], forget_bias)
            bound = 1 / np.sqrt(H)
            others = np.concatenate([total[:H], total[2 * H:]])
            assert np.abs(others).max() <= 2 * bound and np.abs(others).max() > 0   # i, g, o stay uniform


def test_forget_bias_none_keeps_uniform_and_bias_false_has_no_biases():
    layer = rnnlab.LSTM(3, 6, seed=0, forget_bias=None)
    assert np.abs(layer.params["bias_ih_l0"][6:12]).max() <= 1 / np.sqrt(6)
    assert not any(k.startswith("bias") for k in rnnlab.LSTM(3, 6, bias=False).params)


def test_state_dict_returns_copies_and_load_keeps_the_arrays():
    layer = rnnlab.GRU(3, 4, seed=0)
    held = layer.params["weight_hh_l0"]                           # e.g. an optimiser holding a reference
    sd = layer.state_dict()
    sd["weight_hh_l0"] += 1.0
    assert not np.array_equal(layer.params["weight_hh_l0"], sd["weight_hh_l0"])   # a copy
    layer.load_state_dict({k: v.tolist() for k, v in sd.items()})                 # any array-likes
    assert layer.params["weight_hh_l0"] is held
    np.testing.assert_allclose(held, sd["weight_hh_l0"])
    assert held.dtype == np.float32


# ---- forward semantics -------------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_batch_first_false_is_the_transpose(build, kind, fast):
    rng = np.random.default_rng(1)
    a = build.layer(kind, rng=rng, num_layers=2, bidirectional=True, fast=fast)
    b = build.layer(kind, num_layers=2, bidirectional=True, batch_first=False, fast=fast)
    b.load_state_dict(a.state_dict())
    x = build.input(a, 2, 5, rng)
    state = build.state(a, 2, rng)
    out_a, final_a = a.forward(x, state, lengths=[5, 3])
    out_b, final_b = b.forward(x.transpose(1, 0, 2), state, lengths=[5, 3])
    np.testing.assert_array_equal(out_a, out_b.transpose(1, 0, 2))
    dout = rng.standard_normal(out_a.shape)
    dx_a, _ = a.backward(dout)
    dx_b, _ = b.backward(dout.transpose(1, 0, 2))
    np.testing.assert_allclose(dx_a, dx_b.transpose(1, 0, 2), rtol=0, atol=1e-15)
    for name in a.grads:
        np.testing.assert_allclose(a.grads[name], b.grads[name], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_lengths_equal_running_each_sequence_alone(build, kind, fast):
    """Padded steps output zeros and change nothing: each sequence's result is that of its own unpadded run."""
    rng = np.random.default_rng(2)
    layer = build.layer(kind, rng=rng, num_layers=2, bidirectional=True, fast=fast)
    N, T = 3, 6
    lengths = np.array([6, 2, 4])
    x = build.input(layer, N, T, rng)
    state = build.state(layer, N, rng)
    out, final = layer.forward(x, state, lengths)
    dout = rng.standard_normal(out.shape)
    dx, _ = layer.backward(dout)
    split = (lambda s, i: tuple(a[:, i:i + 1] for a in s)) if kind == "LSTM" else (lambda s, i: s[:, i:i + 1])
    for i, n in enumerate(lengths):
        out_i, final_i = layer.forward(x[i:i + 1, :n], split(state, i))
        np.testing.assert_allclose(out[i, :n], out_i[0], rtol=0, atol=1e-14)
        assert not out[i, n:].any()
        for f, f_i in zip(final if kind == "LSTM" else (final,), final_i if kind == "LSTM" else (final_i,)):
            np.testing.assert_allclose(f[:, i], f_i[:, 0], rtol=0, atol=1e-14)
        dx_i, _ = layer.backward(dout[i:i + 1, :n])
        np.testing.assert_allclose(dx[i, :n], dx_i[0], rtol=0, atol=1e-14)
        assert not dx[i, n:].any()                                  # padding gets no gradient


def test_forward_leaves_its_inputs_alone(build):
    rng = np.random.default_rng(3)
    layer = build.layer("LSTM", rng=rng, num_layers=2)
    x, (h, c) = build.input(layer, 2, 3, rng), build.state(layer, 2, rng)
    copies = [a.copy() for a in (x, h, c)]
    out, _ = layer.forward(x, (h, c))
    dout = np.ones_like(out)
    layer.backward(dout, (np.ones_like(h), np.ones_like(c)))
    for a, b in zip((x, h, c), copies):
        np.testing.assert_array_equal(a, b)
    assert (dout == 1).all()


# ---- gradients accumulate --------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "readable"])
def test_gradients_accumulate_until_zero_grad(build, fast):
    rng = np.random.default_rng(4)
    layer = build.layer("GRU", rng=rng, bidirectional=True, fast=fast)
    x = build.input(layer, 2, 4, rng)
    out, _ = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    layer.backward(dout)
    once = {k: g.copy() for k, g in layer.grads.items()}
    assert all(np.abs(g).max() > 0 for g in once.values())
    layer.backward(dout)                                        # backward of the same forward, again
    for k in once:
        np.testing.assert_allclose(layer.grads[k], 2 * once[k], rtol=1e-14, atol=0)
    held = layer.grads["weight_hh_l0"]
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())
    assert layer.grads["weight_hh_l0"] is held                  # zeroed in place
    layer.forward(x)
    layer.backward(dout)
    for k in once:
        np.testing.assert_array_equal(layer.grads[k], once[k])


# ---- dropout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_dropout_is_identity_in_eval_mode(build, kind):
    rng = np.random.default_rng(5)
    layer = build.layer(kind, rng=rng, num_layers=3, dropout=0.5)
    plain = build.layer(kind, num_layers=3)
    plain.load_state_dict(layer.state_dict())
    x = build.input(layer, 2, 4, rng)
    assert layer.eval() is layer and not layer.training
    np.testing.assert_array_equal(layer.forward(x)[0], plain.forward(x)[0])
    assert layer.train() is layer and layer.training
    train_a, train_b = layer.forward(x)[0], layer.forward(x)[0]
    assert not np.allclose(train_a, plain.forward(x)[0])
    assert not np.allclose(train_a, train_b)                    # a fresh mask on every call


def test_dropout_drops_a_fraction_p_between_layers_only():
    """Layer 2 made the identity on positive inputs shows layer 1's output after dropout: zeros at rate p, the rest / (1 - p)."""
    p, N, T, H = 0.3, 50, 20, 20
    layer = rnnlab.RNN(H, H, num_layers=2, nonlinearity="relu", dropout=p, dtype=np.float64, seed=0)
    rng = np.random.default_rng(6)
    layer.params["weight_ih_l0"][...] = rng.uniform(0, 0.1, (H, H))
    layer.params["weight_hh_l0"][...] = rng.uniform(0, 0.05, (H, H))
    layer.params["bias_ih_l0"][...] = 1.0                        # layer 1's outputs are all positive
    layer.params["bias_hh_l0"][...] = 0.0
    layer.params["weight_ih_l1"][...] = np.eye(H)                # layer 2: out = relu(input)
    for name in ("weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
        layer.params[name][...] = 0.0
    x = rng.uniform(0, 1, (N, T, H))
    first = rnnlab.RNN(H, H, nonlinearity="relu", dtype=np.float64)
    first.load_state_dict({k: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
    before, _ = first.forward(x)
    after, _ = layer.forward(x)
    dropped = after == 0
    assert (before > 0).all()
    assert abs(dropped.mean() - p) < 0.02                        # 20000 units: std of the rate is 0.003
    np.testing.assert_allclose(after[~dropped], before[~dropped] / (1 - p), rtol=1e-14)
    # no dropout after the last layer: a one-layer RNN with dropout gives the same output in train and eval
    single = rnnlab.RNN(H, H, dropout=p, seed=0)
    np.testing.assert_array_equal(single.forward(x)[0], single.eval().forward(x)[0])


def test_dropout_backward_uses_the_forward_mask(build):
    """dx in train mode is zero wherever no path avoids a dropped unit; compare against a same-mask finite difference."""
    rng = np.random.default_rng(7)
    layer = build.layer("LSTM", rng=rng, num_layers=2, dropout=0.5)
    x = build.input(layer, 2, 3, rng)
    layer.rng = np.random.default_rng(11)
    out, _ = layer.forward(x)
    w = rng.standard_normal(out.shape)
    dx, _ = layer.backward(w)
    eps = 1e-6
    i = (0, 1, 2)
    bumped = [x.copy(), x.copy()]
    bumped[0][i] += eps
    bumped[1][i] -= eps
    losses = []
    for xb in bumped:
        layer.rng = np.random.default_rng(11)                  # the same mask as the forward above
        losses.append(float(np.sum(layer.forward(xb)[0] * w)))
    assert relative_error(dx[i], (losses[0] - losses[1]) / (2 * eps)) < 1e-7


@pytest.mark.parametrize("cls", [rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_backward_sees_the_initial_state_the_forward_saw(cls, fast, training):
    """The caller's state arrays, changed in place between forward and backward, do not change
    the gradients: the layer keeps its own copy of the initial state (an eval-mode LSTM forward
    that kept no cache recomputes it from that copy)."""
    rng = np.random.default_rng(7)
    layer = cls(5, 16, dtype=np.float32, seed=3, batch_first=True).train(training)
    layer.fast = fast
    x = rng.standard_normal((9, 6, 5)).astype(np.float32)
    dout = rng.standard_normal((9, 6, 16)).astype(np.float32)

    def state():
        h = rng.standard_normal((1, 9, 16)).astype(np.float32)
        return (h, 0.5 * h) if cls is rnnlab.LSTM else h

    s = state()
    grads = []
    for change in (False, True):
        layer.zero_grad()
        given = tuple(a.copy() for a in s) if isinstance(s, tuple) else s.copy()
        layer.forward(x, given)
        if change:
            for a in (given if isinstance(given, tuple) else (given,)):
                a += 1.0
        dx, _ = layer.backward(dout)
        grads.append((dx, layer.grads["weight_hh_l0"].copy()))
    for a, b in zip(*grads):
        assert np.array_equal(a, b)
