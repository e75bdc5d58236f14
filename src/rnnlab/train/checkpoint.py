"""Checkpoints in safetensors: arrays plus JSON metadata, no pickle, written atomically.

A safetensors file is a JSON header (names, dtypes, shapes, offsets, and a
str -> str metadata map) followed by raw array bytes. Loading one cannot run
code, unlike a pickle. rnnlab puts three keys in the metadata:

    format          "rnnlab"            so a foreign safetensors file is recognised
    format_version  "1"
    meta            JSON: the run's kind, config, vocabulary, step, RNG states...

and arrays under prefixes chosen by the caller (``model.``, ``optim.``, ``state.``).

Atomic write: the file is written to ``PATH.tmp``, given the ordinary mode
(0666 less the umask), flushed to disk, then renamed over ``PATH`` with
``os.replace`` (atomic on POSIX), so a crash at any moment leaves either the
old checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import UsageError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "FORMAT", "FORMAT_VERSION"]

FORMAT = "rnnlab"
FORMAT_VERSION = "1"


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError:
        raise UsageError("checkpoints need the package safetensors: .venv/bin/pip install -e '.[train]'") from None
    return safetensors


def save_checkpoint(path, tensors, meta):
    """Write ``tensors`` (name -> ndarray) and ``meta`` (JSON-serialisable dict) to ``path`` atomically."""
    st = _safetensors()
    path = os.fspath(path)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": json.dumps(meta)}
    arrays = {k: np.array(v, order="C", copy=True) for k, v in tensors.items()}   # ascontiguousarray would make 0-d 1-d
    tmp = path + ".tmp"
    try:
        st.numpy.save_file(arrays, tmp, metadata=metadata)
        # safetensors writes the file with mode 0600 whatever the umask; give it the mode a plain
        # open() would, so a checkpoint can be shared like the metrics file next to it.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())          # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    """The process's umask. It can only be read by setting it, so it is set to 077 for that instant:
    a file another thread creates meanwhile comes out more private, never less."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def load_checkpoint(path, kind=None, required=()):
    """(tensors, meta) from ``path``; a UsageError of one line if it is missing, corrupt or foreign.

    ``required`` names the metadata keys the caller will read, dotted for nested
    ones (``"corpus.digest"``). All are checked here, so a checkpoint that lacks
    one is refused with a message naming them instead of failing later with a
    KeyError halfway through a command.
    """
    st = _safetensors()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"no checkpoint at {path!r}; expected a run folder written by 'rnnlab train'")
    try:
        with st.safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError is a bare Exception subclass; so are some OS-level failures
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{path}: not a readable safetensors checkpoint (truncated or corrupt: {detail}); "
                         f"retrain, or restore the file from a copy") from None
    if metadata.get("format") != FORMAT:
        raise UsageError(f"{path}: a safetensors file, but not an rnnlab checkpoint (no format=rnnlab in its "
                         f"metadata); pass a run folder written by 'rnnlab train'")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path}: checkpoint format version {metadata.get('format_version')!r}, this rnnlab "
                         f"reads version {FORMAT_VERSION}")
    try:
        meta = json.loads(metadata["meta"])
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (KeyError, ValueError) as e:
        raise UsageError(f"{path}: corrupt checkpoint metadata ({e}); retrain, or restore the file from a copy") from None
    if kind is not None and meta.get("kind") != kind:
        raise UsageError(f"{path}: a checkpoint of a {meta.get('kind')!r} run, expected {kind!r}")
    missing = _missing(meta, required)
    if missing:
        raise UsageError(f"{path}: the checkpoint metadata lacks {', '.join(missing)} (truncated, "
                         f"foreign or edited by hand); retrain, or restore the file from a copy")
    return tensors, meta


def _missing(meta, keys):
    """The dotted ``keys`` absent from ``meta``, each cut at its first absent part (``'train'``, not every
    ``'train.<field>'``), in order and without repeats."""
    out = []
    for key in keys:
        node, parts = meta, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):         # e.g. "train": 3, where an object of fields belongs
                gap = f"{'.'.join(parts[:i])!r} (not a JSON object)"
            elif part not in node:
                gap = repr(".".join(parts[:i + 1]))
            else:
                node = node[part]
                continue
            if gap not in out:
                out.append(gap)
            break
    return out


def rng_state(generator):
    """The bit generator's state, a JSON-serialisable dict (Python ints keep all 128 bits of PCG64)."""
    return generator.bit_generator.state


def set_rng_state(generator, state):
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise UsageError(f"checkpoint: cannot restore a random generator state ({e})") from None
