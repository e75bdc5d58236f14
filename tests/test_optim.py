"""Optimizers, schedules and clipping against torch.optim / torch.nn.utils in float64,
step by step on the same gradients; exact resume from a state dict."""
import math

import numpy as np
import pytest
import torch

from rnnlab.optim import (SGD, Adagrad, Adam, AdamW, RMSprop, apply_schedule, clip_grad_norm, clip_grad_value,
                          constant, cosine_with_warmup, find_nonfinite, step_lr)

SHAPES = {"rnn.weight_ih_l0": (8, 3), "rnn.bias_ih_l0": (8,), "head.weight": (2, 4)}

CONFIGS = [
    (SGD, torch.optim.SGD, dict(lr=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adagrad, torch.optim.Adagrad, dict()),
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    (RMSprop, torch.optim.RMSprop, dict()),
    (RMSprop, torch.optim.RMSprop, dict(lr=0.003, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
    (Adam, torch.optim.Adam, dict()),
    (Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (AdamW, torch.optim.AdamW, dict()),
    (AdamW, torch.optim.AdamW, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1)),
]


def make_params(seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def gradients(params, rng):
    """Random gradients that also depend on the parameters (a quadratic pull), non-zero everywhere."""
    return {k: rng.standard_normal(p.shape) + 0.5 * p for k, p in params.items()}


def run_side_by_side(ours_cls, torch_cls, kwargs, steps=15):
    params = make_params(0)
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = ours_cls(params, **kwargs)
    topt = torch_cls(list(tparams.values()), **kwargs)
    rng = np.random.default_rng(1)
    worst = 0.0
    for step in range(steps):
        if step == 8:                             # a learning-rate change mid-run, as a schedule does
            opt.lr = opt.lr * 0.5
            topt.param_groups[0]["lr"] = opt.lr
        grads = gradients(params, rng)
        for k, t in tparams.items():
            t.grad = torch.from_numpy(grads[k].copy())
        opt.step(grads)
        topt.step()
        worst = max(worst, max(np.abs(params[k] - t.detach().numpy()).max() for k, t in tparams.items()))
    return worst, params


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", CONFIGS,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CONFIGS)])
def test_optimizer_matches_torch_step_by_step(ours_cls, torch_cls, kwargs):
    worst, params = run_side_by_side(ours_cls, torch_cls, kwargs)
    assert worst < 1e-12
    moved = max(np.abs(params[k] - make_params(0)[k]).max() for k in SHAPES)
    assert moved > 1e-3                           # the comparison is not between two unmoved copies


@pytest.mark.parametrize("ours_cls,torch_cls,kwargs", CONFIGS[2::2],
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CONFIGS[2::2])])
def test_resume_from_state_dict_is_bit_identical(ours_cls, torch_cls, kwargs, tmp_path):
    from safetensors.numpy import load_file, save_file
    straight = make_params(0)
    opt = ours_cls(straight, **kwargs)
    rng = np.random.default_rng(2)
    grad_seq = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(10)]
    for g in grad_seq:
        opt.step(g)

    first = make_params(0)
    opt1 = ours_cls(first, **kwargs)
    for g in grad_seq[:5]:
        opt1.step(g)
    save_file(opt1.state_dict(), str(tmp_path / "opt.safetensors"))
    save_file(first, str(tmp_path / "params.safetensors"))
    resumed = {k: v.copy() for k, v in load_file(str(tmp_path / "params.safetensors")).items()}
    opt2 = ours_cls(resumed, **{**kwargs, "lr": 123.0})          # lr comes back from the state
    opt2.load_state_dict(load_file(str(tmp_path / "opt.safetensors")))
    assert opt2.step_count == 5 and opt2.lr == opt1.lr
    for g in grad_seq[5:]:
        opt2.step(g)
    for k in SHAPES:
        assert np.array_equal(straight[k], resumed[k]), k


def test_state_dict_layout_and_checks():
    params = make_params(0)
    opt = Adam(params)
    sd = opt.state_dict()
    assert set(sd) == {f"{b}.{k}" for b in ("exp_avg", "exp_avg_sq") for k in SHAPES} | {"step", "lr"}
    assert sd["step"].shape == () and sd["step"].dtype == np.int64
    other = SGD(make_params(1), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict(sd)
    bad = dict(sd)
    bad["exp_avg.head.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"exp_avg.head.weight: expected shape \(2, 4\)"):
        opt.load_state_dict(bad)


def test_step_updates_in_place_and_leaves_grads_alone():
    params = make_params(0)
    arrays = dict(params)
    grads = {k: np.ones(s) for k, s in SHAPES.items()}
    SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1).step(grads)
    for k in SHAPES:
        assert params[k] is arrays[k]
        assert np.all(grads[k] == 1)


def test_float32_parameters_stay_float32():
    p = {"w": np.ones((2, 2), np.float32)}
    opt = Adam(p, lr=0.1)
    opt.step({"w": np.ones((2, 2))})
    assert p["w"].dtype == np.float32 and np.all(p["w"] < 1)
    assert opt.state_dict()["exp_avg.w"].dtype == np.float32


def test_optimizer_errors():
    p = make_params(0)
    with pytest.raises(ValueError, match="lr: expected"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"betas\[1\]"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="params"):
        Adam([np.zeros(2)])
    with pytest.raises(TypeError, match=r"params\['w'\]: expected a float ndarray"):
        Adam({"w": [1.0, 2.0]})
    opt = Adam(p)
    with pytest.raises(ValueError, match="grads: expected a dict with the parameters' names"):
        opt.step({"head.weight": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"grads\['head.weight'\]: expected shape \(2, 4\)"):
        opt.step({k: np.zeros(s if k != "head.weight" else (4, 2)) for k, s in SHAPES.items()})
    with pytest.raises(ValueError, match="lr"):
        opt.lr = float("nan")


# ---- schedules --------------------------------------------------------------------------
def test_step_lr_matches_torch():
    base = 0.5
    w = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([w], lr=base)
    sched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.7)
    ours = step_lr(3, 0.7)
    opt = SGD({"w": np.zeros(1)}, lr=base)
    for step in range(12):
        assert abs(apply_schedule(opt, base, ours, step) - topt.param_groups[0]["lr"]) < 1e-15
        topt.step()
        sched.step()


def test_cosine_with_warmup_by_hand_and_against_torch():
    f = cosine_with_warmup(10, 110, min_factor=0.1)
    # warm-up (step + 1) / 10; cosine from 1 at step 10 to 0.1 at step 110; midpoint 0.1 + 0.9 * 0.5
    assert f(0) == pytest.approx(0.1, abs=1e-15)
    assert f(4) == pytest.approx(0.5, abs=1e-15)
    assert f(9) == pytest.approx(1.0, abs=1e-15)
    assert f(10) == pytest.approx(1.0, abs=1e-15)
    assert f(60) == pytest.approx(0.55, abs=1e-15)
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    assert f(110) == pytest.approx(0.1, abs=1e-15) and f(500) == 0.1
    # after warm-up it is torch's CosineAnnealingLR with T_max = 100, eta_min = 0.1 * base
    base = 0.2
    w = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([w], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=100, eta_min=0.1 * base)
    for t in range(101):
        assert abs(base * f(10 + t) - topt.param_groups[0]["lr"]) < 1e-12
        topt.step()
        sched.step()
    assert constant()(0) == 1.0 and constant()(10 ** 6) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        cosine_with_warmup(10, 10)
    with pytest.raises(ValueError, match="step"):
        f(-1)


# ---- clipping ------------------------------------------------------------------------------
@pytest.mark.parametrize("max_norm", [0.5, 1e3])        # clipping and not clipping
def test_clip_grad_norm_matches_torch(max_norm):
    rng = np.random.default_rng(3)
    grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    ts = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES.values()]
    for t, g in zip(ts, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    ref = torch.nn.utils.clip_grad_norm_(ts, max_norm).item()
    total = clip_grad_norm(grads, max_norm)
    assert abs(total - ref) < 1e-12
    for t, g in zip(ts, grads.values()):
        assert np.abs(g - t.grad.numpy()).max() < 1e-15
    if max_norm < ref:
        assert math.sqrt(sum((g ** 2).sum() for g in grads.values())) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_value_matches_torch():
    rng = np.random.default_rng(4)
    grads = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    ts = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES.values()]
    for t, g in zip(ts, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_(ts, 0.3)
    clip_grad_value(grads, 0.3)
    for t, g in zip(ts, grads.values()):
        assert np.array_equal(g, t.grad.numpy())
    assert max(np.abs(g).max() for g in grads.values()) == 0.3


def test_find_nonfinite_and_clipping_leaves_nonfinite_alone():
    grads = {"a": np.ones(3), "b": np.array([1.0, np.inf]), "c": np.array([np.nan])}
    assert find_nonfinite(grads) == "b"
    assert find_nonfinite({"a": np.ones(2)}) is None
    before = {k: v.copy() for k, v in grads.items()}
    assert not math.isfinite(clip_grad_norm(grads, 1.0))
    for k in grads:
        assert np.array_equal(grads[k], before[k], equal_nan=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, -1)
