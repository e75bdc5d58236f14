"""LSTM inference split by hidden units on two cores (fast/_units.py): the readable path's results,
bit for bit those of the one-core loop over [x_t | h] (the same sums in the same order); a second
core's thread that never starts leaves the forward to the other loops, its error reaches the
caller without a hang; the rules for when the split runs; and ``_panels``'s two-source kernel."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import rnnlab
from rnnlab.fast import _compiled

pytestmark = pytest.mark.skipif(not _compiled.AVAILABLE, reason="Numba not installed")
two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the split needs two CPUs")

if _compiled.AVAILABLE:
    from rnnlab.fast import _mkl, _panels, _split, _units

D, H = 5, 64        # H/2 = 32 columns of a gate: whole panels of either layout (16 or 32 wide)


@pytest.fixture(autouse=True)
def _numpy_blas_and_kernel(monkeypatch):
    if _panels.compiled() is None:
        pytest.skip(f"the panels kernel is unavailable: {_panels.describe()}")
    if not _compiled.blas_loops():
        pytest.skip("no BLAS address for the compiled loops")
    monkeypatch.setattr(_mkl, "ENABLED", False)        # the split runs outside MKL's regime only
    monkeypatch.setattr(_split, "PARTS", 2)            # two parts whatever the machine's load
    monkeypatch.setattr(_units, "ENABLED", True)       # (off by default)
    # the caller waits for the second core's thread however long it takes to start (a first call
    # loads the compiled loop there, often longer than START_SPINS)
    monkeypatch.setattr(_units, "START_SPINS", 10 ** 9)


def _layer(seed=0, **opts):
    layer = rnnlab.LSTM(D, H, dtype=np.float32, seed=seed, **opts)
    rng = np.random.default_rng(seed + 1)
    layer.load_state_dict({k: rng.uniform(-0.4, 0.4, v.shape) for k, v in layer.params.items()})
    return layer.eval()


def _inputs(layer, N, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, D) if layer.batch_first else (T, N, D)).astype(np.float32)
    L = layer.num_layers * layer.num_directions
    state = tuple(rng.standard_normal((L, N, H)).astype(np.float32) for _ in range(2))
    return x, state


def _spy(monkeypatch):
    """Record what each call of the split returned (True: it ran the steps)."""
    ran = []
    real = _units.lstm_infer
    monkeypatch.setattr(_units, "lstm_infer", lambda *a: ran.append(real(*a)) or ran[-1])
    return ran


def _forward(layer, x, state, fast=True):
    layer.fast = fast
    out, (h, c) = layer.forward(x, state)
    return [out, h, c]


@pytest.mark.parametrize("opts", [{}, {"batch_first": False}, {"bidirectional": True},
                                  {"num_layers": 2, "batch_first": False}])
@pytest.mark.parametrize("N,T", [(8, 2), (13, 6), (32, 9)])
def test_split_by_units_equals_the_readable_path(opts, N, T, monkeypatch):
    """Every run of the split (each layer and direction) does the steps, and out, h_T and c_T are
    those of the readable path in float64 within float32 rounding; the state passed in is not
    changed."""
    ran = _spy(monkeypatch)
    layer = _layer(seed=N + T, **opts)
    x, state = _inputs(layer, N, T, seed=N * T)
    before = [s.copy() for s in state]
    fast = _forward(layer, x, state)
    assert ran == [True] * (layer.num_layers * layer.num_directions)
    assert all(np.array_equal(s, b) for s, b in zip(state, before))
    ref = rnnlab.LSTM(D, H, dtype=np.float64, **opts)
    ref.load_state_dict({k: v.astype(np.float64) for k, v in layer.params.items()})
    ref.fast = False
    out, (h, c) = ref.eval().forward(x.astype(np.float64), tuple(s.astype(np.float64) for s in state))
    for a, b in zip(fast, [out, h, c]):
        assert np.abs(a - b).max() <= 2e-6 * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("opts", [{}, {"batch_first": False, "bidirectional": True}])
def test_split_by_units_gives_the_one_core_loop_bit_for_bit(opts, monkeypatch):
    """A unit's numbers are the same as in the batch split's one-product loop (``lstm_loop1``
    with the panels kernel): the same sum over [x_t | h_{t-1}] in the same order, the same gate
    kernel."""
    layer = _layer(seed=3, **opts)
    x, state = _inputs(layer, 16, 7, seed=4)
    ran = _spy(monkeypatch)
    by_units = _forward(layer, x, state)
    assert ran and all(ran)
    monkeypatch.setattr(_units, "ENABLED", False)
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 2 ** 40)
    loops = []
    real = _compiled.lstm_loop1
    monkeypatch.setattr(_compiled, "lstm_loop1", lambda *a: loops.append(a[0]) or real(*a))
    by_batch = _forward(layer, x, state)
    assert loops and set(loops) == {_compiled.PANELS}
    for a, b in zip(by_units, by_batch):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("how", ["pool thread busy", "late start"])
def test_a_second_core_that_does_not_start_leaves_the_forward_to_the_other_loops(how, monkeypatch):
    """The calling core waits START_SPINS for the other's thread at its first wait for it; if the
    thread has not started by then (the pool's thread busy with something else, or slow to
    start) the split returns False without a result, the batch split's loops run instead, from
    the original cell state, and a late thread does nothing (``begin`` finds its half taken)."""
    layer = _layer(seed=5)
    x, state = _inputs(layer, 12, 5, seed=6)
    monkeypatch.setattr(_units, "ENABLED", False)
    want = _forward(layer, x, state)
    monkeypatch.setattr(_units, "ENABLED", True)
    monkeypatch.setattr(_units, "START_SPINS", 10)
    late, release = [], threading.Event()
    if how == "pool thread busy":                 # every thread of the pool (another test may have grown it)
        pool = _split._executor(1)
        blockers = [pool.submit(release.wait, 10) for _ in range(_split._pool[1])]
    else:
        real_begin = _units.begin

        def slow_begin(ctl):
            time.sleep(0.05)
            late.append(real_begin(ctl))
            return late[-1]
        monkeypatch.setattr(_units, "begin", slow_begin)
    ran = _spy(monkeypatch)
    try:
        got = _forward(layer, x, state)
    finally:
        release.set()
    assert ran[:1] == [False]
    assert late in ([], [False])                # the thread never started, or found its half taken
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    if how == "pool thread busy":
        assert all(b.result() is True for b in blockers)


def test_an_error_on_the_second_core_reaches_the_caller_without_a_hang(monkeypatch):
    """An error in the second core's half (here while it packs its weights) sets ABORT, so the
    calling core stops waiting for it, and the forward raises that error."""
    layer = _layer(seed=7)
    x, state = _inputs(layer, 12, 40, seed=8)
    real_pack = _units._pack
    caller = threading.get_ident()

    def pack(blocks, slot):
        if threading.get_ident() != caller:
            raise MemoryError("no room for the panels")
        return real_pack(blocks, slot)
    monkeypatch.setattr(_units, "_pack", pack)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="no room for the panels"):
        _forward(layer, x, state)
    assert time.perf_counter() - t0 < 10


def test_split_by_units_runs_for_two_parts_and_fitting_sizes(monkeypatch):
    """The split runs, turned on, where the batch split would run two parts, not crowded, N >= MIN_N,
    outside an MKL regime, with each half's columns whole panels; ``ENABLED`` off (the default)
    turns it off."""
    width = _panels.layout().width
    H_ok = 2 * width                                # H/2 columns of each gate: one panel
    assert _units.usable(8, 5, H_ok, _split.Parts(2))
    assert not _units.usable(8, 5, H_ok, _split.Parts(1))
    assert not _units.usable(8, 5, H_ok, _split.Parts(3))
    crowded = _split.Parts(2)
    crowded.crowded = True
    assert not _units.usable(8, 5, H_ok, crowded)
    assert not _units.usable(_units.MIN_N - 1, 5, H_ok, _split.Parts(2))
    assert not _units.usable(8, 5, H_ok + 1, _split.Parts(2))          # odd H
    assert not _units.usable(8, 5, width, _split.Parts(2))             # H/2 half a panel
    monkeypatch.setattr(_mkl, "active", lambda dtype, work: True)
    assert not _units.usable(8, 5, H_ok, _split.Parts(2))
    monkeypatch.undo()
    monkeypatch.setattr(_units, "ENABLED", False)
    assert not _units.usable(8, 5, H_ok, _split.Parts(2))


@pytest.mark.parametrize("N", [1, 5, 8, 9, 10, 13, 17, 32])
@pytest.mark.parametrize("K1,K2", [(0, 7), (5, 0), (3, 64), (64, 256)])
def test_two_source_kernel_is_one_product_over_the_stacked_inputs(N, K1, K2):
    """``Compiled.matmul2``: x1 B1 + x2 B2 in one register tile, bit for bit the one-source kernel's
    product of [x1 | x2] with B1 stacked over B2, and within float32 rounding of float64."""
    kernel = _panels.compiled()
    C = 2 * kernel.layout.width
    rng = np.random.default_rng(N * 100 + K1 + K2)
    x1 = rng.standard_normal((N, K1 + 2)).astype(np.float32)[:, 1:K1 + 1]      # rows longer than K1
    x2 = rng.standard_normal((N, K2)).astype(np.float32)
    B1, B2 = rng.standard_normal((K1, C)).astype(np.float32), rng.standard_normal((K2, C)).astype(np.float32)
    out = kernel.matmul2(x1, kernel.layout.pack(B1), x2, kernel.layout.pack(B2), np.full((N, C), np.nan, np.float32))
    stacked = kernel.matmul(np.concatenate([x1, x2], axis=1), kernel.layout.pack(np.concatenate([B1, B2])),
                            np.empty((N, C), np.float32))
    assert np.array_equal(out, stacked)
    want = x1.astype(np.float64) @ B1 + x2.astype(np.float64) @ B2
    scale = np.abs(x1) @ np.abs(B1).astype(np.float64) + np.abs(x2) @ np.abs(B2).astype(np.float64)
    assert np.all(np.abs(out - want) <= 4 * (K1 + K2) * np.finfo(np.float32).eps * scale + 1e-30)


@pytest.mark.parametrize("vector", [8, 16])
@pytest.mark.parametrize("Ks", [(5,), (16,), (37,), (64, 256), (3, 40, 17)])
@pytest.mark.parametrize("blocks_are", ["W.T", "W[:, a:b].T", "rows"])
def test_compiled_pack_equals_numpys(vector, Ks, blocks_are):
    """``Compiled.pack_rows`` (blocks whose columns are contiguous, W.T with W's rows at any
    stride, through the compiled in-register transposes, the last K mod vector rows and other
    blocks by NumPy) writes the same panels as ``Layout.pack_rows``, blocks stacked along K, each
    layout."""
    if vector == 16 and _panels._vector() != 16 and _panels._FORCED is None:
        pytest.skip("this CPU has no 512-bit vectors (AVX-512F)")
    kernel = _panels.Layout(vector, *_panels.LAYOUTS[vector]).compile()
    C = 3 * kernel.layout.width
    rng = np.random.default_rng(sum(Ks) + vector)
    if blocks_are == "W.T":
        blocks = tuple(rng.standard_normal((C, K)).astype(np.float32).T for K in Ks)
    elif blocks_are == "W[:, a:b].T":                                                  # W's rows 3 + K apart
        blocks = tuple(rng.standard_normal((C, K + 3)).astype(np.float32)[:, 1:K + 1].T for K in Ks)
    else:
        blocks = tuple(rng.standard_normal((K, C)).astype(np.float32) for K in Ks)
    shape = kernel.layout.panels_shape(sum(Ks), C)
    got = kernel.layout.pack_rows(blocks, np.full(shape, np.nan, np.float32), kernel.packer)
    want = kernel.layout.pack_rows(blocks, np.empty(shape, np.float32))
    assert np.array_equal(got, want)
    assert np.array_equal(want.reshape(C // kernel.layout.width, sum(Ks), -1).transpose(1, 0, 2).reshape(sum(Ks), C),
                          np.concatenate(blocks))


def test_split_by_units_is_off_unless_asked():
    """``RNNLAB_UNITS=1`` turns the split on; by default it is off."""
    import subprocess
    import sys
    code = "from rnnlab.fast import _units; print(_units.ENABLED)"
    env = {k: v for k, v in os.environ.items() if k != "RNNLAB_UNITS"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    on = subprocess.run([sys.executable, "-c", code], env={**env, "RNNLAB_UNITS": "1"}, capture_output=True,
                        text=True, check=True)
    assert (off.stdout.strip(), on.stdout.strip()) == ("False", "True")
