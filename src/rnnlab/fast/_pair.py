"""A second core for the tiny loops: half of every step's hidden units on a helper thread.

A tiny LSTM loop (one or two sequences, ``_compiled.lstm_loop``) spends most of a
step reading W_hh (4H x H) for h_{t-1} W_hh^T: at H = 128, 256 KB from L2 a step,
3.5 of the step's 3.9 us here. Hidden unit u's step needs rows u, H + u, 2H + u,
3H + u of W_hh, the full h_{t-1} and its own c; nothing of the other units. So
the step splits by units: units 0..u-1 on the calling thread, u..H-1 on a helper
thread on the other core, each reading half of W_hh, and the two meet once a
step, as h_t must be whole before step t + 1.

They meet through atomics (``_helper``'s) on one int64 array, ``ctl``. Steps are
numbered across calls (1, 2, ...; a call's first is one past the last claimed):

* the caller publishes step s (``ctl[POST] = s``), computes its units of step s,
  then tries to claim the helper's half: that half belongs to whoever first moves
  ``ctl[CLAIM]`` from s - 1 to s (compare-and-swap). The helper, spinning, claims
  it as soon as it sees the post; with no helper running, or a late one, the
  caller claims it and does the step whole;
* the caller publishes step s + 1 as soon as its own units of step s are written
  (and the helper's, if it did those too): the helper's next input is then whole
  but for its own half, so it goes on to step s + 1 without waiting for the
  caller, and only the caller waits, for ``ctl[DONE] >= s``, the helper's mark
  after its half of step s (the helper may be a step ahead: DONE = s + 1).

So a step costs half its work and one hand-over each way, ~0.1 us (a round trip
between the cores measured 100-140 ns). Forwards of N = 1, T = 100, D = 32,
H = 128, each process in turn with the pair off and on, five times (best / median
of 2000 calls, us): 511 / 783 against 398 / 522, 499 / 530 against 400 / 583,
543 / 811 against 395 / 414, 523 / 769 against 430 / 609, 577 / 655 against
551 / 666.

A unit's numbers are the same whoever computes it (``matvec_rows`` and
``lstm_units``, the kernels of the one-thread loop), so results do not depend on
the helper, and they equal ``lstm_loop``'s bit for bit. The call's arrays reach
the helper as addresses in ``ctl`` (``JOB``..), written before the call's first
post, and the helper touches them only in a half it claimed, which the caller
waits for: they are never used after the call returns.

The helper thread is ``_helper``'s kind: it spins (x86 ``pause``) for
``_helper.IDLE_SPINS`` after its last half (about 1.2 ms), sleeps in the kernel
until the next call's first post wakes it (``_helper.next_post``, about 10 s at
most), then sleeps in Python until a call
wakes it. A call that waited long for the helper's half several times (its core
taken by something else: ``SLOW_LIMIT`` waits over ``_helper.SLOW_SPINS`` spins)
sends it away for ``_helper.COOLDOWN_S``. One call uses it at a time; a call
from another thread meanwhile runs the one-thread loop.

The GRU's and the RNN's tiny loops split the same way (rows u, H + u, 2H + u of
the GRU's W_hh, row u of the RNN's; ``_gru_half``, ``_rnn_half``), and so do
eval-mode forwards of one sequence whose W_hh is too large for the tiny loops on
one core, up to ``_compiled.PAIR_MAX_BYTES`` (``_compiled._tiny_pair``): there each
core keeps its half of W_hh in its own cache, where one core, or the BLAS's two
threads, read all of it from L3 at every step.

Used for float32 tiny LSTM, GRU and RNN forwards (``_compiled._tiny``) with H >=
``MIN_H`` (by cell), a multiple of 8, where two CPUs are available to the process and NumPy's BLAS was
given two threads or more (``_threads.outer_blas_threads``: the setting the
forward was called with, so ``threadpoolctl`` limits and ``rnnlab bench --threads
1`` keep the loop on one core). ``ENABLED = False`` (or ``RNNLAB_PAIR=0``) turns
it off.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from . import _compiled, _helper, _threads

ENABLED = os.environ.get("RNNLAB_PAIR", "1") != "0"
# Measured: an LSTM of H = 128 gains, H = 64 loses (forwards 268-337 against 214-226 us best).
# GRU and RNN forwards, N=1, T=100, D=32, 10 rounds each way in turn, best of 20 a round, best /
# median us, pair against one core (2026-12-07, Intel VM): GRU H=128 303 / 309 against 300 / 306,
# H=256 610 / 620 against 854 / 861, H=512 1768 / 1831 against 5172 / 5857; RNN H=128 147 / 158
# against 127 / 130, H=256 266 / 271 against 311 / 314, H=512 629 / 640 against 946 / 1008,
# H=768 1205 / 1225 against 2911 / 3179.
MIN_H = {"lstm": 128, "gru": 256, "rnn": 256}
SLOW_LIMIT = 3

# ctl slots (int64), each on a 64-byte line of its own: POST (the helper spins on it), CLAIM
# (both threads compare-and-swap it), DONE (the caller spins on it), STOP with GRACE (0 but in
# tests: how many spins the caller leaves the helper to claim a half before it tries itself); the
# call's description from JOB on.
POST, SLEEP, CLAIM, DONE, STOP, GRACE = 0, 1, 8, 16, 24, 25     # SLEEP: see ``_helper.next_post``
JOB = 32
T_, N_, H_, U_, BASE_, REVERSE_ = range(JOB, JOB + 6)
A_, W_, B_, ZERO_, C_, CP_, TC_, OUT_, H0_, HW_, MV_ = range(JOB + 6, JOB + 17)
MODE_, RELU_, BHN_, HP_, HWN_ = range(JOB + 17, JOB + 22)      # the cell; the GRU's and the RNN's arrays
CTL_SIZE = JOB + 22
LSTM, GRU, RNN = 0, 1, 2
GATES = (4, 3, 1)

if _compiled.AVAILABLE:
    import numba
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    from ._helper import claim, grace, load_acquire, next_post, post, store_release, wait_done, wake

    @_intrinsic
    def _floats(typingctx, address):
        """An int64 address as a float32 pointer (for ``numba.carray``)."""
        if not isinstance(address, _types.Integer):
            return None
        sig = _types.CPointer(_types.float32)(address)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
        return sig, codegen

    @_compiled._jit(inline="always")
    def _lstm_half(W, x, zero, hw, A, b, c, Cp, TC, out, t, H, u0, u1, mv, k):
        """Units u0..u1-1 of step t (the loop's step k): their rows of h_prev W_hh^T (x the whole
        h_prev; mv: ``_matvec``'s kernel, or 0), the gates' blocks of rows in turn and back
        again at the next step (``_compiled.matvec_turns``), then their gates, c, tanh(c) and h."""
        for i in range(4):
            q = 3 - i if k % 2 == 1 else i
            _compiled.matvec_turns(mv, W, x, zero, hw, q * H + u0, q * H + u1, k)
        for n in range(x.shape[0]):
            _compiled.lstm_units(A[t, n], hw[n], b, c[n], Cp[t, n], TC[t, n], out[t, n], H, u0, u1)

    @_compiled._jit(inline="always")
    def _gru_half(W, x, zero, hw, A, b, b_hn, Hp, HWn, out, t, H, u0, u1, mv, k):
        """``_lstm_half`` for the GRU: units u0..u1-1 of step t, rows of the r, z and n blocks of
        W_hh, then h_prev into Hp (the cache) and the units' gates (``_compiled.gru_units``)."""
        for i in range(3):
            q = 2 - i if k % 2 == 1 else i
            _compiled.matvec_turns(mv, W, x, zero, hw, q * H + u0, q * H + u1, k)
        for n in range(x.shape[0]):
            hp, xn = Hp[t, n, u0:u1], x[n, u0:u1]
            for j in range(hp.shape[0]):
                hp[j] = xn[j]
            _compiled.gru_units(A[t, n], hw[n], b, b_hn, x[n], HWn[t, n], out[t, n], H, u0, u1)

    @_compiled._jit(inline="always")
    def _rnn_half(W, x, zero, hw, A, b, Hp, out, t, u0, u1, mv, k, relu):
        """``_lstm_half`` for the RNN: rows u0..u1-1 of W_hh, h_prev into Hp, the units' h."""
        _compiled.matvec_turns(mv, W, x, zero, hw, u0, u1, k)
        for n in range(x.shape[0]):
            hp, xn = Hp[t, n, u0:u1], x[n, u0:u1]
            for j in range(hp.shape[0]):
                hp[j] = xn[j]
            _compiled.rnn_units(A[t, n], hw[n], b, out[t, n], u0, u1, relu)

    @_compiled._jit(inline="always")
    def _half(mode, W, x, zero, hw, A, b, c, Cp, TC, out, t, H, u0, u1, mv, k, b_hn, Hp, HWn, relu):
        """Units u0..u1-1 of step t of the cell ``mode`` (LSTM: c, Cp, TC; GRU: b_hn, Hp, HWn; RNN:
        Hp, relu; the other arrays are not read)."""
        if mode == LSTM:
            _lstm_half(W, x, zero, hw, A, b, c, Cp, TC, out, t, H, u0, u1, mv, k)
        elif mode == GRU:
            _gru_half(W, x, zero, hw, A, b, b_hn, Hp, HWn, out, t, H, u0, u1, mv, k)
        else:
            _rnn_half(W, x, zero, hw, A, b, Hp, out, t, u0, u1, mv, k, relu)

    @_compiled._jit(inline="always")
    def _previous(out, h0, t, s, reverse):
        """h_{t-1} of loop step s (step t): h0, or the previous step's output."""
        if s == 0:
            return h0
        return out[t + 1] if reverse else out[t - 1]

    @_compiled._jit(nogil=True)
    def serve(ctl, idle_spins, idle_waits, wait_us):
        """The helper's loop: for each step posted, the half ``ctl[U]``..H-1 of the call described
        in ``ctl``, if it claims it first. Between steps it spins, then after ``idle_spins`` spins
        sleeps until woken (``_helper.next_post``); returns after ``idle_waits`` sleeps without a
        new step, or when told to stop (``ctl[STOP]``)."""
        s = load_acquire(ctl, POST)
        while True:
            s = next_post(ctl, POST, SLEEP, STOP, s, idle_spins, idle_waits, wait_us)
            if s < 0:
                return
            if not claim(ctl, CLAIM, s - 1, s):
                continue
            T, N, H, u, mode = ctl[T_], ctl[N_], ctl[H_], ctl[U_], ctl[MODE_]
            G = GATES[mode] * H
            k = s - ctl[BASE_]
            t = T - 1 - k if ctl[REVERSE_] != 0 else k
            A = numba.carray(_floats(ctl[A_]), (T, N, G))
            W = numba.carray(_floats(ctl[W_]), (G, H))
            b = numba.carray(_floats(ctl[B_]), (G,))
            zero = numba.carray(_floats(ctl[ZERO_]), (G,))
            out = numba.carray(_floats(ctl[OUT_]), (T, N, H))
            h0 = numba.carray(_floats(ctl[H0_]), (N, H))
            hw = numba.carray(_floats(ctl[HW_]), (N, G))
            lstm, gru = mode == LSTM, mode == GRU                # arrays of the other cells: none
            c = numba.carray(_floats(ctl[C_]), (N if lstm else 0, H))
            Cp = numba.carray(_floats(ctl[CP_]), (T if lstm else 0, N, H))
            TC = numba.carray(_floats(ctl[TC_]), (T if lstm else 0, N, H))
            b_hn = numba.carray(_floats(ctl[BHN_]), (H if gru else 0,))
            Hp = numba.carray(_floats(ctl[HP_]), (0 if lstm else T, N, H))
            HWn = numba.carray(_floats(ctl[HWN_]), (T if gru else 0, N, H))
            x = _previous(out, h0, t, k, ctl[REVERSE_] != 0)
            _half(mode, W, x, zero, hw, A, b, c, Cp, TC, out, t, H, u, H, ctl[MV_], k, b_hn, Hp, HWn,
                  ctl[RELU_] != 0)
            store_release(ctl, DONE, s)

    @_compiled._jit(nogil=True)
    def loop(ctl, mode, A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out, u, slow_spins, mv, b_hn, Hp, HWn,
             relu):
        """The caller's loop: the steps of ``_compiled.lstm_loop`` (``gru_loop``, ``rnn_loop`` for
        ``mode``), numbered on from the last claimed, units 0..u-1 here and u..H-1 wherever they
        are claimed. Describes the call in ``ctl`` for the helper first. Returns how many of
        those halves the helper computed, and how many times the caller waited more than
        ``slow_spins`` spins for one."""
        T, N, G = A.shape
        H = out.shape[2]
        base = ctl[CLAIM] + 1
        ctl[T_], ctl[N_], ctl[H_], ctl[U_], ctl[BASE_], ctl[REVERSE_] = T, N, H, u, base, reverse
        ctl[MODE_], ctl[RELU_] = mode, relu
        ctl[A_], ctl[W_], ctl[B_], ctl[ZERO_] = A.ctypes.data, W_hh.ctypes.data, b.ctypes.data, zero.ctypes.data
        ctl[C_], ctl[CP_], ctl[TC_], ctl[OUT_] = c.ctypes.data, Cp.ctypes.data, TC.ctypes.data, out.ctypes.data
        ctl[H0_], ctl[HW_], ctl[MV_] = h0.ctypes.data, hw.ctypes.data, mv
        ctl[BHN_], ctl[HP_], ctl[HWN_] = b_hn.ctypes.data, Hp.ctypes.data, HWn.ctypes.data
        slow = helped = 0
        post(ctl, POST, SLEEP, base)
        for k in range(T):
            t = T - 1 - k if reverse else k
            x = _previous(out, h0, t, k, reverse)
            s = base + k
            _half(mode, W_hh, x, zero, hw, A, b, c, Cp, TC, out, t, H, 0, u, mv, k, b_hn, Hp, HWn, relu)
            grace(ctl, CLAIM, s, ctl[GRACE])
            mine = claim(ctl, CLAIM, s - 1, s)
            if mine:
                _half(mode, W_hh, x, zero, hw, A, b, c, Cp, TC, out, t, H, u, H, mv, k, b_hn, Hp, HWn, relu)
            if k + 1 < T:
                post(ctl, POST, SLEEP, s + 1)    # h_s is whole but for the helper's half, its own next input
            if mine:
                continue
            helped += 1
            if wait_done(ctl, DONE, s) > slow_spins:     # the helper may be a step ahead: DONE s + 1
                slow += 1
        return helped, slow


def usable(H, cell="lstm"):
    """Whether a tiny loop of this cell with H hidden units may run on two cores here (the module
    docstring; ``MIN_H``)."""
    if not (ENABLED and _compiled.AVAILABLE and H >= MIN_H[cell] and H % 8 == 0):
        return False
    if _threads.cpus() < 2:
        return False
    n = _threads.outer_blas_threads()
    return n is not None and n >= 2


class Pair:
    """The helper thread and its control array; the thread starts on first use."""

    def __init__(self):
        self.ctl = np.zeros(CTL_SIZE, np.int64)
        self.busy = threading.Lock()       # held by the call using the pair
        self._wake = threading.Event()
        self._thread = None
        self.serving = False               # inside serve (spinning, asleep in it or computing)
        self.off_until = 0.0
        self.helped = 0                    # halves the helper computed in the last call

    def lstm_loop(self, A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out, mv=0):
        """``_compiled.lstm_loop`` with half of each step's units on the helper when it is there
        (mv: ``_matvec``'s kernel's address for both, or 0 for the Numba kernel). Returns False
        (nothing done) if another call holds the pair, or an array is not C-contiguous float32
        (the helper takes them by address)."""
        none = _NONE
        return self._loop(LSTM, A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out, mv, none[1], none[3], none[3],
                          False)

    def gru_loop(self, A, h0, W_hh, b, zero, b_hn, reverse, hw, Hp, HWn, out, mv=0):
        """``_compiled.gru_loop`` on the pair, as ``lstm_loop``."""
        none = _NONE
        return self._loop(GRU, A, h0, none[2], W_hh, b, zero, reverse, hw, none[3], none[3], out, mv, b_hn, Hp,
                          HWn, False)

    def rnn_loop(self, A, h0, W_hh, b, zero, reverse, hw, Hp, out, relu, mv=0):
        """``_compiled.rnn_loop`` on the pair, as ``lstm_loop``."""
        none = _NONE
        return self._loop(RNN, A, h0, none[2], W_hh, b, zero, reverse, hw, none[3], none[3], out, mv, none[1], Hp,
                          none[3], relu)

    def _loop(self, mode, A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out, mv, b_hn, Hp, HWn, relu):
        for a in (A, W_hh, b, zero, c, Cp, TC, out, h0, hw, b_hn, Hp, HWn):
            if not (a.flags.c_contiguous and a.dtype == np.float32):
                return False
        if not self.busy.acquire(blocking=False):
            return False
        try:
            self.helped, slow = loop(self.ctl, mode, A, h0, c, W_hh, b, zero, reverse, hw, Cp, TC, out,
                                     out.shape[2] // 2, _helper.SLOW_SPINS, mv, b_hn, Hp, HWn, relu)
        finally:
            self.busy.release()
        if slow >= SLOW_LIMIT:
            self.retire(cooldown=True)
        else:
            self.offer()
        return True

    def offer(self):
        """Wake the helper if it is not serving (unless cooling down)."""
        if self.serving or self.off_until > time.monotonic():
            return
        self.ctl[STOP] = 0
        if self._thread is None or not self._thread.is_alive():
            _compile_serve()
            self._thread = threading.Thread(target=self._run, name="rnnlab-pair", daemon=True)
            self._thread.start()
        self._wake.set()

    def retire(self, cooldown=False):
        """Send the helper back to sleep; with ``cooldown`` not woken again for ``_helper.COOLDOWN_S``."""
        self.ctl[STOP] = 1
        if _compiled.AVAILABLE:
            wake(self.ctl, POST)             # a helper asleep in ``serve`` sees STOP now
        if cooldown:
            self.off_until = time.monotonic() + _helper.COOLDOWN_S

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.ctl[STOP] != 0:
                continue
            self.serving = True
            try:
                serve(self.ctl, _helper.IDLE_SPINS, _helper.IDLE_WAITS, _helper.WAIT_US)
            finally:
                self.serving = False

    def stop(self, timeout=1.0):
        """Send the helper away and wait up to ``timeout`` s for it to be asleep (tests)."""
        self.retire()
        return _helper.left(self, timeout)


def _compile_serve():
    """``serve`` compiled (or loaded from Numba's cache) here, before the helper thread starts,
    by a call that returns at once (STOP set). Left to the helper's first call, a compile held
    the GIL for 8-29 s in stretches while the caller's forwards, which take it back between
    their compiled calls, ran 5x slower (an LSTM N=1, H=512 forward 25-45 against 3.6 ms); a
    process that ended first left ``serve`` uncached, so the next one paid again."""
    ctl = np.zeros(CTL_SIZE, np.int64)
    ctl[STOP] = 1
    serve(ctl, _helper.IDLE_SPINS, _helper.IDLE_WAITS, _helper.WAIT_US)


# Empty float32 arrays of 1 to 3 dimensions for the arrays a cell does not have (``Pair._loop``).
_NONE = {n: np.empty((0,) * n, np.float32) for n in (1, 2, 3)}

PAIR = Pair()


def _after_fork():
    global PAIR
    PAIR = Pair()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
