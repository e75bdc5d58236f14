"""LSTM inference split by hidden units on two cores (fast/_units.py), on the panels kernel and
with MKL: the readable path's results (on the panels kernel bit for bit those of the one-core
loop over [x_t | h], the same sums in the same order; with MKL within float32 rounding of the
batch split); a second core's thread that never starts leaves the forward to the other loops,
an error on either core reaches the caller without a hang; the MKL split's threads pinned apart;
the rules for when each split runs (with MKL, the input products of all steps first or one step
at a time); the L2 size read; and ``_panels``'s two-source kernel."""
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
    from rnnlab.fast import _affinity, _mkl, _panels, _split, _threads, _units

D, H = 5, 64        # H/2 = 32 columns of a gate: whole panels of either layout (16 or 32 wide)


def _panels_split(monkeypatch):
    """The split on the panels kernel: NumPy's BLAS (MKL off), turned on."""
    if _panels.compiled() is None:
        pytest.skip(f"the panels kernel is unavailable: {_panels.describe()}")
    if not _compiled.blas_loops():
        pytest.skip("no BLAS address for the compiled loops")
    monkeypatch.setattr(_mkl, "ENABLED", False)        # the split runs outside MKL's regime only
    monkeypatch.setattr(_units, "ENABLED", True)       # (off by default)


def _mkl_split(monkeypatch):
    """The split with MKL (``lstm_infer_mkl``), MKL forced on for these small layers, W_hh "larger
    than L2" at any size."""
    if _mkl.lib is None:
        pytest.skip("MKL not installed (rnnlab[mkl])")
    if not _compiled.blas_loops():
        pytest.skip("no BLAS address for the compiled loops")
    monkeypatch.setattr(_mkl, "ENABLED", True)
    monkeypatch.setattr(_mkl, "MIN_WORK", 0)
    monkeypatch.setattr(_units, "ENABLED", False)      # (the panels kernel's split: not this one)
    monkeypatch.setattr(_units, "L2_BYTES", 0)


def _stepwise_split(monkeypatch):
    """The split with MKL taking x_t W_ih^T a step at a time (``units_loop_stepwise``) at any N."""
    _mkl_split(monkeypatch)
    monkeypatch.setattr(_units, "STEPWISE_MIN_N", 0)


SETUP = {"panels": _panels_split, "mkl": _mkl_split, "stepwise": _stepwise_split}
SWITCH = {"panels": "ENABLED", "mkl": "MKL_ENABLED", "stepwise": "MKL_ENABLED"}   # each split's switch
LOOP = {"panels": "lstm_infer", "mkl": "lstm_infer_mkl", "stepwise": "lstm_infer_mkl"}


@pytest.fixture
def split(request, monkeypatch):
    """Which split a test runs ("panels" or "mkl", parametrized indirectly), set up."""
    SETUP[request.param](monkeypatch)
    return request.param


@pytest.fixture(autouse=True)
def _setup(request, monkeypatch):
    monkeypatch.setattr(_split, "PARTS", 2)            # two parts whatever the machine's load
    # the caller waits for the second core's thread however long it takes to start (a first call
    # loads the compiled loop there, often longer than START_SPINS)
    monkeypatch.setattr(_units, "START_SPINS", 10 ** 9)
    if "split" not in request.fixturenames:            # a test without ``split``: the panels kernel's
        _panels_split(monkeypatch)


panels_and_mkl = pytest.mark.parametrize("split", ["panels", "mkl", "stepwise"], indirect=True)
mkl_only = pytest.mark.parametrize("split", ["mkl", "stepwise"], indirect=True)


def _layer(seed=0, **opts):
    layer = rnnlab.LSTM(D, H, dtype=np.float32, seed=seed, **opts)
    rng = np.random.default_rng(seed + 1)
    layer.load_state_dict({k: rng.uniform(-0.4, 0.4, v.shape) for k, v in layer.params.items()})
    return layer.eval()


def _inputs(layer, N, T, seed, state="random"):
    """x, and a random or zero initial state (or None)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, D) if layer.batch_first else (T, N, D)).astype(np.float32)
    L = layer.num_layers * layer.num_directions
    if state is None:
        return x, None
    make = np.zeros if state == "zero" else (lambda s: rng.standard_normal(s))
    return x, tuple(np.asarray(make((L, N, H)), np.float32) for _ in range(2))


def _spy(monkeypatch, split="panels"):
    """Record what each call of the split returned (True: it ran the steps)."""
    ran = []
    real = getattr(_units, LOOP[split])
    monkeypatch.setattr(_units, LOOP[split], lambda *a: ran.append(real(*a)) or ran[-1])
    return ran


def _forward(layer, x, state, fast=True):
    layer.fast = fast
    out, (h, c) = layer.forward(x, state)
    return [out, h, c]


def _readable(layer, x, state, opts):
    """out, h_T, c_T of the readable path in float64 with the layer's weights."""
    ref = rnnlab.LSTM(D, H, dtype=np.float64, **opts)
    ref.load_state_dict({k: v.astype(np.float64) for k, v in layer.params.items()})
    ref.fast = False
    state = None if state is None else tuple(s.astype(np.float64) for s in state)
    out, (h, c) = ref.eval().forward(x.astype(np.float64), state)
    return [out, h, c]


@pytest.mark.parametrize("opts", [{}, {"batch_first": False}, {"bidirectional": True},
                                  {"num_layers": 2, "batch_first": False}])
@pytest.mark.parametrize("split,N,T", [("panels", 8, 2), ("panels", 13, 6), ("panels", 32, 9),
                                       ("mkl", 16, 2), ("mkl", 17, 3), ("mkl", 33, 9),
                                       ("stepwise", 16, 2), ("stepwise", 17, 4), ("stepwise", 33, 9)],
                         indirect=["split"])
@pytest.mark.parametrize("state", ["random", "zero", None])
def test_split_by_units_equals_the_readable_path(opts, split, N, T, state, monkeypatch):
    """Every run of the split (each layer and direction; on the panels kernel or with MKL) does the
    steps, and out, h_T and c_T are those of the readable path in float64 within float32
    rounding, from a random, a zero and no initial state (with MKL the first step's recurrent
    product left out for the last two); the state passed in is not changed."""
    ran = _spy(monkeypatch, split)
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


@panels_and_mkl
@pytest.mark.parametrize("how", ["pool thread busy", "late start"])
def test_a_second_core_that_does_not_start_leaves_the_forward_to_the_other_loops(split, how, monkeypatch):
    """The calling core waits START_SPINS for the other's thread at its first wait for it; if the
    thread has not started by then (the pool's thread busy with something else, or slow to
    start) the split returns False without a result, the batch split's loops run instead, from
    the original cell state (the results those of the batch split alone, bit for bit), and a
    late thread does nothing (``begin`` finds its half taken)."""
    layer = _layer(seed=5)
    x, state = _inputs(layer, 18, 5, seed=6)
    monkeypatch.setattr(_units, SWITCH[split], False)
    want = _forward(layer, x, state)
    monkeypatch.setattr(_units, SWITCH[split], True)
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
    ran = _spy(monkeypatch, split)
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


@panels_and_mkl
@pytest.mark.parametrize("side", ["second core", "calling core"])
def test_an_error_on_either_core_reaches_the_caller_without_a_hang(split, side, monkeypatch):
    """An error in one core's half (while it packs its weights for the panels kernel, makes its
    input products with MKL, or packs its weights for MKL) sets ABORT, so the other stops waiting,
    and the forward raises that error; the CPU masks are given back."""
    layer = _layer(seed=7)
    x, state = _inputs(layer, 16, 40, seed=8)
    name, message = {"panels": ("_pack", "no room for the panels"),
                     "mkl": ("project", "no room for the input products"),
                     "stepwise": ("packed_half", "no room for the packed weights")}[split]
    real = getattr(_units, name)
    caller = threading.get_ident()
    mask = os.sched_getaffinity(0)

    def failing(*args):
        if (threading.get_ident() == caller) == (side == "calling core"):
            raise MemoryError(message)
        return real(*args)
    monkeypatch.setattr(_units, name, failing)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match=message):
        _forward(layer, x, state)
    assert time.perf_counter() - t0 < 10
    assert os.sched_getaffinity(0) == mask


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


@mkl_only
def test_mkl_split_by_units_is_close_to_the_batch_split(split, monkeypatch):
    """The same forward through the batch split's MKL loops (``MKL_ENABLED`` off) gives the same
    numbers within float32 rounding, and the split leaves the cell state it was given alone."""
    layer = _layer(seed=2, bidirectional=True)
    x, state = _inputs(layer, 20, 11, seed=3)
    ran = _spy(monkeypatch, split)
    by_units = _forward(layer, x, state)
    assert ran == [True, True]
    monkeypatch.setattr(_units, "MKL_ENABLED", False)
    by_batch = _forward(layer, x, state)
    assert len(ran) == 2                                # not called again
    for a, b in zip(by_units, by_batch):
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max())


@mkl_only
def test_the_mkl_split_pins_its_two_threads_and_gives_their_cpus_back(split, monkeypatch):
    """The calling thread and the pool's are pinned (``_affinity.pin``) while the caller runs its
    half, and restored after; the caller's CPU set after the forward is the one it had."""
    pins, restores = [], []
    real_pin, real_restore = _affinity.pin, _affinity.restore
    monkeypatch.setattr(_affinity, "pin", lambda tids: pins.append(tuple(tids)) or real_pin(tids))
    monkeypatch.setattr(_affinity, "restore", lambda saved: restores.append(list(saved)) or real_restore(saved))
    mask = os.sched_getaffinity(0)
    layer = _layer(seed=9)
    x, state = _inputs(layer, 16, 6, seed=10)
    ran = _spy(monkeypatch, split)
    _forward(layer, x, state)
    assert ran == [True]
    assert pins == [tuple(_split._pool[2])]
    assert len(restores) == 1
    assert os.sched_getaffinity(0) == mask


@pytest.mark.parametrize("split", ["mkl"], indirect=True)
@pytest.mark.parametrize("N", [16, 20])
def test_mkl_split_takes_the_input_products_a_step_at_a_time_from_stepwise_min_n(split, N, monkeypatch):
    """Below STEPWISE_MIN_N sequences each core runs ``units_loop_ahead`` (all steps' input products
    first), from there on ``units_loop_stepwise``; the two give the same numbers within float32
    rounding."""
    monkeypatch.setattr(_units, "STEPWISE_MIN_N", 20)
    loops = []
    for name in ("units_loop_ahead", "units_loop_stepwise"):
        real = getattr(_units, name)
        monkeypatch.setattr(_units, name, lambda *a, _real=real, _name=name: loops.append(_name) or _real(*a))
    layer = _layer(seed=11)
    x, state = _inputs(layer, N, 7, seed=12)
    got = _forward(layer, x, state)
    assert loops == ["units_loop_ahead" if N < 20 else "units_loop_stepwise"] * 2
    monkeypatch.setattr(_units, "STEPWISE_MIN_N", 0 if N < 20 else 10 ** 9)
    other = _forward(layer, x, state)
    assert loops[2:] == ["units_loop_stepwise" if N < 20 else "units_loop_ahead"] * 2
    for a, b in zip(got, other):
        assert np.abs(a - b).max() <= 1e-6 * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("split", ["mkl"], indirect=True)
def test_mkl_split_by_units_runs_for_two_parts_and_fitting_sizes(split, monkeypatch):
    """It runs where the batch split would run two parts, not crowded, N >= MKL_MIN_N, H even,
    W_hh larger than one core's L2, MKL in use, and below STEPWISE_MIN_N sequences each core's
    input products within ``AHEAD_MAX_BYTES`` (from there on, at any T); ``MKL_ENABLED`` off
    turns it off."""
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
    monkeypatch.setattr(_units, "STEPWISE_MIN_N", N)                    # no input products kept
    assert _units.usable_mkl(100 * limit, N, 5, 514, two)
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
