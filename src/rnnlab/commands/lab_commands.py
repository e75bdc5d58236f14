"""``rnnlab diagnose RUN`` and ``rnnlab report RUN``: look inside a trained run.

diagnose  measures the gradient horizon, gate saturation, W_hh spectrum, gradient
          sizes and the most line-position-like unit of a character model run,
          writing RUN/diagnostics.json and RUN/diagnostics/*.png.
report    writes one self-contained RUN/report.html (figures embedded): for a
          character model its config, curves, samples and diagnostics (running
          diagnose again, on the unit of --unit or else the one an earlier
          'diagnose --unit' chose); for a memory experiment folder (results.json)
          its table and figures.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError

DIAG_JSON = "diagnostics.json"


def register(sub, train_sub):
    common = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = sub.add_parser("diagnose", help="gradient horizon, gates, spectrum and activations of a trained run",
                       description=__doc__.split("\n\n")[1].split("report")[0], **common)
    d.add_argument("run", metavar="RUN", help="run folder written by 'rnnlab train charlm'")
    d.add_argument("--text", metavar="PATH", help="text to diagnose on (default: the run's validation text)")
    d.add_argument("--chars", type=int, default=600, help="characters of text to use")
    d.add_argument("--unit", type=int, help="hidden unit to colour the text by (default: the one that "
                                            "tracks the position in the line best)")
    d.set_defaults(func=diagnose_main)
    r = sub.add_parser("report", help="write RUN/report.html: one self-contained page with figures embedded",
                       description="Write RUN/report.html for a character-model run or a memory experiment "
                                   "folder; it opens offline in any browser.", **common)
    r.add_argument("run", metavar="RUN", help="run folder of 'rnnlab train charlm' or 'rnnlab experiment memory'")
    r.add_argument("--samples", type=int, default=2, help="text samples to include (character model)")
    r.add_argument("--unit", type=int, help="hidden unit to colour the text by (default: the one an earlier "
                                            "'rnnlab diagnose RUN --unit K' chose, else the one that tracks "
                                            "the position in the line best)")
    r.set_defaults(func=report_main)


def _run_dir(run):
    p = Path(run)
    if not p.is_dir():
        raise UsageError(f"RUN: no run folder {run!r}; expected the --out folder of 'rnnlab train charlm' "
                         f"or 'rnnlab experiment memory'")
    return p


def _diagnosis_text(model, vocab, meta, path, chars):
    """Text of known characters: --text, else the run's validation split, else a sample of the model."""
    from .charlm import load_corpus, sample_text
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        vocab.encode(text[:chars], "--text")           # one line if a character is unknown
        return text[:chars], str(path)
    try:
        from ..data import split_documents
        source = meta["corpus"]["source"]
        docs, _ = load_corpus(None if source == "shakespeare" else source)
        _, val = split_documents(docs, meta["train"]["val_fraction"])
        text = "".join(val)
        text = "".join(ch for ch in text if ch in vocab.index)[:chars]
        if len(text) >= 50:
            return text, f"the validation text of {source}"
    except (UsageError, OSError, KeyError, ValueError):
        pass
    return sample_text(model, vocab, chars, temperature=0.8, seed=0), "a sample of the model (no corpus found)"


def diagnose_run(run, text_path=None, chars=600, unit=None):
    """Diagnose a character-model run folder; writes RUN/diagnostics.json and figures. Returns the dict."""
    from ..lab.run_diagnostics import diagnose_charlm
    from ..lab import figures
    from .charlm import load_model
    folder = _run_dir(run)
    if chars < 60:
        raise UsageError(f"--chars: expected at least 60 characters, got {chars}")
    model, vocab, meta = load_model(folder)
    if unit is not None and not 0 <= unit < model.rnn.hidden_size:
        raise UsageError(f"--unit: expected 0..{model.rnn.hidden_size - 1}, got {unit}")
    text, source = _diagnosis_text(model, vocab, meta, text_path, chars)
    lr = meta.get("train", {}).get("lr")
    res = diagnose_charlm(model, vocab, text, lr=lr, unit=unit)
    # how the unit was chosen, so that 'rnnlab report' keeps a unit the user asked for
    res["unit"]["chosen_by"] = "--unit" if unit is not None else "position in the line"
    res["text_source"] = source
    res["step"] = meta.get("step")
    figdir = folder / "diagnostics"
    figdir.mkdir(exist_ok=True)
    res["figures"] = {k: str(v.relative_to(folder)) for k, v in figures.run_figures(res, figdir).items()}
    (folder / DIAG_JSON).write_text(json.dumps(res, indent=1))
    return res


def recorded_unit(folder, hidden_size):
    """The unit an earlier ``rnnlab diagnose RUN --unit K`` chose, read from RUN/diagnostics.json; else None.

    A unit diagnose picked by itself is not reused: picking again finds the same one
    for the same model, and the right one if the run was trained further since. A file
    from before ``chosen_by`` was recorded keeps its unit.
    """
    try:
        u = json.loads((folder / DIAG_JSON).read_text())["unit"]
        unit = int(u["index"])
    except (OSError, ValueError, KeyError, TypeError):          # no file, or not one diagnose wrote
        return None
    if u.get("chosen_by", "--unit") != "--unit" or not 0 <= unit < hidden_size:
        return None
    return unit


def diagnose_main(a):
    res = diagnose_run(a.run, a.text, a.chars, a.unit)
    print(f"{res['cell']} with {res['layers']} layer(s), step {res['step']}, on {res['chars']} characters of "
          f"{res['text_source']}: loss {res['loss']:.4f} nats/char")
    for k, h in res["horizon"].items():
        far = min(len(h) - 1, 50)
        print(f"  layer {k}: ||dL/dh|| at distance 1 / at distance {far} = {h[1] / h[far]:.3g}")
    for g in res["gates"]:
        print(f"  layer {g['layer']} gate {g['gate']}: mean {g['mean']:.3f}, saturated {g['saturated']:.1%}")
    for name, s in res["spectrum"].items():
        print(f"  {name}: largest singular value {s['sigma_max']:.3f}")
    u = res["unit"]
    print(f"  unit {u['index']} ({u['source']}) correlates {u['correlation_with_position_in_line']:+.2f} "
          f"with the position in the line")
    print(f"wrote {Path(a.run) / DIAG_JSON} and {len(res['figures'])} figures")
    return 0


def report_main(a):
    from ..lab.report import memory_report, run_report
    folder = _run_dir(a.run)
    if (folder / "results.json").exists() and not (folder / "model.safetensors").exists():
        from ..lab.figures import memory_figures
        records = json.loads((folder / "results.json").read_text())
        cfg_path = folder / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        path = memory_report(records, cfg, memory_figures(records, folder), folder / "report.html",
                             cfg.get("wall_seconds"))
    else:
        if a.samples < 0:
            raise UsageError(f"--samples: expected 0 or more, got {a.samples}")
        from .charlm import load_model, sample_text
        model, vocab, meta = load_model(folder)     # one line if there is no model
        unit = a.unit if a.unit is not None else recorded_unit(folder, model.rnn.hidden_size)
        diag = diagnose_run(folder, unit=unit)
        samples = [sample_text(model, vocab, 300, temperature=0.8, seed=s) for s in range(a.samples)]
        from ..train.metrics import MetricsLog
        metrics = MetricsLog(folder / "metrics.jsonl").read()
        path = run_report(folder, meta, metrics, samples, diag)
    print(f"wrote {path}")
    return 0
