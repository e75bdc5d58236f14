"""LSTM inference split by hidden units with MKL (``_units.lstm_infer_mkl``): the readable path's
results from any state, layout and direction; a second core's thread that never starts leaves the
forward to the batch split; an error on either core reaches the caller without a hang; the threads
pinned apart and given back their CPUs; and the rules for when it runs."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import rnnlab
from rnnlab.fast import _compiled

pytestmark = pytest.mark.skipif(not _compiled.AVAILABLE, reason="Numba not installed")

if _compiled.AVAILABLE:
    from rnnlab.fast import _affinity, _mkl, _split, _threads, _units

D, H = 5, 24
F = np.float32


@pytest.fixture(autouse=True)
def _mkl_on_small_layers(monkeypatch):
    if _mkl.lib is None:
        pytest.skip("MKL not installed (rnnlab[mkl])")
    if not _compiled.blas_loops():
        pytest.skip("no BLAS address for the compiled loops")
    monkeypatch.setattr(_mkl, "ENABLED", True)
    monkeypatch.setattr(_mkl, "MIN_WORK", 0)           # MKL for these small layers too
    monkeypatch.setattr(_split, "PARTS", 2)            # two parts whatever the machine's load
    monkeypatch.setattr(_units, "ENABLED", False)      # (the panels kernel's split: not this one)
    monkeypatch.setattr(_units, "L2_BYTES", 0)         # W_hh "larger than L2" at these sizes
    monkeypatch.setattr(_units, "START_SPINS", 10 ** 9)    # however long a first call takes to start


def _layer(seed=0, **opts):
    layer = rnnlab.LSTM(D, H, dtype=F, seed=seed, **opts)
    rng = np.random.default_rng(seed + 1)
    layer.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in layer.params.items()})
    return layer.eval()


def _inputs(layer, N, T, seed, state="random"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, D) if layer.batch_first else (T, N, D)).astype(F)
    L = layer.num_layers * layer.num_directions
    if state is None:
        return x, None
    make = np.zeros if state == "zero" else (lambda s: rng.standard_normal(s))
    return x, tuple(np.asarray(make((L, N, H)), F) for _ in range(2))


def _spy(monkeypatch):
    """Record what each call of the split returned (True: it ran the steps)."""
    ran = []
    real = _units.lstm_infer_mkl
    monkeypatch.setattr(_units, "lstm_infer_mkl", lambda *a: ran.append(real(*a)) or ran[-1])
    return ran


def _forward(layer, x, state, fast=True):
    layer.fast = fast
    out, (h, c) = layer.forward(x, state)
    return [out, h, c]


def _readable(layer, x, state, opts):
    ref = rnnlab.LSTM(D, H, dtype=np.float64, **opts)
    ref.load_state_dict({k: v.astype(np.float64) for k, v in layer.params.items()})
    ref.fast = False
    state = None if state is None else tuple(s.astype(np.float64) for s in state)
    out, (h, c) = ref.eval().forward(x.astype(np.float64), state)
    return [out, h, c]


@pytest.mark.parametrize("opts", [{}, {"batch_first": False}, {"bidirectional": True},
                                  {"num_layers": 2, "batch_first": False}])
@pytest.mark.parametrize("N,T", [(16, 2), (17, 3), (33, 9)])
@pytest.mark.parametrize("state", ["random", "zero", None])
def test_mkl_split_by_units_equals_the_readable_path(opts, N, T, state, monkeypatch):
    """Every run of the split (each layer and direction) does the steps, and out, h_T and c_T are
    those of the readable path in float64 within float32 rounding, from a random, a zero and no
    initial state (the first step's recurrent product left out for the last two); the state
    passed in is not changed."""
    ran = _spy(monkeypatch)
    layer = _layer(seed=N + T, **opts)
    x, st = _inputs(layer, N, T, seed=N * T, state=state)
    before = None if st is None else [s.copy() for s in st]
    fast = _forward(layer, x, st)
    assert ran == [True] * (layer.num_layers * layer.num_directions)
    if st is not None:
        assert all(np.array_equal(s, b) for s, b in zip(st, before))
    for a, b in zip(fast, _readable(layer, x, st, opts)):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 2e-6 * max(1.0, np.abs(b).max())


def test_mkl_split_by_units_is_close_to_the_batch_split(monkeypatch):
    """The same forward through the batch split's MKL loops (``MKL_ENABLED`` off) gives the same
    numbers within float32 rounding, and the split leaves the cell state it was given alone."""
    layer = _layer(seed=2, bidirectional=True)
    x, state = _inputs(layer, 20, 11, seed=3)
    ran = _spy(monkeypatch)
    by_units = _forward(layer, x, state)
    assert ran == [True, True]
    monkeypatch.setattr(_units, "MKL_ENABLED", False)
    by_batch = _forward(layer, x, state)
    assert len(ran) == 2                                # not called again
    for a, b in zip(by_units, by_batch):
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("how", ["pool thread busy", "late start"])
def test_a_second_core_that_does_not_start_leaves_the_forward_to_the_batch_split(how, monkeypatch):
    """The calling core waits START_SPINS for the other's thread at its first wait for it; if it
    has not started by then the split returns False, the batch split's loops run from the
    original cell state (the results those of the batch split alone, bit for bit), and a late
    thread does nothing."""
    layer = _layer(seed=5)
    x, state = _inputs(layer, 18, 5, seed=6)
    monkeypatch.setattr(_units, "MKL_ENABLED", False)
    want = _forward(layer, x, state)
    monkeypatch.setattr(_units, "MKL_ENABLED", True)
    monkeypatch.setattr(_units, "START_SPINS", 10)
    late, release = [], threading.Event()
    if how == "pool thread busy":
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
    assert late in ([], [False])
    for a, b in zip(got, want):
        assert np.array_equal(a, b)
    if how == "pool thread busy":
        assert all(b.result() is True for b in blockers)


@pytest.mark.parametrize("side", ["second core", "calling core"])
def test_an_error_on_either_core_reaches_the_caller_without_a_hang(side, monkeypatch):
    """An error in one core's half (here in its input products) sets ABORT, so the other stops
    waiting, and the forward raises that error; the CPU masks are given back."""
    layer = _layer(seed=7)
    x, state = _inputs(layer, 16, 40, seed=8)
    real_project = _units.project
    caller = threading.get_ident()
    mask = os.sched_getaffinity(0)

    def project(*args):
        if (threading.get_ident() == caller) == (side == "calling core"):
            raise MemoryError("no room for the input products")
        return real_project(*args)
    monkeypatch.setattr(_units, "project", project)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="no room for the input products"):
        _forward(layer, x, state)
    assert time.perf_counter() - t0 < 10
    assert os.sched_getaffinity(0) == mask


def test_the_split_pins_its_two_threads_and_gives_their_cpus_back(monkeypatch):
    """The calling thread and the pool's are pinned (``_affinity.pin``) while the caller runs its
    half, and restored after; the caller's CPU set after the forward is the one it had."""
    pins, restores = [], []
    real_pin, real_restore = _affinity.pin, _affinity.restore
    monkeypatch.setattr(_affinity, "pin", lambda tids: pins.append(tuple(tids)) or real_pin(tids))
    monkeypatch.setattr(_affinity, "restore", lambda saved: restores.append(list(saved)) or real_restore(saved))
    mask = os.sched_getaffinity(0)
    layer = _layer(seed=9)
    x, state = _inputs(layer, 16, 6, seed=10)
    ran = _spy(monkeypatch)
    _forward(layer, x, state)
    assert ran == [True]
    assert pins == [tuple(_split._pool[2])]
    assert len(restores) == 1
    assert os.sched_getaffinity(0) == mask


def test_mkl_split_by_units_runs_for_two_parts_and_fitting_sizes(monkeypatch):
    """It runs where the batch split would run two parts, not crowded, N >= MKL_MIN_N, H even,
    W_hh larger than one core's L2, MKL in use, and each core's input products within
    ``AHEAD_MAX_BYTES``; ``MKL_ENABLED`` off turns it off."""
    two = _split.Parts(2)
    N = _units.MKL_MIN_N
    assert _units.usable_mkl(10, N, 5, 512, two)
    assert not _units.usable_mkl(10, N, 5, 512, _split.Parts(1))
    assert not _units.usable_mkl(10, N, 5, 512, _split.Parts(3))
    crowded = _split.Parts(2)
    crowded.crowded = True
    assert not _units.usable_mkl(10, N, 5, 512, crowded)
    assert not _units.usable_mkl(10, N - 1, 5, 512, two)
    assert not _units.usable_mkl(10, N, 5, 511, two)                     # odd H
    monkeypatch.setattr(_units, "L2_BYTES", 16 * 512 * 512)             # W_hh fits in L2
    assert not _units.usable_mkl(10, N, 5, 512, two)
    assert _units.usable_mkl(10, N, 5, 514, two)
    limit = _compiled.AHEAD_MAX_BYTES // (N * 2 * 514 * 4)
    assert _units.usable_mkl(limit, N, 5, 514, two) and not _units.usable_mkl(limit + 1, N, 5, 514, two)
    monkeypatch.setattr(_units, "MKL_ENABLED", False)
    assert not _units.usable_mkl(10, N, 5, 514, two)
    monkeypatch.setattr(_units, "MKL_ENABLED", True)
    monkeypatch.setattr(_mkl, "ENABLED", False)
    assert not _units.usable_mkl(10, N, 5, 514, two)


def test_l2_size_is_read_from_sysfs_or_defaults(tmp_path):
    """``_threads.l2_bytes``: the level-2 cache's size from sysfs ("2048K" is 2 MiB), else the default."""
    assert _threads.l2_bytes(default=123, base=str(tmp_path / "missing")) == 123
    for name, level, size in (("index0", "1", "48K"), ("index2", "2", "2048K"), ("index3", "3", "480M")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(level + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
    assert _threads.l2_bytes(default=123, base=str(tmp_path)) == 2 * 2 ** 20
    (tmp_path / "index2" / "size").write_text("lots\n")
    assert _threads.l2_bytes(default=123, base=str(tmp_path)) == 123
