"""Non-finite forensics: where did the first NaN or Inf appear, and a file to reproduce it.

Training normally runs with no checks at all. When a step's loss or gradient
norm comes out non-finite, ``investigate`` replays that one batch and looks,
in the order the values were computed:

1. the forward pass, step by step: the first (layer, direction, gate, t, row)
   whose activation is NaN or Inf (``first_nonfinite_activation``);
2. the loss;
3. the backward pass through time, with a recorder on the layer that notes the
   first dL/dh_t or dL/dc_t that is not finite (``NonFiniteWatch``), in the
   order backprop visits the steps (t = T-1 down to 0 for the forward direction);
4. the parameter gradients (``first_nonfinite``), with the element index.

``save_reproducer`` writes the batch and the parameters of that step
(safetensors, no pickle) and a JSON file with the seed, step, batch indices
and the report, so the failure can be replayed outside the training run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .diagnostics import gate_trace, recording


def first_nonfinite(arrays):
    """The first array in ``arrays`` (dict name -> array) holding NaN/Inf: {name, index, value}, else None."""
    for name, a in arrays.items():
        a = np.asarray(a)
        bad = ~np.isfinite(a)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            return {"name": name, "index": list(idx), "value": float(a[idx])}
    return None


def first_nonfinite_activation(layer, x):
    """Replay ``layer`` on ``x`` (N, T, D) and find the earliest non-finite activation.

    "Earliest" follows the computation: lower layers first, then the time order
    of each direction. Returns {layer, direction, gate, t, row, unit, value} or None.
    """
    with np.errstate(all="ignore"):
        traces = gate_trace(layer, x)
    for (k, d), gates in traces.items():
        T = next(iter(gates.values())).shape[0]
        for t in (range(T - 1, -1, -1) if d else range(T)):
            for g, v in gates.items():
                bad = ~np.isfinite(v[t])                         # (N, H)
                if bad.any():
                    row, unit = (int(i) for i in np.argwhere(bad)[0])
                    return {"layer": k, "direction": d, "gate": "h" if g == "a" else g, "t": t,
                            "row": row, "unit": unit, "value": float(v[t][row, unit])}
    return None


class NonFiniteWatch:
    """A ``recorder`` that keeps the first non-finite dL/dh_t (or dL/dc_t) seen during backward."""

    def __init__(self):
        self.first = None

    def __call__(self, layer, direction, t, dh, dc):
        if self.first is not None:
            return
        for name, a in (("dh", dh), ("dc", dc)):
            if a is not None and not np.isfinite(a).all():
                row, unit = (int(i) for i in np.argwhere(~np.isfinite(a))[0])
                self.first = {"layer": int(layer), "direction": int(direction), "gradient": name, "t": int(t),
                              "row": row, "unit": unit, "value": float(a[row, unit])}
                return


def investigate(model, x, y, step):
    """Replay one training step of ``model`` (a ``lab.experiment.Model``-like object with ``layer``,
    ``loss(x, y)`` and ``grads``) on the batch x, y and say where the first non-finite value arose.

    Returns a dict: {"step", "stage": "activation"|"loss"|"gradient"|"parameter gradient"|None, ...}.
    """
    report = {"step": int(step), "stage": None}
    act = first_nonfinite_activation(model.layer, x)
    if act is not None:
        report.update(stage="activation", **act)
        return report
    watch = NonFiniteWatch()
    with np.errstate(all="ignore"), recording(model.layer, watch):
        loss = model.loss(x, y)
    if not np.isfinite(loss):
        report.update(stage="loss", value=float(loss))
    elif watch.first is not None:
        report.update(stage="gradient", **watch.first)
    else:
        bad = first_nonfinite(model.grads)
        if bad is not None:
            report.update(stage="parameter gradient", parameter=bad["name"], index=bad["index"], value=bad["value"])
    return report


def describe(report):
    """One line for people, e.g. 'step 17: dh became inf at layer 0, direction 0, t=5, batch row 3'."""
    s = report.get("stage")
    if s is None:
        return f"step {report['step']}: no non-finite value found on replay"
    if s == "activation":
        return (f"step {report['step']}: activation {report['gate']} became {report['value']} at layer "
                f"{report['layer']}, direction {report['direction']}, t={report['t']}, batch row {report['row']}, "
                f"unit {report['unit']}")
    if s == "gradient":
        return (f"step {report['step']}: gradient {report['gradient']} became {report['value']} at layer "
                f"{report['layer']}, direction {report['direction']}, t={report['t']}, batch row {report['row']}")
    if s == "parameter gradient":
        return (f"step {report['step']}: gradient of {report['parameter']} became {report['value']} "
                f"at index {tuple(report['index'])}")
    return f"step {report['step']}: the loss became {report['value']}"


def save_reproducer(folder, report, seed, params, x, y, batch_indices=None):
    """Write ``folder/nonfinite.json`` (report, seed, step, batch indices) and ``folder/nonfinite.safetensors``
    (the batch as ``batch.x``/``batch.y`` and every parameter as ``param.<name>``). Returns the JSON path."""
    from safetensors.numpy import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"batch.x": np.ascontiguousarray(x), "batch.y": np.ascontiguousarray(y)}
    tensors.update({"param." + k: np.ascontiguousarray(v) for k, v in params.items()})
    save_file(tensors, str(folder / "nonfinite.safetensors"))
    meta = {"report": report, "summary": describe(report), "seed": seed, "step": report.get("step"),
            "batch_indices": None if batch_indices is None else [int(i) for i in batch_indices],
            "tensors": "nonfinite.safetensors"}
    path = folder / "nonfinite.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


def load_reproducer(folder):
    """(meta dict, {name: array}) as written by ``save_reproducer``."""
    from safetensors.numpy import load_file
    folder = Path(folder)
    meta = json.loads((folder / "nonfinite.json").read_text())
    return meta, load_file(str(folder / meta["tensors"]))
