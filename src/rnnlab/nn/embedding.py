"""Embedding: a lookup table from token ids to vectors.

    y[..., :] = W[ids[...], :]          W (V, E), ids any shape of ints in 0..V-1

Its gradient is a scatter-add: every occurrence of id v adds its dy to row v,

    dW[v] = sum over positions p with ids[p] == v of dy[p]

Repeated ids must accumulate (``dW[ids] += dy`` would keep only the last). This
is ``np.add.at(dW, ids, dy)``; we compute the same sums by sorting the positions by
id and adding each id's run with one ``np.add.reduceat``, which measured about 2.4x
faster than ``np.add.at`` at character-model sizes (8192 positions, V=65, E=64).
There is no gradient with respect to integer ids, so ``backward`` returns None.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from ._module import Module


def check_ids(ids, num_embeddings, name="ids"):
    """``ids`` as an int64 array, or a TypeError/ValueError naming ``name``."""
    arr = np.asarray(ids)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected integer token ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_embeddings):
        raise ValueError(f"{name}: expected ids in 0..{num_embeddings - 1}, got min {arr.min()} and max {arr.max()}")
    return arr.astype(np.int64, copy=False)


class Embedding(Module):
    """``torch.nn.Embedding``: parameter ``weight`` (V, E) initialised N(0, 1) as PyTorch does."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, seed=None):
        super().__init__()
        self.num_embeddings = V.positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = V.positive_int(embedding_dim, "embedding_dim")
        self.dtype = V.float_dtype(dtype)
        rng = np.random.default_rng(seed)
        self._add_param("weight", rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype))
        self._ids = None

    def forward(self, ids):
        """ids (...) ints -> vectors (..., E)."""
        ids = check_ids(ids, self.num_embeddings)
        self._ids = ids
        return self.params["weight"][ids]                      # fancy indexing copies

    def backward(self, dout):
        """Scatter-add dout (..., E) into ``grads['weight']``; returns None (ids have no gradient)."""
        if self._ids is None:
            raise ValueError("backward: called before forward; run forward(ids) first")
        dout = V.as_float_array(dout, "dout", self.dtype, finite=False)
        V.expect_shape(dout, self._ids.shape + (self.embedding_dim,), "dout")
        flat = self._ids.ravel()
        if flat.size == 0:
            return None
        order = np.argsort(flat, kind="stable")
        ids = flat[order]                                              # sorted ids, runs of equal ids
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])      # first position of each run
        rows = dout.reshape(-1, self.embedding_dim)[order]
        self.grads["weight"][ids[starts]] += np.add.reduceat(rows, starts, axis=0)   # y[p] = W[ids[p]]
        return None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}, dtype={self.dtype.name})"
