"""Shared test set-up: a hypothesis profile and builders of random layers, inputs and states.

Weights and biases are always overwritten with U(-0.5, 0.5): zero or constant
weights cannot catch a swapped gate or a missing bias.
"""
import time
import types

import numpy as np
import pytest
from hypothesis import settings

import rnnlab

# Examples are cheap but not free; no deadline because the first call pays for imports.
settings.register_profile("rnnlab", deadline=None, print_blob=True)
settings.load_profile("rnnlab")

LAYERS = {"RNN": rnnlab.RNN, "LSTM": rnnlab.LSTM, "GRU": rnnlab.GRU}


def randomize(layer, rng, low=-0.5, high=0.5):
    """Overwrite every parameter with U(low, high); returns the layer."""
    for p in layer.params.values():
        p[...] = rng.uniform(low, high, p.shape)
    return layer


def random_state(layer, N, rng):
    """A random N(0, 1) initial state of the layer's shape: h, or (h, c) for the LSTM."""
    L = layer.num_layers * layer.num_directions
    h = rng.standard_normal((L, N, layer.hidden_out)).astype(layer.dtype)
    if isinstance(layer, rnnlab.LSTM):
        return h, rng.standard_normal((L, N, layer.hidden_size)).astype(layer.dtype)
    return h


def random_input(layer, N, T, rng):
    """x of shape (N, T, D), or (T, N, D) when the layer is not batch-first."""
    shape = (N, T, layer.input_size) if layer.batch_first else (T, N, layer.input_size)
    return rng.standard_normal(shape).astype(layer.dtype)


def make_layer(kind, D=3, H=3, rng=None, dtype=np.float64, fast=None, **options):
    """A randomised ``rnnlab.<kind>`` (kind: RNN, LSTM, GRU).

    fast: True/False picks the fused path of ``rnnlab.fast`` or the readable cells;
    None keeps the default.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    layer = LAYERS[kind](D, H, dtype=dtype, seed=int(rng.integers(2**31)), **options)
    if fast is not None:
        layer.fast = fast
    return randomize(layer, rng)


@pytest.fixture(scope="session")
def build():
    """The builders above, for tests (session scope, so hypothesis tests may use it too)."""
    return types.SimpleNamespace(layer=make_layer, state=random_state, input=random_input,
                                 randomize=randomize, LAYERS=LAYERS)


def wait_until(condition, what, timeout=10.0):
    """Poll ``condition()`` every 2 ms until it holds; AssertionError(``what``) after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(what)
        time.sleep(0.002)


@pytest.fixture
def until():
    """``wait_until``, for tests that wait for another thread (the helpers of ``rnnlab.fast``)."""
    return wait_until
