"""The seeds' sequence modes, each trained for a few hundred Adam steps on a small
synthetic task with rnnlab's pieces; each test asserts that the held-out loss ends
far below the trivial baseline (predicting the uniform distribution) and below where
training started.

    many-to-many aligned   tagging: y_t = (x_t + x_{t-1}) mod 3                   LSTM
    many-to-one            majority bit of a variable-length sequence, read at
                           each sequence's last valid step (lengths honoured)      GRU
    one-to-many            from a digit d emit d, d+1, ..., d+5 (mod 10), the
                           input given only at t = 0                               RNN
    encoder-decoder        read 6 tokens, emit the first 3 (different lengths);
                           decoder starts from the encoder's final state, and the
                           gradient reaches the encoder only through dstate        LSTM
"""
import math

import numpy as np

from rnnlab import GRU, LSTM, RNN
from rnnlab.losses import sigmoid_binary_cross_entropy, softmax_cross_entropy
from rnnlab.nn import Embedding, Linear, last_valid_step, last_valid_step_backward
from rnnlab.optim import Adam, clip_grad_norm


def named_params(parts, attr):
    return {f"{n}.{k}": v for n, m in parts.items() for k, v in getattr(m, attr).items()}


def train(model, batch, steps, lr=0.01, seed=0):
    """Adam on fresh batches; returns (held-out loss before, held-out loss after)."""
    rng = np.random.default_rng(seed)
    held_out = batch(np.random.default_rng(seed + 1000), 256)
    start, _ = model.loss(*held_out)
    opt = Adam(named_params(model.parts, "params"), lr=lr)
    for _ in range(steps):
        for m in model.parts.values():
            m.zero_grad()
        model.loss(*batch(rng, 32))
        model.backward()
        grads = named_params(model.parts, "grads")
        clip_grad_norm(grads, 5.0)
        opt.step(grads)
    end, acc = model.loss(*held_out)
    return start, end, acc


# ---- many-to-many aligned -------------------------------------------------------------------
def tagging_batch(rng, N, T=10):
    x = rng.integers(0, 6, (N, T))
    prev = np.concatenate([np.zeros((N, 1), int), x[:, :-1]], axis=1)
    return x, (x + prev) % 3


class Tagger:
    def __init__(self):
        self.parts = {"embed": Embedding(6, 8, seed=0), "rnn": LSTM(8, 24, seed=1), "head": Linear(24, 3, seed=2)}

    def loss(self, x, y):
        e, rnn, head = self.parts.values()
        out, _ = rnn(e(x))                                   # (N, T, H)
        logits = head(out)                                   # (N, T, 3): one prediction per step
        loss, self.dlogits = softmax_cross_entropy(logits, y)
        return loss, (logits.argmax(-1) == y).mean()

    def backward(self):
        e, rnn, head = self.parts.values()
        dx, _ = rnn.backward(head.backward(self.dlogits))
        e.backward(dx)


def test_many_to_many_tagging():
    start, end, acc = train(Tagger(), tagging_batch, steps=150)
    baseline = math.log(3)
    assert abs(start - baseline) < 0.2 * baseline           # starts near chance
    assert end < 0.1 * baseline and acc > 0.97


# ---- many-to-one, variable lengths ----------------------------------------------------------
def majority_batch(rng, N, T=9):
    lengths = rng.choice([1, 3, 5, 7, 9], N)                 # odd: no ties
    x = rng.integers(0, 2, (N, T))
    valid = np.arange(T)[None, :] < lengths[:, None]
    y = ((x * valid).sum(1) * 2 > lengths).astype(float)[:, None]
    x = np.where(valid, x, 2)                                # padding token 2: must not count
    return x, lengths, y


class MajorityClassifier:
    def __init__(self):
        self.parts = {"embed": Embedding(3, 6, seed=0), "rnn": GRU(6, 16, seed=1), "head": Linear(16, 1, seed=2)}

    def loss(self, x, lengths, y):
        e, rnn, head = self.parts.values()
        out, _ = rnn(e(x), lengths=lengths)                  # (N, T, H), zero after each length
        self.lengths, self.T = lengths, x.shape[1]
        logit = head(last_valid_step(out, lengths))          # (N, 1) from out[n, lengths[n] - 1]
        loss, self.dlogit = sigmoid_binary_cross_entropy(logit, y)
        return loss, ((logit > 0) == (y > 0.5)).mean()

    def backward(self):
        e, rnn, head = self.parts.values()
        dout = last_valid_step_backward(head.backward(self.dlogit), self.lengths, self.T)
        dx, _ = rnn.backward(dout)
        e.backward(dx)


def test_many_to_one_from_last_valid_step():
    start, end, acc = train(MajorityClassifier(), majority_batch, steps=200)
    baseline = math.log(2)
    assert abs(start - baseline) < 0.2 * baseline
    assert end < 0.15 * baseline and acc > 0.95


# ---- one-to-many ------------------------------------------------------------------------------
def counting_batch(rng, N, T=6):
    d = rng.integers(0, 10, N)
    return d, (d[:, None] + np.arange(T)[None, :]) % 10


class Counter:
    def __init__(self, T=6):
        self.T = T
        self.parts = {"embed": Embedding(10, 12, seed=0), "rnn": RNN(12, 32, seed=1), "head": Linear(32, 10, seed=2)}

    def loss(self, d, y):
        e, rnn, head = self.parts.values()
        x = np.zeros((len(d), self.T, 12), np.float32)
        x[:, 0] = e(d)                                       # the one input, at t = 0; zeros afterwards
        out, _ = rnn(x)
        logits = head(out)                                   # (N, T, 10)
        loss, self.dlogits = softmax_cross_entropy(logits, y)
        return loss, (logits.argmax(-1) == y).mean()

    def backward(self):
        e, rnn, head = self.parts.values()
        dx, _ = rnn.backward(head.backward(self.dlogits))
        e.backward(dx[:, 0])                                 # only step 0 came from the embedding


def test_one_to_many_generation():
    start, end, acc = train(Counter(), counting_batch, steps=150)
    baseline = math.log(10)
    assert abs(start - baseline) < 0.2 * baseline
    assert end < 0.1 * baseline and acc > 0.97


# ---- encoder-decoder ------------------------------------------------------------------------------
BOS = 8


def copy_prefix_batch(rng, N, T_in=6, T_out=3):
    x = rng.integers(0, 8, (N, T_in))
    return x, x[:, :T_out].copy()


class EncoderDecoder:
    """Encoder LSTM over 6 tokens; decoder LSTM from its final (h, c), fed BOS then the previous
    target token (teacher forcing), predicting 3 tokens."""

    def __init__(self, H=32, dtype=np.float32):
        self.parts = {"src_embed": Embedding(8, 8, dtype=dtype, seed=0), "encoder": LSTM(8, H, dtype=dtype, seed=1),
                      "tgt_embed": Embedding(9, 8, dtype=dtype, seed=2), "decoder": LSTM(8, H, dtype=dtype, seed=3),
                      "head": Linear(H, 8, dtype=dtype, seed=4)}

    def loss(self, x, y):
        src, enc, tgt, dec, head = self.parts.values()
        enc_out, state = enc(src(x))
        self.enc_out_shape = enc_out.shape
        dec_in = np.concatenate([np.full((len(y), 1), BOS), y[:, :-1]], axis=1)   # (N, 3)
        out, _ = dec(tgt(dec_in), state=state)
        logits = head(out)                                   # (N, 3, 8)
        loss, self.dlogits = softmax_cross_entropy(logits, y)
        return loss, (logits.argmax(-1) == y).mean()

    def backward(self):
        src, enc, tgt, dec, head = self.parts.values()
        ddec_in, dstate = dec.backward(head.backward(self.dlogits))
        tgt.backward(ddec_in)
        # the encoder's outputs are unused: its only gradient is the one through its final state
        dx, _ = enc.backward(np.zeros(self.enc_out_shape, enc.dtype), dstate=dstate)
        src.backward(dx)


def test_encoder_decoder_gradient_reaches_the_encoder_through_dstate():
    """Float64 central differences of the whole model's loss with respect to encoder and
    source-embedding entries: their only path to the loss is the decoder's initial state."""
    model = EncoderDecoder(H=5, dtype=np.float64)
    x, y = copy_prefix_batch(np.random.default_rng(5), 4)
    model.loss(x, y)
    model.backward()
    rng = np.random.default_rng(6)
    for part, name in [("encoder", "weight_ih_l0"), ("encoder", "weight_hh_l0"), ("encoder", "bias_hh_l0"),
                       ("src_embed", "weight")]:
        p, g = model.parts[part].params[name], model.parts[part].grads[name]
        for _ in range(4):
            i = tuple(rng.integers(0, s) for s in p.shape)
            old = p[i]
            p[i] = old + 1e-6
            plus, _ = model.loss(x, y)
            p[i] = old - 1e-6
            minus, _ = model.loss(x, y)
            p[i] = old
            assert abs((plus - minus) / 2e-6 - g[i]) < 1e-8, (part, name, i)
    assert np.abs(model.parts["encoder"].grads["weight_hh_l0"]).max() > 1e-4


def test_encoder_decoder_with_different_lengths():
    start, end, acc = train(EncoderDecoder(), copy_prefix_batch, steps=250, lr=0.02)
    baseline = math.log(8)
    assert abs(start - baseline) < 0.2 * baseline
    assert end < 0.15 * baseline and acc > 0.95
