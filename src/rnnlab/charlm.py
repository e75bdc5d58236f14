"""The character language model: Embedding -> LSTM/GRU/RNN (L layers) -> Linear.

For ids x (N, T) and the state carried in from the previous chunk:

    e = W_emb[x]                          (N, T, E)    Embedding
    h, state = rnn(e, state)              (N, T, H)    the recurrent layers
    h = dropout(h)                                     only when dropout > 0 and training
    z = h W_out^T + b_out                 (N, T, V)    one GEMM for all N*T positions
    p(x_{t+1} | x_<=t) = softmax(z_t)

``backward`` runs the same chain in reverse. The state is not a parameter: the
same weights run at any batch size, one character at a time with ``step``.
The chain is written out by hand rather than built with ``nn.Sequential``,
which takes only one-array modules: the recurrent layer takes and returns the
state (see ``nn/sequential.py``). This is the pattern to copy for other
Embedding -> recurrent layer -> Linear models.

Parameters are named ``embed.weight``, ``rnn.<PyTorch name>`` (``weight_ih_l0``...),
``head.weight``, ``head.bias``; the arrays are the modules' own, so an optimizer
updating ``model.params[name]`` in place updates the model.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import _validate as V
from .nn import Dropout, Embedding, Linear
from .recurrent import GRU, LSTM, RNN

__all__ = ["CharLMConfig", "CharLM", "CELLS"]

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


@dataclasses.dataclass
class CharLMConfig:
    """Everything needed to rebuild the model (saved as JSON in each checkpoint)."""
    vocab_size: int
    cell: str = "lstm"          # LSTM: the gated cell that keeps long-range structure (speaker names, line lengths)
    hidden_size: int = 256      # 256 units learn Shakespeare's spelling in minutes on two cores
    num_layers: int = 1         # one layer is faster per character; a second helps only with longer training
    embed_dim: int = 64         # 76 characters need few dimensions; 64 keeps the input GEMM cheap
    dropout: float = 0.0        # short runs underfit; dropout only helps once a run starts to overfit
    forget_bias: float = 1.0    # LSTM only: start the forget gate open (Gers et al.; Jozefowicz et al. 2015)
    dtype: str = "float32"      # float32 halves memory traffic; tests use float64
    seed: int = 0               # initialisation and dropout masks

    def validate(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("vocab_size", "hidden_size", "num_layers", "embed_dim"):
            V.positive_int(getattr(self, name), name)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        V.float_dtype(self.dtype)
        return self


class CharLM:
    """A character-level language model; see the module docstring for the equations."""

    def __init__(self, config: CharLMConfig):
        self.config = c = config.validate()
        dtype = np.dtype(c.dtype)
        # one seed, independent streams for each part (adding a part never shifts another's numbers)
        s_embed, s_rnn, s_drop, s_head = np.random.SeedSequence(c.seed).spawn(4)
        self.embed = Embedding(c.vocab_size, c.embed_dim, dtype=dtype, seed=s_embed)
        kwargs = dict(num_layers=c.num_layers, dropout=c.dropout, dtype=dtype, seed=s_rnn)
        if c.cell == "lstm":
            kwargs["forget_bias"] = c.forget_bias
        self.rnn = CELLS[c.cell](c.embed_dim, c.hidden_size, **kwargs)
        self.drop = Dropout(c.dropout, seed=s_drop)
        self.head = Linear(c.hidden_size, c.vocab_size, dtype=dtype, seed=s_head)
        self.parts = {"embed": self.embed, "rnn": self.rnn, "head": self.head}
        self.params = {f"{p}.{k}": v for p, m in self.parts.items() for k, v in m.params.items()}
        self.grads = {f"{p}.{k}": v for p, m in self.parts.items() for k, v in m.grads.items()}
        self.training = True

    @property
    def rngs(self):
        """The random generators whose state a checkpoint must keep (dropout masks)."""
        return {"rnn": self.rnn.rng, "drop": self.drop.rng}

    @property
    def dtype(self):
        return np.dtype(self.config.dtype)

    # ---- state ----------------------------------------------------------------------
    def initial_state(self, batch_size):
        """Zeros for ``batch_size`` streams: h (L, N, H), and (h, c) for the LSTM."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        h = np.zeros(shape, self.dtype)
        return (h, np.zeros(shape, self.dtype)) if self.config.cell == "lstm" else h

    @staticmethod
    def reset_state(state, reset):
        """A copy of ``state`` with the streams where ``reset`` (N,) is true set to zero."""
        reset = np.asarray(reset, dtype=bool)
        arrays = state if isinstance(state, tuple) else (state,)
        out = tuple(np.where(reset[None, :, None], 0, a).astype(a.dtype) for a in arrays)
        return out if isinstance(state, tuple) else out[0]

    # ---- forward / backward -----------------------------------------------------------
    def forward(self, ids, state=None):
        """ids (N, T) ints -> logits (N, T, V) and the final state (gradient cut: it is a plain value)."""
        ids = np.asarray(ids)
        if ids.ndim != 2:
            raise ValueError(f"ids: expected a 2-D array (N, T) of character ids, got shape {ids.shape}")
        e = self.embed.forward(ids)                      # (N, T, E)
        h, state = self.rnn.forward(e, state)            # (N, T, H)
        h = self.drop.forward(h)
        return self.head.forward(h), state               # (N, T, V)

    __call__ = forward

    def backward(self, dlogits, dstate=None):
        """Backward of the last ``forward``; adds into ``grads``; returns the gradient of the initial state."""
        dh = self.head.backward(dlogits)                 # z = h W^T + b
        dh = self.drop.backward(dh)                      # h = dropout(h)
        de, dstate0 = self.rnn.backward(dh, dstate)      # h, state = rnn(e, state)
        self.embed.backward(de)                          # e = W_emb[x]
        return dstate0

    def step(self, ids, state=None):
        """One character per stream: ids (N,) -> logits (N, V), new state. For sampling."""
        logits, state = self.forward(np.asarray(ids).reshape(-1, 1), state)
        return logits[:, 0], state

    # ---- bookkeeping --------------------------------------------------------------------
    def zero_grad(self):
        for m in self.parts.values():
            m.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for m in (self.embed, self.rnn, self.drop, self.head):
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, mapping):
        """All names and shapes are checked (by each part) before the model is used."""
        extra = [k for k in mapping if k.split(".", 1)[0] not in self.parts]
        if extra:
            raise ValueError(f"state_dict: unexpected keys {extra}")
        for p, m in self.parts.items():
            prefix = p + "."
            m.load_state_dict({k[len(prefix):]: v for k, v in mapping.items() if k.startswith(prefix)})

    def num_params(self):
        return int(sum(v.size for v in self.params.values()))

    def __repr__(self):
        c = self.config
        return (f"CharLM({c.cell}, vocab={c.vocab_size}, embed={c.embed_dim}, hidden={c.hidden_size}, "
                f"layers={c.num_layers}, params={self.num_params():,})")
