"""The tiny LSTM loop on two cores (fast/_pair.py): half of each step's hidden units computed by a
helper thread give the one-core loop's results bit for bit and the readable path's forward and
backward; without the helper the caller does every step; a busy pair, one allowed thread, a
small H or the switch keep the one-core loop; a helper that keeps the caller waiting is sent
away, and an idle one goes back to sleep."""
from __future__ import annotations

import contextlib
import os
import threading
import time

import numpy as np
import pytest

import rnnlab
from rnnlab.fast import _compiled

pytestmark = pytest.mark.skipif(not _compiled.AVAILABLE, reason="Numba not installed")
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the pair needs two CPUs")

if _compiled.AVAILABLE:
    from rnnlab.fast import _helper, _pair, _threads

threadpoolctl = pytest.importorskip("threadpoolctl")

H = 128           # the smallest H the pair takes (MIN_H)
GRACE = 10 ** 8   # in a test the caller leaves the helper up to ~3 s to claim each half


def _two_blas_threads():
    return threadpoolctl.threadpool_limits(2, user_api="blas")


def _layer(seed=0, cell="LSTM", hidden=H, **opts):
    layer = getattr(rnnlab, cell)(5, hidden, dtype=np.float32, seed=seed, **opts)
    rng = np.random.default_rng(seed + 1)
    for k, v in layer.params.items():        # random non-zero weights and biases
        v[...] = rng.uniform(-0.3, 0.3, v.shape)
    return layer


@contextlib.contextmanager
def _grace():
    """The caller leaves the helper time to claim each half (so, once serving, it does them all)."""
    _pair.PAIR.ctl[_pair.GRACE] = GRACE
    try:
        yield
    finally:
        _pair.PAIR.ctl[_pair.GRACE] = 0


def _case(seed, T):
    """A layer and one sequence of T steps for it."""
    x = np.random.default_rng(seed + 1).standard_normal((1, T, 5)).astype(np.float32)
    return _layer(seed=seed), x


def _one_core(layer, x, monkeypatch):
    """The layer's forward with the pair off (the one-core loop); the pair on again after."""
    monkeypatch.setattr(_pair, "ENABLED", False)
    result = layer.forward(x)
    monkeypatch.setattr(_pair, "ENABLED", True)
    return result


def _calls(monkeypatch, name="lstm_loop"):
    """Record the halves the helper computed in each call of the pair (its method ``name``)."""
    helped = []
    real = getattr(_pair.Pair, name)

    def spy(self, *a):
        done = real(self, *a)
        if done:
            helped.append(self.helped)
        return done
    monkeypatch.setattr(_pair.Pair, name, spy)
    return helped


def _served(cell="LSTM", hidden=H, timeout=120.0):
    """Run forwards of this cell until the helper serves and computed a half of one (its first use
    for a cell compiles ``serve``)."""
    layer = _layer(seed=9, cell=cell, hidden=hidden)
    x = np.zeros((1, 3, 5), np.float32)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _pair.PAIR.helped = 0
        layer.forward(x)
        if _pair.PAIR.serving and _pair.PAIR.helped:
            return
        time.sleep(0.001)
    raise AssertionError(f"the helper did not serve a {cell} (serving {_pair.PAIR.serving}, "
                         f"usable {_pair.usable(hidden, cell.lower())})")


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


_LOOPS = {"LSTM": "lstm_loop", "GRU": "gru_loop", "RNN": "rnn_loop"}


@two_cpus
@pytest.mark.parametrize("cell,opts", [("LSTM", {}), ("LSTM", {"bidirectional": True}),
                                       ("LSTM", {"num_layers": 2, "bias": False}), ("GRU", {}),
                                       ("GRU", {"bidirectional": True}), ("RNN", {}),
                                       ("RNN", {"nonlinearity": "relu", "bias": False})])
@pytest.mark.parametrize("N", [1, 2])
def test_units_on_the_helper_equal_the_one_core_loop_and_the_readable_path(cell, opts, N, monkeypatch):
    """A tiny loop on the pair (the LSTM's, the GRU's, the RNN's; the smallest H the pair takes for
    each): every step's second half on the helper, out and the final state the one-core loop's bit
    for bit, and with a backward the readable path's."""
    hidden = _pair.MIN_H[cell.lower()]
    seed, T = (3, 9) if cell == "LSTM" else (21, 7)
    layer = _layer(seed=seed, cell=cell, hidden=hidden, **opts)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((N, T, 5)).astype(np.float32)
    dout = rng.standard_normal((N, T, layer.num_directions * hidden)).astype(np.float32)
    with _two_blas_threads():
        assert _compiled._tiny(N, layer.params["weight_hh_l0"])
        one_out, one_state = _one_core(layer, x, monkeypatch)
        _served(cell, hidden)
        helped = _calls(monkeypatch, _LOOPS[cell])
        layer.zero_grad()
        with _grace():
            out, state = layer.forward(x)
        dx, _ = layer.backward(dout)
    runs = layer.num_layers * layer.num_directions
    assert helped == [T] * runs, "the helper did not compute every step's second half"
    for a, b in zip([out] + _flat(state), [one_out] + _flat(one_state)):
        assert np.array_equal(a, b)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    layer.fast = False
    layer.zero_grad()
    r_out, r_state = layer.forward(x)
    r_dx, _ = layer.backward(dout)
    atol = 1e-5 if cell == "LSTM" else 1e-4
    for a, b in ([(out, r_out), (dx, r_dx)] + list(zip(_flat(state), _flat(r_state)))
                 + [(grads[k], layer.grads[k]) for k in grads]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


@two_cpus
def test_without_the_helper_the_caller_does_every_step(monkeypatch):
    layer, x = _case(5, 7)
    with _two_blas_threads():
        ref = _one_core(layer, x, monkeypatch)[0]
        assert _pair.PAIR.stop()
        monkeypatch.setattr(_pair.Pair, "offer", lambda self: None)        # never woken
        helped = _calls(monkeypatch)
        out = layer.forward(x)[0]
    assert helped == [0]
    assert np.array_equal(out, ref)


@two_cpus
def test_a_busy_pair_leaves_the_call_to_the_one_core_loop(monkeypatch):
    layer, x = _case(7, 6)
    ones = []
    real = _compiled.lstm_loop
    monkeypatch.setattr(_compiled, "lstm_loop", lambda *a: ones.append(1) or real(*a))
    with _two_blas_threads():
        ref = _one_core(layer, x, monkeypatch)[0]
        ones.clear()
        assert _pair.PAIR.busy.acquire(blocking=False)     # as if another thread were using it
        try:
            out = layer.forward(x)[0]
        finally:
            _pair.PAIR.busy.release()
    assert ones == [1]
    assert np.array_equal(out, ref)


def test_off_with_one_thread_a_small_h_one_cpu_or_when_disabled(monkeypatch):
    with _two_blas_threads():
        with threadpoolctl.threadpool_limits(1, user_api="blas"), _threads.step_threads(0):
            assert not _pair.usable(H)                      # the user's one thread
        with _threads.one_thread():
            assert not _pair.usable(H)                      # a part of the batch split
        assert not _pair.usable(64) and not _pair.usable(132)
        monkeypatch.setattr(_pair, "ENABLED", False)
        assert not _pair.usable(H)
        monkeypatch.setattr(_pair, "ENABLED", True)
        monkeypatch.setattr(_threads, "cpus", lambda: 1)
        assert not _pair.usable(H)


@two_cpus
def test_the_outer_thread_count_is_the_users_inside_the_loops_setting():
    if _threads.blas_threads() is None:
        pytest.skip("threadpoolctl sees no OpenBLAS")
    with _two_blas_threads():
        with _threads.step_threads(0):
            assert _threads.blas_threads() == 1 and _threads.outer_blas_threads() == 2
            assert _pair.usable(H)


@two_cpus
def test_a_helper_that_keeps_the_caller_waiting_is_sent_away_for_a_while(monkeypatch):
    layer, x = _case(11, 8)
    with _two_blas_threads():
        ref = _one_core(layer, x, monkeypatch)[0]
        _served()
        monkeypatch.setattr(_helper, "SLOW_SPINS", -1)     # every wait for the helper counts as long
        with _grace():
            out = layer.forward(x)[0]
        assert _pair.PAIR.helped >= _pair.SLOW_LIMIT
        assert _pair.PAIR.off_until > time.monotonic() and _pair.PAIR.ctl[_pair.STOP] == 1
        woken = []
        monkeypatch.setattr(_pair.PAIR._wake, "set", lambda: woken.append(1))
        layer.forward(x)
        assert woken == []                                  # cooling down: not woken again yet
    assert np.array_equal(out, ref)
    monkeypatch.setattr(_pair.PAIR, "off_until", 0.0)


@two_cpus
def test_the_helper_goes_back_to_sleep_when_the_calls_stop(monkeypatch, until):
    monkeypatch.setattr(_helper, "IDLE_SPINS", 1000)
    monkeypatch.setattr(_helper, "IDLE_WAITS", 10)
    with _two_blas_threads():
        assert _pair.PAIR.stop()
        _served()
        until(lambda: not _pair.PAIR.serving, "the helper did not go back to sleep", timeout=5)
        _served()                                           # and a new call wakes it again


def _sleeping_helper(monkeypatch, until):
    """The pair's helper serving, asleep in ``_helper.futex_wait`` after a few spins, each of its
    sleeps up to a minute: what wakes it sooner is a post or being sent away (inside
    ``_two_blas_threads``)."""
    monkeypatch.setattr(_helper, "IDLE_SPINS", 1000)
    monkeypatch.setattr(_helper, "WAIT_US", 60_000_000)
    assert _pair.PAIR.stop()
    _served()
    until(lambda: _pair.PAIR.ctl[_helper.SLEEP] == 1 and _pair.PAIR.serving,
          "the helper did not go to sleep")


@two_cpus
@pytest.mark.skipif(not (_compiled.AVAILABLE and _helper.FUTEX), reason="futex waits are Linux x86-64's")
def test_a_sleeping_helper_is_woken_by_the_next_call(monkeypatch, until):
    """The call's first post wakes the sleeping helper, not the end of its sleep: it takes the
    call's halves."""
    with _two_blas_threads():
        _sleeping_helper(monkeypatch, until)
        layer, x = _case(seed=21, T=12)
        t0 = time.monotonic()
        with _grace():
            layer.forward(x)
        assert _pair.PAIR.helped == 12 and time.monotonic() - t0 < 30
        assert _pair.PAIR.stop()


@two_cpus
@pytest.mark.skipif(not (_compiled.AVAILABLE and _helper.FUTEX), reason="futex waits are Linux x86-64's")
def test_sending_a_sleeping_helper_away_wakes_it(monkeypatch, until):
    with _two_blas_threads():
        _sleeping_helper(monkeypatch, until)
        assert _pair.PAIR.stop(timeout=10.0)                # not after the minute's sleep


@two_cpus
def test_calls_from_two_threads_at_once_both_come_out_right():
    layer_a, layer_b = _layer(seed=13), _layer(seed=14)
    rng = np.random.default_rng(15)
    xa, xb = (rng.standard_normal((1, 20, 5)).astype(np.float32) for _ in range(2))
    ref_a, ref_b = layer_a.forward(xa)[0].copy(), layer_b.forward(xb)[0].copy()
    results, errors = {}, []

    def work(name, layer, x):
        try:
            for _ in range(30):
                results[name] = layer.forward(x)[0]
                assert np.array_equal(results[name], ref_a if name == "a" else ref_b)
        except Exception as e:           # noqa: BLE001 (reported below)
            errors.append(e)
    with _two_blas_threads():
        threads = [threading.Thread(target=work, args=a) for a in (("a", layer_a, xa), ("b", layer_b, xb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors


@two_cpus
def test_arrays_the_helper_cannot_take_by_address_leave_the_call_to_the_one_core_loop():
    T, N = 4, 1
    A = np.zeros((T, N, 4 * H), np.float32)
    args = [A, np.zeros((N, H), np.float32), np.zeros((N, H), np.float32), np.zeros((4 * H, H), np.float32),
            np.zeros(4 * H, np.float32), np.zeros(4 * H, np.float32), False, np.zeros((N, 4 * H), np.float32)]
    steps = [np.zeros((T, N, H), np.float32) for _ in range(3)]
    strided = np.zeros((4 * H, 2 * H), np.float32)[:, ::2]              # W_hh not contiguous
    assert not _pair.PAIR.lstm_loop(*args[:3], strided, *args[4:], *steps)
    assert not _pair.PAIR.lstm_loop(*args[:3], args[3].astype(np.float64), *args[4:], *steps)
    assert _pair.PAIR.lstm_loop(*args, *steps)


@two_cpus
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_one_sequence_of_a_larger_step_takes_the_pair_in_eval_mode_only(cell, monkeypatch):
    """Above LOOP_MAX_WORK (here 0: every step "large") but within PAIR_MAX_BYTES, an eval-mode
    forward of one sequence runs the tiny loop with the pair (``_tiny_pair``), a training forward
    the BLAS loops; either way out, the final state and, after a backward, dx and the gradients
    are the readable path's. Two sequences, or PAIR_MAX_BYTES 0, leave it out."""
    monkeypatch.setattr(_compiled, "LOOP_MAX_WORK", 0)
    monkeypatch.setattr(_compiled, "PAIR_MAX_BYTES", 2 ** 40)
    hidden = _pair.MIN_H[cell.lower()]
    layer = _layer(seed=11, cell=cell, hidden=hidden)
    W_hh = layer.params["weight_hh_l0"]
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 8, 5)).astype(np.float32)
    dout = rng.standard_normal((1, 8, hidden)).astype(np.float32)
    helped = _calls(monkeypatch, _LOOPS[cell])
    for train in (False, True):
        layer.train(train)
        helped.clear()
        with _two_blas_threads():
            assert _compiled._tiny_pair(1, W_hh, cell.lower())
            assert not _compiled._tiny_pair(2, W_hh, cell.lower())
            layer.zero_grad()
            out, state = layer.forward(x)
            dx, _ = layer.backward(dout)
        assert len(helped) == (0 if train else 1)
        grads = {k: v.copy() for k, v in layer.grads.items()}
        layer.fast = False
        layer.zero_grad()
        r_out, r_state = layer.forward(x)
        r_dx, _ = layer.backward(dout)
        layer.fast = True
        for a, b in [(out, r_out)] + list(zip(_flat(state), _flat(r_state))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 if cell != "LSTM" else 1e-5)
        for a, b in [(dx, r_dx)] + [(grads[k], layer.grads[k]) for k in grads]:
            if cell == "LSTM":
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
            else:                   # float32 sums over T N rows: within 1e-4 of the array's scale
                assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(b).max())
    monkeypatch.setattr(_compiled, "PAIR_MAX_BYTES", 0)
    assert not _compiled._tiny_pair(1, W_hh, cell.lower())


@two_cpus
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_a_tiny_loops_input_products_run_on_one_blas_thread_whatever_their_size(cell, monkeypatch):
    """``_project_tiny``: the input products of a tiny loop's steps that the pair runs go with every
    BLAS on one thread, even where ``all_threads`` would give a GEMM that large every thread (here
    its limit is 0), so that no BLAS thread spins on the core where the pair's helper runs next;
    without the pair (turned off) they get every thread. The forward's results are the readable
    path's."""
    if _threads.blas_threads() is None:
        pytest.skip("threadpoolctl sees no OpenBLAS")
    monkeypatch.setattr(_threads, "ALL_THREADS_MIN_WORK", 0)
    seen = []
    real = _compiled.project

    def spy(X, W, out=None):
        seen.append(max(lib.num_threads for lib in _threads._blas_libs()))
        return real(X, W, out)
    monkeypatch.setattr(_compiled, "project", spy)
    layer = _layer(seed=13, cell=cell, hidden=_pair.MIN_H[cell.lower()]).eval()
    x = np.random.default_rng(14).standard_normal((1, 6, 5)).astype(np.float32)
    with _two_blas_threads():
        got = layer.forward(x)[0]
        assert seen == [1]
        monkeypatch.setattr(_pair, "ENABLED", False)
        alone = layer.forward(x)[0]
        assert seen == [1, 2]
    np.testing.assert_allclose(alone, got, rtol=1e-5, atol=1e-6)
    layer.fast = False
    want = layer.forward(x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@two_cpus
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_a_tiny_loops_weight_gradients_run_on_one_blas_thread(cell, monkeypatch):
    """After a tiny loop's backward on the pair its dX and weight-gradient GEMMs keep the BLAS on
    one thread, however large (``all_threads``'s limit 0 here), for the same reason as its input
    products; with ``TINY_FLUSH_ONE_THREAD`` off, or without the pair, they get every thread. The
    gradients are the readable path's either way."""
    if _threads.blas_threads() is None:
        pytest.skip("threadpoolctl sees no OpenBLAS")
    import rnnlab.fast as fast
    from rnnlab.fast import _gemm
    monkeypatch.setattr(_threads, "ALL_THREADS_MIN_WORK", 0)
    seen = []
    real = _gemm.matmul

    def spy(a, b, out=None, accumulate=False):
        seen.append(max(lib.num_threads for lib in _threads._blas_libs()))
        return real(a, b, out, accumulate)
    monkeypatch.setattr(_gemm, "matmul", spy)
    hidden = _pair.MIN_H[cell.lower()]
    layer = _layer(seed=15, cell=cell, hidden=hidden)
    rng = np.random.default_rng(16)
    x = rng.standard_normal((1, 6, 5)).astype(np.float32)
    dout = rng.standard_normal((1, 6, hidden)).astype(np.float32)
    grads = {}
    for one in (True, False):
        monkeypatch.setattr(fast, "TINY_FLUSH_ONE_THREAD", one)
        seen.clear()
        layer.zero_grad()
        with _two_blas_threads():
            layer.forward(x)
            seen.clear()                                # the backward's GEMMs only
            dx, _ = layer.backward(dout)
        assert seen and set(seen) == ({1} if one else {2})
        grads[one] = (dx, {k: v.copy() for k, v in layer.grads.items()})
    monkeypatch.setattr(fast, "TINY_FLUSH_ONE_THREAD", True)
    monkeypatch.setattr(_pair, "ENABLED", False)
    with _two_blas_threads():
        layer.forward(x)
        seen.clear()
        layer.backward(dout)
    assert seen and set(seen) == {2}
    monkeypatch.setattr(_pair, "ENABLED", True)
    layer.fast = False
    layer.zero_grad()
    layer.forward(x)
    r_dx, _ = layer.backward(dout)
    for dx, g in grads.values():
        np.testing.assert_allclose(dx, r_dx, rtol=1e-4, atol=1e-5)
        for k, v in g.items():
            assert np.abs(v - layer.grads[k]).max() <= 1e-4 * max(1.0, np.abs(layer.grads[k]).max())


def test_serve_is_compiled_in_the_caller_before_the_helper_thread_starts(monkeypatch):
    """``offer`` compiles (or loads) ``serve`` by a call that returns at once, before it starts the
    helper thread, so that no helper compiles while the caller runs (``_compile_serve``)."""
    _pair._compile_serve()                              # returns at once: STOP is set
    assert _pair.serve.signatures
    order = []
    monkeypatch.setattr(_pair, "_compile_serve", lambda: order.append("compile"))
    real_start = threading.Thread.start

    def start(thread):
        order.append("start " + thread.name)
        return real_start(thread)
    monkeypatch.setattr(threading.Thread, "start", start)
    pair = _pair.Pair()
    pair.offer()
    try:
        assert order == ["compile", "start rnnlab-pair"]
    finally:
        assert pair.stop()
