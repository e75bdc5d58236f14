"""LSTM inference on two cores by hidden units: each core computes every sequence's step for half the units.

The batch split (``_split``) gives each core half the sequences, so each core
reads all of [W_ih | W_hh] every step: at N = 64, D = H = 512 that is 8 MB a
core a step, from the shared L3, and each core first packs all of it for the
panels kernel. Here each core takes half the hidden units instead: unit j's step
needs rows j, H + j, 2H + j, 3H + j of W_ih and W_hh (its gates i, f, g, o), the
whole h_{t-1} and its own c; nothing of the other units. So core k packs and
reads only the gate rows of its units (half the weights), multiplies every
sequence's x_t and h_{t-1} by them with ``_panels``'s kernel, and runs the gates
of its units (``_compiled.lstm_infer_units``); the two cores meet once a step, as
h_t must be whole before the recurrent product of step t + 1.

    core k, units U_k = [k H/2, (k + 1) H/2), at step s (time t):
        hw (N, 4 H/2)  = x_t W_ih[rows of U_k]^T           (needs nothing of the other core)
        wait until the other core has written its half of h_{t-1}
        hw            += h_{t-1} W_hh[rows of U_k]^T       (h_{t-1}: the output's rows of step t-1)
        c[:, U_k], h_t[:, U_k] = the gates of hw (+ b[rows of U_k])
        mark step s done

Each core waits only for the other's mark of the previous step (an int64 slot of
``ctl``, atomics from ``_helper``), and computes the input product before that
wait, so a late core delays the other by less than its lateness. h_{t-1} is read
from the output itself, and a core writes only step t's rows and its own
columns of c, so no step's data is written while the other core may read it.

A unit's numbers are those of the batch split's loops with the panels kernel
(``_compiled.lstm_loop1`` and ``lstm_loop2``: the same sum over
[x_t | h_{t-1}] in the same order, the same gate kernel, ``lstm_infer_units``),
bit for bit. The second core's half runs on the batch split's pool thread,
which claims it as it starts (``begin``); the calling core, at its first wait for
it, waits up to ``START_SPINS`` for that thread to start (its core may be busy),
else claims the half back (``_alone``) and the split returns False: the caller
then runs its own loops. An error on either side (``ABORT``) releases the other
from its wait.

Used for float32 LSTM inference where the batch split would run two parts (two
idle cores), the panels kernel is in use with H/2 a multiple of its panel width
(32 columns with 512-bit vectors, 16 with 256-bit), and N >= ``MIN_N``, when
turned on: ``ENABLED`` (``RNNLAB_UNITS=1``). It is off by default. Measured on the
2-core Zen 5 VM against the batch split, both with the compiled pack
(``_panels.Layout.pack_ir``), interleaved with PyTorch, 30 rounds, median of
PyTorch's time over ours: N=32, T=100, D=64, H=256 1.027 against the batch
split's 1.123; N=64, T=50, D=H=512 0.995 against 1.008 (its best turns were
faster at N=32, 5.28 against 5.38 ms, its median slower). Before the compiled
pack, when the batch split's serial pack of all the weights took 1.25 ms of a
30 ms forward at N=64, it had won: 0.999 against 0.978, and 0.978 against 0.938
at N=32 (25 rounds). It also meets the other core every step, so a core taken
by another thread during a forward stalls every step, where the batch split's
parts slow down only.

With MKL (``lstm_infer_mkl``, on by default; ``MKL_ENABLED``, ``RNNLAB_UNITS_MKL=0``
turns it off) each core first multiplies all T steps' inputs by its units' rows of
W_ih (one GEMM, as the batch split's ``_compiled.lstm_loop_ahead`` parts do for
their sequences), packs its rows of W_hh for MKL, then runs its half of the steps
(``units_loop_ahead``); from ``STEPWISE_MIN_N`` sequences on it takes x_t W_ih^T one
step at a time instead, the next step's while the other core may still finish this
one (``units_loop_stepwise``); the threads are pinned apart as the batch split's are. It
runs where W_hh does not fit in one core's L2 (``L2_BYTES``, from sysfs) and N >=
``MKL_MIN_N``: there each of the batch split's parts reads all of W_hh from L3 every
step, where each core here reads half of it. Measured on the 2-core Intel VM
(AVX-512, 2 MB L2 a core), LSTM inference, turns interleaved with the batch split
and PyTorch in one process, best / median ms (PyTorch's best / median):

    N=64, T=50, D=H=512     46.41 / 46.95 against 46.82 / 48.14   (45.75 / 47.10),
                            a second run 47.10 / 47.60 against 47.22 / 47.83   (46.38 / 47.18)
    N=32, T=100, D=128, H=512   31.93 / 32.44 against 34.55 / 35.42   (31.37 / 32.35)
    N=16, T=100, D=128, H=512   16.64 / 17.00 against 20.56 / 20.82   (18.49 / 19.46)
    N=16, T=100, D=512, H=1024  80.29 / 82.62 against 92.64 / 94.99   (84.56 / 89.13)
    N=128, T=50, D=H=512    90.64 / 91.25 against 89.15 / 91.01   (92.88 / 94.28)

and slower where W_hh fits in L2 or N is small: N=32, T=100, D=64, H=256 9.09 /
9.44 against 8.70 / 8.82; N=64, T=50, D=H=256 13.25 / 13.57 against 12.61 /
12.82; N=8, T=100, D=128, H=512 11.44 / 12.04 against 10.96 / 11.55. (A first
trial of this split with MKL, stop 27, timed the gates at 43 ms a forward: its
loop was compiled without ``_compiled._jit``'s error model, which stops the gate
kernel's vectorisation.)
"""
from __future__ import annotations

import os

import numpy as np

from . import _affinity, _compiled, _mkl, _panels, _split, _threads
from ._steps import memory, project

ENABLED = os.environ.get("RNNLAB_UNITS", "0") == "1"      # off unless asked: see the docstring's last paragraph
MKL_ENABLED = os.environ.get("RNNLAB_UNITS_MKL", "1") != "0"
MIN_N = 8
MKL_MIN_N = 16
# With MKL, from this many sequences on, each core takes x_t W_ih^T of one step at a time inside
# its loop (``units_loop_stepwise``) instead of all steps' in one GEMM first (``units_loop_ahead``).
# LSTM inference, 8-30 rounds each way in turn with PyTorch, best / median ms (ahead against
# stepwise): N=64, T=50, D=H=512 47.87 / 49.28 against 46.98 / 48.44 and 48.03 / 50.06 against
# 47.26 / 48.40, later 47.16 / 48.20 against 46.64 / 48.79 and (30 rounds) 47.03 / 49.65 against
# 46.54 / 49.18 (a tie by the median); N=64, T=100, D=128, H=512 62.44 / 64.78 against 60.10 /
# 60.88 and 61.25 / 67.75 against 58.71 / 72.74 (a noisy run); N=64, T=50, D=512, H=768 86.84 /
# 88.84 against 84.15 / 85.37 and 85.50 / 87.95 against 84.12 / 88.25; N=128, T=50, D=H=512
# 91.81 / 95.63 against 88.54 / 93.41 and 94.05 / 98.49 against 88.35 / 92.62. The best time was
# lower in all ten runs. Below, the step's product has too few rows: N=16, T=100, D=128, H=512 19.29 / 21.35
# against 20.60 / 22.19; N=32 32.77 / 35.36 against 33.24 / 40.08; N=16, D=512, H=1024 81.66 /
# 82.41 against 83.83 / 91.19.
STEPWISE_MIN_N = 64
L2_BYTES = _threads.L2_BYTES   # one core's L2 cache (``_threads.l2_bytes``)
START_SPINS = 60_000        # ~1.4 ms (a spin, x86 ``pause``: 23.5-23.7 ns here, a million of them timed)
F = np.float32
ABORTED, DONE_ALL, ALONE, GO = 0, 1, 2, 3

# ctl slots (int64): each core's last step done, on lines of their own; ABORT; STARTED
DONE, ABORT, STARTED = (0, 16), 32, 48
CTL_SIZE = 64

if _compiled.AVAILABLE:
    from ._helper import claim, load_acquire, pause, store_release

    _jit = _compiled._jit
    _at, _rows_at, _h_prev_at = _compiled._at, _compiled._rows_at, _compiled._h_prev_at
    _panels2_call, _sgemm_compute = _compiled._panels2_call, _compiled._sgemm_compute
    lstm_infer_units = _compiled.lstm_infer_units

    @_jit(inline="always")
    def _wait(ctl, i, s):
        """Spin until ctl[i] >= s; False if ``ABORT`` was set meanwhile."""
        while load_acquire(ctl, i) < s:
            if load_acquire(ctl, ABORT) != 0:
                return False
            pause()
        return True

    @_jit(inline="always")
    def _alone(ctl, start_spins):
        """The calling core, before its first wait for the other: whether the other core's thread
        has not started within ``start_spins`` spins, in which case it never will (``STARTED``
        claimed here, -1)."""
        spins = 0
        while load_acquire(ctl, STARTED) == 0 and spins < start_spins:
            pause()
            spins += 1
        return claim(ctl, STARTED, 0, -1)

    @_jit(inline="always")
    def _meet(ctl, me, s, start_spins):
        """Before step s (s = T: after the last), wait until the other core has done step s - 1:
        GO, or ALONE (the calling core's first wait, the other core's thread not started) or
        ABORTED (the other core failed). The second core (me = 1) does not wait at the end."""
        if s == 0:
            return GO
        if me == 0 and s == 1 and _alone(ctl, start_spins):
            return ALONE
        if not _wait(ctl, DONE[1 - me], s):
            return ABORTED
        return GO

    @_jit(inline="always")
    def _finish(ctl, me, T, start_spins):
        """A core's status after its last step: the calling core (me = 0) waits for the other's."""
        status = _meet(ctl, me, T, start_spins) if me == 0 else GO
        return DONE_ALL if status == GO else status

    @_jit()
    def begin(ctl):
        """The second core's thread, as it starts: whether its half is still its own (``STARTED``
        claimed, 1), not taken back by the calling core (``_alone``)."""
        return claim(ctl, STARTED, 0, 1)

    @_jit(nogil=True)
    def units_loop(fn, Px, Ph, Xm, h0, hw, b, c, u0, mO, bm, T, reverse, ctl, me, start_spins):
        """One core's half of the LSTM's steps (see the module's docstring): units u0..u0 + Hc - 1,
        Hc = hw.shape[1] / 4; Px, Ph the panels of their rows of W_ih^T and W_hh^T; b their biases
        (4 Hc,); c (N, H) the whole cell state (its columns u0.. updated here). The calling core
        (me = 0) returns only when the other's half is done too. Returns DONE_ALL, ABORTED (the
        other core failed) or ALONE (me = 0: the other core's thread never started; the steps are
        then not done)."""
        n, G = hw.shape
        Hc, D, H = G // 4, Xm.shape[2], h0.shape[1]
        o, px, ph = np.int64(hw.ctypes.data), np.int64(Px.ctypes.data), np.int64(Ph.ctypes.data)
        for s in range(T):
            t = T - 1 - s if reverse else s
            status = _meet(ctl, me, s, start_spins)
            if status != GO:
                return status
            a, lda = _rows_at(Xm, t, bm)
            a2, lda2 = _h_prev_at(h0, mO, s, t, reverse, bm)
            _panels2_call(fn, n, G, D, a, lda, px, H, a2, lda2, ph, o, G, False)
            for r in range(n):
                lstm_infer_units(hw[r], b, c[r, u0:u0 + Hc], _at(mO, t, r, bm)[u0:u0 + Hc], Hc)
            store_release(ctl, DONE[me], s + 1)
        return _finish(ctl, me, T, start_spins)

    @_jit(nogil=True)
    def units_loop_stepwise(fn, Bx, Bh, Xm, Z, h0, b, c, u0, mO, bm, T, reverse, zero_h0, ctl, me, start_spins):
        """``units_loop_ahead`` with x_t W_ih^T taken one step at a time (Bx: this core's rows of
        W_ih^T, packed by MKL, as Bh of W_hh^T): the next step's, right after this step's gates
        are marked done. That product needs nothing of the other core, so it runs while the other
        core may still be finishing the step, where ``units_loop_ahead`` waits; and no (T, N, 4 Hc)
        buffer is written and read back. Z (2, n, 4 Hc): the pre-activations of two steps, taken in
        turn."""
        n, Hc = c.shape[0], Z.shape[2] // 4
        H, D = h0.shape[1], Xm.shape[2]
        px, ph = np.int64(Bx.ctypes.data), np.int64(Bh.ctypes.data)
        ldz = Z.shape[2]
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s == 0:                                   # the first step's x_t W_ih^T
                _x_product(fn, px, Xm, t, bm, Z[0], D)
            status = _meet(ctl, me, s, start_spins)
            if status != GO:
                return status
            z = Z[s % 2]
            if not (s == 0 and zero_h0):
                a, lda = _h_prev_at(h0, mO, s, t, reverse, bm)
                _sgemm_compute(fn, n, 4 * Hc, H, a, lda, ph, np.int64(z.ctypes.data), ldz, F(1.0))
            for r in range(n):
                lstm_infer_units(z[r], b, c[r, u0:u0 + Hc], _at(mO, t, r, bm)[u0:u0 + Hc], Hc)
            store_release(ctl, DONE[me], s + 1)
            if s + 1 < T:                                # the next step's, before the next wait
                _x_product(fn, px, Xm, t - 1 if reverse else t + 1, bm, Z[(s + 1) % 2], D)
        return _finish(ctl, me, T, start_spins)

    @_jit(inline="always")
    def _x_product(fn, px, Xm, t, bm, z, D):
        """z (n, G) <- x_t W^T for the rows of step t of Xm, W^T packed by MKL at address px."""
        a, lda = _rows_at(Xm, t, bm)
        _sgemm_compute(fn, z.shape[0], z.shape[1], D, a, lda, px, np.int64(z.ctypes.data), z.shape[1], F(0.0))

    @_jit(nogil=True)
    def units_loop_ahead(fn, B, mZ, h0, b, c, u0, mO, bm, T, reverse, zero_h0, ctl, me, start_spins):
        """``units_loop`` with MKL (``MKL_ENABLED``), after this core's x_t W_ih^T of all T steps
        was written into the rows of mZ (T, n, 4 Hc) (one GEMM before the loop): h_{t-1} W_hh^T
        added into step t's rows by MKL's packed product (fn, B: the packed transpose of this
        core's rows of W_hh, beta 1), then the gates of this core's units from those rows, as the
        batch split's ``_compiled.lstm_loop_ahead`` does for its sequences. ``zero_h0``: h_0 is
        all zeros, so the first step adds nothing."""
        n, Hc = c.shape[0], mZ.shape[2] // 4
        H = h0.shape[1]
        pb = np.int64(B.ctypes.data)
        for s in range(T):
            t = T - 1 - s if reverse else s
            status = _meet(ctl, me, s, start_spins)
            if status != GO:
                return status
            if not (s == 0 and zero_h0):
                z, ldz = _rows_at(mZ, t, bm)
                a, lda = _h_prev_at(h0, mO, s, t, reverse, bm)
                _sgemm_compute(fn, n, 4 * Hc, H, a, lda, pb, z, ldz, F(1.0))
            for r in range(n):
                lstm_infer_units(_at(mZ, t, r, bm), b, c[r, u0:u0 + Hc], _at(mO, t, r, bm)[u0:u0 + Hc], Hc)
            store_release(ctl, DONE[me], s + 1)
        return _finish(ctl, me, T, start_spins)


def usable(N, D, H, P):
    """Whether an LSTM inference loop over N sequences (D inputs, H units) runs here, given the
    batch split's parts P for it (``_split.parts``): two, the compiled loops on NumPy's BLAS (not
    in an MKL regime, where the batch split's parts run MKL's packed GEMM), and H/2, each half's
    columns of a gate, a multiple of the panels kernel's width (``_pack`` makes a gate's panels
    from its rows)."""
    if not (ENABLED and _compiled.AVAILABLE and P == 2 and not getattr(P, "crowded", False) and N >= MIN_N):
        return False
    return (H % 2 == 0 and _panels.usable(H // 2) and _panels.compiled() is not None
            and _compiled._numpy_blas_loops(N * (D + H) * 4 * H))


def usable_mkl(T, N, D, H, P):
    """Whether an LSTM inference loop over T steps of N sequences runs here with MKL
    (``lstm_infer_mkl``): the batch split's two parts, MKL's float32 GEMMs in use by the compiled
    loops, H even, N >= MKL_MIN_N, W_hh (float32) larger than one core's L2 (``L2_BYTES``), and
    below ``STEPWISE_MIN_N`` sequences each core's input products (T N 2H floats, made before
    its steps) within the batch split's limit for its own (``_compiled.AHEAD_MAX_BYTES``). Where
    W_hh fits in a core's L2 each of the batch split's parts keeps it there, and the batch split
    was faster (see the module's docstring)."""
    return (MKL_ENABLED and _compiled.AVAILABLE and P == 2 and not getattr(P, "crowded", False)
            and N >= MKL_MIN_N and H % 2 == 0 and 16 * H * H > L2_BYTES
            and _mkl.active(F, 0) and _compiled.blas_loops()
            and (N >= STEPWISE_MIN_N or T * N * 2 * H * 4 <= _compiled.AHEAD_MAX_BYTES))


def _half(W, k, H):
    """Rows of W (4H, K) for core k's units, gate by gate: W[q H + u] for q = 0..3, u in U_k."""
    Hc = H // 2
    return tuple(W[q * H + k * Hc: q * H + (k + 1) * Hc] for q in range(4))


def _pack(blocks, slot):
    """The blocks (rows of W, (Hc, K) each) as panels of their transpose (K, 4 Hc), column block
    q from block q, in this thread's buffer for ``slot`` (``_panels.pack_rows`` on each block's
    part of the panels: Hc is a multiple of the panel width)."""
    lay = _panels.layout()
    Hc, K = blocks[0].shape
    out = _compiled._pack_buffer(slot, lay.panels_shape(K, len(blocks) * Hc))
    per = Hc // lay.width
    for q, blk in enumerate(blocks):
        _panels.pack_rows((blk.T,), out[q * per:(q + 1) * per])
    return out


def lstm_infer(X, h0, c, W_ih, W_hh, b, reverse, out, bm, Xm, mO):
    """The LSTM's inference loop split by units (module docstring): writes ``out`` (through its
    memory mO) and c (N, H, updated in place). Returns False where the second core's thread did
    not start within ``START_SPINS`` of the first wait for it (the caller then runs its own
    loop; c has been changed)."""
    N, H = h0.shape
    ctl = np.zeros(CTL_SIZE, np.int64)
    fn = _panels.compiled().two

    def half(k):
        Px = _pack(_half(W_ih, k, H), "ux")
        Ph = _pack(_half(W_hh, k, H), "uh")
        bk = np.concatenate(_half(b, k, H))
        hw = np.empty((N, 2 * H), F)
        return units_loop(fn, Px, Ph, Xm, h0, hw, bk, c, k * (H // 2), mO, bm, X.shape[0], reverse, ctl, k,
                          START_SPINS)

    return _two_cores(half, ctl, pinned=False)


def lstm_infer_mkl(X, h0, c, W_ih, W_hh, b, reverse, out, bm, Xm, mO):
    """``lstm_infer`` with MKL: each core packs its units' rows of W_hh for MKL and runs its half of
    the steps, taking x_t W_ih^T either for all T steps first (one GEMM, into a buffer its thread
    keeps: ``units_loop_ahead``) or, from ``STEPWISE_MIN_N`` sequences on, one step at a time
    (``units_loop_stepwise``). The two threads are pinned to different CPUs, as the batch split's
    are (``_affinity``)."""
    T = X.shape[0]
    N, H = h0.shape
    Hc = H // 2
    ctl = np.zeros(CTL_SIZE, np.int64)
    fn = _mkl.compute_address()
    depth = _mkl.depth()
    zero_h0 = not h0.any()
    stepwise = N >= STEPWISE_MIN_N

    def half(k):
        with _mkl.part(depth):                           # MKL on one thread, on each core
            bk = np.concatenate(_half(b, k, H))
            if stepwise:
                Bx = packed_half(W_ih, k, N)
                Bh = packed_half(W_hh, k, N)
                Z = _compiled._pack_buffer("units steps", (2, N, 4 * Hc))
                return units_loop_stepwise(fn, Bx.buf, Bh.buf, Xm, Z, h0, bk, c, k * Hc, mO, bm, T, reverse,
                                           zero_h0, ctl, k, START_SPINS)
            Z = _compiled._pack_buffer("units ahead", (N, T, 4 * Hc) if bm else (T, N, 4 * Hc))
            steps = Z.transpose(1, 0, 2) if bm else Z    # as (T, N, 4 Hc) steps
            project(X, np.concatenate(_half(W_ih, k, H)), steps)
            Bh = packed_half(W_hh, k, N)
            return units_loop_ahead(fn, Bh.buf, memory(steps, bm), h0, bk, c, k * Hc, mO, bm, T, reverse,
                                    zero_h0, ctl, k, START_SPINS)

    return _two_cores(half, ctl, pinned=True)


def packed_half(W, k, N):
    """Core k's rows of W (4H, K) (``_half``) as the transpose (K, 4 H/2), packed by MKL for
    products with N rows."""
    return _mkl.Packed(np.concatenate(_half(W, k, W.shape[0] // 4)).T, N)


def _two_cores(half, ctl, pinned):
    """half(1) on the batch split's pool thread, half(0) here (NumPy's BLAS on one thread), the
    two threads on different CPUs while this one runs its half where ``pinned``. True when both
    halves ran; False where the pool's thread did not start in time (``ALONE``); raises either
    half's error."""
    def run(k):
        try:
            if k == 1 and not begin(ctl):
                return ALONE
            return half(k)
        except BaseException:
            ctl[ABORT] = 1                               # releases the other half from its wait
            raise

    with _threads.one_thread():
        future = _split._executor(1).submit(run, 1)
        saved = _affinity.pin(_split._pool[2]) if pinned else []
        try:
            status = run(0)
        finally:
            _affinity.restore(saved)
            if not future.cancel():
                future.exception()                       # waits: done, or stopped at a wait (ABORT)
    if status == ALONE:
        return False
    if status == ABORTED:
        future.result()                                  # raises the second core's error
        raise RuntimeError("units split: the second core stopped without an error")
    return True
