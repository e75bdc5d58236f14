"""The command line contract: train charlm, sample, eval; resume; and every kind of bad input.

Bad input must give exit code 2, one line on stderr, no traceback, and leave
every existing file byte for byte as it was.
"""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from rnnlab.cli import main

TEXT = ("HAMLET.\nTo be, or not to be, that is the question.\n\nHORATIO.\nMy lord, the king your father.\n\n"
        "HAMLET.\nThe king my father? Season your admiration for a while.\n\n") * 12
TINY = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch", "4", "--quiet"]


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a couple of seconds through the CLI."""
    d = tmp_path_factory.mktemp("cli")
    path = d / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    run = str(d / "run")
    code = main(["train", "charlm", "--text", str(path), *TINY, "--time-budget", "2", "--eval-every", "20",
                 "--lr", "0.01", "--out", run, "--seed", "3"])
    assert code == 0
    return run, str(path)


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def safe_metadata(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as f:
        return f.metadata()


def run_bad(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:            # argparse's own errors (bad int, exclusive options) exit directly
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_train_sample_eval(trained, capsys):
    run, _ = trained
    assert sorted(os.listdir(run)) == ["metrics.jsonl", "model.safetensors"]
    lines = [json.loads(s) for s in open(os.path.join(run, "metrics.jsonl"))]
    assert lines and {"step", "train_loss", "val_loss", "val_bpc"} <= lines[-1].keys()
    assert lines[-1]["val_loss"] < np.log(len(set(TEXT)))          # learned something in two seconds

    capsys.readouterr()
    assert main(["sample", run, "--length", "120", "--prime", "HAMLET.\n", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("HAMLET.\n") and len(out.rstrip("\n")) >= len("HAMLET.\n") + 119
    assert set(out) <= set(TEXT)
    assert main(["sample", run, "--length", "50", "--seed", "1"]) == 0
    a = capsys.readouterr().out
    assert main(["sample", run, "--length", "50", "--seed", "1"]) == 0
    assert capsys.readouterr().out == a                                   # seeded sampling repeats
    assert main(["sample", run, "--length", "30", "--argmax", "--prime", "HA"]) == 0
    assert capsys.readouterr().out.startswith("HA")

    assert main(["eval", run]) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and "validation split" in out
    bpc = float(out.split(" bits/char")[0].split()[-1])
    assert abs(bpc - lines[-1]["val_bpc"]) < 1e-4                        # the same number the trainer logged
    assert main(["eval", run, "--text", trained[1], "--batch", "2"]) == 0
    assert "bits/char" in capsys.readouterr().out


def test_cli_resume_is_bit_identical(tmp_path, text):
    args = ["train", "charlm", "--text", text, *TINY, "--dropout", "0.2", "--eval-every", "5"]
    assert main([*args, "--steps", "16", "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--steps", "8", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "charlm", "--steps", "16", "--out", str(tmp_path / "b"), "--resume", "--quiet"]) == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    steps = [json.loads(s)["step"] for s in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [5, 8, 10, 15, 16]


def test_resume_with_a_mismatched_config_changes_nothing(tmp_path, text, capsys):
    run = tmp_path / "run"
    assert main(["train", "charlm", "--text", text, *TINY, "--steps", "3", "--out", str(run)]) == 0
    before = snapshot(run)
    err = run_bad(capsys, ["train", "charlm", "--hidden", "32", "--steps", "6", "--out", str(run), "--resume"])
    assert "--hidden 32" in err and "16" in err
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper(), encoding="utf-8")
    err = run_bad(capsys, ["train", "charlm", "--text", str(other), "--steps", "6", "--out", str(run), "--resume"])
    assert "not the corpus" in err
    run_bad(capsys, ["train", "charlm", "--steps", "2", "--out", str(run), "--resume"])      # already past step 2
    run_bad(capsys, ["train", "charlm", "--steps", "6", "--resume"])                         # no --out
    err = run_bad(capsys, ["train", "charlm", "--text", text, *TINY, "--steps", "3", "--out", str(run)])
    assert "--resume" in err                                                                 # no silent overwrite
    assert snapshot(run) == before


def test_nonfinite_training_stops_and_keeps_the_checkpoint(tmp_path, text, capsys):
    run = tmp_path / "run"
    # lr 1e38: one step puts weights near float32's largest value, so the next loss overflows.
    # (At lr 1e30 the saturating gates can keep every value finite, ~1e30, and the run then
    # early-stops normally: whether it diverged depended on tanh rounding, not on the code under test.)
    err = run_bad(capsys, ["train", "charlm", "--text", text, *TINY, "--optimizer", "sgd", "--lr", "1e38",
                           "--clip", "1e38", "--steps", "50", "--eval-every", "1", "--out", str(run)])
    assert ("non-finite" in err or "not finite" in err or "nan" in err) and "step" in err and "checkpoint" in err
    tensors = load_file(str(run / "model.safetensors"))
    assert all(np.isfinite(v).all() for v in tensors.values())


def test_clip_value_is_an_option_saved_with_the_run(tmp_path, text, capsys):
    run = tmp_path / "run"
    assert main(["train", "charlm", "--text", text, *TINY, "--clip-value", "0.5", "--steps", "2",
                 "--out", str(run)]) == 0
    meta = json.loads(safe_metadata(run / "model.safetensors")["meta"])
    assert meta["train"]["clip_value"] == 0.5
    before = snapshot(run)
    err = run_bad(capsys, ["train", "charlm", "--clip-value", "0.25", "--steps", "4", "--out", str(run), "--resume"])
    assert "--clip-value 0.25" in err and "0.5" in err                  # --resume checks it like the others
    assert snapshot(run) == before
    assert main(["train", "charlm", "--clip-value", "0.5", "--steps", "3", "--out", str(run), "--resume",
                 "--quiet"]) == 0
    assert main(["train", "charlm", "--steps", "4", "--out", str(run), "--resume", "--quiet"]) == 0

    # a checkpoint written before --clip-value existed resumes as a run without it
    drop_meta_key(run / "model.safetensors", "train.clip_value")
    err = run_bad(capsys, ["train", "charlm", "--clip-value", "0.5", "--steps", "5", "--out", str(run), "--resume"])
    assert "--clip-value 0.5" in err
    assert main(["train", "charlm", "--steps", "5", "--out", str(run), "--resume", "--quiet"]) == 0
    assert json.loads(safe_metadata(run / "model.safetensors")["meta"])["train"]["clip_value"] == 0


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "latin1", "short"])
def test_bad_text(tmp_path, capsys, case):
    path = tmp_path / "t.txt"
    content = {"empty": b"", "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "latin1": "Ça va, café?\n".encode("latin-1"),
               "short": b"To be, or not."}.get(case)
    if content is not None:
        path.write_bytes(content)
    err = run_bad(capsys, ["train", "charlm", "--text", str(path), *TINY, "--steps", "2",
                           "--out", str(tmp_path / "run")])
    assert str(path) in err or "characters" in err
    assert not (tmp_path / "run").exists()                     # nothing created for a refused run


@pytest.mark.parametrize("option", [["--cell", "transformer"], ["--hidden", "0"], ["--layers", "-1"],
                                    ["--seq-len", "0"], ["--batch", "-4"], ["--embed", "0"], ["--steps", "0"],
                                    ["--time-budget", "-1"], ["--lr", "-0.1"], ["--dropout", "1.5"],
                                    ["--bptt", "99"], ["--steps", "5", "--time-budget", "3"],
                                    ["--hidden", "many"], ["--epochs", "0"], ["--val-fraction", "1"],
                                    ["--epochs", "1", "--steps", "3"], ["--clip-value", "-1"],
                                    ["--clip-value", "nan"]])
def test_bad_options(tmp_path, text, capsys, option):
    run_bad(capsys, ["train", "charlm", "--text", text, *TINY, *option, "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def drop_meta_key(ckpt, key):
    """Rewrite ``ckpt`` without the metadata entry ``key`` (dotted for a nested one), arrays unchanged."""
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(str(ckpt), framework="np") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(metadata["meta"])
    *parents, last = key.split(".")
    node = meta
    for part in parents:
        node = node[part]
    del node[last]
    save_file(tensors, str(ckpt), metadata={**metadata, "meta": json.dumps(meta)})


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage", "missing",
                                    "no train", "no corpus", "no train.seq_len", "no corpus.digest"])
def test_bad_checkpoints(tmp_path, text, capsys, damage):
    run = tmp_path / "run"
    assert main(["train", "charlm", "--text", text, *TINY, "--steps", "2", "--out", str(run)]) == 0
    ckpt = run / "model.safetensors"
    raw = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(raw[:len(raw) - 100])
    elif damage == "foreign":
        from safetensors.numpy import save_file
        save_file({"w": np.zeros(3, np.float32)}, str(ckpt))
    elif damage == "garbage":
        ckpt.write_bytes(b"\x00" * 64)
    elif damage.startswith("no "):
        drop_meta_key(ckpt, damage[3:])
    else:
        ckpt.unlink()
    before = snapshot(run)
    for argv in (["sample", str(run)], ["eval", str(run)],
                 ["train", "charlm", "--steps", "4", "--out", str(run), "--resume"]):
        err = run_bad(capsys, argv)
        if damage.startswith("no "):
            assert f"lacks '{damage[3:]}'" in err
    assert snapshot(run) == before


def test_bad_sampling_options(trained, capsys):
    run, _ = trained
    err = run_bad(capsys, ["sample", run, "--prime", "Hamlet §"])
    assert "§" in err
    run_bad(capsys, ["sample", run, "--temperature", "0"])
    run_bad(capsys, ["sample", run, "--length", "0"])
    run_bad(capsys, ["sample", str(os.path.dirname(run)) + "/no-such-run"])
    bad = os.path.join(os.path.dirname(run), "greek.txt")
    with open(bad, "w", encoding="utf-8") as f:
        f.write("αβγ " * 20)
    run_bad(capsys, ["eval", run, "--text", bad])


def test_epochs_is_a_number_of_passes_over_the_training_text(tmp_path, text, capsys):
    from rnnlab.data import Vocabulary, split_documents
    from rnnlab.train import Streams
    run = tmp_path / "run"
    assert main(["train", "charlm", "--text", text, *TINY, "--epochs", "1", "--eval-every", "1000",
                 "--out", str(run)]) == 0
    vocab = Vocabulary.from_documents([TEXT])
    train, _ = split_documents([TEXT], 0.05)
    per_epoch = len(Streams([vocab.encode(d) for d in train], 4, 16))
    assert [json.loads(s)["step"] for s in open(run / "metrics.jsonl")] == [per_epoch]
