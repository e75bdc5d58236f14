"""The HTML reports open in headless Chromium with every figure decoded and a silent console.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it). Without it this test
fails, except locally when RNNLAB_SKIP_BROWSER=1 is set (never in CI, where CI=true).
Screenshots are kept in tests/artifacts/ (ignored by git).
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rnnlab.cli import main

ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("RNNLAB_SKIP_BROWSER") and not os.environ.get("CI"):
            pytest.skip("chromium not installed and RNNLAB_SKIP_BROWSER is set")
        pytest.fail("chromium not found: install Debian's chromium (.ci/run does), "
                    "or set RNNLAB_SKIP_BROWSER=1 to skip locally")
    return exe


def open_page(html_path, tmp_path, screenshot=None):
    """(images, loaded, console lines) of ``html_path`` in headless Chromium; optionally a screenshot."""
    exe = _chromium()
    uri = Path(html_path).resolve().as_uri()
    profile = tmp_path / f"profile-{Path(html_path).stem}-{len(list(tmp_path.iterdir()))}"
    r = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=5000", "--dump-dom", uri],
                       capture_output=True, text=True, timeout=90)
    m = re.search(r'id="image-check" data-images="(\d+)" data-loaded="(\d+)"', r.stdout)
    images, loaded = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}-shot", f"--screenshot={screenshot}",
                        "--window-size=1200,2400", uri], capture_output=True, timeout=90)
    return images, loaded, console


@pytest.fixture(scope="module")
def memory_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mem") / "exp"
    assert main(["experiment", "memory", "--lengths", "5,7", "--cells", "rnn,gru", "--init", "identity",
                 "--steps", "6", "--hidden", "4", "--seeds", "2", "--workers", "2", "--out", str(out)]) == 0
    return out


def test_memory_experiment_writes_records_figures_and_report(memory_dir):
    recs = json.loads((memory_dir / "results.json").read_text())
    assert len(recs) == 2 * 2 * 2
    assert {(r["cell"], r["length"], r["seed"]) for r in recs} == \
        {(c, T, s) for c in ("irnn", "gru") for T in (5, 7) for s in (0, 1)}
    for r in recs:
        for key in ("task", "cell", "length", "seed", "metric", "value", "baseline", "solved",
                    "horizon_init", "horizon_final"):
            assert key in r
        assert r["metric"] == "mse" and r["baseline"] == pytest.approx(1 / 6)
        assert r["solved"] == (r["value"] < 0.01)
        assert len(r["horizon_init"]) == r["length"]
    assert (memory_dir / "report.html").exists() and (memory_dir / "curves.png").exists()
    # nothing the user had is overwritten
    before = (memory_dir / "results.json").read_bytes()
    assert main(["experiment", "memory", "--steps", "1", "--out", str(memory_dir)]) == 2
    assert (memory_dir / "results.json").read_bytes() == before


@pytest.fixture(scope="module")
def charlm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("charlm")
    text = d / "text.txt"
    text.write_text(("To be, or not to be, that is the question:\n"
                     "Whether 'tis nobler in the mind to suffer\n") * 20)
    run = d / "run"
    assert main(["train", "charlm", "--text", str(text), "--steps", "6", "--hidden", "8", "--seq-len", "16",
                 "--batch", "2", "--eval-every", "3", "--out", str(run), "--quiet"]) == 0
    return run


def test_memory_report_loads_every_figure_without_console_errors(memory_dir, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "memory_report.png"
    images, loaded, console = open_page(memory_dir / "report.html", tmp_path, screenshot=shot)
    assert images is not None and images >= 4
    assert loaded == images
    assert console == []
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_run_report_of_a_character_model(charlm_run, tmp_path, capsys):
    assert main(["report", str(charlm_run)]) == 0
    html_text = (charlm_run / "report.html").read_text()
    assert "<span style=\"background: rgba(" in html_text     # the text coloured by a unit
    assert "http://" not in html_text and "https://" not in html_text   # self-contained
    ARTIFACTS.mkdir(exist_ok=True)
    images, loaded, console = open_page(charlm_run / "report.html", tmp_path,
                                        screenshot=ARTIFACTS / "charlm_report.png")
    assert images >= 3 and loaded == images
    assert console == []


def test_the_check_catches_a_broken_figure_and_a_console_error(tmp_path):
    from rnnlab.lab.report import page
    bad = tmp_path / "bad.html"
    bad.write_text(page("broken", '<img alt="x" src="data:image/png;base64,AAAA">'
                                  '<script>console.error("deliberate")</script>'))
    images, loaded, console = open_page(bad, tmp_path)
    assert images == 1 and loaded == 0
    assert any("deliberate" in line for line in console)


def test_diagnose_writes_json_and_checks_unit(charlm_run, capsys):
    assert main(["diagnose", str(charlm_run), "--unit", "3"]) == 0
    d = json.loads((charlm_run / "diagnostics.json").read_text())
    assert d["unit"]["index"] == 3 and len(d["unit"]["values"]) == len(d["unit"]["text"])
    assert set(d["horizon"]) == {"0"} and {g["gate"] for g in d["gates"]} == {"i", "f", "g", "o"}
    assert "weight_hh_l0" in d["spectrum"] and "rnn.weight_hh_l0" in d["grad_norms"]
    assert main(["diagnose", str(charlm_run), "--unit", "8"]) == 2      # hidden size is 8
    assert "--unit" in capsys.readouterr().err


def test_report_keeps_the_unit_chosen_with_diagnose(charlm_run, capsys):
    """'rnnlab report' runs diagnose again: a unit given to 'diagnose --unit' survives it, 'report --unit'
    overrides it, and a unit diagnose picked by itself is picked again rather than copied."""
    def unit_in_json_and_page():
        d = json.loads((charlm_run / "diagnostics.json").read_text())
        page = (charlm_run / "report.html").read_text()
        assert f"<h2>Unit {d['unit']['index']} on the text" in page
        return d["unit"]["index"], d["unit"]["chosen_by"]

    assert main(["diagnose", str(charlm_run), "--unit", "3"]) == 0
    assert main(["report", str(charlm_run)]) == 0
    assert unit_in_json_and_page() == (3, "--unit")
    assert "Chosen with --unit" in (charlm_run / "report.html").read_text()
    assert main(["report", str(charlm_run), "--unit", "5"]) == 0
    assert unit_in_json_and_page() == (5, "--unit")
    assert main(["report", str(charlm_run)]) == 0
    assert unit_in_json_and_page() == (5, "--unit")
    assert main(["report", str(charlm_run), "--unit", "8"]) == 2            # hidden size is 8
    assert "--unit" in capsys.readouterr().err
    # without --unit anywhere: diagnose picks the unit, and report picks it again (not the file's copy)
    assert main(["diagnose", str(charlm_run)]) == 0
    d = json.loads((charlm_run / "diagnostics.json").read_text())
    picked = d["unit"]["index"]
    assert d["unit"]["chosen_by"] == "position in the line"
    d["unit"]["index"] = (picked + 1) % 8
    (charlm_run / "diagnostics.json").write_text(json.dumps(d))
    assert main(["report", str(charlm_run)]) == 0
    assert unit_in_json_and_page() == (picked, "position in the line")


def test_best_unit_finds_a_planted_line_position_unit():
    import numpy as np
    from rnnlab.lab.run_diagnostics import best_unit, position_in_line
    text = "ab\ncdef\nghi\n" * 5
    pos = position_in_line(text)
    assert list(pos[:8]) == [0, 1, 2, 0, 1, 2, 3, 4]
    acts = np.random.default_rng(0).normal(size=(len(text), 6))
    acts[:, 4] = -0.1 * pos + 0.01 * acts[:, 4]
    unit, corr = best_unit(acts, pos)
    assert unit == 4 and corr < -0.99
