"""Sequence classification: the .ts reader, padding that cannot leak into the state, standardisation on
the training split, the report against scikit-learn, a small JapaneseVowels run, and bad input."""
import json

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.tasks.classify import FeatureScaler
from rnnlab.tasks.metrics import classification_report
from rnnlab.tasks.model import SequenceModel
from rnnlab.tasks.sequence_data import load_dataset, load_ts, pad, read_ts

pytest.importorskip("sklearn")

TS_HEAD = "# a comment\n@problemName toy\n@timeStamps false\n@univariate false\n@classLabel true a b\n@data\n"


def cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write_pair(tmp_path, train_lines, test_lines):
    (tmp_path / "Toy_TRAIN.ts").write_text(TS_HEAD + "\n".join(train_lines) + "\n")
    (tmp_path / "Toy_TEST.ts").write_text(TS_HEAD + "\n".join(test_lines) + "\n")
    return tmp_path / "Toy_TRAIN.ts"


def test_ts_reader_variable_lengths_and_trailing_padding(tmp_path):
    path = write_pair(tmp_path, ["1,2,3:4,5,6:a", "7,8,?:9,10,?:b"], ["1,1:2,2:a"])
    seqs, labels = read_ts(path)
    assert labels == ["a", "b"]
    np.testing.assert_array_equal(seqs[0], [[1, 4], [2, 5], [3, 6]])       # (T, D): dimensions become columns
    np.testing.assert_array_equal(seqs[1], [[7, 9], [8, 10]])              # trailing '?' is padding
    data = load_ts(path)
    assert data.classes == ["a", "b"] and data.y_train.tolist() == [0, 1] and len(data.test) == 1


def test_japanese_vowels_official_split():
    d = load_dataset("japanese-vowels")
    assert len(d.train) == 270 and len(d.test) == 370 and len(d.classes) == 9
    lengths = [len(s) for s in d.train + d.test]
    assert min(lengths) == 7 and max(lengths) == 29 and all(s.shape[1] == 12 for s in d.train)


def test_padding_never_reaches_the_prediction():
    rng = np.random.default_rng(3)
    for cell in ("rnn", "lstm", "gru"):
        model = SequenceModel(3, 5, 4, cell=cell, bidirectional=True, seed=1, dtype=np.float64).eval()
        seqs = [rng.normal(size=(n, 3)) for n in (2, 6, 4)]
        X, L = pad(seqs)
        X[0, 2:] = 1e3                                                     # garbage in the padding
        X[2, 4:] = -7.0
        batched = model.predict(X, L)
        alone = np.concatenate([model.predict(s[None]) for s in seqs])
        np.testing.assert_allclose(batched, alone, rtol=1e-12, atol=1e-12)


def test_model_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    model = SequenceModel(2, 3, 2, cell="lstm", bidirectional=True, seed=2, dtype=np.float64).eval()
    X, L = pad([rng.normal(size=(n, 2)) for n in (3, 5)])
    w = rng.normal(size=(2, 2))

    def loss():
        return float(np.sum(model.forward(X, L) * w))

    model.zero_grad()
    loss()
    model.backward(w)
    for name in ("rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0", "head.weight"):
        p, g = model.params[name], model.grads[name]
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            old = p[idx]
            p[idx] = old + 1e-6
            up = loss()
            p[idx] = old - 1e-6
            down = loss()
            p[idx] = old
            assert g[idx] == pytest.approx((up - down) / 2e-6, rel=1e-6, abs=1e-9)


def test_standardisation_uses_valid_training_frames_only():
    train = [np.array([[0.0, 10.0], [2.0, 10.0]]), np.array([[4.0, 10.0]])]
    sc = FeatureScaler.fit(train)
    np.testing.assert_allclose(sc.mean, [2.0, 10.0])
    np.testing.assert_allclose(sc.std, [np.sqrt(8 / 3), 1.0])             # constant feature keeps unit scale


def test_report_agrees_with_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_score, recall_score
    rng = np.random.default_rng(5)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    r = classification_report(t, p, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(r["confusion_matrix"], confusion_matrix(t, p))
    np.testing.assert_allclose([r["per_class"][k]["precision"] for k in "abcd"], precision_score(t, p, average=None))
    np.testing.assert_allclose([r["per_class"][k]["recall"] for k in "abcd"], recall_score(t, p, average=None))
    assert r["test_accuracy"] == pytest.approx(np.mean(t == p))


def test_small_japanese_vowels_run(tmp_path, capsys):
    run = tmp_path / "jv"
    code, out, err = cli(["train", "classify", "--dataset", "japanese-vowels", "--epochs", "3", "--hidden", "24",
                          "--quiet", "--out", str(run)], capsys)
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    assert res["n_train"] == 270 and res["n_test"] == 370
    assert set(res["per_class"]) == {str(k) for k in range(1, 10)}
    assert np.sum(res["confusion_matrix"]) == 370
    # three epochs already separate nine speakers far better than the majority class (~24%)
    assert res["test_accuracy"] > 0.6 > res["baselines"]["majority"]["test_accuracy"]
    assert res["baselines"]["logistic_summary"]["test_accuracy"] > 0.6
    assert (run / "confusion.png").exists()


def test_npz_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.array(["up", "down"] * 40)
    X = rng.normal(scale=0.3, size=(80, 6, 1)) + np.where(y == "up", 1.0, -1.0)[:, None, None] * np.linspace(0, 1, 6)[None, :, None]
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code, out, err = cli(["train", "classify", "--npz", str(tmp_path / "d.npz"), "--epochs", "15", "--hidden", "8",
                          "--quiet", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["n_test"] == 16 and res["test_accuracy"] >= 0.9


@pytest.mark.parametrize("train, test, needle", [
    ([], [], "holds no cases"),
    (["1,2:a", "3,4:b"], ["1,2:z"], "never shows"),
    (["1,2:3,4,5:a"], ["1,1:1,1:a"], "different lengths"),
    (["1,2:a", "x,4:b"], ["1,1:a"], "not a number"),
])
def test_bad_ts_one_line_exit_2_nothing_written(tmp_path, capsys, train, test, needle):
    path = write_pair(tmp_path, train, test)
    if not train:
        path.write_text("")
    run = tmp_path / "run"
    code, out, err = cli(["train", "classify", "--ts", str(path), "--out", str(run), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not run.exists()


def test_ts_without_its_test_file(tmp_path, capsys):
    (tmp_path / "Solo_TRAIN.ts").write_text(TS_HEAD + "1,2:a\n")
    code, _, err = cli(["train", "classify", "--ts", str(tmp_path / "Solo_TRAIN.ts"), "--out", str(tmp_path / "r")],
                       capsys)
    assert code == 2 and "Solo_TEST.ts" in err
