"""Truncated backpropagation through time over stateful streams.

TBPTT(k1, k2) (Williams & Peng 1990; Sutskever 2013, sec. 2.8.6): the model
reads each stream k1 characters at a time and carries its hidden state from one
chunk to the next; every k1 characters it backpropagates through the last
k2 <= k1 of them. With s_0 the state carried in (a constant: the gradient is cut
at the chunk boundary) and b = k1 - k2,

    s_b            = model(x_1..x_b, s_0)           forward only, no loss, no gradient
    z_{b+1..k1}, s = model(x_{b+1}..x_k1, s_b)      forward with the cache kept
    loss           = mean over t > b of CE(z_t, y_t)
    grads          = d loss / d params              backward through those k2 steps only
    s              carried into the next chunk

With k2 = k1 = T (one chunk holding the whole sequence) this is exactly full BPTT.

Streams. The corpus is cut into N parallel streams, each a contiguous run of
chunks; a batch is chunk i of every stream, shape (N, k1). Each document is
padded to a whole number of chunks (inputs 0, targets ``IGNORE``), so a new
document always starts a chunk and its stream's state is reset there: the
seeds' "clear the memory when a new document begins" is a reset mask (N,) per
batch. The padding costs at most k1 - 1 characters per document.
"""
from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..losses import softmax_cross_entropy

__all__ = ["IGNORE", "Streams", "tbptt_step"]

IGNORE = -100   # target of a padded position: no loss, no gradient (PyTorch's ignore_index)


def _pairs(documents, k1):
    """(inputs, targets, starts) over all documents, each padded to a multiple of k1.

    A document of m ids gives the m - 1 pairs (x_t, x_{t+1}); ``starts`` marks the
    chunks where a document begins.
    """
    xs, ys, starts = [], [], []
    for ids in documents:
        ids = np.asarray(ids, dtype=np.int64)
        m = len(ids) - 1
        if m < 1:
            continue
        chunks = -(-m // k1)
        x = np.zeros(chunks * k1, np.int64)
        y = np.full(chunks * k1, IGNORE, np.int64)
        x[:m], y[:m] = ids[:-1], ids[1:]
        xs.append(x.reshape(chunks, k1))
        ys.append(y.reshape(chunks, k1))
        starts.append(np.arange(chunks) == 0)
    if not xs:
        return np.zeros((0, k1), np.int64), np.zeros((0, k1), np.int64), np.zeros(0, bool)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(starts)


class Streams:
    """N parallel streams of k1-character chunks over a list of documents (arrays of ids).

    ``drop_remainder=True`` (training) keeps the first N * (C // N) of the C chunks
    so every batch is full; ``False`` (evaluation) pads the last streams with
    ignored chunks so that every character is counted exactly once.
    """

    def __init__(self, documents, num_streams, k1, drop_remainder=True, name="corpus"):
        self.num_streams, self.k1 = int(num_streams), int(k1)
        x, y, starts = _pairs(documents, self.k1)
        C = len(x)
        n_chars = int((y != IGNORE).sum())
        S = C // self.num_streams if drop_remainder else -(-C // self.num_streams)
        if S < 1:
            need = self.num_streams * self.k1 + 1
            raise UsageError(f"{name}: {n_chars + 1} characters is too short for {self.num_streams} streams of "
                             f"{self.k1}-character chunks (need at least {need}); lower --batch or --seq-len, "
                             f"or use a longer text")
        pad = self.num_streams * S - C
        if pad > 0:
            x = np.concatenate([x, np.zeros((pad, self.k1), np.int64)])
            y = np.concatenate([y, np.full((pad, self.k1), IGNORE, np.int64)])
            starts = np.concatenate([starts, np.ones(pad, bool)])
        keep = self.num_streams * S
        self.x = x[:keep].reshape(self.num_streams, S, self.k1)          # (N, S, k1)
        self.y = y[:keep].reshape(self.num_streams, S, self.k1)
        self.reset = starts[:keep].reshape(self.num_streams, S).copy()   # (N, S)
        self.reset[:, 0] = True   # each stream starts from a zero state (also when an epoch wraps around)
        self.steps_per_epoch = S
        self.num_chars = int((self.y != IGNORE).sum())                  # targets that count

    def batch(self, i):
        """Chunk ``i`` (mod the epoch) of every stream: x (N, k1), y (N, k1), reset (N,)."""
        j = i % self.steps_per_epoch
        return self.x[:, j], self.y[:, j], self.reset[:, j]

    def __len__(self):
        return self.steps_per_epoch


def tbptt_step(model, x, y, state, k2=None):
    """One TBPTT(k1, k2) update's forward and backward on a chunk x, y (N, k1).

    ``state`` is the state carried in (already reset where a document begins).
    Adds d loss / d params into ``model.grads`` (call ``model.zero_grad()`` first)
    and returns (loss, logits of the k2 window, targets of the window, new state).
    ``loss`` is None if the window holds no target (all padding); then no
    gradient is added.
    """
    k1 = x.shape[1]
    k2 = k1 if k2 is None else int(k2)
    if not 1 <= k2 <= k1:
        raise ValueError(f"k2: expected a backward window in 1..k1={k1}, got {k2}")
    b = k1 - k2
    if b:
        _, state = model.forward(x[:, :b], state)       # advance the state; this cache is overwritten next
    logits, state = model.forward(x[:, b:], state)      # (N, k2, V), cache kept for backward
    y = y[:, b:]
    if not (y != IGNORE).any():
        return None, logits, y, state
    loss, dlogits = softmax_cross_entropy(logits, y, ignore_index=IGNORE)
    model.backward(dlogits)                             # dstate=None: the future is cut off at the chunk end
    return loss, logits, y, state
