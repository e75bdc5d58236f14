"""The streaming step's helper thread (fast/_helper.py): the recurrent products of a streamed
stack computed on a second core give the readable path's results, a replaced weight is never
used stale, another layer runs without it, and it stays off where only one thread is allowed."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import rnnlab
from rnnlab.fast import _compiled

pytestmark = pytest.mark.skipif(not _compiled.AVAILABLE, reason="Numba not installed")

if _compiled.AVAILABLE:
    from rnnlab.fast import _helper

two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the helper needs two CPUs")

# the caller leaves the helper up to ~3 s (1e8 spins) to claim each product: in a test the
# helper, once serving, computes every recurrent product; if it never came the caller would
# do them itself after that and the "done by the helper" assertions fail rather than hang
GRACE = 10 ** 8


def _readable(layer, xs, state):
    """Step by step on the readable path: the outputs and the final state."""
    layer.fast = False
    outs = []
    for x in xs:
        out, state = layer.forward(x, state)
        outs.append(out)
    layer.fast = True
    return outs, state


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _served(layer, N=1, timeout=120.0):
    """Step the layer (zero input, N sequences) until the helper serves its workspace and has
    computed a product of it (its first use of a new kind of layer compiles ``serve`` first)."""
    x = np.zeros((N, 1, layer.input_size), np.float32)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        layer.forward(x)
        ws = layer._stream_ws
        if _helper.HELPER.ws is ws and _helper.HELPER.serving:
            ws.ctl[_helper.GRACE] = 10 ** 6               # ~30 ms to claim layer 0's product
            layer.forward(x)
            ws.ctl[_helper.GRACE] = 0
            if ws.ctl[_helper.DONE] == ws.ctl[_helper.STEP]:
                return ws
        time.sleep(0.001)
    h = _helper.HELPER
    raise AssertionError(f"the helper did not serve the layer (serving {h.serving}, "
                         f"its workspace {h.ws is layer._stream_ws}, allowed {layer._stream_ws.helper})")


def _steps(rng, T, N, D):
    return [rng.standard_normal((N, 1, D)).astype(np.float32) for _ in range(T)]


@two_cpus
@pytest.mark.parametrize("cell,opts", [("LSTM", {}), ("GRU", {}), ("RNN", {"nonlinearity": "tanh"}),
                                       ("RNN", {"nonlinearity": "relu"}), ("LSTM", {"bias": False}),
                                       ("GRU", {"num_layers": 3})])
def test_products_on_the_helper_equal_the_readable_path(cell, opts):
    opts = {"num_layers": 2, **opts}
    layer = getattr(rnnlab, cell)(5, 7, dtype=np.float32, seed=3, batch_first=True, **opts).eval()
    ws = _served(layer, N=2)
    ws.ctl[_helper.GRACE] = GRACE
    try:
        rng = np.random.default_rng(4)
        xs = _steps(rng, 6, 2, 5)
        L = layer.num_layers
        h = rng.standard_normal((L, 2, 7)).astype(np.float32)
        state0 = (h, rng.standard_normal((L, 2, 7)).astype(np.float32)) if cell == "LSTM" else h
        state, outs = state0, []
        for x in xs:
            out, state = layer.forward(x, state)
            outs.append(out)
            # every layer's recurrent product of this step was the helper's
            assert list(ws.ctl[_helper.DONE:_helper.DONE + L]) == [ws.ctl[_helper.STEP]] * L
        ref_outs, ref_state = _readable(layer, xs, state0)
    finally:
        ws.ctl[_helper.GRACE] = 0
    for a, b in zip(outs + _flat(state), ref_outs + _flat(ref_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@two_cpus
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("D,H", [(16, 32), (5, 32), (32, 7)])
def test_products_by_the_matvec_kernel_equal_the_readable_path(cell, D, H):
    """Where rows of D or of H floats are whole vectors of ``_matvec``'s kernel, the workspace
    holds its address for them (``MV_X``, ``MV_H``; 0 for the others) and both threads' products
    use it, W's rows read back and forth from step to step: the readable path's results."""
    from rnnlab.fast import _matvec
    layer = getattr(rnnlab, cell)(D, H, num_layers=2, dtype=np.float32, seed=5, batch_first=True).eval()
    ws = _served(layer, N=1)
    assert (ws.ctl[_helper.MV_X], ws.ctl[_helper.MV_H]) == (_matvec.usable(D), _matvec.usable(H))
    if _matvec.address():
        assert (ws.ctl[_helper.MV_X] != 0) == (D % _matvec.vector() == 0)
        assert (ws.ctl[_helper.MV_H] != 0) == (H % _matvec.vector() == 0)
    ws.ctl[_helper.GRACE] = GRACE
    try:
        rng = np.random.default_rng(6)
        xs = _steps(rng, 7, 1, D)
        h = rng.standard_normal((2, 1, H)).astype(np.float32)
        state0 = (h, rng.standard_normal((2, 1, H)).astype(np.float32)) if cell == "LSTM" else h
        state, outs = state0, []
        for x in xs:
            out, state = layer.forward(x, state)
            outs.append(out)
            assert list(ws.ctl[_helper.DONE:_helper.DONE + 2]) == [ws.ctl[_helper.STEP]] * 2
        ref_outs, ref_state = _readable(layer, xs, state0)
    finally:
        ws.ctl[_helper.GRACE] = 0
    for a, b in zip(outs + _flat(state), ref_outs + _flat(ref_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@two_cpus
def test_a_replaced_weight_is_never_used_stale():
    """The helper holds the weights it was given: after a parameter is replaced by a new array
    the step is not handed to it, it is sent away, and the results use the new weights."""
    layer = rnnlab.LSTM(5, 7, num_layers=2, dtype=np.float32, seed=3).eval()
    ws = _served(layer)
    ws.ctl[_helper.GRACE] = GRACE
    try:
        rng = np.random.default_rng(5)
        x = rng.standard_normal((1, 1, 5)).astype(np.float32)
        layer.params["weight_hh_l1"] = rng.standard_normal((28, 7)).astype(np.float32)
        step_before = ws.ctl[_helper.POST]
        out, state = layer.forward(x)
        assert ws.ctl[_helper.POST] == step_before               # not published to the helper
        assert _helper.HELPER.ws is not ws
        ref, ref_state = _readable(layer, [x], None)
        np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state[1], ref_state[1], rtol=1e-5, atol=1e-6)
        # the helper serves the layer again, with the new weights, and they are what it uses
        ws = _served(layer)
        ws.ctl[_helper.GRACE] = GRACE
        out, state = layer.forward(x, state)
        assert ws.ctl[_helper.DONE + 1] == ws.ctl[_helper.STEP]
        ref2, _ = _readable(layer, [x], ref_state)
        np.testing.assert_allclose(out, ref2[0], rtol=1e-5, atol=1e-6)
    finally:
        ws.ctl[_helper.GRACE] = 0


@two_cpus
def test_another_layer_streams_on_one_core_meanwhile(monkeypatch):
    """While the helper serves a stream that keeps stepping, another layer's steps run on one core
    (the helper would go to it only once the first stream paused: asleep, after IDLE_SPINS, here
    made too many to pass, so a slow moment of the machine cannot pause it)."""
    monkeypatch.setattr(_helper, "IDLE_SPINS", 10 ** 9)
    a = rnnlab.GRU(4, 6, num_layers=2, dtype=np.float32, seed=1).eval()
    b = rnnlab.GRU(4, 6, num_layers=2, dtype=np.float32, seed=2).eval()
    ws_a = _served(a)
    rng = np.random.default_rng(6)
    xs = _steps(rng, 5, 1, 4)
    sa = sb = None
    outs_a, outs_b = [], []
    for x in xs:
        oa, sa = a.forward(x, sa)
        ob, sb = b.forward(x, sb)
        outs_a.append(oa)
        outs_b.append(ob)
    assert _helper.HELPER.ws is ws_a and b._stream_ws.ctl[_helper.BOUND] == 0
    assert _helper.HELPER.stop()
    for layer, outs, s in ((a, outs_a, sa), (b, outs_b, sb)):
        ref, ref_s = _readable(layer, xs, None)
        for u, v in zip(outs + [s], ref + [ref_s]):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@two_cpus
def test_a_helper_that_keeps_the_caller_waiting_is_sent_away_for_a_while():
    layer = rnnlab.RNN(4, 6, num_layers=2, dtype=np.float32, seed=1).eval()
    ws = _served(layer)
    ws.ctl[_helper.SLOW] = _helper.SLOW_LIMIT          # as if it had kept the caller waiting
    x = np.ones((1, 1, 4), np.float32)
    out, _ = layer.forward(x)
    assert _helper.HELPER.ws is not ws and ws.off_until > time.monotonic()
    layer.forward(x)
    assert _helper.HELPER.ws is not ws                  # cooling down: not offered again yet
    np.testing.assert_allclose(out, _readable(layer, [x], None)[0][0], rtol=1e-5, atol=1e-6)


@two_cpus
def test_a_layer_whose_weights_it_cannot_take_leaves_it_for_the_others():
    """A parameter replaced by an array of another layout sends that layer's steps to the general
    path, and the helper, never given it, still serves the next layer."""
    odd = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    odd.params["weight_hh_l1"] = np.asfortranarray(odd.params["weight_hh_l1"])
    x = np.ones((1, 1, 4), np.float32)
    for _ in range(3):
        out, _ = odd.forward(x)
    np.testing.assert_allclose(out, _readable(odd, [x], None)[0][0], rtol=1e-5, atol=1e-6)
    _served(rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=1).eval())


def test_off_with_one_thread_with_a_large_step_or_when_disabled(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = np.ones((1, 1, 4), np.float32)
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
        layer.forward(x)
        assert layer._stream_ws.helper is False
    monkeypatch.setattr(_helper, "ENABLED", False)
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(x)
    assert layer._stream_ws.helper is False
    monkeypatch.setattr(_helper, "ENABLED", True)
    from rnnlab.fast import _stream
    monkeypatch.setattr(_stream, "STACK_BLAS_MIN_WORK", 0)          # the BLAS does the products
    monkeypatch.setattr(_stream, "STACK_HELPER_MAX_WORK", 0)
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(x)
    assert layer._stream_ws.blas and layer._stream_ws.helper is False


def _sleeping_helper(monkeypatch, until):
    """A layer whose workspace the helper serves, asleep in ``_helper.futex_wait`` after a few
    spins, each of its sleeps up to a minute: what wakes it sooner is a post or being sent away."""
    monkeypatch.setattr(_helper, "IDLE_SPINS", 1000)
    monkeypatch.setattr(_helper, "WAIT_US", 60_000_000)
    _helper.HELPER.stop()
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    ws = _served(layer)
    until(lambda: ws.ctl[_helper.SLEEP] == 1 and _helper.HELPER.serving and _helper.HELPER.ws is ws,
          "the helper did not go to sleep")
    return layer, ws


@two_cpus
@pytest.mark.skipif(not (_compiled.AVAILABLE and _helper.FUTEX), reason="futex waits are Linux x86-64's")
def test_a_sleeping_helper_is_woken_by_the_next_step(monkeypatch, until):
    """The step's post wakes the sleeping helper, not the end of its sleep: it computes the
    step's recurrent products."""
    layer, ws = _sleeping_helper(monkeypatch, until)
    ws.ctl[_helper.GRACE] = GRACE
    try:
        t0 = time.monotonic()
        layer.forward(np.ones((1, 1, 4), np.float32))
    finally:
        ws.ctl[_helper.GRACE] = 0
    assert ws.ctl[_helper.DONE] == ws.ctl[_helper.STEP] and time.monotonic() - t0 < 30
    assert _helper.HELPER.stop()


@two_cpus
@pytest.mark.skipif(not (_compiled.AVAILABLE and _helper.FUTEX), reason="futex waits are Linux x86-64's")
def test_sending_a_sleeping_helper_away_wakes_it(monkeypatch, until):
    _sleeping_helper(monkeypatch, until)
    assert _helper.HELPER.stop(timeout=10.0)               # not after the minute's sleep


@two_cpus
def test_the_helper_goes_back_to_sleep_when_the_steps_stop(monkeypatch, until):
    monkeypatch.setattr(_helper, "IDLE_SPINS", 1000)
    monkeypatch.setattr(_helper, "IDLE_WAITS", 10)
    _helper.HELPER.stop()
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    _served(layer)
    until(lambda: not _helper.HELPER.serving, "the helper did not go back to sleep", timeout=5)
    # and a new step wakes it again
    _served(layer)


@two_cpus
@pytest.mark.skipif(not (_compiled.AVAILABLE and _helper.FUTEX), reason="futex waits are Linux x86-64's")
def test_a_helper_asleep_on_a_paused_stream_goes_to_the_next_one(monkeypatch, until):
    """A step of another layer while the helper sleeps on a paused stream's workspace sends it
    away from that one (not after its sleeps run out), and the helper then serves the new layer,
    which gives the readable path's results; the paused one's steps run on one core till it
    offers again."""
    layer_a, ws_a = _sleeping_helper(monkeypatch, until)
    b = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=3).eval()
    x = np.ones((1, 1, 4), np.float32)
    out_b, _ = b.forward(x)
    assert ws_a.ctl[_helper.BOUND] == 0
    until(lambda: not _helper.HELPER.serving, "the helper stayed on the paused stream", timeout=10)
    ws_b = _served(b)
    assert _helper.HELPER.ws is ws_b and ws_a.ctl[_helper.BOUND] == 0
    np.testing.assert_allclose(out_b, _readable(b, [x], None)[0][0], rtol=1e-5, atol=1e-6)
    assert _helper.HELPER.stop()


def test_one_sequence_with_the_helper_keeps_large_products_off_the_blas(monkeypatch):
    """From STACK_BLAS_MIN_WORK multiply-adds a product the stack's products go to the BLAS, but
    not for one sequence with the helper allowed and fewer than STACK_HELPER_MAX_WORK (its
    matrix-vector products on two cores read the weights faster)."""
    from rnnlab.fast import _stream
    monkeypatch.setattr(_stream, "STACK_BLAS_MIN_WORK", 0)
    monkeypatch.setattr(_helper, "allowed", lambda layers: True)
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(np.ones((1, 1, 4), np.float32))
    assert not layer._stream_ws.blas and layer._stream_ws.helper
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(np.ones((2, 1, 4), np.float32))                        # two sequences: the BLAS
    assert layer._stream_ws.blas
    monkeypatch.setattr(_stream, "STACK_HELPER_MAX_WORK", 4 * 6 * 6)    # G max(D, H): at the limit
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(np.ones((1, 1, 4), np.float32))
    assert layer._stream_ws.blas
    monkeypatch.setattr(_helper, "allowed", lambda layers: False)        # no helper: the BLAS
    monkeypatch.setattr(_stream, "STACK_HELPER_MAX_WORK", 2 ** 22)
    layer = rnnlab.LSTM(4, 6, num_layers=2, dtype=np.float32, seed=0).eval()
    layer.forward(np.ones((1, 1, 4), np.float32))
    assert layer._stream_ws.blas


def test_futex_wait_returns_when_the_word_moved_and_at_its_timeout(monkeypatch):
    """``_helper.futex_wait``: at once if ctl[i] no longer holds the expected step (a post came
    before the sleep), else when the timeout passes; without futexes a short poll whatever the
    timeout asked."""
    import threading

    import numba

    def waiter():                                            # compiled afresh: FUTEX as it is now
        @numba.njit(nogil=True)
        def wait(ctl, expected, us):
            _helper.futex_wait(ctl, 0, expected, us)
        return wait
    ctl = np.zeros(_helper.CTL_SIZE, np.int64)
    ctl[0] = 7
    wait = waiter()
    wait(ctl, 6, 10)                                         # compile
    t0 = time.monotonic()
    wait(ctl, 6, 5_000_000)                                  # the word moved: no 5 s sleep
    assert time.monotonic() - t0 < 1.0
    if _helper.FUTEX:
        t0 = time.monotonic()
        sleeper = threading.Thread(target=wait, args=(ctl, 7, 50_000), daemon=True)   # the word holds
        sleeper.start()
        sleeper.join(5.0)                                    # a wait without its timeout fails, not hangs
        assert not sleeper.is_alive() and time.monotonic() - t0 >= 0.04
    monkeypatch.setattr(_helper, "FUTEX", False)             # read by the codegen: a fresh function polls
    poll = waiter()
    poll(ctl, 7, 10)
    t0 = time.monotonic()
    poll(ctl, 7, 10_000_000)
    assert time.monotonic() - t0 < 1.0
