"""The trainer: reproducibility, bit-identical resume, metrics, early stopping, divergence."""
import json
import math

import numpy as np
import pytest

from rnnlab.charlm import CharLM, CharLMConfig
from rnnlab.train import Diverged, Streams, Tally, TrainConfig, Trainer, load_run
from rnnlab.train.checkpoint import load_checkpoint

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n") * 4
CHARS = sorted(set(TEXT))


def encode(text):
    return np.array([CHARS.index(c) for c in text])


def make_trainer(run_dir, seed=0, dropout=0.25, lr=1e-2, **train):
    model = CharLM(CharLMConfig(vocab_size=len(CHARS), hidden_size=16, embed_dim=8, num_layers=2,
                                dropout=dropout, seed=seed))
    cut = int(len(TEXT) * 0.9)
    docs = [encode(TEXT[:cut // 2]), encode(TEXT[cut // 2:cut])]          # two documents: resets happen
    cfg = TrainConfig(seq_len=12, bptt=train.pop("bptt", 8), batch=3, lr=lr, eval_every=train.pop("eval_every", 4),
                      **train)
    return Trainer(model, Streams(docs, 3, 12), Streams([encode(TEXT[cut:])], 2, 12, drop_remainder=False),
                   cfg, run_dir, {"kind": "test", "model": {}}, quiet=True)


def params(trainer):
    return {k: v.copy() for k, v in trainer.model.params.items()}


def test_the_same_seed_gives_the_same_run(tmp_path):
    a = make_trainer(tmp_path / "a")
    b = make_trainer(tmp_path / "b")
    a.fit(steps=10)
    b.fit(steps=10)
    pa, pb = params(a), params(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    c = make_trainer(tmp_path / "c", seed=1)
    c.fit(steps=10)
    assert not np.array_equal(params(c)["head.weight"], pa["head.weight"])


@pytest.mark.parametrize("eval_every", [5, 3])
def test_resume_is_bit_identical_to_one_uninterrupted_run(tmp_path, eval_every):
    """N steps, then a new process-like Trainer resumed from disk to 2N == 2N straight steps (dropout on)."""
    straight = make_trainer(tmp_path / "straight", eval_every=eval_every)
    straight.fit(steps=20)

    first = make_trainer(tmp_path / "resumed", eval_every=eval_every)
    first.fit(steps=10)
    del first
    second = make_trainer(tmp_path / "resumed", seed=0, eval_every=eval_every)
    tensors, meta = load_run(tmp_path / "resumed", "test")
    second.restore(tensors, meta)
    assert second.step == 10
    second.fit(steps=20)
    ps, pr = params(straight), params(second)
    for k in ps:
        assert np.array_equal(ps[k], pr[k]), k
    opt_s, opt_r = straight.optimizer.state_dict(), second.optimizer.state_dict()
    assert all(np.array_equal(opt_s[k], opt_r[k]) for k in opt_s)


def test_metrics_jsonl_has_one_line_per_evaluation(tmp_path):
    t = make_trainer(tmp_path / "run", eval_every=4)
    t.fit(steps=10)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 10]          # every 4 steps, and at the end
    for r in lines:
        assert {"step", "train_loss", "val_loss", "val_bpc", "val_ppl", "val_acc"} <= r.keys()
        assert math.isclose(r["val_bpc"], r["val_loss"] / math.log(2))
        assert math.isclose(r["val_ppl"], math.exp(r["val_loss"]))
    assert lines[-1]["val_loss"] < math.log(len(CHARS))      # better than uniform guessing
    _, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 10


def test_tally_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 5, 4))
    y = rng.integers(0, 4, (2, 5))
    y[1, 3] = -100
    t = Tally()
    t.add(z, y)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    keep = y != -100
    nll = -np.log(p[keep, y[keep]])
    s = t.summary()
    assert s["chars"] == 9
    assert math.isclose(s["loss"], nll.mean(), rel_tol=1e-12)
    assert math.isclose(s["bpc"], nll.mean() / math.log(2), rel_tol=1e-12)
    assert math.isclose(s["acc"], (z.argmax(-1) == y)[keep].mean())


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path):
    t = make_trainer(tmp_path / "run", lr=1e-12, dropout=0.0, eval_every=1, patience=2)   # lr too small to move
    result = t.fit(steps=50)
    assert result["step"] == 3 and result["stop"].startswith("early stop")
    assert result["best_step"] == 1


def test_a_time_budget_stops_the_run_and_saves(tmp_path):
    t = make_trainer(tmp_path / "run", eval_every=1000)
    result = t.fit(time_budget=0.5)
    assert result["step"] >= 1 and "time budget" in result["stop"]
    _, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == result["step"]


def test_a_nonfinite_gradient_stops_the_run_naming_parameter_and_step(tmp_path):
    t = make_trainer(tmp_path / "run", eval_every=2)
    backward = t.model.backward
    calls = []

    def poisoned(dlogits, dstate=None):
        out = backward(dlogits, dstate)
        calls.append(1)
        if len(calls) == 5:                                  # the 5th step
            t.model.grads["rnn.weight_hh_l1"][0, 0] = np.nan
        return out

    t.model.backward = poisoned
    with pytest.raises(Diverged) as e:
        t.fit(steps=10)
    msg = str(e.value)
    assert "step 5" in msg and "rnn.weight_hh_l1" in msg and "step 4" in msg and "\n" not in msg
    tensors, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 4                                 # the last good checkpoint is kept
    assert all(np.isfinite(v).all() for v in tensors.values())
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [2, 4]


def test_a_nonfinite_gradient_refused_inside_backward_stops_the_run_too(tmp_path):
    """A layer's backward refuses a non-finite dout (NonFiniteError) before the trainer sees the
    gradients: that is the same divergence, reported with the step and the checkpoint kept, not
    a bare input error. (Which of the two a diverging run hits first depends on rounding.)"""
    t = make_trainer(tmp_path / "run", eval_every=2)
    backward = t.model.rnn.backward
    calls = []

    def poisoned(dout, dstate=None):
        calls.append(1)
        if len(calls) == 5:                                  # the 5th step
            dout = dout.copy()
            dout[0, 0, 0] = np.inf
        return backward(dout, dstate)

    t.model.rnn.backward = poisoned
    with pytest.raises(Diverged) as e:
        t.fit(steps=10)
    msg = str(e.value)
    assert "step 5" in msg and "not finite" in msg and "dout" in msg and "step 4" in msg and "\n" not in msg
    _, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 4


def test_gradients_are_clipped_to_the_global_norm(tmp_path, monkeypatch):
    t = make_trainer(tmp_path / "run", clip=1e-3)
    seen = []
    step = t.optimizer.step

    def spy(grads):
        seen.append(math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values())))
        step(grads)

    monkeypatch.setattr(t.optimizer, "step", spy)
    t.fit(steps=3)
    assert len(seen) == 3 and max(seen) <= 1e-3 * (1 + 1e-4)


def test_bad_training_config_is_refused():
    from rnnlab.errors import UsageError
    for bad in [dict(seq_len=0), dict(batch=-1), dict(bptt=200), dict(lr=0.0), dict(optimizer="lbfgs"),
                dict(val_fraction=1.0), dict(schedule="cosine", schedule_steps=0), dict(clip_value=-1.0),
                dict(clip_value=float("nan"))]:
        with pytest.raises(UsageError):
            TrainConfig(**bad).validate()


def spy_on_steps(t, monkeypatch):
    """The gradients each optimizer step receives (copies), for a trainer whose loss gradient is scaled by 1e6."""
    backward = t.model.backward
    monkeypatch.setattr(t.model, "backward", lambda dlogits, dstate=None: backward(dlogits * 1e6, dstate))
    seen = []
    step = t.optimizer.step

    def spy(grads):
        seen.append({k: g.astype(np.float64) for k, g in grads.items()})
        step(grads)

    monkeypatch.setattr(t.optimizer, "step", spy)
    return seen


def test_gradients_are_clipped_by_value_before_the_global_norm(tmp_path, monkeypatch):
    # norm clipping off (1e30): every entry of every gradient is cut to [-0.5, 0.5], and some reach it
    t = make_trainer(tmp_path / "value", clip_value=0.5, clip=1e30)
    seen = spy_on_steps(t, monkeypatch)
    t.fit(steps=3)
    assert len(seen) == 3
    for grads in seen:
        assert all(np.abs(g).max() <= 0.5 for g in grads.values())
        assert max(np.abs(g).max() for g in grads.values()) == 0.5
    assert t.config.to_dict()["clip_value"] == 0.5

    # both: the value clip runs first, so the norm clip then scales the result to exactly norm 2
    # (the other order would leave the norm below 2 wherever the value clip cut an entry)
    t = make_trainer(tmp_path / "both", clip_value=0.5, clip=2.0)
    seen = spy_on_steps(t, monkeypatch)
    t.fit(steps=3)
    for grads in seen:
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
        assert math.isclose(norm, 2.0, rel_tol=1e-4)
        assert all(np.abs(g).max() <= 0.5 for g in grads.values())
