"""Long-range memory tasks, each a batch generator with a closed-form trivial baseline.

Every task answers the same question: can the network carry information from
an early input to a late output across ``length`` steps it must ignore?

adding (Hochreiter & Schmidhuber 1997)
    x_t = (u_t, m_t) with u_t ~ U(0, 1) and exactly two markers m_t = 1, one in
    each half of the sequence. Target y = sum of the two marked u_t, read from
    the last step. Always answering E[y] = 1 scores MSE = Var(y) = 2/12 = 0.1667.

copy (the "memory" task of Hochreiter & Schmidhuber, in the form of Arjovsky et al. 2016)
    K symbols from an alphabet of A, then ``length`` blanks, then a delimiter;
    during the next K steps the network must output the K symbols in order.
    A memoryless model can only predict the uniform distribution over the A
    symbols, so its cross-entropy per recalled symbol is log(A) nats.

digits (scikit-learn's ``load_digits``)
    An 8x8 handwritten digit read one row per step (8 steps of 8 pixels) and
    classified from the last step. The trivial score is the accuracy of always
    answering the most common training class. Its length is fixed at 8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("adding", "copy", "digits")

COPY_SYMBOLS = 8      # alphabet A of the copy task
COPY_K = 10           # symbols to remember


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs from the model, how it is scored and what counts as solved."""
    name: str
    input_size: int
    output_size: int
    metric: str          # "mse", "xent" or "accuracy"
    lower_is_better: bool
    baseline: float      # the trivial, memoryless score
    threshold: float     # solved if the metric beats this (below for losses, above for accuracy)
    solved_rule: str     # the threshold in words, stored in results.json


def adding_batch(rng, N, T):
    """Adding problem batch. Returns x (N, T, 2) float, y (N, 1) float."""
    if T < 2:
        raise ValueError(f"length: the adding problem needs at least 2 steps, got {T}")
    u = rng.random((N, T))
    half = T // 2
    first = rng.integers(0, half, N)              # one marker in each half, as in the original
    second = rng.integers(half, T, N)
    m = np.zeros((N, T))
    rows = np.arange(N)
    m[rows, first] = 1.0
    m[rows, second] = 1.0
    x = np.stack([u, m], axis=2)
    y = (u[rows, first] + u[rows, second])[:, None]
    return x, y


def copy_batch(rng, N, T, A=COPY_SYMBOLS, K=COPY_K):
    """Copy task batch: total length K + T + K steps.

    Input one-hot over A + 2 channels (A symbols, blank = A, delimiter = A + 1):
    K symbols, T - 1 blanks, the delimiter, then K blanks. Returns x (N, T + 2K, A + 2)
    and targets (N, K) of symbol ids, to be read from the last K steps.
    """
    if T < 1:
        raise ValueError(f"length: the copy task needs a delay of at least 1 step, got {T}")
    symbols = rng.integers(0, A, (N, K))
    ids = np.full((N, T + 2 * K), A)              # blanks
    ids[:, :K] = symbols
    ids[:, K + T - 1] = A + 1                     # the delimiter: "now recall"
    x = np.eye(A + 2)[ids]
    return x, symbols


def load_digits_split(seed=0, test_fraction=0.25):
    """scikit-learn's 1,797 digits as sequences: (x_train (N, 8, 8), y_train, x_test, y_test).

    Pixels are scaled from 0..16 to 0..1. The split is a fixed permutation by ``seed``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise OSError("the digits task needs scikit-learn: pip install -e '.[data]'") from e
    d = load_digits()
    x = (d.images / 16.0).astype(np.float64)       # (1797, 8, 8): row r is time step r
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def spec(task):
    """The ``TaskSpec`` of ``task`` (one of ``TASKS``)."""
    if task == "adding":
        return TaskSpec("adding", 2, 1, "mse", True, 2.0 / 12.0, 0.01,
                        "solved if test MSE < 0.01 (the baseline of always answering 1.0 is 1/6 = 0.167)")
    if task == "copy":
        return TaskSpec("copy", COPY_SYMBOLS + 2, COPY_SYMBOLS, "xent", True, float(np.log(COPY_SYMBOLS)),
                        0.05, f"solved if the cross-entropy per recalled symbol < 0.05 nats "
                              f"(memoryless baseline log({COPY_SYMBOLS}) = {np.log(COPY_SYMBOLS):.3f})")
    if task == "digits":
        return TaskSpec("digits", 8, 10, "accuracy", False, float("nan"), 0.9,
                        "solved if test accuracy >= 0.9 (baseline: always the most common training class)")
    raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")


def majority_baseline(y_train, y_test):
    """Accuracy on ``y_test`` of always answering the most common class of ``y_train``."""
    return float(np.mean(y_test == np.bincount(y_train).argmax()))
