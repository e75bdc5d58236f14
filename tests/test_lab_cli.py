"""'rnnlab experiment memory', 'diagnose' and 'report': outputs, and bad input as one line with exit 2."""
import json

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.lab import memory_tasks as tasks
from rnnlab.lab.experiment import Model


@pytest.mark.parametrize("argv, needle", [
    (["experiment", "memory", "--task", "sorting"], "--task"),
    (["experiment", "memory", "--cells", "rnn,transformer"], "--cells"),
    (["experiment", "memory", "--lengths", "10,-5"], "--lengths"),
    (["experiment", "memory", "--lengths", "10,abc"], "--lengths"),
    (["experiment", "memory", "--lengths", "0"], "--lengths"),
    (["experiment", "memory", "--lengths", "2.5"], "--lengths"),
    (["experiment", "memory", "--hidden", "0"], "--hidden"),
    (["diagnose", "NOWHERE"], "RUN"),
    (["report", "NOWHERE"], "RUN"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "o")] if argv[0] == "experiment" else [])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_run_folder_without_a_model_is_one_line(tmp_path, capsys):
    for cmd in ("diagnose", "report"):
        assert main([cmd, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "model.safetensors" in err


def test_adding_problem_and_its_baseline():
    x, y = tasks.adding_batch(np.random.default_rng(0), 20000, 30)
    assert x.shape == (20000, 30, 2) and y.shape == (20000, 1)
    m = x[:, :, 1]
    assert np.all(m.sum(axis=1) == 2)
    assert np.all(m[:, :15].sum(axis=1) == 1)               # one marker in each half
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * m).sum(axis=1))
    assert np.mean((y - 1.0) ** 2) == pytest.approx(tasks.spec("adding").baseline, rel=0.03)


def test_copy_task_layout_and_memoryless_baseline():
    x, y = tasks.copy_batch(np.random.default_rng(0), 5, 12)
    K, A = tasks.COPY_K, tasks.COPY_SYMBOLS
    ids = x.argmax(axis=2)
    assert x.shape == (5, 12 + 2 * K, A + 2)
    np.testing.assert_array_equal(ids[:, :K], y)
    assert np.all(ids[:, K + 11] == A + 1) and np.all(ids[:, K:K + 11] == A) and np.all(ids[:, -K:] == A)
    # a memoryless model predicts the uniform distribution: its cross-entropy is exactly the baseline
    model = Model("copy", "gru", 4, seed=0)
    uniform = np.zeros((5, K, A))
    assert model.task_loss(uniform, y)[0] == pytest.approx(tasks.spec("copy").baseline)


def test_digits_rows_as_steps():
    xtr, ytr, xte, yte = tasks.load_digits_split(0)
    assert xtr.shape[1:] == (8, 8) and len(xtr) + len(xte) == 1797
    assert 0 <= xtr.min() and xtr.max() <= 1
    assert 0.05 < tasks.majority_baseline(ytr, yte) < 0.2


@pytest.mark.parametrize("task, T", [("adding", 6), ("copy", 3), ("digits", 8)])
def test_model_gradients_match_central_differences(task, T):
    """The experiment's model (layer + head + task loss) in float64 against central differences."""
    model = Model(task, "lstm", 3, seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    if task == "adding":
        x, y = tasks.adding_batch(rng, 3, T)
    elif task == "copy":
        x, y = tasks.copy_batch(rng, 3, T)
    else:
        x, y = rng.random((3, 8, 8)), rng.integers(0, 10, 3)
    model.loss(x, y)
    analytic = {k: g.copy() for k, g in model.grads.items()}
    eps = 1e-6
    for name in ("head.weight", "weight_hh_l0", "bias_ih_l0"):
        p = model.params[name]
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p[idx]
            p[idx] = old + eps
            lp = model.loss(x, y)
            p[idx] = old - eps
            lm = model.loss(x, y)
            p[idx] = old
            assert analytic[name][idx] == pytest.approx((lp - lm) / (2 * eps), rel=1e-5, abs=1e-9), (name, idx)


def test_chrono_init_spreads_forget_time_scales_and_shuts_the_input_gate():
    model = Model("adding", "lstm", 16, seed=0, chrono_T=200)
    p, H = model.layer.params, 16
    b_f = p["bias_ih_l0"][H:2 * H] + p["bias_hh_l0"][H:2 * H]
    b_i = p["bias_ih_l0"][:H] + p["bias_hh_l0"][:H]
    assert np.all(b_f >= 0) and np.all(b_f <= np.log(199) + 1e-6) and b_f.std() > 0.3
    np.testing.assert_array_equal(b_i, -b_f)
    plain = Model("adding", "lstm", 16, seed=0)
    assert not np.allclose(plain.layer.params["bias_ih_l0"][H:2 * H], b_f)
