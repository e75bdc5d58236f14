"""Truncated BPTT and the stateful streams, checked against PyTorch autograd in float64.

The reference is written differently from rnnlab's code: a torch model with the
same weights, whose gradient cut is an explicit ``.detach()`` of the carried state
and whose k1 - k2 burn-in runs under ``torch.no_grad()``.
"""
import numpy as np
import pytest

from rnnlab.charlm import CharLM, CharLMConfig
from rnnlab.train import IGNORE, Streams, evaluate, tbptt_step

torch = pytest.importorskip("torch")

V, E, H = 7, 5, 6


def make_model(cell, layers=2, seed=0):
    model = CharLM(CharLMConfig(vocab_size=V, cell=cell, hidden_size=H, num_layers=layers, embed_dim=E,
                                dtype="float64", seed=seed))
    rng = np.random.default_rng(seed + 100)
    for p in model.params.values():           # random non-zero weights and biases
        p[...] = rng.uniform(-0.5, 0.5, p.shape)
    return model


class TorchLM(torch.nn.Module):
    """The same model in PyTorch, weights copied from an rnnlab CharLM."""

    def __init__(self, model):
        super().__init__()
        c = model.config
        rnn_class = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[c.cell]
        self.embed = torch.nn.Embedding(c.vocab_size, c.embed_dim).double()
        self.rnn = rnn_class(c.embed_dim, c.hidden_size, c.num_layers, batch_first=True).double()
        self.head = torch.nn.Linear(c.hidden_size, c.vocab_size).double()
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(torch.from_numpy(model.params[name]))

    def forward(self, x, state):
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state


def to_torch_state(state):
    if isinstance(state, tuple):
        return tuple(torch.from_numpy(np.array(s)) for s in state)
    return None if state is None else torch.from_numpy(np.array(state))


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def torch_grads(tmodel):
    return {name: p.grad.numpy().copy() for name, p in tmodel.named_parameters()}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_one_chunk_of_the_whole_sequence_is_full_bptt(cell):
    """TBPTT(k1=T, k2=T) over one chunk holding the whole sequence gives full BPTT's gradients."""
    rng = np.random.default_rng(1)
    N, T = 3, 17
    model = make_model(cell)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    model.zero_grad()
    loss, _, _, state = tbptt_step(model, x, y, None, k2=T)

    tmodel = TorchLM(model)
    logits, tstate = tmodel(torch.from_numpy(x), None)
    tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-12
    for name, g in torch_grads(tmodel).items():
        np.testing.assert_allclose(model.grads[name], g, rtol=0, atol=1e-12, err_msg=name)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    tstate if isinstance(tstate, tuple) else (tstate,)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("cell,k1,k2", [("lstm", 6, 6), ("lstm", 7, 3), ("gru", 5, 2), ("rnn", 4, 1)])
def test_chunks_with_a_backward_window_match_detached_torch_windows(cell, k1, k2):
    """Each chunk: burn-in of k1 - k2 steps without gradient, loss and backprop over the last k2,
    state carried across chunks with the gradient cut (reference: torch with detach)."""
    rng = np.random.default_rng(2)
    N, chunks = 2, 3
    model = make_model(cell)
    tmodel = TorchLM(model)
    x = rng.integers(0, V, (N, k1 * chunks))
    y = rng.integers(0, V, (N, k1 * chunks))
    y[0, 2] = IGNORE                                        # an ignored target inside a window
    state, tstate = None, None
    b = k1 - k2
    for j in range(chunks):
        xc, yc = x[:, j * k1:(j + 1) * k1], y[:, j * k1:(j + 1) * k1]
        model.zero_grad()
        loss, _, _, state = tbptt_step(model, xc, yc, state, k2=k2)

        tmodel.zero_grad()
        xt = torch.from_numpy(xc)
        if tstate is not None:
            tstate = detach(tstate)                         # the cut at the chunk boundary
        if b:
            with torch.no_grad():
                _, tstate = tmodel(xt[:, :b], tstate)
        logits, tstate = tmodel(xt[:, b:], tstate)
        tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(yc[:, b:]).reshape(-1),
                                                  ignore_index=IGNORE)
        tloss.backward()
        assert abs(loss - tloss.item()) < 1e-12
        for name, g in torch_grads(tmodel).items():
            np.testing.assert_allclose(model.grads[name], g, rtol=0, atol=1e-12, err_msg=f"chunk {j} {name}")


def test_the_cut_matters():
    """Two chunks of T/2 do not give the full-BPTT gradient of the second half's loss (the proof above is not vacuous)."""
    rng = np.random.default_rng(3)
    model = make_model("lstm")
    T = 12
    x, y = rng.integers(0, V, (2, T)), rng.integers(0, V, (2, T))
    y_second = y.copy()
    y_second[:, :T // 2] = IGNORE                           # full BPTT of the second half's loss only
    model.zero_grad()
    tbptt_step(model, x, y_second, None)
    full = model.grads["rnn.weight_hh_l0"].copy()
    model.zero_grad()
    _, _, _, state = tbptt_step(model, x[:, :T // 2], y[:, :T // 2], None)
    model.zero_grad()
    tbptt_step(model, x[:, T // 2:], y[:, T // 2:], state)
    assert np.abs(model.grads["rnn.weight_hh_l0"] - full).max() > 1e-6


def test_a_window_of_padding_only_adds_no_gradient():
    model = make_model("gru")
    x = np.ones((2, 5), np.int64)
    y = np.full((2, 5), IGNORE)
    y[:, 0] = 1                                             # targets only in the burn-in part
    model.zero_grad()
    loss, _, _, state = tbptt_step(model, x, y, None, k2=3)
    assert loss is None and state.shape == (2, 2, H)
    assert all(not g.any() for g in model.grads.values())
    with pytest.raises(ValueError, match="k2"):
        tbptt_step(model, x, y, None, k2=6)


# ---- streams ------------------------------------------------------------------------------
def test_streams_lay_out_documents_in_chunks_and_reset_where_one_begins():
    docs = [np.arange(11) % V, np.arange(5) % V + 1, np.arange(9) % V]   # 10 + 4 + 8 pairs
    s = Streams(docs, num_streams=2, k1=4, drop_remainder=False)
    # chunks: doc0 -> 3 (12 slots), doc1 -> 1, doc2 -> 2: 6 chunks, 3 per stream
    assert s.x.shape == (2, 3, 4) and len(s) == 3
    assert s.num_chars == 10 + 4 + 8
    # a document begins at chunk 0 of stream 0 and chunk 0 and 1 of stream 1 (doc1 at global chunk 3, doc2 at 4)
    np.testing.assert_array_equal(s.reset, [[True, False, False], [True, True, False]])
    # reading the chunks in order gives back every (x_t, x_{t+1}) pair of every document
    x, y = s.x.reshape(-1), s.y.reshape(-1)
    keep = y != IGNORE
    pairs_x = np.concatenate([d[:-1] for d in docs])
    pairs_y = np.concatenate([d[1:] for d in docs])
    np.testing.assert_array_equal(x[keep], pairs_x)
    np.testing.assert_array_equal(y[keep], pairs_y)
    xb, yb, rb = s.batch(4)                                 # wraps around the epoch
    np.testing.assert_array_equal(xb, s.x[:, 1])
    np.testing.assert_array_equal(rb, s.reset[:, 1])


def test_training_streams_drop_the_remainder_and_refuse_a_too_short_corpus():
    s = Streams([np.arange(30) % V], num_streams=3, k1=4)   # 29 pairs -> 8 chunks -> 2 per stream
    assert s.x.shape == (3, 2, 4) and (s.y != IGNORE).all()
    from rnnlab.errors import UsageError
    with pytest.raises(UsageError, match="too short"):
        Streams([np.arange(8) % V], num_streams=3, k1=4)


def test_state_resets_where_a_new_document_begins():
    """The logits on a document's first chunk do not depend on the document before it."""
    rng = np.random.default_rng(4)
    model = make_model("lstm")
    doc_a, doc_b = rng.integers(0, V, 9), rng.integers(0, V, 9)   # 8 pairs each: 2 chunks of 4
    s = Streams([doc_a, doc_b], num_streams=1, k1=4)
    state = model.initial_state(1)
    outs = []
    for i in range(len(s)):
        x, _, reset = s.batch(i)
        state = model.reset_state(state, reset)
        logits, state = model.forward(x, state)
        outs.append(logits)
    fresh, _ = model.forward(doc_b[None, :4], None)
    np.testing.assert_allclose(outs[2], fresh, rtol=0, atol=1e-13)
    carried, _ = model.forward(doc_b[None, :4], model.reset_state(state, [False]))
    assert np.abs(carried - fresh).max() > 1e-6                 # without the reset the memory would leak


def test_a_model_runs_at_any_batch_size():
    """The state is not a parameter: each stream's outputs are the same alone or among others."""
    rng = np.random.default_rng(5)
    model = make_model("gru")
    x = rng.integers(0, V, (4, 10))
    together, _ = model.forward(x, None)
    for n in range(4):
        alone, _ = model.forward(x[n:n + 1], None)
        np.testing.assert_allclose(alone[0], together[n], rtol=0, atol=1e-13)


def test_evaluation_counts_every_character_once_at_any_number_of_streams():
    rng = np.random.default_rng(6)
    model = make_model("lstm")
    doc = rng.integers(0, V, 41)
    logits, _ = model.forward(doc[None, :-1], None)              # one pass over the whole document
    z = logits[0]
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(40), doc[1:]].mean()
    one = evaluate(model, Streams([doc], 1, 6, drop_remainder=False))
    assert one["chars"] == 40 and abs(one["loss"] - expected) < 1e-12
    assert abs(one["bpc"] - expected / np.log(2)) < 1e-12
    three = evaluate(model, Streams([doc], 3, 6, drop_remainder=False))
    assert three["chars"] == 40          # the streams start fresh mid-document, so the loss may differ
