"""Safetensors checkpoints: round trip, RNG state, atomic writes, and refusal of bad files."""
import json
import os
import struct

import numpy as np
import pytest
import safetensors.numpy

from rnnlab.errors import UsageError
from rnnlab.train import checkpoint as ck


def sample_tensors(rng):
    return {"model.w": rng.standard_normal((3, 4)).astype(np.float32),
            "model.b": rng.standard_normal(4),
            "optim.step": np.array(7, dtype=np.int64),           # 0-d arrays must stay 0-d
            "state.0": rng.standard_normal((1, 2, 3)).astype(np.float32)}


def test_round_trip_keeps_arrays_dtypes_shapes_and_meta(tmp_path):
    rng = np.random.default_rng(0)
    tensors = sample_tensors(rng)
    meta = {"kind": "test", "step": 7, "vocab": ["\n", "a", "é"], "rng": ck.rng_state(np.random.default_rng(3))}
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, tensors, meta)
    back, meta_back = ck.load_checkpoint(path, kind="test")
    assert meta_back == meta
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and back[k].shape == tensors[k].shape
        np.testing.assert_array_equal(back[k], tensors[k])
    assert not os.path.exists(str(path) + ".tmp")


def test_rng_state_restores_the_same_draws(tmp_path):
    g = np.random.default_rng(123)
    g.random(5)
    ck.save_checkpoint(tmp_path / "r.safetensors", {"x": np.zeros(1)}, {"rng": ck.rng_state(g)})
    expected = g.random(10)
    _, meta = ck.load_checkpoint(tmp_path / "r.safetensors")
    h = np.random.default_rng(999)
    ck.set_rng_state(h, meta["rng"])
    np.testing.assert_array_equal(h.random(10), expected)


def test_the_file_is_plain_safetensors_without_pickle(tmp_path):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"kind": "x"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"]["format"] == "rnnlab"
    assert b"\x80\x04" not in raw[:2] and raw[8:9] == b"{"     # no pickle protocol header, a JSON header


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_the_atomic_write_gives_the_file_ordinary_permissions(tmp_path, umask):
    path = tmp_path / "m.safetensors"
    old = os.umask(umask)
    try:
        ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"step": 1})
        ck.save_checkpoint(path, {"a": np.arange(4.0)}, {"step": 2})     # the rename over an existing file
        assert os.umask(umask) == umask                                  # reading the umask left it as it was
    finally:
        os.umask(old)
    assert not os.path.exists(str(path) + ".tmp")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask                # as open(path, "w") would make it


def test_a_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"kind": "x", "step": 1})
    before = path.read_bytes()

    def crash_halfway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")         # a partial file ...
        raise OSError("disk full")                                     # ... then the crash

    monkeypatch.setattr(safetensors.numpy, "save_file", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, {"a": np.arange(5.0)}, {"kind": "x", "step": 2})
    assert path.read_bytes() == before
    assert not os.path.exists(str(path) + ".tmp")
    _, meta = ck.load_checkpoint(path)
    assert meta["step"] == 1


def test_a_crash_before_the_rename_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"step": 1})
    before = path.read_bytes()

    def no_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.os, "replace", no_rename)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"a": np.arange(4.0)}, {"step": 2})
    assert path.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "foreign", "bad_meta", "other_kind"])
def test_bad_files_are_refused_with_one_line(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"a": np.arange(100.0)}, {"kind": "charlm"})
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a checkpoint at all\n" * 4)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "foreign":
        safetensors.numpy.save_file({"weight": np.ones(3, np.float32)}, str(path))
    elif damage == "bad_meta":
        safetensors.numpy.save_file({"a": np.ones(3)}, str(path),
                                    metadata={"format": "rnnlab", "format_version": "1", "meta": "{not json"})
    else:
        ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"kind": "forecast"})
    with pytest.raises(UsageError) as e:
        ck.load_checkpoint(path, kind="charlm")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="no checkpoint"):
        ck.load_checkpoint(tmp_path / "nope.safetensors")


def test_required_metadata_keys_are_checked_on_load(tmp_path):
    path = tmp_path / "m.safetensors"
    ck.save_checkpoint(path, {"a": np.arange(3.0)}, {"kind": "x", "train": {"lr": 0.1}, "step": [1]})
    _, meta = ck.load_checkpoint(path, required=("kind", "train.lr"))
    assert meta["train"]["lr"] == 0.1
    with pytest.raises(UsageError) as e:
        ck.load_checkpoint(path, required=("train.lr", "train.batch", "train.seq_len", "corpus.digest",
                                           "corpus.source", "step.n"))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "retrain" in msg
    # each gap named once, at its first absent part; a list where an object belongs is called that
    assert "'train.batch', 'train.seq_len', 'corpus', 'step' (not a JSON object)" in msg
