"""``rnnlab check``: its table, its exit codes, and that it fails when the math is wrong."""
import subprocess
import sys

import numpy as np
import pytest

from rnnlab import cli
from rnnlab.cells import gru as gru_cell
from rnnlab.commands import check


def _run(capsys, *argv):
    code = cli.main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_quick_check_passes_and_prints_a_row_per_cell_and_check(capsys):
    pytest.importorskip("torch")
    code, out, _ = _run(capsys, "--quick", "--seed", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["cell", "check", "cases"]
    for cell in ("RNN", "LSTM", "GRU"):
        for name in ("gradient f64", "torch f64", "torch f32"):
            row = [line for line in lines if line.startswith(cell) and name in line]
            assert len(row) == 1 and row[0].rstrip().endswith("ok"), out
    assert "9 of 9 checks passed" in out


@pytest.fixture
def tiny(monkeypatch):
    """--quick runs only the one-layer default case: these tests are about the command, not the math."""
    monkeypatch.setattr(check, "QUICK", ("default",))


def test_no_torch_skips_parity(capsys, tiny):
    code, out, _ = _run(capsys, "--quick", "--no-torch")
    assert code == 0
    assert "torch f64" not in out and "gradient f64" in out and "parity skipped: --no-torch" in out


def test_without_torch_the_check_says_parity_was_skipped(capsys, monkeypatch, tiny):
    monkeypatch.setattr(check, "torch_available", lambda: False)
    code, out, _ = _run(capsys, "--quick")
    assert code == 0 and "torch f64" not in out and "torch is not installed" in out


def test_a_wrong_gradient_fails_the_check(capsys, monkeypatch, tiny):
    """Break the readable GRU's backward (reset gate off by 1%): its row fails, names the path, exit code 1."""
    real = gru_cell.step_backward

    def broken(dh, cache, W_hh):
        dxw, dhw, dh_prev = real(dh, cache, W_hh)
        H = dh.shape[1]
        dxw[:, :H] *= 1.01
        return dxw, dhw, dh_prev

    monkeypatch.setattr(gru_cell, "step_backward", broken)
    code, out, _ = _run(capsys, "--quick", "--no-torch")
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line[:3] in ("RNN", "LST", "GRU")}
    assert rows["GRU"].rstrip().endswith("FAIL") and "readable" in rows["GRU"]
    assert rows["LSTM"].rstrip().endswith("ok")


def test_the_check_rows_report_the_worst_case(tiny):
    rows = check.run_checks(quick=True, use_torch=False, seed=0, progress=False)
    assert [r[0] for r in rows] == ["RNN", "LSTM", "GRU"]
    for cell, name, n, err, where, tol, ok in rows:
        assert n == 2 and 0 < err < tol and ok and "(default, " in where      # 1 option x 2 paths


def test_every_case_has_random_non_zero_weights_and_biases():
    rng = np.random.default_rng(0)
    for cell in check.CELLS:
        for option in check.cases(cell, quick=False):
            layer, x, state, lengths = check.build_case(cell, option, np.float64, rng)
            values = np.concatenate([p.ravel() for p in layer.params.values()])
            assert np.abs(values).min() > 0 and np.abs(values).max() <= 0.5, (cell, option)
            assert abs(values.std() - 1 / np.sqrt(12)) < 0.05, (cell, option)      # U(-0.5, 0.5)
            assert any(k.startswith("bias") for k in layer.params) != (option == "bias=False")


def test_bad_seed_is_a_one_line_usage_error(capsys):
    code, out, err = _run(capsys, "--seed", "-1")
    assert code == 2 and err.startswith("rnnlab: error: --seed") and "Traceback" not in err


def test_help_explains_the_check():
    result = subprocess.run([sys.executable, "-m", "rnnlab", "check", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for part in ("--quick", "--no-torch", "--seed", "1e-7", "1e-9", "exit code"):
        assert part in result.stdout
