"""The fast paths (rnnlab.fast) give the same results as the readable cells.

Each case builds one layer, runs forward + backward on the fast path and on
the readable path (``layer.fast = False``) with the same weights, input,
initial state, dout and dstate, and compares outputs, final states, dx, the
initial-state gradient and every parameter gradient. Float64 must agree to
1e-12 relative to the largest magnitude of each array; float32 to 1e-5.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest

import rnnlab

needs_numba = pytest.mark.skipif(not rnnlab.fast._compiled.AVAILABLE, reason="Numba not installed")
needs_mkl = pytest.mark.skipif(rnnlab.fast._mkl.lib is None, reason="MKL not installed (rnnlab[mkl])")


@pytest.fixture
def without_mkl(monkeypatch):
    """The OpenBLAS paths (transposed products, feature-major loops), which MKL replaces."""
    monkeypatch.setattr(rnnlab.fast._mkl, "ENABLED", False)

CELLS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}

CASES = [
    # (cell, options)                                          # what it covers
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {}),
    ("gru", {}),
    ("rnn", {"num_layers": 2, "bidirectional": True}),
    ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("gru", {"num_layers": 2, "bidirectional": True}),
    ("lstm", {"proj_size": 3}),
    ("lstm", {"proj_size": 3, "num_layers": 2, "bidirectional": True}),
    ("rnn", {"bias": False}),
    ("lstm", {"bias": False}),
    ("gru", {"bias": False}),
    ("rnn", {"batch_first": False}),            # time-major memory (the others keep batch-major)
    ("lstm", {"batch_first": False, "num_layers": 2}),
    ("gru", {"batch_first": False}),
]


def _layer(cell, dtype, seed, **opts):
    layer = CELLS[cell](5, 6, dtype=dtype, seed=seed, **opts)
    rng = np.random.default_rng(seed + 1)
    # random non-zero weights and biases, larger than the default so gates saturate a little
    layer.load_state_dict({k: rng.uniform(-0.8, 0.8, v.shape) for k, v in layer.params.items()})
    return layer


def _state(layer, N, rng):
    L = layer.num_layers * layer.num_directions
    h = rng.standard_normal((L, N, layer.hidden_out))
    if layer.mode == "lstm":
        return (h, rng.standard_normal((L, N, layer.hidden_size)))
    return h


def _run(layer, fast, x, state, lengths, dout, dstate):
    layer.fast = fast
    layer.zero_grad()
    out, st = layer.forward(x, state=state, lengths=lengths)
    dx, dst = layer.backward(dout, dstate=dstate)
    flat = lambda s: list(s) if isinstance(s, tuple) else [s]
    return [out, *flat(st), dx, *flat(dst)] + [layer.grads[k].copy() for k in sorted(layer.grads)]


def _assert_close(a_list, b_list, rtol):
    for a, b in zip(a_list, b_list, strict=True):
        scale = max(np.abs(b).max(), 1e-30)
        err = np.abs(a - b).max() / scale
        assert err <= rtol, f"relative difference {err:.3g} > {rtol:.1g} (shape {b.shape})"


@pytest.mark.parametrize("cell,opts", CASES, ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'plain'}"
                                                   for c, o in CASES])
@pytest.mark.parametrize("variant", ["plain", "state+dstate+chunks", "lengths+state+dstate+chunks"])
@pytest.mark.parametrize("dtype,rtol,compiled", [
    (np.float64, 1e-12, False),                 # float64 always runs the NumPy fused path
    (np.float32, 1e-5, False),                  # float32, NumPy fused path
    pytest.param(np.float32, 1e-5, True, marks=needs_numba),     # float32, compiled kernels
    pytest.param(np.float32, 1e-5, "mkl", marks=[needs_numba, needs_mkl])])   # and every GEMM through MKL
def test_fast_equals_readable(cell, opts, variant, dtype, rtol, compiled, monkeypatch):
    monkeypatch.setattr(rnnlab.fast, "COMPILED", bool(compiled))
    calls = _count_mkl_calls(monkeypatch) if compiled == "mkl" else None
    N, T = 4, 7
    layer = _layer(cell, dtype, seed=3, **opts)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, 5))
    H_out = layer.num_directions * layer.hidden_out
    dout = rng.standard_normal((N, T, H_out))
    if not layer.batch_first:                   # (T, N, .) arrays, time-major in memory
        x, dout = np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(dout.transpose(1, 0, 2))
    state = dstate = lengths = None
    if variant != "plain":
        state, dstate = _state(layer, N, rng), _state(layer, N, rng)
        if "lengths" in variant:                # (the compiled kernels leave lengths to the NumPy path)
            lengths = np.array([7, 3, 1, 5])
        # weight gradients in chunks of 2 steps (7 = 2 + 2 + 2 + 1), not all 7 at once
        monkeypatch.setattr(rnnlab.fast, "CHUNK_ROWS", 2 * N)
    loops, chunks = [], []
    if compiled and lengths is None:            # the compiled loops call the BLAS (or MKL) themselves
        for name, seen in (("lstm_loop1", loops), ("lstm_loop2", loops), ("gru_loop_blas", loops), ("rnn_loop_blas", loops),
                           ("lstm_chunk_blas", chunks), ("gru_chunk_blas", chunks), ("rnn_chunk_blas", chunks)):
            real = getattr(rnnlab.fast._compiled, name)
            monkeypatch.setattr(rnnlab.fast._compiled, name,
                                lambda *a, _f=real, _s=seen: _s.append((a[0],) + a[5:7]) or _f(*a))
        real_ahead = rnnlab.fast._compiled.lstm_loop_ahead  # MKL's packed product, its address first
        monkeypatch.setattr(rnnlab.fast._compiled, "lstm_loop_ahead",
                            lambda *a: loops.append((rnnlab.fast._compiled.PACKED,)) or real_ahead(*a))
    fast = _run(layer, True, x, state, lengths, dout, dstate)
    if calls is not None:                       # the packed product in every loop, plain GEMMs in the flushes
        assert calls["cblas_sgemm"] >= 3, calls
        if lengths is None and not opts.get("proj_size"):
            runs = layer.num_layers * layer.num_directions
            assert len(loops) == runs                           # one compiled forward loop a direction
            per_run = 1 if variant == "plain" else 4            # chunks of 2 steps: 7 = 2 + 2 + 2 + 1
            assert len(chunks) == runs * per_run, chunks
            assert sum(hi - lo for _, lo, hi in chunks) == runs * T
            assert {kind for kind, *_ in loops + chunks} == {rnnlab.fast._compiled.PACKED}
        else:                                   # the NumPy loops call it from Python, forward and backward
            assert calls["cblas_sgemm_compute"] >= 2 * T, calls
    elif compiled and lengths is None and not opts.get("proj_size"):
        # NumPy's OpenBLAS called from the compiled loops, x W (N = 4 is outside the transposed windows)
        runs = layer.num_layers * layer.num_directions
        if rnnlab.fast._blas.ADDRESS is not None:
            assert len(loops) == runs and len(chunks) == runs * (1 if variant == "plain" else 4), (loops, chunks)
            assert sum(hi - lo for _, lo, hi in chunks) == runs * T
            assert {kind for kind, *_ in loops + chunks} == {rnnlab.fast._compiled.PLAIN}
        else:
            assert not loops and not chunks
    readable = _run(layer, False, x, state, lengths, dout, dstate)
    _assert_close(fast, readable, rtol)


def _count_mkl_calls(monkeypatch):
    """MKL forced on for small layers (``_mkl.MIN_WORK`` = 0); returns a dict that counts its calls."""
    from rnnlab.fast import _mkl
    calls = {"cblas_sgemm": 0, "cblas_sgemm_compute": 0, "cblas_sgemm_pack": 0}

    class Counting:
        def __getattr__(self, name):
            fn = getattr(real, name)
            if name not in calls:
                return fn

            def counted(*args):
                calls[name] += 1
                return fn(*args)
            return counted

    real = _mkl.lib
    monkeypatch.setattr(_mkl, "lib", Counting())
    monkeypatch.setattr(_mkl, "ENABLED", True)
    monkeypatch.setattr(_mkl, "MIN_WORK", 0)
    return calls


@needs_mkl
@pytest.mark.parametrize("a_layout", ["c", "f", "rows", "cols", "transposed-view"])
@pytest.mark.parametrize("b_layout", ["c", "f", "cols"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_mkl_matmul_equals_numpys_for_every_layout(a_layout, b_layout, accumulate, monkeypatch):
    """``_mkl.matmul`` takes views, transposes and strided operands (copying those with no unit
    stride), writes into a block of a larger array, and accumulates when asked."""
    from rnnlab.fast import _mkl
    calls = _count_mkl_calls(monkeypatch)
    rng = np.random.default_rng(5)
    M, K, N = 9, 7, 5
    base = rng.standard_normal((2 * M, 2 * K)).astype(np.float32)
    a = {"c": base[:M, :K].copy(), "f": np.asfortranarray(base[:M, :K]), "rows": base[::2, :K],
         "cols": base[:M, ::2], "transposed-view": base[:K, :M].T}[a_layout]
    bbase = rng.standard_normal((K, 3 * N)).astype(np.float32)
    b = {"c": bbase[:, :N].copy(), "f": np.asfortranarray(bbase[:, :N]), "cols": bbase[:, ::3]}[b_layout]
    big = rng.standard_normal((M, N + 4)).astype(np.float32)
    before = big.copy()
    out = big[:, 2:2 + N]
    _mkl.matmul(a, b, out, accumulate=accumulate)
    want = (before[:, 2:2 + N] if accumulate else 0) + a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(big[:, :2], before[:, :2])        # the rest of big untouched
    np.testing.assert_array_equal(big[:, 2 + N:], before[:, 2 + N:])
    assert calls["cblas_sgemm"] == 1


@needs_mkl
def test_mkl_is_left_out_below_its_threshold_and_for_float64(monkeypatch):
    from rnnlab.fast import _mkl
    monkeypatch.setattr(_mkl, "ENABLED", True)
    assert _mkl.active(np.float32, _mkl.MIN_WORK) and not _mkl.active(np.float32, _mkl.MIN_WORK - 1)
    assert not _mkl.active(np.float64, 10 * _mkl.MIN_WORK)
    monkeypatch.setattr(_mkl, "ENABLED", False)
    assert not _mkl.active(np.float32, 10 * _mkl.MIN_WORK)


def test_fast_is_the_default_and_readable_is_reachable():
    layer = rnnlab.LSTM(3, 4, seed=0)
    assert layer.fast is rnnlab.fast.ENABLED
    layer.fast = False
    out, _ = layer.forward(np.ones((1, 2, 3)))
    assert not isinstance(layer._cache[0][0][1][0], rnnlab.fast.Cache)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recorder_sees_the_same_gradients_on_both_paths(cell):
    layer = _layer(cell, np.float64, seed=5, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 5))
    dout = rng.standard_normal((3, 6, 12))
    lengths = np.array([6, 2, 4])
    seen = {}
    for fast in (True, False):
        calls = seen[fast] = []
        # copies: the readable path hands the recorder a view of the initial-state
        # gradient at the first step, which backward later overwrites
        layer.recorder = lambda k, d, t, dh, dc, calls=calls: calls.append(
            (k, d, t, dh.copy(), None if dc is None else dc.copy()))
        layer.fast = fast
        layer.forward(x, lengths=lengths)
        layer.backward(dout)
    assert len(seen[True]) == len(seen[False]) == 2 * 2 * 6
    for a, b in zip(seen[True], seen[False]):
        assert a[:3] == b[:3]
        _assert_close([a[3]] + ([a[4]] if cell == "lstm" else []),
                      [b[3]] + ([b[4]] if cell == "lstm" else []), 1e-12)


def test_two_backwards_of_one_forward_agree():
    # the fast backward must not consume what forward saved
    layer = _layer("lstm", np.float64, seed=2, proj_size=2)
    x = np.random.default_rng(4).standard_normal((2, 5, 5))
    out, _ = layer.forward(x)
    dout = np.ones_like(out)
    dx1, _ = layer.backward(dout)
    dx2, _ = layer.backward(dout)
    np.testing.assert_array_equal(dx1, dx2)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the benchmark compares against PyTorch")
def test_bench_runs_on_a_tiny_grid_and_writes_json(tmp_path, capsys):
    from rnnlab import bench
    from rnnlab.cli import main

    result = bench.run(threads=1, repeats=1, sizes=[(2, 3, 4, 5)], cells=("lstm", "gru", "rnn"),
                       stream_sizes=(8,), memory_T=20, min_time=0.0, pause=0.0, progress=False,
                       sample_chars=3, gemm_n=256)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(result))
    loaded = json.loads(path.read_text())
    assert {"threads", "gemm_peak_gflops", "points", "streaming", "sampling", "memory"} <= set(loaded)
    assert [(p["kind"], p["cell"]) for p in loaded["points"]] == [
        (k, c) for c in ("lstm", "gru", "rnn") for k in ("train", "infer")]
    for p in loaded["points"] + loaded["streaming"]:
        for key in ("torch_ms", "rnnlab_ms", "ratio", "rnnlab_gflops", "rnnlab_roofline"):
            assert np.isfinite(p[key]) and p[key] > 0, (p, key)
        assert p["ratio"] == pytest.approx(p["torch_ms"] / p["rnnlab_ms"])
    for p in loaded["points"]:         # the GEMM timed in the same turns, and rnnlab's fraction of it
        assert p["gemm_gflops_same_turns"] > 0
        assert p["rnnlab_roofline_same_turns"] == pytest.approx(p["rnnlab_gflops"] / p["gemm_gflops_same_turns"])
        turns = p["turns_ms"]                  # every turn kept; the best of each is the row's time
        assert [len(turns[k]) for k in ("torch", "rnnlab", "gemm")] == [1, 1, 1]
        assert min(turns["rnnlab"]) == pytest.approx(p["rnnlab_ms"]) and min(turns["torch"]) == pytest.approx(p["torch_ms"])
        own = bench.flops(p["cell"], 2, 3, 4, 5, p["kind"] == "train")   # and the 256^3 GEMM's
        assert p["rnnlab_roofline_paired"] == pytest.approx(
            (own / turns["rnnlab"][0]) / (2 * 256 ** 3 / turns["gemm"][0]))
    assert loaded["memory"]["rnnlab_rss_mb"] >= 0 and loaded["memory"]["rnnlab_tracemalloc_mb"] > 0
    table = bench.format_table(result)
    assert "train LSTM N=2 T=3 D=4 H=5" in table and "stream LSTM x2" in table

    # the command refuses to overwrite an existing --json file
    assert main(["bench", "--quick", "--json", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert json.loads(path.read_text()) == loaded


@needs_numba
@pytest.mark.parametrize("kind", ["PLAIN", "SWAPPED"])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_compiled_blas_product_equals_numpys(kind, beta):
    """The compiled loops' product through NumPy's OpenBLAS (``_compiled._product``): out (N, C)
    <- x B + beta out, x rows at a stride (a step of a batch-major array), either way round."""
    from rnnlab.fast import _blas, _compiled
    if _blas.ADDRESS is None:
        pytest.skip("no cblas_sgemm address for NumPy's BLAS here")
    rng = np.random.default_rng(51)
    N, K, C, T = 5, 7, 12, 3
    mem = rng.standard_normal((N, T, K)).astype(np.float32)     # x = mem[:, 1]: row stride T K
    W = rng.standard_normal((C, K)).astype(np.float32)          # x B with B = W^T
    out = rng.standard_normal((N, C)).astype(np.float32)
    expected = mem[:, 1] @ W.T + beta * out
    B = np.ascontiguousarray(W.T) if kind == "PLAIN" else W
    buf = np.empty((C, N), np.float32)
    a = mem.ctypes.data + mem.strides[1]
    _compiled._product(getattr(_compiled, kind), _blas.ADDRESS, _blas.WIDE, B, buf, a, T * K, K, out,
                       np.float32(beta))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_blas_symbol_is_refused_when_the_build_says_the_other_integer_width():
    """``_blas._pick`` takes the first cblas_sgemm name a library exports, with the integer
    width its name implies, and refuses it when OpenBLAS's build string says otherwise."""
    import ctypes
    from rnnlab.fast import _blas
    sgemm = ctypes.CFUNCTYPE(None)(lambda: None)
    address = ctypes.cast(sgemm, ctypes.c_void_p).value

    class Config:                                # openblas_get_config: _config_wide sets its types
        def __init__(self, text):
            self.text = text

        def __call__(self):
            return self.text

    class Lib:                                   # stands in for a loaded library
        def __init__(self, symbol, config):
            setattr(self, symbol, sgemm)
            if config is not None:
                self.openblas_get_config = Config(config)
    assert _blas._pick(Lib("cblas_sgemm64_", b"OpenBLAS USE64BITINT Haswell")) == (address, True, "cblas_sgemm64_")
    assert _blas._pick(Lib("cblas_sgemm", b"OpenBLAS Haswell")) == (address, False, "cblas_sgemm")
    assert _blas._pick(Lib("cblas_sgemm", None)) == (address, False, "cblas_sgemm")    # no build string
    assert _blas._pick(Lib("cblas_sgemm", b"OpenBLAS USE64BITINT Haswell")) is None     # 32-bit name, 64-bit build
    assert _blas._pick(Lib("cblas_sgemm64_", b"OpenBLAS Haswell")) is None
    assert _blas._pick(Lib("sgemm_", None)) is None


def test_the_table_names_the_blas_of_rnnlabs_loops():
    """The table says whether rnnlab's loops ran MKL (its version and threading), or called
    NumPy's BLAS from compiled code (the symbol), or neither."""
    from rnnlab import bench
    base = {"blas": [{"internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell"}]}
    mkl = {"enabled": True, "version": "oneMKL 2026.2", "threading": "gnu"}
    lines = bench._blas_lines({**base, "fast_path": {"mkl": mkl, "blas_loops": True, "split": "on",
                                                     "pin": "on", "infer_loops": "on", "ahead": "on",
                                                     "units_mkl": "on"}})
    assert lines[0] == "NumPy BLAS: openblas 0.3.31, Haswell kernels"
    assert "GEMMs through oneMKL 2026.2" in lines[1] and "gnu threading" in lines[1] and len(lines) == 2
    assert "batch split onto idle cores on (its threads pinned apart on)" in lines[1]
    assert "LSTM inference loops on" in lines[1]
    assert lines[1].endswith("LSTM inference loops on; input products before the LSTM inference steps on; "
                             "LSTM inference split by units where W_hh outgrows L2 on")
    lines = bench._blas_lines({**base, "fast_path": {"mkl": {"enabled": False}, "blas_loops": True,
                                                     "blas": {"symbol": "scipy_cblas_sgemm64_"},
                                                     "panels": "6 x 16 register tiles", "split": "on",
                                                     "pair": "on", "infer_loops": "off (RNNLAB_INFER_LOOPS=0)"}})
    assert lines[1] == ("rnnlab's loops: NumPy's BLAS called from compiled code (scipy_cblas_sgemm64_); "
                        "on one core: panels kernel 6 x 16 register tiles; batch split onto idle cores on "
                        "(its threads pinned apart off); "
                        "tiny loops' units on two cores on; LSTM inference loops off (RNNLAB_INFER_LOOPS=0)")
    lines = bench._blas_lines({**base, "fast_path": {"mkl": {"enabled": False}, "blas_loops": True,
                                                     "panels": "8 x 32 register tiles", "panels_gemm": "on"}})
    assert "panels kernel 8 x 32 register tiles; large GEMMs through the panels kernel on every core on;" in lines[1]
    assert len(bench._blas_lines({**base, "fast_path": {"mkl": {}, "blas_loops": False}})) == 1


def test_the_roofline_is_the_faster_blas_and_the_turns_time_that_one():
    """With two BLAS (NumPy's and MKL's) the roofline is the faster one's GEMM, and the GEMM
    timed in turn with the grid points is that one; a slower backend never lowers the peak."""
    from rnnlab import bench
    gemm = bench.Gemm(16)
    ran = []

    def backend(name, seconds):
        def fn():
            ran.append(name)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                pass
        return fn
    gemm.backends = {"numpy": backend("numpy", 0.004), "mkl": backend("mkl", 0.001)}
    peak = bench.gemm_peak(1, gemm, repeats=3)
    assert gemm.backend == "mkl" and peak == gemm.peaks["mkl"] > 2 * gemm.peaks["numpy"]
    assert peak <= gemm.flops / 0.001 / 1e9
    ran.clear()
    gemm()
    assert ran == ["mkl"]
    gemm.backends["mkl"] = backend("mkl", 0.02)      # slower at the end: each backend keeps its best
    assert bench.gemm_peak(1, gemm, repeats=2) == peak == gemm.peaks["mkl"] and gemm.backend == "mkl"


def test_paired_fraction_is_the_median_of_each_rounds_fraction():
    from rnnlab.bench import paired_fraction

    # rounds: 10 GFLOP in 0.1, 0.2, 0.05 s against a 20 GFLOP GEMM in 0.1, 0.1, 0.2 s:
    # 100/200, 50/200, 200/100 GFLOP/s -> fractions 0.5, 0.25, 2.0, median 0.5
    assert paired_fraction(10e9, [0.1, 0.2, 0.05], 20e9, [0.1, 0.1, 0.2]) == pytest.approx(0.5)
    # one round where only the GEMM ran fast (0.5 s) would halve best over best; the median keeps 1
    assert paired_fraction(1.0, [1.0, 1.0, 1.0], 1.0, [1.0, 1.0, 0.5]) == pytest.approx(1.0)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the benchmark compares against PyTorch")
def test_bench_times_the_users_own_sizes_and_cells_and_skips_parts(tmp_path, capsys):
    from rnnlab.cli import main

    path = tmp_path / "own.json"
    assert main(["bench", "--size", "2,3,4,5", "--size", "1,2,3,4", "--cell", "gru", "--repeats", "1",
                 "--skip", "stream", "--skip", "sample", "--skip", "memory", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "train GRU N=2 T=3 D=4 H=5" in out and "infer GRU N=1 T=2 D=3 H=4" in out
    points = [line for line in out.splitlines() if line.startswith(("train ", "infer ", "stream ", "sample "))]
    assert len(points) == 4 and not any("LSTM" in line or "stream" in line or "sample" in line for line in points)
    loaded = json.loads(path.read_text())
    assert [(p["kind"], p["cell"], p["N"], p["H"]) for p in loaded["points"]] == [
        ("train", "gru", 2, 5), ("infer", "gru", 2, 5), ("train", "gru", 1, 4), ("infer", "gru", 1, 4)]
    assert loaded["streaming"] == [] and loaded["sampling"] is None and loaded["memory"] is None

    for argv, message in ((["--size", "2,3,4"], "--size: expected four positive integers"),
                          (["--size", "2,0,4,5"], "--size: expected four positive integers"),
                          (["--size", "a,b,c,d"], "--size: expected four positive integers"),
                          (["--skip", "grid", "--skip", "stream", "--skip", "sample", "--skip", "memory"],
                           "--skip: every part is skipped")):
        assert main(["bench", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@needs_numba
def test_compiled_tanh_is_accurate_to_a_few_ulp():
    from rnnlab.fast import _compiled
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-20, 20, 1_000_000), np.linspace(-1e-3, 1e-3, 20001),
                        [0.0, -0.0, 1e-30, -1e-30, 9.0, -9.0, 88.0, np.inf, -np.inf]]).astype(np.float32)
    out = np.empty_like(x)
    _compiled.tanh_array(x, out)
    exact = np.tanh(x.astype(np.float64))
    rel = np.abs(out - exact) / np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    assert rel.max() < 3e-7, rel.max()
    np.testing.assert_array_equal(np.signbit(out), np.signbit(x))
    nan = np.empty(1, np.float32)
    _compiled.tanh_array(np.array([np.nan], np.float32), nan)
    assert np.isnan(nan[0])                      # divergence stays visible
    # and in the vectorised body of the loop too (a long array, NaN in many lanes)
    y = rng.uniform(-3, 3, 1000).astype(np.float32)
    y[::7] = np.nan
    out = np.empty_like(y)
    _compiled.tanh_array(y, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(y))


@needs_numba
def test_compiled_sigmoid_is_accurate_to_a_few_ulp_at_every_x():
    from rnnlab.fast import _compiled
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-100, 100, 1_000_000), rng.uniform(-20, 20, 1_000_000),
                        np.linspace(-1e-3, 1e-3, 20001),
                        [0.0, -0.0, 1e-30, -1e-30, 86.9, -86.9, 87.0, -87.0, 88.0, -88.0, np.inf]]).astype(np.float32)
    out = np.empty_like(x)
    _compiled.sigmoid_array(x, out)
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    kept = x >= -87                                # below, exp(-x) is clipped at exp(87): 1.6e-38 out
    rel = np.abs(out - exact) / exact
    assert rel[kept].max() < 2e-7, rel[kept].max()
    low = out[~kept]
    assert np.all((low > 0) & (low <= 1.7e-38))    # a normal number, never 0 or a subnormal
    edge = np.empty(2, np.float32)
    _compiled.sigmoid_array(np.array([np.inf, -np.inf], np.float32), edge)
    assert edge[0] == 1.0 and 0 < edge[1] <= 1.7e-38
    y = rng.uniform(-3, 3, 1000).astype(np.float32)
    y[::7] = np.nan
    out = np.empty_like(y)
    _compiled.sigmoid_array(y, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(y))    # divergence stays visible


@needs_numba
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_compiled_path_is_taken_for_float32(cell, monkeypatch):
    from rnnlab.fast import _compiled
    called = []
    name = f"{cell}_forward"
    real = getattr(_compiled, name)
    monkeypatch.setattr(_compiled, name, lambda *a, **k: called.append(1) or real(*a, **k))
    layer = _layer(cell, np.float32, seed=1)
    layer.forward(np.ones((2, 3, 5), np.float32))
    assert called


@needs_numba
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                                       ("lstm", {"num_layers": 2, "bidirectional": True, "bias": False}),
                                       ("gru", {"bidirectional": True}), ("rnn", {"bidirectional": True})])
@pytest.mark.parametrize("N", [1, 2])
def test_tiny_batches_run_the_whole_loop_compiled(cell, opts, N, monkeypatch):
    """N <= 2: the loop over t runs inside one compiled call (fast/_compiled.py, *_loop), and the
    backward a chunk of steps per compiled call (*_chunk_blas with the MATVEC product; chunks of
    4 // N steps here, so several per direction); it gives the readable path's results, forward
    and backward, state and dstate included."""
    from rnnlab import fast
    from rnnlab.fast import _compiled
    taken, chunks = [], []
    name = f"{cell}_loop"
    real = getattr(_compiled, name)
    monkeypatch.setattr(_compiled, name, lambda *a: taken.append(1) or real(*a))
    real_chunk = getattr(_compiled, f"{cell}_chunk_blas")
    monkeypatch.setattr(_compiled, f"{cell}_chunk_blas",
                        lambda *a: (a[0] == _compiled.MATVEC and chunks.append((a[5], a[6]))) or real_chunk(*a))
    monkeypatch.setattr(fast, "CHUNK_ROWS", 4)
    layer = _layer(cell, np.float32, seed=6, **opts)
    rng = np.random.default_rng(7)
    T = 9
    x = rng.standard_normal((N, T, 5))
    dout = rng.standard_normal((N, T, layer.num_directions * layer.hidden_out))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    fast_result = _run(layer, True, x, state, None, dout, dstate)
    assert taken, "the compiled loop was not taken"
    runs = layer.num_layers * layer.num_directions
    assert len(taken) == runs
    steps = sorted(t for lo, hi in chunks for t in range(lo, hi))
    assert steps == sorted(list(range(T)) * runs), "the tiny chunks did not cover every step once"
    assert len(chunks) == runs * -(-T // (4 // N))
    readable = _run(layer, False, x, state, None, dout, dstate)
    _assert_close(fast_result, readable, 1e-5)


STREAM_CASES = [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                ("lstm", {"bias": False}), ("gru", {"bias": False}),
                ("lstm", {"num_layers": 2}), ("gru", {"num_layers": 2, "bidirectional": True})]


@needs_numba
@pytest.mark.parametrize("cell,opts", STREAM_CASES)
@pytest.mark.parametrize("N", [1, 3])
def test_streaming_one_step_at_a_time_equals_the_readable_path(cell, opts, N, monkeypatch):
    """forward with T = 1 takes the one-step path (fast/_stream.py); step by step with the state
    carried it gives the readable path's outputs and state, and backward after a step its gradients."""
    from rnnlab.fast import _stream
    taken = []
    real = _stream.run
    monkeypatch.setattr(_stream, "run", lambda *a: taken.append(1) or real(*a))
    layer = _layer(cell, np.float32, seed=4, **opts)
    rng = np.random.default_rng(5)
    T = 6
    x = rng.standard_normal((N, T, 5)).astype(np.float32)
    state = _state(layer, N, rng)
    layer.fast = False
    out_ref, st_ref = layer.forward(x, state)
    layer.fast = True
    st, outs = state, []
    for t in range(T):
        out, st = layer.forward(x[:, t:t + 1], st)
        outs.append(out)
    assert taken, "the one-step path was not taken"
    flat = lambda s: list(s) if isinstance(s, tuple) else [s]
    if not layer.bidirectional:     # (a reverse direction reads the sequence from its end: no streaming)
        _assert_close([np.concatenate(outs, axis=1), *flat(st)], [out_ref, *flat(st_ref)], 1e-5)
    # backward of the last streamed step against the readable path's backward of that step
    dout = rng.standard_normal(outs[-1].shape)
    dstate = _state(layer, N, rng)
    st_prev = _prev_state(layer, x, state, T - 1)
    fast = _run(layer, True, x[:, T - 1:], st_prev, None, dout, dstate)
    readable = _run(layer, False, x[:, T - 1:], st_prev, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)


def _prev_state(layer, x, state, t):
    """The state after the first t steps (readable path)."""
    layer.fast = False
    _, st = layer.forward(x[:, :t], state)
    return st


def test_the_blas_thread_count_is_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def counts():
        return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = counts()
        for cell in ("lstm", "gru", "rnn"):
            layer = _layer(cell, np.float32, seed=0)
            out, _ = layer.forward(np.ones((64, 80, 5), np.float32))   # large enough to switch to all threads
            layer.backward(np.ones_like(out))
            assert counts() == before


STACK_CASES = [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
               ("lstm", {"num_layers": 3}), ("gru", {"num_layers": 2, "bias": False}),
               ("rnn", {"num_layers": 2}), ("lstm", {"num_layers": 2, "batch_first": False}),
               ("lstm", {"num_layers": 2, "dropout": 0.5})]       # dropout: used in eval mode only


@needs_numba
@pytest.mark.parametrize("cell,opts", STACK_CASES)
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("products", ["compiled", "blas"])
def test_streaming_stack_in_one_call_equals_the_readable_path(cell, opts, N, products, monkeypatch):
    """A unidirectional stack's forward with T = 1 is one compiled call (_stream.forward_stack), or
    for large steps BLAS products and one compiled call a layer (_stream.blas_stack, forced here
    by a zero threshold): step by step with float32 state carried it gives the readable path's
    outputs and states, and backward after a step (its caches are built then) gives the readable
    path's gradients."""
    from rnnlab.fast import _stream
    calls = []
    if products == "blas":
        monkeypatch.setattr(_stream, "STACK_BLAS_MIN_WORK", 0)
        monkeypatch.setattr(_stream, "STACK_HELPER_MAX_WORK", 0)
        real_blas = _stream.blas_stack
        monkeypatch.setattr(_stream, "blas_stack", lambda *a: calls.append(1) or real_blas(*a))
    taken = []
    real = _stream.forward_stack
    monkeypatch.setattr(_stream, "forward_stack", lambda *a: (lambda r: taken.append(r is not None) or r)(real(*a)))
    layer = _layer(cell, np.float32, seed=7, **opts)
    layer.eval()
    rng = np.random.default_rng(8)
    T = 5
    x = rng.standard_normal((N, T, 5)).astype(np.float32)
    state = _state(layer, N, rng)
    state = tuple(s.astype(np.float32) for s in state) if isinstance(state, tuple) else state.astype(np.float32)
    step = (lambda t: np.ascontiguousarray(x[:, t:t + 1])) if layer.batch_first else \
        (lambda t: np.ascontiguousarray(x.transpose(1, 0, 2)[t:t + 1]))
    layer.fast = False
    out_ref, st_ref = layer.forward(x if layer.batch_first else x.transpose(1, 0, 2), state)
    layer.fast = True
    st, outs = state, []
    for t in range(T):
        out, st = layer.forward(step(t), st)
        outs.append(out)
    assert taken and all(taken), "the one-call stack was not taken"
    assert len(calls) == (T if products == "blas" else 0)
    flat = lambda s: list(s) if isinstance(s, tuple) else [s]
    _assert_close([np.concatenate(outs, axis=1 if layer.batch_first else 0), *flat(st)],
                  [out_ref, *flat(st_ref)], 1e-5)
    # backward of the last step: the caches are built from the workspace on demand
    dout = rng.standard_normal(outs[-1].shape)
    dstate = _state(layer, N, rng)
    st_prev = _prev_state(layer, x if layer.batch_first else x.transpose(1, 0, 2), state, T - 1)
    st_prev = tuple(np.ascontiguousarray(s) for s in st_prev) if isinstance(st_prev, tuple) else st_prev
    taken.clear()
    fast = _run(layer, True, step(T - 1), st_prev, None, dout, dstate)
    assert taken == [True]
    readable = _run(layer, False, step(T - 1), st_prev, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)


@needs_numba
@pytest.mark.parametrize("products", ["compiled", "blas"])
def test_streaming_stack_reports_non_finite_input_and_falls_back_where_it_must(products, monkeypatch):
    """The one-call stack leaves bad input to the general checks (same messages), and options it
    does not cover (dropout in training, bidirectional, a float64 layer) take the general path."""
    from rnnlab.fast import _stream
    if products == "blas":
        monkeypatch.setattr(_stream, "STACK_BLAS_MIN_WORK", 0)
        monkeypatch.setattr(_stream, "STACK_HELPER_MAX_WORK", 0)
    layer = rnnlab.LSTM(4, 6, num_layers=2, seed=0)
    x = np.ones((1, 1, 4), np.float32)
    x[0, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"x: contains non-finite values .* at index \(0, 0, 2\)"):
        layer.forward(x)
    h = np.zeros((2, 1, 6), np.float32)
    c = h.copy()
    c[1, 0, 3] = np.inf
    with pytest.raises(ValueError, match="state c: contains non-finite"):
        layer.forward(np.ones((1, 1, 4), np.float32), (h, c))
    with pytest.raises(ValueError, match="state h: expected shape"):
        layer.forward(np.ones((1, 1, 4), np.float32), (np.zeros((2, 2, 6), np.float32), h))
    assert _stream.forward_stack(layer, np.ones((1, 1, 4), np.float32), None) is not None
    assert not _stream.stack_usable(rnnlab.LSTM(4, 6, num_layers=2, dropout=0.3, seed=0))       # training
    assert _stream.stack_usable(rnnlab.LSTM(4, 6, num_layers=2, dropout=0.3, seed=0).eval())
    assert not _stream.stack_usable(rnnlab.GRU(4, 6, bidirectional=True, seed=0))
    assert not _stream.stack_usable(rnnlab.RNN(4, 6, dtype=np.float64, seed=0))
    # a replaced parameter of another layout is not a crash: the general path runs (the compiled
    # products want C order), or the BLAS products take it as it is
    layer.params["weight_hh_l1"] = np.asfortranarray(layer.params["weight_hh_l1"])
    done = _stream.forward_stack(layer, np.ones((1, 1, 4), np.float32), None)
    assert (done is None) == (products == "compiled")
    out, _ = layer.forward(np.ones((1, 1, 4), np.float32))
    layer.fast = False
    ref, _ = layer.forward(np.ones((1, 1, 4), np.float32))
    assert out.shape == (1, 1, 6) and np.allclose(out, ref, rtol=1e-5, atol=1e-6)


FM_CASES = [("lstm", {}), ("gru", {}), ("lstm", {"num_layers": 2, "bidirectional": True}),
            ("gru", {"num_layers": 2, "bidirectional": True}), ("lstm", {"bias": False}),
            ("gru", {"bias": False}), ("lstm", {"batch_first": False})]


@needs_numba
@pytest.mark.parametrize("cell,opts", FM_CASES)
@pytest.mark.parametrize("N", [3, 8])
@pytest.mark.parametrize("blas_loops", [True, False])
def test_eval_mode_feature_major_loop_equals_the_readable_path(cell, opts, N, blas_loops, monkeypatch):
    """Float32 GRU and LSTM forwards in eval mode run feature-major (fast/_feature_major.py): outputs
    and final states equal the readable path's, and a backward after it (which first transposes
    the cache into the batch-major layout) gives the readable path's gradients. With
    ``blas_loops`` the loop over t is one compiled call (``*_loop_fm``), else it steps from Python."""
    from rnnlab.fast import _blas, _compiled, _feature_major, _mkl
    monkeypatch.setattr(_mkl, "ENABLED", False)                  # with MKL the batch-major loop runs
    monkeypatch.setattr(_compiled, "BLAS_LOOPS", blas_loops)
    monkeypatch.setattr(_feature_major, "WITH_BLAS_LOOPS", True)    # taken even with the compiled BLAS loops
    loops = []
    real_loop = getattr(_feature_major, f"{cell}_loop_fm")
    monkeypatch.setattr(_feature_major, f"{cell}_loop_fm", lambda *a: loops.append(a[-1]) or real_loop(*a))
    monkeypatch.setattr(_feature_major, "MIN_STEP_WORK", {"lstm": 0, "gru": 0})   # these small layers too
    monkeypatch.setattr(_feature_major, "MIN_BATCH", 3)
    taken = []
    real = _feature_major.Transposed.batch_major
    monkeypatch.setattr(_feature_major.Transposed, "batch_major", lambda self: taken.append(1) or real(self))
    layer = _layer(cell, np.float32, seed=11, **opts).eval()
    rng = np.random.default_rng(12)
    T = 6
    x = rng.standard_normal((N, T, 5) if layer.batch_first else (T, N, 5)).astype(np.float32)
    out_shape = x.shape[:2] + (layer.num_directions * layer.hidden_out,)
    dout = rng.standard_normal(out_shape)
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    layer.fast = True
    layer.forward(x, state)
    assert isinstance(layer._cache[0][0][1][0]._later, _feature_major.Transposed), "the feature-major loop was not taken"
    runs = layer.num_layers * layer.num_directions
    compiled_loops = blas_loops and _blas.ADDRESS is not None
    assert len(loops) == (runs if compiled_loops else 0)
    if compiled_loops:                                           # each direction in its own order
        assert sorted(loops) == sorted([False, True] * layer.num_layers if layer.bidirectional else [False] * runs)
    fast = _run(layer, True, x, state, None, dout, dstate)
    assert len(taken) == layer.num_layers * layer.num_directions      # the cache, transposed at backward
    readable = _run(layer, False, x, state, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)
    # in training mode both train on the batch-major loop (the cache's transposes cost more)
    layer.train()
    layer.fast = True
    layer.forward(x, state)
    assert not isinstance(layer._cache[0][0][1][0]._later, _feature_major.Transposed)


@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {}), ("rnn", {}), ("lstm", {"proj_size": 3}),
                                       ("gru", {"num_layers": 2, "bidirectional": True})])
@pytest.mark.parametrize("dtype,rtol,compiled,lengths", [
    (np.float64, 1e-12, False, False), (np.float64, 1e-12, False, True),
    pytest.param(np.float32, 1e-5, True, False, marks=needs_numba)])
@pytest.mark.usefixtures("without_mkl")
def test_backward_with_the_transposed_recurrent_product_equals_the_readable_path(
        cell, opts, dtype, rtol, compiled, lengths, monkeypatch):
    """From TRANSPOSED_MIN_ROWS sequences the backward computes dh = dA W_hh as (W_hh^T dA^T)^T
    (fast/_steps.py): with that many sequences it is taken, and gives the readable path's gradients."""
    from rnnlab.fast import _blas, _compiled, _steps
    monkeypatch.setattr(rnnlab.fast, "COMPILED", compiled)
    used, kinds = [], []
    real = _steps.RecurrentGrad.__call__
    monkeypatch.setattr(_steps.RecurrentGrad, "__call__", lambda self, a, o: used.append(self.transposed) or real(self, a, o))
    _record_blas_kinds(monkeypatch, _steps.RecurrentGrad, kinds)
    N, T = _steps.TRANSPOSED_MIN_ROWS + 1, 5
    layer = _layer(cell, dtype, seed=21, **opts)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((N, T, 5))
    dout = rng.standard_normal((N, T, layer.num_directions * layer.hidden_out))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    lens = rng.integers(1, T + 1, N) if lengths else None
    fast = _run(layer, True, x, state, lens, dout, dstate)
    runs = layer.num_layers * layer.num_directions
    if compiled and _blas.ADDRESS is not None and not lengths and not opts.get("proj_size"):
        # the compiled chunks call the BLAS themselves, the transposed way round
        assert kinds == [_compiled.SWAPPED] * runs and not used, (kinds, used)
    else:
        assert used and all(used), "the transposed product was not used"
    readable = _run(layer, False, x, state, lens, dout, dstate)
    _assert_close(fast, readable, rtol)


@needs_numba
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
                                       ("lstm", {"batch_first": False}),
                                       ("gru", {"num_layers": 2, "bidirectional": True})])
@pytest.mark.usefixtures("without_mkl")
def test_forward_with_the_transposed_recurrent_product_equals_the_readable_path(cell, opts):
    """From PRODUCT_TRANSPOSED_MIN_ROWS to _MAX_ROWS sequences the compiled forwards compute
    h W_hh^T as (W_hh h^T)^T (fast/_steps.py): with that many sequences it is taken in every
    layer and direction, and outputs and gradients are the readable path's."""
    from rnnlab.fast import _blas, _compiled, _steps
    used, kinds = [], []
    real = _steps.RecurrentProduct.__call__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_steps.RecurrentProduct, "__call__", lambda self, h, o: used.append(self.transposed) or real(self, h, o))
        _record_blas_kinds(mp, _steps.RecurrentProduct, kinds)
        for N in (_steps.PRODUCT_TRANSPOSED_MIN_ROWS, _steps.PRODUCT_TRANSPOSED_MAX_ROWS):
            used.clear()
            kinds.clear()
            T = 6
            layer = _layer(cell, np.float32, seed=23, **opts)
            rng = np.random.default_rng(24)
            x = rng.standard_normal((N, T, 5))
            dout = rng.standard_normal((N, T, layer.num_directions * layer.hidden_out))
            if not layer.batch_first:
                x, dout = np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(dout.transpose(1, 0, 2))
            state, dstate = _state(layer, N, rng), _state(layer, N, rng)
            fast = _run(layer, True, x, state, None, dout, dstate)
            runs = layer.num_layers * layer.num_directions
            if _blas.ADDRESS is not None:            # the compiled loops call the BLAS themselves
                assert kinds == [_compiled.SWAPPED] * runs and not used, (kinds, used)
            else:
                assert len(used) == T * runs and all(used), used
            readable = _run(layer, False, x, state, None, dout, dstate)
            _assert_close(fast, readable, 1e-5)
    outside = _steps.RecurrentProduct(np.zeros((8, 2), np.float32), _steps.PRODUCT_TRANSPOSED_MAX_ROWS + 1, 5)
    assert not outside.transposed


def _record_blas_kinds(mp, cls, kinds):
    """Record in kinds the product kind (``_compiled.PACKED``/``PLAIN``/``SWAPPED``) of every
    compiled loop whose product is a ``cls`` (``_steps.RecurrentProduct`` or ``RecurrentGrad``)."""
    from rnnlab.fast import _compiled
    real = _compiled._blas_loop

    def record(product, panels=None):
        args = real(product, panels)
        if args is not None and type(product) is cls:
            kinds.append(args[0])
        return args
    mp.setattr(_compiled, "_blas_loop", record)


@needs_numba
@pytest.mark.parametrize("cell,opts", [("rnn", {}), ("rnn", {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True}),
                                       ("rnn", {"batch_first": False}), ("lstm", {}),
                                       ("lstm", {"num_layers": 2, "bidirectional": True}), ("lstm", {"batch_first": False}),
                                       ("gru", {}), ("gru", {"num_layers": 2, "bidirectional": True, "batch_first": False})])
def test_eval_mode_forward_defers_h_prev_to_a_backward(cell, opts, monkeypatch):
    """An eval-mode compiled forward (RNN, LSTM, GRU over more than the tiny loops' two sequences)
    leaves h_prev out of its cache (``_compiled.PreviousStates``), or for the LSTM keeps no cache
    at all (its inference loop: ``_compiled.Recompute``, run by the backward); the GRU's backward
    makes the h_prev array, the RNN's and the LSTM's read h_prev from the outputs and make none;
    the gradients are the readable path's."""
    from rnnlab.fast import _compiled
    made, arrays = [], []
    if cell == "lstm":
        real = _compiled.Recompute.run
        monkeypatch.setattr(_compiled.Recompute, "run", lambda self: made.append(1) or real(self))
    real_array = _compiled.PreviousStates.batch_major
    monkeypatch.setattr(_compiled.PreviousStates, "batch_major", lambda self: arrays.append(1) or real_array(self))
    if cell != "lstm":
        made = arrays
    later = _compiled.Recompute if cell == "lstm" else _compiled.PreviousStates
    layer = _layer(cell, np.float32, seed=41, **opts).eval()
    rng = np.random.default_rng(42)
    N, T = 5, 6                                  # N > LOOP_MAX_BATCH: the per-step loop, not the tiny one
    x = rng.standard_normal((N, T, 5) if layer.batch_first else (T, N, 5)).astype(np.float32)
    dout = rng.standard_normal(x.shape[:2] + (layer.num_directions * 6,))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    layer.fast = True
    layer.forward(x, state)
    runs = layer.num_layers * layer.num_directions
    assert isinstance(layer._cache[0][0][1][0]._later, later) and not made
    fast = _run(layer, True, x, state, None, dout, dstate)
    assert len(made) == (0 if cell == "rnn" else runs)      # once per layer and direction, by the backward
    assert len(arrays) == (runs if cell == "gru" else 0)     # h_prev arrays: the GRU's only
    readable = _run(layer, False, x, state, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)
    layer.train()                                # training: the GRU's h_prev array made eagerly
    layer.fast = True
    layer.forward(x, state)
    cache = layer._cache[0][0][1][0]
    if cell == "gru":
        assert cache._later is None and cache.data[1] is not None
    else:
        assert cache.previous is not None and cache.data[1] is None


@needs_numba
@pytest.mark.parametrize("opts", [{}, {"num_layers": 2, "bidirectional": True}, {"batch_first": False}])
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("blas", ["numpy", "mkl"])
@pytest.mark.parametrize("loop", ["lstm_loop1", "lstm_loop2", "lstm_loop_ahead"])
def test_lstm_inference_loop_equals_the_readable_path(opts, parts, blas, loop, monkeypatch):
    """An eval-mode LSTM forward runs a step loop without a cache: ``lstm_loop1``, one
    product a step over [x_t | h], or with a large input product ``lstm_loop2``, two, or with MKL
    (and a buffer within ``AHEAD_MAX_BYTES``) ``lstm_loop_ahead``, the input products of all steps
    first; whole or in the batch split's parts, with NumPy's BLAS or MKL: out, h_T and c_T are the
    readable path's; a backward after it recomputes the cache (``Recompute``: where two products,
    ``lstm_loop2`` with a cache, or with MKL ``lstm_loop_ahead`` with the input products written
    into the cache's gates array, whatever the buffer limit) and gives the readable path's
    gradients; ``INFER_LOOPS = False`` runs the caching loop instead."""
    from rnnlab.fast import _compiled, _split
    _use_blas(blas, monkeypatch)
    monkeypatch.setattr(_split, "PARTS", parts)
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 2 ** 40 if loop == "lstm_loop1" else 0)
    monkeypatch.setattr(_compiled, "AHEAD_MAX_ROWS", 0)        # parts this small: two products with MKL
    if loop == "lstm_loop2":                                    # the ahead loop's buffer too large
        monkeypatch.setattr(_compiled, "AHEAD_MAX_BYTES", 0)
    loops = []
    seen = {"lstm_loop1": (6, 14), "lstm_loop2": (12, 20), "lstm_loop_ahead": (5, 11)}     # rows, cache flag
    for name, (rows_at, cache_at) in seen.items():
        real = getattr(_compiled, name)
        monkeypatch.setattr(_compiled, name, lambda *a, _r=real, _n=name, _i=rows_at, _c=cache_at: loops.append(
            (_n, _compiled.PACKED if _n == "lstm_loop_ahead" else a[0], a[_i].shape[0],
             _c is not None and a[_c])) or _r(*a))
    layer = _layer("lstm", np.float32, seed=51, **opts).eval()
    fast, readable, sizes = _run_in_parts(layer, np.random.default_rng(52), 7, 6, parts)
    runs = layer.num_layers * layer.num_directions
    inference = [(name, n) for name, _, n, cache in loops if not cache]
    recomputed = [(name, n) for name, _, n, cache in loops if cache]  # the backward's ``Recompute``
    ahead = loop == "lstm_loop_ahead" and blas == "mkl"         # MKL's only
    want = loop if ahead or loop != "lstm_loop_ahead" else "lstm_loop2"
    assert sorted(inference) == sorted((want, n) for n in sizes * runs)
    again = "lstm_loop1" if loop == "lstm_loop1" else "lstm_loop_ahead" if blas == "mkl" else "lstm_loop2"
    assert sorted(recomputed) == sorted((again, n) for n in sizes * runs)
    kinds = {k for _, k, *_ in loops}
    assert (kinds == {_compiled.PACKED}) if blas == "mkl" else (_compiled.PACKED not in kinds)
    _assert_close(fast, readable, 1e-5)
    loops.clear()
    monkeypatch.setattr(_compiled, "INFER_LOOPS", False)
    layer.fast = True
    layer.forward(np.zeros((7, 6, 5) if layer.batch_first else (6, 7, 5)))
    assert loops and all(cache for *_, cache in loops)          # the same loops, making the cache


def _lstm_loops_run(monkeypatch, train, seed, N, T):
    """The names of the LSTM step loops a forward and backward of N sequences ran (one loop, no
    split), and the fast and readable paths' results."""
    from rnnlab.fast import _compiled
    called = []
    for name in ("lstm_loop1", "lstm_loop2", "lstm_loop_ahead"):
        real = getattr(_compiled, name)
        monkeypatch.setattr(_compiled, name, lambda *a, _r=real, _n=name: called.append(_n) or _r(*a))
    layer = _layer("lstm", np.float32, seed=seed)
    layer.train(train)
    fast, readable, _ = _run_in_parts(layer, np.random.default_rng(seed + 1), N, T, 1)
    return called, fast, readable


@needs_numba
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("rows", [4, 8])
def test_lstm_loops_of_few_sequences_take_the_input_products_first_with_mkl(train, rows, monkeypatch):
    """With MKL, a loop over at most AHEAD_MAX_ROWS sequences (a part of the batch split or the
    whole batch) runs the input products of all steps first (``lstm_loop_ahead``) where the
    one-product loop would run otherwise; a larger one keeps ``lstm_loop1``; the readable
    path's results either way, in training and in eval mode."""
    from rnnlab.fast import _compiled
    _use_blas("mkl", monkeypatch)
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 2 ** 40)
    monkeypatch.setattr(_compiled, "ONE_PRODUCT_MAX_BYTES", 2 ** 40)
    monkeypatch.setattr(_compiled, "AHEAD_MAX_ROWS", rows)
    called, fast, readable = _lstm_loops_run(monkeypatch, train, 67, 6, 5)     # 6 sequences, one loop
    assert called and set(called) == ({"lstm_loop_ahead"} if rows >= 6 else {"lstm_loop1"})
    _assert_close(fast, readable, 1e-5)


@needs_numba
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fits", [True, False])
def test_lstm_loops_take_two_products_where_the_weights_do_not_fit_in_l2(train, fits, monkeypatch):
    """A small input product alone would take the one-product loop (``lstm_loop1``); where
    [W_ih | W_hh] takes more than ``ONE_PRODUCT_MAX_BYTES`` (one core's L2) the loops take two
    products a step instead (``lstm_loop2``, or ``lstm_loop_ahead`` with MKL); either way, in
    training and in eval mode, the readable path's results."""
    from rnnlab.fast import _compiled
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 2 ** 40)
    monkeypatch.setattr(_compiled, "ONE_PRODUCT_MAX_BYTES", 2 ** 40 if fits else 0)
    called, fast, readable = _lstm_loops_run(monkeypatch, train, 65, 7, 6)
    if fits:
        assert called and set(called) == {"lstm_loop1"}
    else:
        assert called and "lstm_loop1" not in called
    _assert_close(fast, readable, 1e-5)


@needs_numba
@pytest.mark.parametrize("train", [True, False])
def test_lstm_two_product_loop_skips_the_first_recurrent_product_only_for_a_zero_state(train, monkeypatch):
    """``lstm_loop2`` leaves out h_0 W_hh^T at the first step where h_0 is all zeros (the default
    state; its flag is the last argument), and not where any entry of it is not zero: forward and
    backward equal the readable path's either way, in training and in eval mode."""
    from rnnlab.fast import _compiled
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 0)
    flags = []
    real = _compiled.lstm_loop2
    monkeypatch.setattr(_compiled, "lstm_loop2", lambda *a: flags.append(a[-1]) or real(*a))
    layer = _layer("lstm", np.float32, seed=61)
    layer.train(train)
    _check_zero_state_flags(layer, flags, np.random.default_rng(62))


def _check_zero_state_flags(layer, flags, rng):
    """Forward and backward of ``layer`` with no state, a zero state and an h_0 with one non-zero
    entry: the loops' zero-h_0 flags (appended to ``flags`` by the test's wrapper) are True, True
    and False, and the results equal the readable path's."""
    x = rng.standard_normal((5, 6, 5))
    dout = rng.standard_normal((5, 6, layer.hidden_out))
    zero = tuple(np.zeros((1, 5, layer.hidden_size)) for _ in range(2))
    tiny_h = (np.where(np.arange(layer.hidden_size) == 3, 1e-3, 0.0) * np.ones((1, 5, 1)), zero[1])
    for state, want in ((None, True), (zero, True), (tiny_h, False)):
        flags.clear()
        fast = _run(layer, True, x, state, None, dout, None)
        assert flags and all(f is want for f in flags), (flags, want)
        readable = _run(layer, False, x, state, None, dout, None)
        _assert_close(fast, readable, 1e-5)


@needs_numba
@pytest.mark.parametrize("train", [True, False])
def test_lstm_ahead_loop_skips_the_first_recurrent_product_only_for_a_zero_state(train, monkeypatch):
    """``lstm_loop_ahead`` (MKL; in training with the cache, its gates array taking the input
    products) leaves out h_0 W_hh^T at the first step where h_0 is all zeros, and not where any
    entry of it is not zero: forward and backward equal the readable path's either way."""
    from rnnlab.fast import _compiled
    _use_blas("mkl", monkeypatch)
    monkeypatch.setattr(_compiled, "INFER_ONE_PRODUCT_MAX", 0)
    flags, caches = [], []
    real = _compiled.lstm_loop_ahead
    monkeypatch.setattr(_compiled, "lstm_loop_ahead",
                        lambda *a: flags.append(a[10]) or caches.append(a[11]) or real(*a))
    layer = _layer("lstm", np.float32, seed=63)
    layer.train(train)
    _check_zero_state_flags(layer, flags, np.random.default_rng(64))
    assert caches and all(c is train for c in caches) if train else True in caches and False in caches


@needs_numba
@pytest.mark.usefixtures("without_mkl")
def test_feature_major_is_chosen_by_the_size_of_a_step(monkeypatch):
    """The transposed loop runs in eval mode from MIN_BATCH sequences and MIN_STEP_WORK, where the
    loops step from Python; with the compiled BLAS loops only if asked (``WITH_BLAS_LOOPS``)."""
    from rnnlab.fast import _blas, _compiled, _feature_major
    large = np.zeros((5, 32, 4), np.float32)
    lstm = rnnlab.LSTM(4, 256, seed=0).eval()
    if _blas.ADDRESS is not None:                     # the default here: batch-major
        monkeypatch.setattr(_compiled, "BLAS_LOOPS", True)
        assert not _feature_major.usable(lstm, large)
    monkeypatch.setattr(_compiled, "BLAS_LOOPS", False)   # stepping from Python: by size
    small = np.zeros((5, 3, 4), np.float32)           # (T, N, D) as the loops see it
    large = np.zeros((5, 32, 4), np.float32)
    lstm, gru = rnnlab.LSTM(4, 256, seed=0).eval(), rnnlab.GRU(4, 256, seed=0).eval()
    assert not _feature_major.usable(lstm, small) and _feature_major.usable(lstm, large)
    assert not _feature_major.usable(gru, small) and _feature_major.usable(gru, large)
    assert not _feature_major.usable(lstm.train(), large)               # both train batch-major
    assert not _feature_major.usable(gru.train(), large)
    assert not _feature_major.usable(rnnlab.RNN(4, 256, seed=0).eval(), large)
    assert not _feature_major.usable(rnnlab.GRU(4, 256, dtype=np.float64, seed=0).eval(), large.astype(np.float64))


@needs_numba
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.usefixtures("without_mkl")
def test_recorder_after_a_feature_major_forward_sees_the_readable_paths_gradients(cell, monkeypatch):
    """The diagnostics' recorder runs the NumPy backward, which reads the feature-major
    forward's cache in the batch-major layout (transposed on first use)."""
    from rnnlab.fast import _feature_major
    monkeypatch.setattr(_feature_major, "MIN_STEP_WORK", {"lstm": 0, "gru": 0})
    monkeypatch.setattr(_feature_major, "MIN_BATCH", 3)                 # six sequences here
    monkeypatch.setattr(_feature_major, "WITH_BLAS_LOOPS", True)
    layer = _layer(cell, np.float32, seed=31).eval()
    rng = np.random.default_rng(32)
    x = rng.standard_normal((6, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((6, 5, 6)).astype(np.float32)
    seen = {}
    for fast in (True, False):
        calls = seen[fast] = []
        layer.recorder = lambda k, d, t, dh, dc, calls=calls: calls.append((t, dh.copy()))
        layer.fast = fast
        layer.zero_grad()
        layer.forward(x)
        if fast:
            assert layer._cache[0][0][1][0]._later is not None, "the feature-major loop was not taken"
        layer.backward(dout)
        seen[fast].append(layer.grads["weight_hh_l0"].copy())
    assert [c[0] for c in seen[True][:-1]] == [c[0] for c in seen[False][:-1]]
    _assert_close([c[1] for c in seen[True][:-1]] + [seen[True][-1]],
                  [c[1] for c in seen[False][:-1]] + [seen[False][-1]], 1e-5)


@pytest.mark.parametrize("shape", [(70, 45), (32, 64), (1, 5), (2048, 512), (33, 17), (15, 40)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_is_an_exact_contiguous_transpose(shape, dtype):
    from rnnlab.fast._steps import transposed
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    WT = transposed(W)
    assert WT.flags.c_contiguous and WT.dtype == dtype and np.array_equal(WT, W.T)


@needs_numba
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_batch_first_data_are_not_transposed(cell):
    """With batch_first the compiled loops index (T, N, .) views of batch-major memory: the layer
    keeps a view of x, its per-step arrays and layer 0's output (layer 1's input) are batch-major,
    and out comes back C-contiguous (for the RNN, whose cache holds its outputs: no copy of them)."""
    from rnnlab.fast import _steps
    layer = _layer(cell, np.float32, seed=41, num_layers=2)
    rng = np.random.default_rng(42)
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    out, _ = layer.forward(x)
    (X0, dirs0, _), (X1, dirs1, _) = layer._cache[0]
    assert np.shares_memory(X0, x) and _steps.batch_major(X0)
    prev = dirs1[0].data[1] if cell == "gru" else dirs1[0].previous[0]    # h_prev, or the outputs it is read from
    assert _steps.batch_major(dirs0[0].data[0]) and _steps.batch_major(prev)
    assert _steps.batch_major(X1)
    if cell == "rnn":                  # data[0] holds each layer's outputs
        assert np.shares_memory(X1, dirs0[0].data[0]) and np.shares_memory(out, dirs1[0].data[0])
    assert out.flags.c_contiguous and out.shape == (4, 7, 6)
    dx, _ = layer.backward(np.ones_like(out))
    assert dx.flags.c_contiguous and dx.shape == x.shape


@pytest.mark.parametrize("bm", [False, True])
def test_rows_and_unrows_are_inverse_in_either_memory_order(bm):
    from rnnlab.fast import _steps
    rng = np.random.default_rng(43)
    T, N, K = 5, 3, 4
    a = rng.standard_normal((T, N, K))
    laid = _steps.as_order(a, bm)
    assert _steps.batch_major(laid) == bm and np.array_equal(laid, a)
    for lo, hi in [(0, T), (1, 4)]:                      # the whole sequence, and a chunk of it
        M = _steps.rows(laid[lo:hi], bm)
        assert M.shape == ((hi - lo) * N, K)
        assert np.array_equal(M[0], a[lo, 0]) and np.array_equal(M[1], a[lo + 1, 0] if bm else a[lo, 1])
        assert np.array_equal(_steps.unrows(M, hi - lo, bm), a[lo:hi])
    assert np.shares_memory(_steps.rows(laid, bm), laid)  # the whole sequence: a view, no copy
    assert _steps.rows_view(laid, bm) is not None
    assert (_steps.rows_view(laid[1:4], bm) is None) == bm   # a chunk of batch-major memory is no block
    W = rng.standard_normal((2, K))
    P = _steps.project(laid, W)
    assert _steps.batch_major(P) == bm and np.allclose(P, a @ W.T, rtol=1e-12, atol=0)


SPLIT_CASES = [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"}),
               ("lstm", {"num_layers": 2, "bidirectional": True}), ("gru", {"bidirectional": True, "bias": False}),
               ("rnn", {"bidirectional": True}), ("lstm", {"batch_first": False}), ("gru", {"batch_first": False}),
               ("rnn", {"batch_first": False})]


def _use_blas(blas, monkeypatch):
    """The compiled loops on NumPy's BLAS (MKL off), or on MKL forced on for small layers; skips
    where that BLAS is not there."""
    from rnnlab.fast import _blas, _mkl
    if _blas.ADDRESS is None:
        pytest.skip("no BLAS address for the compiled loops")
    if blas == "mkl":
        if _mkl.lib is None:
            pytest.skip("MKL not installed (rnnlab[mkl])")
        _count_mkl_calls(monkeypatch)
    else:
        monkeypatch.setattr(_mkl, "ENABLED", False)


def _run_in_parts(layer, rng, N, T, parts):
    """The fast path's forward and backward over N sequences of T steps (random x, state, dout,
    dstate), the readable path's on the same, and the sizes of the batch split's parts."""
    from rnnlab.fast import _split
    x = rng.standard_normal((N, T, 5) if layer.batch_first else (T, N, 5))
    dout = rng.standard_normal(x.shape[:2] + (layer.num_directions * layer.hidden_out,))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    fast = _run(layer, True, x, state, None, dout, dstate)
    readable = _run(layer, False, x, state, None, dout, dstate)
    c = _split.cuts(N, parts)
    return fast, readable, [n1 - n0 for n0, n1 in zip(c, c[1:])]


def _mkl_threads():
    """MKL's thread count for a call from this thread, or None without MKL or with it off (then
    rnnlab never calls it, and a part leaves its count alone: ``_mkl.part``; what a thread's
    count was then depended on what ran on that thread before, and made
    test_split_parts_follow_the_blas_threads_and_the_sizes fail after another test)."""
    from rnnlab.fast import _mkl
    return None if _mkl.lib is None or not _mkl.ENABLED else _mkl.lib.MKL_Get_Max_Threads()


@needs_numba
@pytest.mark.parametrize("cell,opts", SPLIT_CASES)
@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("blas,T", [("numpy", 6), ("numpy", 2), ("mkl", 6), ("mkl", 2)])
def test_batch_split_forward_equals_the_readable_path(cell, opts, parts, training, blas, T, monkeypatch):
    """With the batch split (fast/_split.py) each part of the sequences (7 in 1, 2 or 3 uneven
    parts) runs its own compiled forward loop (``lstm_loop1`` or ``lstm_loop2``, ``*_loop_blas``)
    and its own backward chunks (``*_chunk_blas``) with its own weight gradients, added up at the
    end: forward and backward give the readable path's results, batch-first or time-major,
    training or eval mode; with NumPy's BLAS or with MKL (its packed product, or at T = 2 its
    plain GEMM, on one thread in each part)."""
    from rnnlab.fast import _compiled, _split
    _use_blas(blas, monkeypatch)
    monkeypatch.setattr(_split, "PARTS", parts)
    monkeypatch.setattr(_compiled, "AHEAD_MAX_ROWS", 0)        # the LSTM's one- and two-product loops here
    rows, kinds, threads = [], set(), set()

    def seen(a):
        kinds.add(a[0])
        threads.add(_mkl_threads())

    # the forward loops that make the cache, and the rows they were given (the LSTM's step loops
    # run without one in eval mode too, then again with one in the backward's ``Recompute``)
    spied = {"lstm": (("lstm_loop1", lambda a: a[6].shape[0] if a[14] else None),
                      ("lstm_loop2", lambda a: a[12].shape[0] if a[20] else None))}
    def spy(real, rows_of):
        def loop(*a):
            seen(a)
            if rows_of(a) is not None:
                rows.append(rows_of(a))
            return real(*a)
        return loop

    for name, rows_of in spied.get(cell, ((f"{cell}_loop_blas", lambda a: a[5].shape[0]),)):
        monkeypatch.setattr(_compiled, name, spy(getattr(_compiled, name), rows_of))
    back_rows = set()
    real_chunk = getattr(_compiled, f"{cell}_chunk_blas")
    monkeypatch.setattr(_compiled, f"{cell}_chunk_blas",
                        lambda *a: seen(a) or back_rows.add(a[-2].shape[0]) or real_chunk(*a))
    layer = _layer(cell, np.float32, seed=21, **opts)
    layer.train(training)
    fast, readable, sizes = _run_in_parts(layer, np.random.default_rng(22), 7, T, parts)
    runs = layer.num_layers * layer.num_directions
    assert sorted(rows) == sorted(sizes * runs)
    assert back_rows == set(sizes)
    if blas == "mkl":
        assert kinds == {_compiled.PACKED if T > 2 else _compiled.PLAIN} and threads == {1}
    else:
        assert _compiled.PACKED not in kinds
    _assert_close(fast, readable, 1e-5)


@needs_numba
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {}), ("rnn", {}), ("lstm", {"batch_first": False}),
                                       ("gru", {"batch_first": False, "bias": False}), ("rnn", {"bidirectional": True})])
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("blas", ["numpy", "mkl"])
def test_split_backward_adds_the_weight_gradients_after_the_parts_or_per_part(cell, opts, chunked, parts, blas,
                                                                             monkeypatch):
    """Where one chunk holds every step, the parts write their rows of one dA array and their
    own rows of dX, and the weight gradients of all sequences come after them, each thread
    adding its share of every gradient's rows (``_compiled.Flush``); with several chunks each
    part adds its chunks into gradient arrays of its own (added up at the end). Both give the
    readable path's gradients."""
    from rnnlab import fast
    from rnnlab.fast import _compiled, _split
    _use_blas(blas, monkeypatch)
    monkeypatch.setattr(_split, "PARTS", parts)
    N, T = 7, 6
    if chunked:
        monkeypatch.setattr(fast, "CHUNK_ROWS", 2 * N)                     # chunks of 2 steps
    modes, shares = [], []
    real_after = _compiled._flush_after_parts
    monkeypatch.setattr(_compiled, "_flush_after_parts", lambda f, P: modes.append(real_after(f, P)) or modes[-1])
    real_run = _split.run

    def run(body, n, P):
        if n == P:                                                          # the weights' shares
            shares.append(P)
        return real_run(body, n, P)
    monkeypatch.setattr(_split, "run", run)
    layer = _layer(cell, np.float32, seed=23, **opts)
    fast_result, readable, _ = _run_in_parts(layer, np.random.default_rng(24), N, T, parts)
    runs = layer.num_layers * layer.num_directions
    assert modes == [not chunked] * runs
    assert shares == ([] if chunked else [parts] * runs)
    _assert_close(fast_result, readable, 1e-5)


def test_split_runs_every_part_once_and_raises_a_parts_error():
    from rnnlab.fast import _split
    seen = []
    _split.run(lambda n0, n1: seen.append((n0, n1)), 10, 3)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 10)]

    def body(n0, n1):
        if n0 > 0:
            raise ValueError(f"part {n0}..{n1} failed")
    with pytest.raises(ValueError, match="part 5..10 failed"):
        _split.run(body, 10, 2)


def test_split_runs_a_part_no_pool_thread_started_on_the_calling_thread():
    """A part whose pool thread is still busy (here with a job of the test's) when the calling
    thread is done with its own part runs on the calling thread, once."""
    import threading
    from rnnlab.fast import _split
    _split.run(lambda n0, n1: None, 4, 2)                                   # the pool exists
    pool, size, _ = _split._pool
    release = threading.Event()
    blockers = [pool.submit(release.wait, 30) for _ in range(size)]        # every pool thread busy
    ran = []
    try:
        _split.run(lambda n0, n1: ran.append((n0, n1, threading.current_thread() is threading.main_thread())),
                   10, 2)
    finally:
        release.set()
        for b in blockers:
            b.result()
    assert sorted(ran) == [(0, 5, True), (5, 10, True)]


def test_split_running_threads_are_read_where_the_system_tells():
    from rnnlab.fast import _split
    running = _split._running()
    if os.path.exists("/proc/loadavg"):
        assert running is not None and running >= 1      # this thread at least
    else:
        assert running is None


def test_split_parts_follow_the_blas_threads_and_the_sizes(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from rnnlab.fast import _split, _threads
    monkeypatch.setattr(_split, "ENABLED", True)
    monkeypatch.setattr(_threads, "cpus", lambda: 2)
    monkeypatch.setattr(_split, "_running", lambda: 1)                     # the machine otherwise idle
    # the OpenBLAS that NumPy and the loops call (its count is process-wide) and MKL's count for
    # a call from the part's thread (per thread: ``_mkl.part``; None without MKL)
    counts = lambda: ([lib.num_threads for lib in _threads._blas_libs() if lib.internal_api == "openblas"],
                      _mkl_threads())
    one = lambda before: ([1] * len(before[0]), None if before[1] is None else 1)
    seen = []

    def part(n0, n1):
        with _threads.all_threads(2 ** 40):                                  # a part's large GEMM: still one thread
            seen.append(counts())
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert _split.parts(32, _split.MIN_WORK) == 2
        assert _split.parts(32, _split.MIN_WORK - 1) == 1                 # a small step: one loop
        assert _split.parts(2 * _split.MIN_ROWS - 1, _split.MIN_WORK) == 1  # too few sequences for two
        assert _split.parts(32, _split.MKL_MIN_WORK - 1, mkl=True) == 1    # MKL's packed product on two
        assert _split.parts(32, _split.MKL_MIN_WORK, mkl=True) == 2        # threads wins below its own bar
        before = counts()
        _split.run(part, 32, 2)
        assert before[0] and max(before[0]) == 2
        assert seen == [one(before)] * 2                                    # each part: one-thread BLAS and MKL
        assert counts() == before
        seen.clear()
        with _threads.step_threads(0):          # inside a loop whose steps lowered the BLAS to one thread,
            _split.run(part, 32, 2)             # all_threads in a part must not raise it back
        assert seen == [one(before)] * 2
        assert counts() == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert _split.parts(32, _split.MIN_WORK) == 1
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(_split, "_running", lambda: 2)                 # another thread running: one core left
        crowded = _split.parts(32, _split.MIN_WORK)
        assert crowded == 2 and crowded.crowded                           # split anyway, marked
        assert not _split.parts(32, _split.MIN_WORK - 1).crowded            # one loop anyway: the BLAS as it is
        seen.clear()
        _split.run(part, 32, 1)
        assert seen == [before]
        monkeypatch.setattr(_split, "_own_running", lambda: 1)             # the running one is the split's own
        split = _split.parts(32, _split.MIN_WORK)
        assert split == 2 and not split.crowded
        monkeypatch.setattr(_split, "_own_running", lambda: 0)
        monkeypatch.setattr(_split, "_running", lambda: None)              # unknown: all CPUs count as idle
        assert _split.parts(32, _split.MIN_WORK) == 2
    with monkeypatch.context() as m:                                      # 4 CPUs, 4 BLAS threads
        m.setattr(_threads, "cpus", lambda: 4)
        m.setattr(_threads, "blas_threads", lambda: 4)
        for running, want in ((1, 4), (2, 3), (3, 2), (5, 2)):             # as many as idle, at least two
            m.setattr(_split, "_running", lambda r=running: r)
            P = _split.parts(64, _split.MIN_WORK)
            assert P == want and P.crowded == (want < 4), (running, P)
    monkeypatch.setattr(_split, "ENABLED", False)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert _split.parts(32, _split.MIN_WORK) == 1


@needs_numba
def test_split_counts_its_own_running_worker_out():
    """``_own_running`` reads the state of the split's pool threads: a part still running on one
    (here spinning without the GIL until told to stop) counts, an idle pool does not."""
    import numba
    from rnnlab.fast import _split
    from rnnlab.fast._helper import load_acquire
    if not os.path.exists("/proc/self/task"):
        pytest.skip("no /proc")

    @numba.njit(nogil=True)
    def spin(flag):
        while load_acquire(flag, 0) == 0:
            flag[1] += 1

    flag = np.zeros(2, np.int64)
    spin(np.ones(2, np.int64))                                              # compiled before the parts
    states = []

    def body(n0, n1):
        if n0 > 0:
            spin(flag)                                                      # part 1: running till told
        else:
            for _ in range(200):
                states.append(_split._own_running())
                if states[-1] == 1:
                    break
                time.sleep(0.001)
            flag[0] = 1
    _split.run(body, 2, 2)
    assert states[-1] == 1 and len(_split._workers) >= 1
    time.sleep(0.05)
    assert _split._own_running() == 0                                       # back asleep in the pool


def _panels_or_skip():
    from rnnlab.fast import _panels
    if _panels.address() is None:
        pytest.skip(f"the panels kernel is unavailable: {_panels.describe()}")
    return _panels


_LAYOUT_KERNELS = {}


def _layout_kernel(vector, split_tail=True):
    """A ``_panels.Layout`` of this vector width compiled here, and its address (skip where the
    CPU has no such vectors: 512-bit needs AVX-512F)."""
    _panels = _panels_or_skip()
    if vector == 16 and _panels._vector() != 16 and _panels._FORCED is None:
        pytest.skip("this CPU has no 512-bit vectors (AVX-512F)")
    key = (vector, split_tail)
    if key not in _LAYOUT_KERNELS:                  # kept: the engine owns the code
        _LAYOUT_KERNELS[key] = _panels.Layout(vector, *_panels.LAYOUTS[vector], split_tail=split_tail).compile()
    return _LAYOUT_KERNELS[key]


@pytest.mark.parametrize("vector", [8, 16])
@pytest.mark.parametrize("N", [1, 2, 5, 6, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 32])
@pytest.mark.parametrize("K,panels", [(1, 1), (7, 3), (64, 2), (300, 1)])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("by", ["rows", "cols"])
def test_panels_kernel_equals_a_float64_product(vector, N, K, panels, accumulate, by):
    """``_panels``'s kernel, each layout (256-bit: 6-row tiles, 4 + 3 and 4 + 4 for the last 7 or
    8 rows; 512-bit: 8-row tiles, 5 + 4 and 5 + 5 for the last 9 or 10; and the rows left over),
    x by rows with a row stride longer than K or by columns (a transposed array's view, with a
    longer column stride), out with a row stride longer than C, writing or adding; within
    float32 rounding of the product in float64."""
    kernel = _layout_kernel(vector)
    C = panels * kernel.layout.width
    rng = np.random.default_rng(N * 1000 + K)
    B = rng.standard_normal((K, C)).astype(np.float32)
    if by == "rows":
        x = rng.standard_normal((N, K + 3)).astype(np.float32)[:, 1:K + 1]     # rows 4 floats apart
    else:
        x = rng.standard_normal((K, N + 3)).astype(np.float32)[:, 1:N + 1].T   # columns 4 floats apart
    wide = rng.standard_normal((N, C + 5)).astype(np.float32)
    before = wide.copy()
    out0 = wide[:, 2:C + 2].copy()
    out = wide[:, 2:C + 2]
    kernel.matmul(x, kernel.layout.pack(B), out, accumulate)
    assert np.array_equal(wide[:, :2], before[:, :2]) and np.array_equal(wide[:, C + 2:], before[:, C + 2:])
    want = x.astype(np.float64) @ B.astype(np.float64) + (out0 if accumulate else 0)
    scale = np.abs(x).astype(np.float64) @ np.abs(B).astype(np.float64) + np.abs(out0)
    assert np.all(np.abs(out - want) <= 4 * K * np.finfo(np.float32).eps * scale + 1e-30)


@pytest.mark.parametrize("vector", [8, 16])
@pytest.mark.parametrize("split_tail", [True, False])
@pytest.mark.parametrize("N", [7, 8, 9, 10, 13, 14, 32])
def test_panels_kernel_rows_do_not_depend_on_their_tile(vector, split_tail, N):
    """A row's result is the same bits whichever tile computes it (a full tile, a half of the
    tail, the rows left over, or alone): every output sums over k in order, so how the rows are
    blocked changes only the speed."""
    kernel = _layout_kernel(vector, split_tail)
    C = 3 * kernel.layout.width
    rng = np.random.default_rng(N)
    B = rng.standard_normal((200, C)).astype(np.float32)
    x = rng.standard_normal((N, 200)).astype(np.float32)
    panels = kernel.layout.pack(B)
    whole = kernel.matmul(x, panels, np.empty((N, C), np.float32))
    by_cols = kernel.matmul(np.ascontiguousarray(x.T).T, panels, np.empty((N, C), np.float32))
    assert np.array_equal(whole, by_cols)
    for n in range(N):
        alone = kernel.matmul(x[n:n + 1], panels, np.empty((1, C), np.float32))
        assert np.array_equal(whole[n], alone[0]), f"row {n} of {N}"


def test_panels_kernel_takes_this_cpus_vectors(monkeypatch):
    """The loops' kernel uses 512-bit vectors where the CPU has AVX-512F, else 256-bit, and says so."""
    _panels = _panels_or_skip()
    import llvmlite.binding as llvm
    if _panels._FORCED is None:
        assert _panels.layout().vector == (16 if llvm.get_host_cpu_features().get("avx512f", False) else 8)
    assert f"{32 * _panels.layout().vector}-bit vectors" in _panels.describe()
    assert _panels.usable(_panels.layout().width) and not _panels.usable(_panels.layout().width + 8)


def test_panels_kernel_says_when_its_tail_tiles_are_off(monkeypatch):
    _panels = _panels_or_skip()
    assert "RNNLAB_PANELS_TAIL" not in _panels.describe()
    monkeypatch.setattr(_panels, "SPLIT_TAIL", False)
    assert "to the last row (RNNLAB_PANELS_TAIL=0)" in _panels.describe()


def test_panels_kernel_refuses_what_does_not_fit():
    _panels = _panels_or_skip()
    W = _panels.layout().width
    B = np.ones((4, W), np.float32)
    with pytest.raises(ValueError, match=f"multiple of {W}"):
        _panels.matmul(np.ones((2, 4), np.float32), _panels.pack(B), np.empty((2, W // 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        _panels.matmul(np.ones((2, 4)), _panels.pack(B), np.empty((2, W), np.float32))


PANEL_CASES = [("lstm", {}), ("gru", {}), ("rnn", {}), ("lstm", {"num_layers": 2, "bidirectional": True}),
               ("gru", {"batch_first": False}), ("rnn", {"nonlinearity": "relu", "bidirectional": True})]


@needs_numba
@pytest.mark.parametrize("cell,opts", PANEL_CASES)
@pytest.mark.parametrize("parts", [1, 2])
def test_loops_with_the_panels_kernel_equal_the_readable_path(cell, opts, parts, without_mkl, monkeypatch):
    """Where the loops' BLAS runs on one thread (here: a one-thread BLAS, or the batch split's
    parts) and H = 32 (C a multiple of the panel width, 16 or 32, forward and backward), the compiled loops' step products
    are ``_panels``'s kernel (kind PANELS), forward and backward: the results equal the readable
    path's."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    _panels_or_skip()
    from rnnlab.fast import _blas, _compiled, _split
    if _blas.ADDRESS is None:
        pytest.skip("no BLAS address for the compiled loops")
    monkeypatch.setattr(_split, "PARTS", parts)
    kinds = []
    real = _compiled._blas_loop
    monkeypatch.setattr(_compiled, "_blas_loop", lambda product, panels=None: kinds.append(
        real(product, panels)[0]) or real(product, panels))
    layer = CELLS[cell](5, 32, dtype=np.float32, seed=31, **opts)
    rng = np.random.default_rng(32)
    layer.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in layer.params.items()})
    N, T = 9, 7
    x = rng.standard_normal((N, T, 5) if layer.batch_first else (T, N, 5))
    dout = rng.standard_normal(x.shape[:2] + (layer.num_directions * 32,))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    layer.eval()                                                 # (the batch split: eval mode only)
    with threadpoolctl.threadpool_limits(limits=1 if parts == 1 else 2, user_api="blas"):
        fast = _run(layer, True, x, state, None, dout, dstate)
    runs = layer.num_layers * layer.num_directions
    # forward and backward: one per part and direction (the LSTM's eval-mode forward is its
    # inference loop, so its backward runs the caching forward first: three)
    assert kinds == [_compiled.PANELS] * (runs * (3 if cell == "lstm" else 2) * parts), kinds
    readable = _run(layer, False, x, state, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)


# ---- the large GEMMs through the panels kernel on every core (fast/_gemm.py) ----------------
@pytest.mark.parametrize("by", ["rows", "cols", "cols copied"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("M,K", [(1, 5), (13, 64), (70, 150)])
def test_panels_gemm_equals_a_float64_product(by, threads, accumulate, M, K, monkeypatch):
    """``_gemm.panels_matmul``: a by rows or a transposed view (read in place, or copied a block
    at a time: ``COPY_STRIDE``), blocks of b's rows and a's rows smaller than the matrices (K and
    M not multiples of them), the rows shared among 1-3 threads, writing or adding into out with
    a row stride longer than C; within float32 rounding of the product in float64, and nothing
    written outside out."""
    _panels = _panels_or_skip()
    from rnnlab.fast import _gemm
    monkeypatch.setattr(_gemm, "K_BLOCK", 32)
    monkeypatch.setattr(_gemm, "M_BLOCK", 16)
    monkeypatch.setattr(_gemm, "COPY_STRIDE", 1 if by == "cols copied" else 10 ** 9)
    copies = []
    buffer = _gemm._buffer
    monkeypatch.setattr(_gemm, "_buffer", lambda r, c: copies.append((r, c)) or buffer(r, c))
    C = 2 * _panels.layout().width
    rng = np.random.default_rng(M * 100 + K)
    a = (rng.standard_normal((M, K)) if by == "rows" else rng.standard_normal((K, M)).T).astype(np.float32)
    b = rng.standard_normal((K, C)).astype(np.float32)
    wide = rng.standard_normal((M, C + 3)).astype(np.float32)
    before = wide.copy()
    out = wide[:, 1:C + 1]
    _gemm.panels_matmul(a, b, out, accumulate, threads=threads)
    want = a.astype(np.float64) @ b + (before[:, 1:C + 1] if accumulate else 0)
    scale = np.abs(a).astype(np.float64) @ np.abs(b) + np.abs(before[:, 1:C + 1])
    assert np.all(np.abs(out - want) <= 4 * K * np.finfo(np.float32).eps * scale + 1e-30)
    assert np.array_equal(wide[:, 0], before[:, 0]) and np.array_equal(wide[:, C + 1:], before[:, C + 1:])
    assert bool(copies) == (by == "cols copied" and a.strides[1] != 4)     # (M = 1: a is rows either way)


def test_panels_gemm_takes_only_what_fits(monkeypatch):
    """``_gemm.takes``: float32, enough work, K and C at least MIN_SIDE, C a multiple of the panel
    width, a by rows or columns, out not overlapping, and only where the kernel is wider than
    NumPy's BLAS (``wider_than_blas``)."""
    _panels = _panels_or_skip()
    from rnnlab.fast import _gemm
    monkeypatch.setattr(_gemm, "wider_than_blas", lambda: True)
    W = _panels.layout().width
    C = 8 * W
    M = 2 * (2 ** 24 // (256 * C) + 1)              # twice the work needed: each case below fails one rule
    a, b = np.ones((M, 256), np.float32), np.ones((256, C), np.float32)
    out = np.zeros((M, C), np.float32)             # zeros: empty memory may hold NaNs, which astype warns about
    assert _gemm.takes(a, b, out)
    assert _gemm.takes(np.ones((256, M), np.float32).T, b, out)                 # a by columns
    assert not _gemm.takes(a.astype(np.float64), b.astype(np.float64), out.astype(np.float64))
    assert not _gemm.takes(a[:4], b, out[:4])                                   # too little work
    assert not _gemm.takes(a, b[:, :C - 8], out[:, :C - 8])                     # C not a multiple
    assert not _gemm.takes(np.ones((M, 512), np.float32)[:, ::2], b, out)       # a strided both ways
    assert not _gemm.takes(out[:, :256], b, out)                                # out overlaps a
    monkeypatch.setattr(_gemm, "wider_than_blas", lambda: False)
    assert not _gemm.takes(a, b, out)


def test_panels_gemm_is_taken_where_numpys_blas_is_narrower(monkeypatch):
    """``wider_than_blas``: 512-bit panels against OpenBLAS kernels named in ``_NARROW``, not
    against its AVX-512 ones, not with MKL in use, not when turned off."""
    _panels = _panels_or_skip()
    from rnnlab.fast import _gemm, _threads

    class Lib:
        internal_api = "openblas"

        def __init__(self, arch):
            self.architecture = arch
    monkeypatch.setattr(_panels, "layout", lambda: _panels.Layout(16, 2, 8))
    for arch, want in (("Haswell", True), ("Zen", True), ("SkylakeX", False), ("Cooperlake", False)):
        monkeypatch.setattr(_threads, "_blas_libs", lambda arch=arch: [Lib(arch)])
        monkeypatch.setattr(_gemm, "_wider", None)
        monkeypatch.setattr(rnnlab.fast._mkl, "ENABLED", False)
        assert _gemm.wider_than_blas() is want, arch
    monkeypatch.setattr(_threads, "_blas_libs", lambda: [Lib("Haswell")])
    monkeypatch.setattr(_gemm, "_wider", None)
    monkeypatch.setattr(rnnlab.fast._mkl, "ENABLED", True)
    assert not _gemm.wider_than_blas()
    monkeypatch.setattr(rnnlab.fast._mkl, "ENABLED", False)
    monkeypatch.setattr(_gemm, "ENABLED", False)
    assert not _gemm.wider_than_blas() and "RNNLAB_PANELS_GEMM=0" in _gemm.describe()
    monkeypatch.setattr(_panels, "layout", lambda: _panels.Layout(8, 2, 6))
    monkeypatch.setattr(_gemm, "ENABLED", True)
    monkeypatch.setattr(_gemm, "_wider", None)
    assert not _gemm.wider_than_blas()                                          # 256-bit panels: no wider


@needs_numba
@pytest.mark.parametrize("cell,opts", [("lstm", {}), ("gru", {"bidirectional": True}),
                                       ("rnn", {"batch_first": False, "num_layers": 2})])
@pytest.mark.parametrize("train", [True, False])
def test_layers_with_the_panels_gemm_equal_the_readable_path(cell, opts, train, monkeypatch):
    """With the large GEMMs sent to ``_gemm.panels_matmul`` (every size: the thresholds lowered),
    forward and backward equal the readable path's; the route was taken, for the projections
    and, in training, the weight gradients and dX."""
    _panels = _panels_or_skip()
    from rnnlab.fast import _gemm
    monkeypatch.setattr(_gemm, "wider_than_blas", lambda: True)
    monkeypatch.setattr(_gemm, "MIN_WORK", 0)
    monkeypatch.setattr(_gemm, "MIN_SIDE", 1)
    calls = []
    real = _gemm.panels_matmul
    monkeypatch.setattr(_gemm, "panels_matmul", lambda a, b, out, accumulate=False: calls.append(
        (a.shape, b.shape)) or real(a, b, out, accumulate))
    W = _panels.layout().width
    H, D = W, W                                      # C = 4H, 3H, H and D: multiples of the width
    layer = CELLS[cell](D, H, dtype=np.float32, seed=41, **opts)
    rng = np.random.default_rng(42)
    layer.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in layer.params.items()})
    N, T = 6, 5
    x = rng.standard_normal((N, T, D) if layer.batch_first else (T, N, D))
    dout = rng.standard_normal(x.shape[:2] + (layer.num_directions * H,))
    state, dstate = _state(layer, N, rng), _state(layer, N, rng)
    layer.train(train)
    fast = _run(layer, True, x, state, None, dout, dstate)
    assert calls, "no GEMM went through the panels kernel"
    assert any(a[1] == N * T for a, _ in calls), calls             # a weight gradient, dA^T X: K = N T
    readable = _run(layer, False, x, state, None, dout, dstate)
    _assert_close(fast, readable, 1e-5)


@pytest.mark.parametrize("bm", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lo,hi", [(0, 7), (0, 1), (0, 3), (3, 7), (6, 7), (2, 5)])
@pytest.mark.parametrize("seqs", [slice(None), slice(1, 4)])
@pytest.mark.parametrize("state", [True, False])
def test_weight_gradient_from_the_outputs_equals_the_h_prev_arrays(bm, reverse, lo, hi, seqs, state):
    """dW_hh += dA^T H_prev with h_prev read from the outputs one step along (and h0 at the first
    step) equals the product with an h_prev array made from them (float64, every case: chunks
    with and without the first step, either direction, batch- or time-major rows, a part's
    sequences; an initial state or none)."""
    from rnnlab.fast._steps import empty_steps, grad_from_outputs, previous_states, rows
    rng = np.random.default_rng(5)
    T, N, H, G = 7, 5, 3, 4
    out = empty_steps(T, N, H, bm, np.float64)
    out[...] = rng.standard_normal((T, N, H))
    h0 = rng.standard_normal((N, H)) if state else np.zeros((N, H))
    Hp = np.empty((T, N, H))
    previous_states(Hp, out, h0, reverse)
    n = len(range(N)[seqs])
    dA = empty_steps(hi - lo, n, G, bm, np.float64)
    dA[...] = rng.standard_normal((hi - lo, n, G))
    expected = 0.5 + rows(dA, bm).T @ rows(Hp[lo:hi, seqs], bm)
    g = np.full((G, H), 0.5)
    grad_from_outputs(lambda a, b, out, accumulate: np.add(out, a @ b, out=out), rows(dA, bm).copy(),
                      (out, h0, reverse), lo, hi, seqs, bm, g)
    np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-14)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_finite_check_finds_every_nan_and_inf(dtype):
    """The layers' inputs of at least ``FAST_FINITE_MIN`` entries (and the streamed step's, any
    size) are checked by the compiled ``all_finite`` (one pass, the sum of x * 0): True exactly
    where ``np.isfinite(x).all()`` is: for an empty array, for a NaN, inf or -inf at the first, a
    middle and the last entry, for the largest finite values (their product with 0 is 0), and
    through a layer's forward, with the same error as NumPy's check, naming the first bad entry."""
    from rnnlab import _validate
    from rnnlab.fast import _compiled
    assert _validate.fast_all_finite is _compiled.all_finite
    rng = np.random.default_rng(71)
    n = 4099                                          # not a multiple of any vector width
    x = rng.standard_normal(n).astype(dtype)
    assert _compiled.all_finite(x) and np.isfinite(x).all()
    assert _compiled.all_finite(np.empty(0, dtype))             # nothing to check
    big = np.full(n, np.finfo(dtype).max, dtype)
    big[::2] *= -1
    assert _compiled.all_finite(big)
    for bad in (np.nan, np.inf, -np.inf):
        for i in (0, 1, n // 2, n - 2, n - 1):
            y = x.copy()
            y[i] = bad
            assert not _compiled.all_finite(y), (bad, i)
    layer = rnnlab.LSTM(8, 4, dtype=dtype, seed=0)
    xs = rng.standard_normal((4, 40, 8)).astype(dtype)     # 1280 entries: the compiled check
    assert xs.size >= _validate.FAST_FINITE_MIN
    layer.forward(xs)
    xs[2, 31, 5] = np.inf
    with pytest.raises(ValueError, match=r"x: contains non-finite values \(1 of 1280\); the first is inf at index \(2, 31, 5\)"):
        layer.forward(xs)


def test_the_loops_arrays_start_on_a_cache_line():
    """``aligned_empty`` (and ``empty_steps``, ``aligned_copy``) give arrays of the shape and dtype
    asked whose data starts on a 64-byte boundary, batch-major or time-major; the copy holds the
    same values."""
    from rnnlab.fast import _steps
    for shape, dtype in (((3, 5), np.float32), ((1, 1), np.float64), ((7, 2, 9), np.float32), ((0, 4), np.float32)):
        a = _steps.aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.size == 0 or a.ctypes.data % _steps.ALIGN == 0                # (an empty one has no data)
    for bm in (True, False):
        s = _steps.empty_steps(4, 3, 5, bm)
        assert s.shape == (4, 3, 5) and s.ctypes.data % _steps.ALIGN == 0 and _steps.batch_major(s) == bm
    src = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]                 # not contiguous
    c = _steps.aligned_copy(src)
    assert c.ctypes.data % _steps.ALIGN == 0 and c.flags.c_contiguous and np.array_equal(c, src)


def test_layers_make_their_parameters_on_cache_lines_and_loops_copy_others_there():
    """Every parameter of a new layer starts on a cache line (and stays there: loading a state
    copies into it); ``aligned_weight`` hands a loop such a W as it is, copies one that is off a
    line for a loop of more than 8 steps, and leaves it (made contiguous) for fewer."""
    from rnnlab.fast import _steps
    for cls in (rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN):
        layer = cls(5, 12, num_layers=2, bidirectional=True, dtype=np.float32, seed=0)
        assert all(p.ctypes.data % _steps.ALIGN == 0 for p in layer.params.values())
        layer.load_state_dict({k: np.ones_like(v) for k, v in layer.params.items()})
        assert all(p.ctypes.data % _steps.ALIGN == 0 and (p == 1).all() for p in layer.params.values())
    W = _steps.aligned_empty((8, 4))
    W[...] = np.arange(32).reshape(8, 4)
    assert _steps.aligned_weight(W, 100) is W
    buf = _steps.aligned_empty((40,))
    off = buf[4:36].reshape(8, 4)                                   # 16 bytes off a line
    off[...] = W
    moved = _steps.aligned_weight(off, 100)
    assert moved is not off and moved.ctypes.data % _steps.ALIGN == 0 and np.array_equal(moved, W)
    assert _steps.aligned_weight(off, 8) is off
    strided = np.asfortranarray(W)
    kept = _steps.aligned_weight(strided, 3)
    assert kept.flags.c_contiguous and np.array_equal(kept, W)
