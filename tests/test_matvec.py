"""The tiny loops' matrix-vector kernel in LLVM IR (``fast/_matvec.py``)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import rnnlab
from rnnlab.fast import _compiled, _matvec

needs_llvm = pytest.mark.skipif(not _compiled.AVAILABLE, reason="Numba (and llvmlite) not installed")

_SIG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                        ctypes.c_void_p, ctypes.c_void_p)
_KEEP = {}


def _kernel(V):
    """The kernel for V-float vectors as a Python callable: V = the CPU's own through ``address``,
    the other width compiled here (8-float vectors run on any x86-64 CPU with AVX)."""
    if V == _matvec.vector():
        address = _matvec.address()
    else:
        if V == 16:
            import llvmlite.binding as llvm
            if not llvm.get_host_cpu_features().get("avx512f", False):
                pytest.skip("16-float vectors need AVX-512F")
        if V not in _KEEP:
            _KEEP[V] = _matvec._compile(V)
        address = _KEEP[V][1]
    assert address
    fn = _SIG(address)

    def call(x, W, b, out, r0, r1):
        K = W.shape[1]
        fn(x.ctypes.data, W.ctypes.data + 4 * r0 * K, K, r1 - r0, b.ctypes.data + 4 * r0, out.ctypes.data + 4 * r0)
    return call


@needs_llvm
@pytest.mark.parametrize("V", [8, 16])
@pytest.mark.parametrize("G,K", [(512, 128), (37, 16), (16, 32), (5, 48), (130, 64)])
def test_the_kernel_gives_each_rows_sum_and_the_same_bits_however_the_rows_are_cut(V, G, K):
    """out[r] = b[r] + x W[r] for every row (float64 reference, float32 rounding), partial groups
    of rows included; computing the rows in pieces cut anywhere gives the whole call's bits."""
    if K % V:
        pytest.skip("K must be a multiple of V")
    call = _kernel(V)
    rng = np.random.default_rng(G * K)
    W = rng.standard_normal((G, K)).astype(np.float32)
    x = rng.standard_normal(K).astype(np.float32)
    b = rng.standard_normal(G).astype(np.float32)
    whole = np.full(G + 1, 7.0, np.float32)                       # + a sentinel past the end
    call(x, W, b, whole, 0, G)
    ref = W.astype(np.float64) @ x.astype(np.float64) + b
    assert whole[G] == 7.0                                        # nothing written past R rows
    np.testing.assert_allclose(whole[:G], ref, rtol=0, atol=1e-5 * (1 + np.abs(W).sum(axis=1).max()))
    for cuts in ([0, 1, G], [0, G // 3, G // 2 + 1, G], [0, min(V + 3, G), G]):
        pieces = np.zeros(G + 1, np.float32)
        for r0, r1 in zip(cuts, cuts[1:]):
            if r1 > r0:
                call(x, W, b, pieces, r0, r1)
        assert np.array_equal(pieces[:G], whole[:G]), cuts


def test_usable_asks_for_rows_of_whole_vectors_and_can_be_turned_off(monkeypatch):
    V = _matvec.vector()
    if _matvec.address() == 0:
        assert _matvec.usable(4 * V) == 0
        return
    assert _matvec.usable(4 * V) == _matvec.address()
    assert _matvec.usable(4 * V + 1) == 0 and _matvec.usable(0) == 0
    monkeypatch.setattr(_matvec, "ENABLED", False)
    assert _matvec.usable(4 * V) == 0 and "RNNLAB_MATVEC=0" in _matvec.describe()


@needs_llvm
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("enabled", [True, False])
def test_tiny_loops_with_or_without_the_kernel_equal_the_readable_path(cell, enabled, monkeypatch):
    """One and two sequences (the tiny loops; the LSTM's on two cores where it can), H a multiple
    of the vector width: forward and backward equal the readable path's with the kernel
    (``matvec_rows_mv``) and with the Numba one, and the kernel is what the loops were given."""
    monkeypatch.setattr(_matvec, "ENABLED", enabled)
    given = []
    name = f"{cell}_loop"
    real = getattr(_compiled, name)
    monkeypatch.setattr(_compiled, name, lambda *a: given.append(a[-1]) or real(*a))     # a[-1]: mv
    H = 2 * _matvec.vector() * 4
    cls = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}[cell]
    rng = np.random.default_rng(3)
    for N in (1, 2):
        layer = cls(8, H, dtype=np.float32, seed=4)
        x = rng.standard_normal((N, 12, 8)).astype(np.float32)
        dout = rng.standard_normal((N, 12, H)).astype(np.float32)
        results = []
        for fast in (True, False):
            layer.fast = fast
            layer.zero_grad()
            out, _ = layer.forward(x)
            dx, _ = layer.backward(dout)
            results.append((out, dx, {k: v.copy() for k, v in layer.grads.items()}))
        (o1, d1, g1), (o2, d2, g2) = results
        np.testing.assert_allclose(o1, o2, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(d1, d2, rtol=1e-4, atol=1e-5)
        for k in g1:
            np.testing.assert_allclose(g1[k], g2[k], rtol=1e-4, atol=1e-4)
    if cell == "lstm":                                 # the LSTM's tiny loop may run on the pair instead
        return
    assert given and all((m != 0) == (enabled and _matvec.address() != 0) for m in given), given


if _compiled.AVAILABLE:
    @_compiled._jit()
    def _turns(mv, W, x, b, out, r0, r1, s):
        _compiled.matvec_turns(mv, W, x, b, out, r0, r1, s)

    @_compiled._jit()
    def _forwards(mv, W, x, b, out, r0, r1):
        _compiled.matvec_rows_mv(mv, W, x, b, out, r0, r1)


@needs_llvm
@pytest.mark.parametrize("kernel", ["matvec", "numba"])
@pytest.mark.parametrize("G,r0,r1", [(32, 0, 32), (200, 0, 200), (200, 7, 171), (300, 64, 128), (5, 1, 4)])
@pytest.mark.parametrize("N", [1, 2])
def test_rows_read_back_and_forth_give_the_same_bits(kernel, G, r0, r1, N):
    """``matvec_turns`` (the tiny loops' product: W's rows last to first at odd steps, in blocks
    of SERPENTINE_ROWS) writes rows r0..r1-1 of every sequence with the bits of one forward
    pass, at even and odd steps, and leaves the other rows alone."""
    K = 32
    mv = _matvec.address() if kernel == "matvec" else 0
    if kernel == "matvec" and (not mv or not _matvec.usable(K)):
        pytest.skip("the kernel is unavailable here")
    rng = np.random.default_rng(G + r0 + N)
    from rnnlab.fast._steps import aligned_empty
    W = aligned_empty((G, K))
    W[...] = rng.standard_normal((G, K))
    x = aligned_empty((N, K))
    x[...] = rng.standard_normal((N, K))
    b = rng.standard_normal(G).astype(np.float32)
    want = np.full((N, G), np.nan, np.float32)
    _forwards(mv, W, x, b, want, r0, r1)
    assert np.isfinite(want[:, r0:r1]).all()
    ref = x.astype(np.float64) @ W.astype(np.float64).T + b
    assert np.allclose(want[:, r0:r1], ref[:, r0:r1], rtol=1e-5, atol=1e-5)
    for s in range(3):
        got = np.full((N, G), np.nan, np.float32)
        _turns(mv, W, x, b, got, r0, r1, s)
        assert np.array_equal(got[:, r0:r1], want[:, r0:r1])
        assert np.isnan(got[:, :r0]).all() and np.isnan(got[:, r1:]).all()
