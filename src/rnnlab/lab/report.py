"""Self-contained HTML reports: figures embedded as base64 PNGs, no network needed to view them.

A small script at the end of each page writes, into the page itself, whether
every figure decoded (``img.complete && naturalWidth > 0``), so that a headless
browser's DOM dump can be checked by a test.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.yes { color: #2a7d2a; font-weight: bold; } .no { color: #b22; }
pre.act { font-family: monospace; white-space: pre-wrap; line-height: 1.5; font-size: 14px; }
pre.act span { border-radius: 2px; }
"""

_CHECK_SCRIPT = """
<div id="image-check"></div>
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('image-check');
  el.setAttribute('data-images', imgs.length);
  el.setAttribute('data-loaded', ok);
  el.textContent = ok + ' of ' + imgs.length + ' figures loaded';
});
</script>
"""


def embed_png(path, alt):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def page(title, body):
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n{_CHECK_SCRIPT}</body></html>\n")


def table(header, rows, left=1):
    """An HTML table; the first ``left`` columns are left-aligned text."""
    th = "".join(f"<th{' class=l' if j < left else ''}>{html.escape(str(h))}</th>" for j, h in enumerate(header))
    out = [f"<table><tr>{th}</tr>"]
    for row in rows:
        tds = []
        for j, v in enumerate(row):
            cls = " class=l" if j < left else ""
            if isinstance(v, str) and v.startswith("<span"):
                tds.append(f"<td{cls}>{v}</td>")
            else:
                tds.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out) + "</table>"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _decay(h, far=100):
    """||dL/dh|| at distance 1 divided by that at distance min(far, T-1)."""
    if not h or len(h) < 3:
        return float("nan")
    k = min(far, len(h) - 1)
    return float(h[1] / h[k]) if h[k] > 0 else float("inf")


def aggregate(records):
    """One row per (task, cell, length): seeds, mean value, solved count, horizon decay at init/trained."""
    groups = {}
    for r in records:
        groups.setdefault((r["task"], r["cell"], r["length"]), []).append(r)
    rows = []
    for (task, cell, T), rs in groups.items():
        vals = np.array([r["value"] for r in rs], dtype=float)
        rows.append({
            "task": task, "cell": cell, "length": T, "seeds": len(rs), "metric": rs[0]["metric"],
            "value": float(np.mean(vals)), "value_min": float(np.min(vals)), "value_max": float(np.max(vals)),
            "baseline": float(rs[0]["baseline"]), "solved": f"{sum(r['solved'] for r in rs)}/{len(rs)}",
            "decay_init": float(np.exp(np.mean([np.log(_decay(r.get("horizon_init"))) for r in rs]))),
            "decay": float(np.exp(np.mean([np.log(_decay(r.get("horizon_final"))) for r in rs]))),
            "steps": int(np.mean([r["steps_run"] for r in rs])),
            "seconds": float(np.sum([r["seconds"] for r in rs])),
        })
    return rows


def memory_report(records, config, figures, path, wall=None):
    """The report of ``rnnlab experiment memory``: config, the measured table, every figure."""
    rows = aggregate(records)
    rule = records[0].get("solved_rule", "")
    body = [f"<p>{html.escape(rule)}. Each run trains on fresh random batches and is scored on a fixed test set; "
            "a run stops early once its metric is half the threshold. The gradient horizon columns give "
            "||dL/dh_t|| at distance 1 from the loss divided by its value at distance min(100, T-1): "
            "1 means the gradient reaches far back undiminished; 1e10 means it has all but vanished.</p>"]
    if wall is not None:
        body.append(f"<p>Wall time: {wall:.1f} s.</p>")
    body.append(table(
        ["task", "cell", "T", "seeds", "metric", "mean value", "min", "max", "baseline", "solved",
         "horizon decay (init)", "horizon decay (trained)", "steps", "CPU s"],
        [[r["task"], r["cell"], r["length"], r["seeds"], r["metric"], r["value"], r["value_min"], r["value_max"],
          r["baseline"], _solved_span(r["solved"]), r["decay_init"], r["decay"], r["steps"], r["seconds"]]
         for r in rows], left=2))
    body.append(horizon_table(records))
    for title, p in figures.items():
        body.append(f"<h2>{html.escape(title)}</h2>{embed_png(p, title)}")
    body.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=1)) + "</pre>")
    Path(path).write_text(page("rnnlab memory experiment", "\n".join(body)), encoding="utf-8")
    return Path(path)


def horizon_numbers(records, distances=(1, 10, 50, 99, 199)):
    """Rows (cell, T, when, ||dL/dh|| at each distance) averaged over seeds, for the table and the README."""
    groups = {}
    for r in records:
        if "horizon_init" in r:
            groups.setdefault((r["cell"], r["length"]), []).append(r)
    rows = []
    for (cell, T), rs in groups.items():
        for key, when in (("horizon_init", "init"), ("horizon_final", "trained")):
            h = np.mean([r[key] for r in rs], axis=0)
            rows.append([cell, T, when] + [float(h[d]) if d < len(h) else "" for d in distances])
    return rows


def horizon_table(records, distances=(1, 10, 50, 99, 199)):
    return ("<h2>Gradient horizon in numbers</h2><p>Mean ||dL/dh_t|| at a distance of k steps back from the "
            "loss. 0 means the value underflowed float32 (below about 1e-45).</p>"
            + table(["cell", "T", "when"] + [f"k = {d}" for d in distances],
                    horizon_numbers(records, distances), left=3))


def _solved_span(s):
    k, n = s.split("/")
    return f'<span class="{"yes" if int(k) == int(n) else "no"}">{html.escape(s)}</span>'


def activation_html(text, values, vmax=None):
    """``text`` with each character's background coloured by ``values`` (one per char, in [-1, 1]):
    blue for negative, red for positive, as in Karpathy, Johnson & Fei-Fei (2015)."""
    vmax = vmax or max(1e-8, float(np.max(np.abs(values))))
    parts = []
    for ch, v in zip(text, values):
        a = float(np.clip(v / vmax, -1, 1))
        rgb = "214,39,40" if a > 0 else "31,119,180"
        shown = "\u21b5\n" if ch == "\n" else html.escape(ch)
        parts.append(f'<span style="background: rgba({rgb},{abs(a):.2f})" title="{v:+.3f}">{shown}</span>')
    return '<pre class="act">' + "".join(parts) + "</pre>"


def run_report(folder, meta, metrics, samples, diag):
    """RUN/report.html for a character model: config, curves, samples, diagnostics, coloured text."""
    from .figures import run_curves
    folder = Path(folder)
    body = []
    cfg_rows = [[f"model.{k}", v] for k, v in meta.get("model", {}).items()]
    cfg_rows += [[f"train.{k}", v] for k, v in meta.get("train", {}).items()]
    cfg_rows += [["step", meta.get("step")], ["corpus", meta.get("corpus", {}).get("source")]]
    body.append("<h2>Configuration</h2>" + table(["setting", "value"], cfg_rows, left=2))
    if metrics:
        last = metrics[-1]
        body.append(f"<p>Last evaluation: step {last.get('step')}, validation loss "
                    f"{last.get('val_loss', float('nan')):.4f} nats/char "
                    f"({last.get('val_bpc', float('nan')):.3f} bits/char).</p>")
        body.append("<h2>Training curves</h2>" + embed_png(run_curves(metrics, folder / "diagnostics" / "curves.png"),
                                                          "training curves"))
    if samples:
        body.append("<h2>Samples (temperature 0.8)</h2>" +
                    "".join(f"<pre>{html.escape(s)}</pre>" for s in samples))
    u = diag["unit"]
    chosen = ("Chosen with --unit; its activation correlates with the position in the line"
              if u.get("chosen_by") == "--unit" else
              "Chosen as the unit whose activation correlates most with the position in the line")
    body.append(f"<h2>Unit {u['index']} on the text ({html.escape(u['source'])})</h2>"
                f"<p>Each character is coloured by the activation of unit {u['index']} after reading it "
                f"(red positive, blue negative; hover for the value). {chosen}: r = "
                f"{u['correlation_with_position_in_line']:+.2f} on {diag['chars']} characters of "
                f"{html.escape(diag.get('text_source', 'text'))}.</p>"
                + activation_html(u["text"], np.array(u["values"]), vmax=1.0))
    body.append("<h2>Diagnostics</h2>")
    rows = []
    for k, h in diag["horizon"].items():
        far = min(len(h) - 1, 50)
        rows.append([f"layer {k}", h[1], h[far], h[1] / h[far] if h[far] > 0 else float("inf")])
    body.append("<p>Gradient horizon: ||dL/dh_t|| for a loss on the last character of a window.</p>"
                + table(["layer", "distance 1", "distance 50 (or window end)", "ratio"], rows))
    body.append(table(["layer", "gate", "mean", "fraction saturated"],
                      [[g["layer"], g["gate"], g["mean"], g["saturated"]] for g in diag["gates"]], left=2))
    body.append(table(["parameter", "||grad||", "lr*||grad||/||w||"],
                      [[k, v, diag.get("sgd_update_ratio", {}).get(k, float("nan"))]
                       for k, v in diag["grad_norms"].items()]))
    body.append(table(["W_hh", "largest singular value"] + [f"gate {g} sigma / radius" for g in
                                                            next(iter(diag["spectrum"].values()))["gates"]],
                      [[k, s["sigma_max"]] + [f"{e['sigma_max']:.3f} / {e.get('spectral_radius', float('nan')):.3f}"
                                              for e in s["gates"].values()]
                       for k, s in diag["spectrum"].items()]))
    for title, rel in diag["figures"].items():
        body.append(f"<h2>{html.escape(title)}</h2>" + embed_png(folder / rel, title))
    path = folder / "report.html"
    path.write_text(page(f"rnnlab run {folder.name}", "\n".join(body)), encoding="utf-8")
    return path
