"""A run folder: ``results.json``, ``model.safetensors`` and figures, written only after the work succeeded.

A run never replaces another: an ``--out`` folder that already holds a
``results.json`` is refused before any data is read or any file written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from ..train.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "model.safetensors"


def check_out(out):
    """Refuse an ``--out`` that is a file or already holds a run; nothing is created yet."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: expected a folder, got the file {out}")
    if (out / "results.json").exists():
        raise UsageError(f"--out: {out}/results.json already exists; choose another folder or move it away")
    return out


def write_run(out, kind, model, meta, results):
    """Write the checkpoint, then results.json (atomically, last: its presence marks a finished run)."""
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / CHECKPOINT, {f"model.{k}": v for k, v in model.params.items()},
                    {"kind": kind, **meta})
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, out / "results.json")


def load_run(run, kinds):
    """(SequenceModel with the saved parameters, meta) of a run folder of one of ``kinds``."""
    from .model import SequenceModel
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"RUN: no run folder {str(run)!r}; expected the --out folder of 'rnnlab train'")
    tensors, meta = load_checkpoint(run / CHECKPOINT)
    if meta.get("kind") not in kinds:
        raise UsageError(f"RUN: {run} holds a {meta.get('kind')!r} run; this command needs a "
                         f"{' or '.join(repr(k) for k in kinds)} run")
    model = SequenceModel(**meta["model"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.eval(), meta
