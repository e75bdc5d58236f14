"""Embedding, Linear, Dropout, Sequential and last_valid_step: float64 central-difference
gradient checks, parity with torch.nn on random non-zero weights, and bad inputs."""
import numpy as np
import pytest
import torch

from rnnlab import LSTM
from rnnlab.nn import Dropout, Embedding, Linear, Sequential, last_valid_step, last_valid_step_backward


def numerical_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of x (changed in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def check_module_grads(module, x, forward=None, tol=1e-8):
    """Loss = sum(w * module(x)) with random w; compare backward's dx and parameter grads with differences."""
    forward = forward or module.forward
    rng = np.random.default_rng(123)
    w = rng.standard_normal(forward(x).shape)
    loss = lambda: float((w * forward(x)).sum())
    module.zero_grad()
    forward(x)
    dx = module.backward(w)
    for name, p in module.params.items():
        num = numerical_grad(loss, p)
        assert np.abs(num - module.grads[name]).max() < tol, name
    if dx is not None:
        num = numerical_grad(loss, x)
        assert np.abs(num - dx).max() < tol
    return dx


# ---- gradient checks ---------------------------------------------------------------------
def test_linear_gradcheck_per_time_step():
    lin = Linear(5, 3, dtype=np.float64, seed=0)
    x = np.random.default_rng(1).standard_normal((2, 4, 5))
    dx = check_module_grads(lin, x)
    assert dx.shape == x.shape


def test_linear_without_bias_gradcheck():
    lin = Linear(3, 2, bias=False, dtype=np.float64, seed=0)
    assert list(lin.params) == ["weight"]
    check_module_grads(lin, np.random.default_rng(2).standard_normal((4, 3)))


def test_embedding_gradcheck_with_repeated_ids():
    emb = Embedding(6, 3, dtype=np.float64, seed=0)
    ids = np.array([[1, 1, 4], [5, 1, 0]])                 # id 1 three times: add.at must accumulate
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 3, 3))
    emb.forward(ids)
    assert emb.backward(w) is None
    num = numerical_grad(lambda: float((w * emb.forward(ids)).sum()), emb.params["weight"])
    assert np.abs(num - emb.grads["weight"]).max() < 1e-8
    assert np.abs(emb.grads["weight"][1] - (w[0, 0] + w[0, 1] + w[1, 1])).max() < 1e-12
    assert np.all(emb.grads["weight"][[2, 3]] == 0)


def test_embedding_backward_equals_scatter_add():
    """The sorted reduceat in backward computes exactly np.add.at's sums (up to summation order)."""
    rng = np.random.default_rng(11)
    emb = Embedding(13, 4, dtype=np.float64, seed=0)
    ids = rng.integers(0, 13, (16, 40))
    dy = rng.standard_normal((16, 40, 4))
    emb(ids)
    emb.backward(dy)
    emb.backward(dy)                                       # accumulates
    ref = np.zeros((13, 4))
    np.add.at(ref, ids.ravel(), dy.reshape(-1, 4))
    assert np.abs(emb.grads["weight"] - 2 * ref).max() < 1e-12


def test_dropout_gradcheck_with_fixed_mask():
    drop = Dropout(0.4, seed=0)
    x = np.random.default_rng(4).standard_normal((3, 5, 2))

    def forward(x):
        drop.rng = np.random.default_rng(7)                # the same mask at every call
        return drop.forward(x)

    dx = check_module_grads(drop, x, forward=forward)
    y = forward(x)
    kept = y != 0
    assert 0 < kept.mean() < 1
    assert np.allclose(y[kept], x[kept] / 0.6, rtol=0, atol=1e-15)
    assert np.allclose(dx[~kept], 0)


def test_sequential_gradcheck_and_views():
    seq = Sequential([("a", Linear(4, 6, dtype=np.float64, seed=0)),
                      ("drop", Dropout(0.0)),
                      ("b", Linear(6, 2, dtype=np.float64, seed=1))])
    assert list(seq.params) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    x = np.random.default_rng(5).standard_normal((3, 2, 4))
    check_module_grads(seq, x)
    # the dotted entries are the children's own arrays
    seq.params["b.bias"][...] = 7.0
    assert np.all(seq["b"].params["bias"] == 7.0)
    assert seq.grads["a.weight"] is seq["a"].grads["weight"]


def test_sequential_embedding_first_backward_returns_none():
    seq = Sequential(embed=Embedding(7, 3, dtype=np.float64, seed=0), head=Linear(3, 4, dtype=np.float64, seed=1))
    ids = np.array([[0, 3, 6], [2, 2, 1]])
    rng = np.random.default_rng(6)
    w = rng.standard_normal((2, 3, 4))
    seq.forward(ids)
    assert seq.backward(w) is None
    num = numerical_grad(lambda: float((w * seq.forward(ids)).sum()), seq.params["embed.weight"])
    assert np.abs(num - seq.grads["embed.weight"]).max() < 1e-8


def test_last_valid_step_and_backward():
    rng = np.random.default_rng(8)
    out = rng.standard_normal((3, 5, 2))
    lengths = np.array([5, 1, 3])
    last = last_valid_step(out, lengths)
    assert np.array_equal(last, np.stack([out[0, 4], out[1, 0], out[2, 2]]))
    w = rng.standard_normal(last.shape)
    dout = last_valid_step_backward(w, lengths, 5)
    num = numerical_grad(lambda: float((w * last_valid_step(out, lengths)).sum()), out)
    assert np.abs(num - dout).max() < 1e-8
    assert np.array_equal(last_valid_step(out), out[:, -1])
    with pytest.raises(ValueError, match="lengths"):
        last_valid_step(out, np.array([6, 1, 1]))


# ---- parity with torch.nn ------------------------------------------------------------------
def test_linear_matches_torch():
    lin = Linear(5, 3, dtype=np.float64, seed=0)
    ref = torch.nn.Linear(5, 3, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(lin.params["weight"]))
        ref.bias.copy_(torch.from_numpy(lin.params["bias"]))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 5))
    dy = rng.standard_normal((2, 4, 3))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = lin(x)
    dx = lin.backward(dy)
    assert np.abs(y - yt.detach().numpy()).max() < 1e-13
    assert np.abs(dx - xt.grad.numpy()).max() < 1e-13
    assert np.abs(lin.grads["weight"] - ref.weight.grad.numpy()).max() < 1e-13
    assert np.abs(lin.grads["bias"] - ref.bias.grad.numpy()).max() < 1e-13


def test_embedding_matches_torch():
    emb = Embedding(9, 4, dtype=np.float64, seed=0)
    ref = torch.nn.Embedding(9, 4, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(emb.params["weight"]))
    rng = np.random.default_rng(10)
    ids = rng.integers(0, 9, (3, 7))
    dy = rng.standard_normal((3, 7, 4))
    yt = ref(torch.from_numpy(ids))
    yt.backward(torch.from_numpy(dy))
    assert np.abs(emb(ids) - yt.detach().numpy()).max() == 0
    emb.backward(dy)
    assert np.abs(emb.grads["weight"] - ref.weight.grad.numpy()).max() < 1e-13


def test_initialisations_follow_pytorch():
    lin = Linear(100, 200, seed=0)
    bound = 1 / np.sqrt(100)
    w = lin.params["weight"]
    assert w.dtype == np.float32 and w.shape == (200, 100)
    assert -bound <= w.min() and w.max() <= bound and w.max() > 0.9 * bound and w.min() < -0.9 * bound
    emb = Embedding(300, 100, seed=0).params["weight"]
    assert abs(emb.mean()) < 0.02 and abs(emb.std() - 1) < 0.02      # N(0, 1): 30000 draws
    assert np.array_equal(Linear(3, 2, seed=5).params["weight"], Linear(3, 2, seed=5).params["weight"])


# ---- modes, state dicts, errors --------------------------------------------------------------
def test_dropout_identity_in_eval_and_train_eval_propagate():
    seq = Sequential(drop=Dropout(0.5, seed=0), head=Linear(3, 3, seed=0))
    x = np.ones((4, 3), np.float32)
    seq.eval()
    assert not seq["drop"].training and not seq["head"].training
    assert np.array_equal(seq["drop"](x), x)
    assert np.array_equal(seq["drop"].backward(x), x)
    seq.train()
    assert seq["drop"].training
    y = seq["drop"](np.ones((200, 50), np.float32))
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs((y == 0).mean() - 0.5) < 0.02


def test_state_dict_round_trip_and_checks():
    a = Sequential(embed=Embedding(5, 3, seed=0), head=Linear(3, 2, seed=1))
    b = Sequential(embed=Embedding(5, 3, seed=2), head=Linear(3, 2, seed=3))
    sd = a.state_dict()
    sd["head.bias"][...] = 0.5                   # a copy: a is untouched
    assert not np.all(a.params["head.bias"] == 0.5)
    b.load_state_dict(a.state_dict())
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])
    before = b.state_dict()
    bad = a.state_dict()
    bad["head.weight"] = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"head.weight: expected shape \(2, 3\), got \(2, 4\)"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing keys"):
        b.load_state_dict({"embed.weight": before["embed.weight"]})
    for k in before:                             # a failed load leaves everything as it was
        assert np.array_equal(before[k], b.params[k])
    lin = Linear(3, 2, seed=0)
    with pytest.raises(ValueError, match="unexpected keys"):
        lin.load_state_dict({**lin.state_dict(), "extra": np.zeros(1)})


def test_bad_inputs_name_the_argument():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"ids: expected ids in 0..4, got min 0 and max 5"):
        emb(np.array([0, 5]))
    with pytest.raises(ValueError, match="ids"):
        emb(np.array([-1]))
    with pytest.raises(TypeError, match="ids: expected integer"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="ids: expected integer"):
        emb(np.array([True]))
    with pytest.raises(ValueError, match="num_embeddings"):
        Embedding(0, 3)
    lin = Linear(4, 2)
    with pytest.raises(ValueError, match="x: expected 4 features"):
        lin(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="backward: called before forward"):
        Linear(2, 2).backward(np.zeros((1, 2)))
    lin(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"dout: expected shape \(3, 2\)"):
        lin.backward(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="p: expected"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="out_features"):
        Linear(3, -1)
    with pytest.raises(TypeError, match="dtype"):
        Linear(3, 2, dtype=np.int32)


def test_sequential_rejects_recurrent_layers_and_bad_names():
    seq = Sequential(rnn=LSTM(3, 4), head=Linear(4, 2))
    with pytest.raises(TypeError, match=r"returned a tuple.*by hand, as rnnlab\.charlm\.CharLM does"):
        seq(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="without '.'"):
        Sequential([("a.b", Linear(2, 2))])
    with pytest.raises(ValueError, match="duplicate"):
        Sequential([("a", Linear(2, 2)), ("a", Linear(2, 2))])
    with pytest.raises(TypeError, match="has no"):
        Sequential(a=object())
    with pytest.raises(ValueError, match="at least one"):
        Sequential()
    assert "rnn.weight_ih_l0" in seq.params      # its parameters still aggregate
