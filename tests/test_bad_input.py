"""Bad input at the public entry points: a ValueError/TypeError naming the argument, what was expected and what was given."""
import numpy as np
import pytest

import rnnlab

N, T, D, H = 2, 5, 3, 4


def lstm():
    return rnnlab.LSTM(D, H, dtype=np.float64, seed=0)


def gru():
    return rnnlab.GRU(D, H, seed=0)


def ran(layer):
    layer.forward(np.ones((N, T, D)))
    return layer


def zeros(*shape):
    return np.zeros(shape)


def sd_with(**changes):
    sd = lstm().state_dict()
    sd.update(changes)
    return sd


# (id, call, exception, substrings the message must contain: the argument's name first, then expected/given)
CASES = [
    ("x rank", lambda: lstm().forward(zeros(T, D)), ValueError, ["x:", "3-D", "2-D", "(5, 3)"]),
    ("x features", lambda: lstm().forward(zeros(N, T, 4)), ValueError, ["x:", "expected 3 features", "got 4"]),
    ("x features, time-major", lambda: rnnlab.RNN(D, H, batch_first=False).forward(zeros(T, N, 2)),
     ValueError, ["x:", "expected 3", "got 2", "batch_first=False"]),
    ("x empty", lambda: lstm().forward(zeros(N, 0, D)), ValueError, ["x:", "at least one", "(2, 0, 3)"]),
    ("x object", lambda: lstm().forward(np.full((N, T, D), None)), TypeError, ["x:", "numeric", "object"]),
    ("x strings", lambda: lstm().forward(np.full((N, T, D), "a")), TypeError, ["x:", "numeric", "<U1"]),
    ("x complex", lambda: lstm().forward(zeros(N, T, D) + 1j), TypeError, ["x:", "real numeric", "complex128"]),
    ("x bool", lambda: lstm().forward(zeros(N, T, D) > 0), TypeError, ["x:", "float or int", "bool"]),
    ("x ragged", lambda: lstm().forward([[[1, 2, 3]], [[1, 2]]]), TypeError, ["x:", "numeric array", "list"]),
    ("x nan", lambda: lstm().forward(np.full((N, T, D), np.nan)), ValueError, ["x:", "non-finite", "nan"]),
    ("x inf", lambda: lstm().forward(np.where(np.eye(D)[None, :1] > 0, np.inf, zeros(N, T, D))),
     ValueError, ["x:", "non-finite", "inf"]),
    ("x overflows float32", lambda: gru().forward(np.full((N, T, D), 1e300)), ValueError, ["x:", "non-finite", "inf"]),
    ("state not a pair", lambda: lstm().forward(zeros(N, T, D), zeros(1, N, H)),
     TypeError, ["state:", "tuple (h, c)", "ndarray"]),
    ("state h shape", lambda: lstm().forward(zeros(N, T, D), (zeros(1, 3, H), zeros(1, N, H))),
     ValueError, ["state h:", "(1, 2, 4)", "(1, 3, 4)"]),
    ("state c shape", lambda: lstm().forward(zeros(N, T, D), (zeros(1, N, H), zeros(2, N, H))),
     ValueError, ["state c:", "(1, 2, 4)", "(2, 2, 4)"]),
    ("state rank", lambda: gru().forward(zeros(N, T, D), zeros(N, H)), ValueError, ["state:", "3-D", "2-D"]),
    ("state layers", lambda: gru().forward(zeros(N, T, D), zeros(2, N, H)),
     ValueError, ["state:", "(1, 2, 4)", "(2, 2, 4)"]),
    ("state pair for GRU", lambda: gru().forward(zeros(N, T, D), (zeros(1, N, H), zeros(1, N, H))),
     TypeError, ["state:", "one array h", "pair"]),
    ("state nan", lambda: gru().forward(zeros(N, T, D), np.full((1, N, H), np.nan)), ValueError, ["state:", "non-finite"]),
    ("lengths 0", lambda: lstm().forward(zeros(N, T, D), lengths=[0, 5]), ValueError, ["lengths:", "1..5", "min 0"]),
    ("lengths > T", lambda: lstm().forward(zeros(N, T, D), lengths=[6, 5]), ValueError, ["lengths:", "1..5", "max 6"]),
    ("lengths count", lambda: lstm().forward(zeros(N, T, D), lengths=[1, 2, 3]), ValueError, ["lengths:", "(2,)", "(3,)"]),
    ("lengths fractional", lambda: lstm().forward(zeros(N, T, D), lengths=[2.5, 5]), TypeError, ["lengths:", "whole", "2.5"]),
    ("lengths strings", lambda: lstm().forward(zeros(N, T, D), lengths=["2", "5"]), TypeError, ["lengths:", "integers", "<U1"]),
    ("lengths bool", lambda: lstm().forward(zeros(N, T, D), lengths=[True, True]), TypeError, ["lengths:", "integers", "bool"]),
    ("backward before forward", lambda: lstm().backward(zeros(N, T, H)), ValueError, ["backward", "before forward"]),
    ("dout shape", lambda: ran(lstm()).backward(zeros(N, T, H + 1)), ValueError, ["dout:", "(2, 5, 4)", "(2, 5, 5)"]),
    ("dout rank", lambda: ran(lstm()).backward(zeros(T, H)), ValueError, ["dout:", "3-D", "2-D"]),
    ("dout nan", lambda: ran(lstm()).backward(np.full((N, T, H), np.nan)), ValueError, ["dout:", "non-finite"]),
    ("dout object", lambda: ran(lstm()).backward(np.full((N, T, H), None)), TypeError, ["dout:", "numeric", "object"]),
    ("dstate not a pair", lambda: ran(lstm()).backward(zeros(N, T, H), zeros(1, N, H)),
     TypeError, ["dstate:", "tuple (h, c)", "ndarray"]),
    ("dstate shape", lambda: ran(lstm()).backward(zeros(N, T, H), (zeros(1, N, H), zeros(1, 1, H))),
     ValueError, ["dstate c:", "(1, 2, 4)", "(1, 1, 4)"]),
    ("dstate GRU shape", lambda: ran(gru()).backward(zeros(N, T, H), zeros(1, N, H + 1)),
     ValueError, ["dstate:", "(1, 2, 4)", "(1, 2, 5)"]),
    ("load: transposed weight", lambda: rnnlab.LSTM(6, 6).load_state_dict(
        {**rnnlab.LSTM(6, 6).state_dict(), "weight_hh_l0": zeros(6, 24)}),
     ValueError, ["weight_hh_l0: expected (24, 6), got (6, 24)"]),
    ("load: missing key", lambda: lstm().load_state_dict({k: v for k, v in lstm().state_dict().items() if k != "bias_hh_l0"}),
     ValueError, ["state_dict:", "missing", "bias_hh_l0"]),
    ("load: extra key", lambda: lstm().load_state_dict(sd_with(weight_hr_l0=zeros(2, 4))),
     ValueError, ["state_dict:", "unexpected", "weight_hr_l0"]),
    ("load: not a mapping", lambda: lstm().load_state_dict([1, 2]), TypeError, ["state_dict:", "mapping", "list"]),
    ("load: strings", lambda: lstm().load_state_dict(sd_with(bias_ih_l0="abc")), TypeError, ["bias_ih_l0:", "numeric", "<U3"]),
    ("load: ragged", lambda: lstm().load_state_dict(sd_with(bias_ih_l0=[[1.0], [1.0, 2.0]])),
     TypeError, ["bias_ih_l0:", "numeric array", "list"]),
    ("load: nan", lambda: lstm().load_state_dict(sd_with(bias_ih_l0=np.full(16, np.nan))), ValueError, ["bias_ih_l0:", "non-finite"]),
    ("hidden_size 0", lambda: rnnlab.RNN(3, 0), ValueError, ["hidden_size:", "positive integer", "0"]),
    ("input_size float", lambda: rnnlab.GRU(2.5, 3), ValueError, ["input_size:", "positive integer", "2.5"]),
    ("num_layers 0", lambda: rnnlab.LSTM(3, 3, num_layers=0), ValueError, ["num_layers:", "positive integer", "0"]),
    ("nonlinearity", lambda: rnnlab.RNN(3, 3, nonlinearity="sigmoid"), ValueError, ["nonlinearity:", "'tanh' or 'relu'", "sigmoid"]),
    ("dropout 1", lambda: rnnlab.GRU(3, 3, dropout=1.0), ValueError, ["dropout:", "[0, 1)", "1.0"]),
    ("proj_size too big", lambda: rnnlab.LSTM(3, 3, proj_size=3), ValueError, ["proj_size:", "less than hidden_size=3", "3"]),
    ("proj_size negative", lambda: rnnlab.LSTM(3, 3, proj_size=-1), ValueError, ["proj_size:", "non-negative", "-1"]),
    ("dtype", lambda: rnnlab.RNN(3, 3, dtype=np.int32), TypeError, ["dtype:", "float32 or float64", "int32"]),
]


@pytest.mark.parametrize("call,exc,parts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_message_names_argument_expected_and_given(call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert message.startswith(parts[0]), message          # the argument's name comes first
    for part in parts[1:]:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message                            # one line, fit for the CLI


def test_a_failed_load_changes_nothing():
    layer = lstm()
    before = layer.state_dict()
    bad = {**{k: np.ones_like(v) for k, v in before.items()}, "bias_hh_l0": np.zeros(3)}
    with pytest.raises(ValueError):
        layer.load_state_dict(bad)
    for name, value in before.items():
        np.testing.assert_array_equal(layer.params[name], value)


def test_non_finite_input_never_reaches_the_gradients():
    layer = ran(lstm())
    layer.backward(np.ones((N, T, H)))
    grads = {k: g.copy() for k, g in layer.grads.items()}
    with pytest.raises(ValueError):
        layer.backward(np.full((N, T, H), np.inf))
    for name, g in grads.items():
        np.testing.assert_array_equal(layer.grads[name], g)


def test_integer_and_list_inputs_are_accepted():
    """Bad-input checks must not refuse good input: ints and nested lists convert."""
    layer = rnnlab.GRU(2, 3, seed=0)
    out, h = layer.forward([[[1, 2], [3, 4]]], lengths=np.array([2], dtype=np.uint8))
    assert out.shape == (1, 2, 3) and out.dtype == np.float32 and h.shape == (1, 1, 3)
