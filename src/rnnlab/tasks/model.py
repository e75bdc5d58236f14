"""The network behind every task: [Embedding] -> recurrent layers -> final state -> [Dropout] -> Linear.

Many-to-one. For a batch x (N, T, D) (or token ids (N, T)) with lengths (N,):

    e   = Embedding(ids)                      (N, T, E)   text only
    out, h_T = cell(e or x, lengths)          h_T (L*dirs, N, H): the state after each
                                              sequence's own last valid step
    z   = [h_T[top, forward], h_T[top, reverse]]   (N, dirs*H)
    y   = Linear(Dropout(z))                  (N, K): logits, or the forecast

Using the final state rather than out[:, -1] is what makes padding harmless:
the layers carry the state unchanged through padded steps, and the reverse
direction's final state is the one after reading the whole sequence backwards.
Backward feeds dz into the final-state gradient (dstate) and zero into ``out``.

Parameters are one flat dict with dotted names (``rnn.weight_ih_l0``,
``head.weight``), so one optimizer and one checkpoint file cover the model.
"""
from __future__ import annotations

import numpy as np

from .. import GRU, LSTM, RNN
from ..nn import Dropout, Embedding, Linear

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


class SequenceModel:
    def __init__(self, input_size, hidden_size, output_size, cell="lstm", num_layers=1,
                 bidirectional=False, dropout=0.0, vocab_size=None, seed=0, dtype=np.float32):
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
        self.config = dict(input_size=input_size, hidden_size=hidden_size, output_size=output_size,
                           cell=cell, num_layers=num_layers, bidirectional=bidirectional,
                           dropout=dropout, vocab_size=vocab_size, seed=seed, dtype=np.dtype(dtype).name)
        seeds = np.random.SeedSequence(seed).generate_state(4)   # one independent stream per part
        self.modules = {}
        if vocab_size is not None:
            self.modules["embedding"] = Embedding(vocab_size, input_size, dtype=dtype, seed=seeds[0])
        self.modules["rnn"] = CELLS[cell](input_size, hidden_size, num_layers=num_layers,
                                          bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0,
                                          dtype=dtype, seed=seeds[1])
        self.dirs = 2 if bidirectional else 1
        self.drop = Dropout(dropout, seed=seeds[2])
        self.modules["head"] = Linear(self.dirs * hidden_size, output_size, dtype=dtype, seed=seeds[3])
        self.params = {f"{m}.{k}": v for m, mod in self.modules.items() for k, v in mod.params.items()}
        self.grads = {f"{m}.{k}": v for m, mod in self.modules.items() for k, v in mod.grads.items()}
        self._cache = None

    def train(self, mode=True):
        for mod in list(self.modules.values()) + [self.drop]:
            mod.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for mod in self.modules.values():
            mod.zero_grad()

    def forward(self, x, lengths=None):
        """x (N, T, D) floats or (N, T) token ids; lengths (N,) or None. Returns (N, output_size)."""
        rnn = self.modules["rnn"]
        if "embedding" in self.modules:
            x = self.modules["embedding"].forward(x)                   # (N, T, E)
        out, state = rnn.forward(x, lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state            # (L*dirs, N, H)
        z = np.concatenate(list(h[-self.dirs:]), axis=1)               # (N, dirs*H) top layer
        y = self.modules["head"].forward(self.drop.forward(z))
        self._cache = (out.shape, state)
        return y

    __call__ = forward

    def backward(self, dy):
        """dy (N, output_size): adds every parameter's gradient into ``grads``."""
        out_shape, state = self._cache
        rnn = self.modules["rnn"]
        dz = self.drop.backward(self.modules["head"].backward(dy))     # (N, dirs*H)
        h = state[0] if isinstance(state, tuple) else state
        dh = np.zeros_like(h)
        H = rnn.hidden_size
        for d in range(self.dirs):                                     # z = [h_T[-dirs], ..., h_T[-1]]
            dh[len(h) - self.dirs + d] = dz[:, d * H:(d + 1) * H]
        dstate = (dh, np.zeros_like(state[1])) if isinstance(state, tuple) else dh
        dx, _ = rnn.backward(np.zeros(out_shape, rnn.dtype), dstate)   # out itself is unused
        if "embedding" in self.modules:
            self.modules["embedding"].backward(dx)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, mapping):
        for m, mod in self.modules.items():
            mod.load_state_dict({k[len(m) + 1:]: v for k, v in mapping.items() if k.startswith(m + ".")})

    def predict(self, x, lengths=None, batch_size=512):
        """Forward in evaluation mode, in batches; returns (N, output_size) float64."""
        was = self.modules["rnn"].training
        self.eval()
        outs = []
        for i in range(0, len(x), batch_size):
            outs.append(self.forward(x[i:i + batch_size],
                                     None if lengths is None else lengths[i:i + batch_size]))
        self.train(was)
        return np.concatenate(outs).astype(np.float64)
