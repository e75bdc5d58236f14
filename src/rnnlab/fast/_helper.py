"""A second core for the streamed step: every layer's recurrent product, on a helper thread.

In a streamed step (T = 1) of a stack, layer k's recurrent product h_{t-1} W_hh^T
needs only the state carried in, not this step's lower layers; only the input
products are sequential (layer k's input is layer k-1's new h). So while the
calling thread works down the stack (input products and gates, ``fast/_stream.py``),
a helper thread computes the recurrent products of all layers, in order, on the
other core. At N = 1, H = 128 a 2-layer LSTM's four 512 x 128 products read 1 MB of
weights a step, twice the L2 cache of a core here, at the ~40 GB/s one core gets
from L3; with the helper each core reads half of them.

The two threads meet through atomics on one int64 array per workspace, ``ctl``:

* the caller copies h_{t-1} of every layer into the workspace (Hp), then
  publishes the step's number s (``ctl[POST]``), if the helper serves this
  workspace with the layer's current weights (``begin``);
* layer k's product belongs to whoever first moves ``ctl[CLAIM + k]`` from s - 1
  to s (compare-and-swap). The helper, spinning, takes them in order; the caller
  takes any it reaches first, so with no helper running, or a late one, it does
  them all itself as before;
* the helper publishes ``ctl[DONE + k] = s`` once product k is written; the caller
  waits for that only for a product the helper claimed.

So the results do not depend on who computed what (the same ``matvec`` on the
same numbers). The helper spins (x86 ``pause``) for ``IDLE_SPINS`` after its last
product, then sleeps in the kernel until a step is posted (a futex on ``ctl[POST]``:
``next_post``, ``post``) for up to ``IDLE_WAITS`` x ``WAIT_US``, then returns to Python
and sleeps until a step wakes it. It serves one workspace at a time (another
layer streaming meanwhile runs on one core). It
holds the weights it was given, so their memory is not reused while it serves:
a step whose W_hh or b_hh is not at the address the helper was given (a
parameter replaced) is not published, and the helper is sent away (``ctl[STOP]``);
so is one that kept the caller waiting long (``SLOW_SPINS``) several times
within a few thousand steps (its core taken by something else), for
``COOLDOWN_S``.

Used where two CPUs are available to the process and the BLAS may use two
threads or more (so ``threadpoolctl``'s limits and ``rnnlab bench --threads 1``
keep the step on one core); ``ENABLED = False`` (or ``RNNLAB_STREAM_HELPER=0``)
turns it off.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
import time

import numpy as np

from . import _compiled, _threads

ENABLED = os.environ.get("RNNLAB_STREAM_HELPER", "1") != "0"

# ctl layout (int64 slots). POST on a 64-byte line of its own (the helper spins on it); STOP,
# SLOW, STEP, BOUND and GRACE on one (the caller's; GRACE, 0 but in tests, is how many spins the
# caller leaves the helper to claim a product before it tries itself); the claims, the dones,
# and the data addresses of the weights the helper was given (WPTR: W_hh, BPTR: b_hh of each
# layer) on one line each, for up to 8 layers (a deeper stack runs without the helper).
# SLEEP (on POST's line) is 1 while the helper sleeps in ``futex_wait`` (``next_post``). MV_X and
# MV_H (on the caller's line, set once with the workspace) hold the address of ``_matvec``'s
# kernel for products whose rows are D (layer 0's W_ih) and H long, or 0 where that length is
# not a whole number of the kernel's vectors (``_compiled.matvec_turns`` then uses Numba's).
POST, SLEEP, STOP, SLOW, STEP, BOUND, GRACE, CLAIM, DONE, WPTR, BPTR = 0, 1, 8, 9, 10, 11, 12, 16, 24, 32, 40
MV_X, MV_H = 13, 14
MAX_LAYERS = 8
CTL_SIZE = 48
# Spins of the wait loops: a spin (an atomic load and ``pause``) takes 30 ns here (AMD Zen 3,
# measured over a million), so the helper spins for about 1.2 ms after its last product, and a
# wait of more than about 240 us counts as slow. SLOW_LIMIT slow waits within one window of
# SLOW_WINDOW steps (a power of two) send the helper away for COOLDOWN_S: a rare wait (the VM
# or the OS taking the helper's core for a moment) costs less than going without it.
IDLE_SPINS = 40_000
SLOW_SPINS = 8_000
# ...plus one spin for every SLOW_FLOATS_A_SPIN weights of the product waited for: about 1 ns a
# weight (its 4 bytes read at 4 GB/s, a fifth or less of the 21-43 GB/s one core read 16.8 MB of
# weights at on the 2-core Zen 4 VM, 2026-12-07, where a spin took 24.6 ns). There four (2048,
# 512) products (H = 512, 4 MB each) one after the other on one core took 731-949 us, 183-237 us
# each (mean of 200 rounds, six runs), so a wait for the helper's product can pass the 200 us of
# SLOW_SPINS alone without its core being taken: in 2 of 8 runs of ``rnnlab bench``'s streaming
# point at H = 512 the helper was sent away for COOLDOWN_S and steps ran on one core (0 of 8
# with this bound).
SLOW_FLOATS_A_SPIN = 25
# After spinning, the helper sleeps in the kernel on the step number itself (Linux's futex, in
# waits of up to WAIT_US) for IDLE_WAITS waits (about 10 s) before it goes back to Python to
# sleep; the caller that posts a step while it sleeps wakes it (``post``). On this VM that took
# 310-380 us (a 2-step pair forward 10 ms after the helper fell asleep against the same forward
# with the helper spinning, difference of medians of 30, two runs): the host must run the idle
# virtual CPU again. Waking it from Python instead takes the interpreter lock, which a caller
# streaming steps holds for up to 5 ms (the switch interval): in ``rnnlab bench``'s turns, 0.45 s
# apart, the helper that had gone back to Python after 0.3 s of polling missed 754 of the 3614
# steps of 7 turns (H = 128; 226 with the stacks releasing the lock; none with this wait, in
# 4265 steps, the stacks holding the lock as they do).
# Without futexes (not Linux on x86-64) a wait is a usleep(POLL_US) poll (160 us here with the
# kernel's timer slack) and IDLE_WAITS of them last about 0.3 s.
FUTEX = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
POLL_US = 100
WAIT_US = 100_000 if FUTEX else POLL_US
IDLE_WAITS = 100 if FUTEX else 2_000
SLOW_WINDOW = 4096
SLOW_LIMIT = 3
COOLDOWN_S = 1.0
# What the stacks return: nothing done (an input not finite), done, done but the helper must be
# sent away: its weights are not the layer's any more (RETIRE), or it kept the caller waiting (SLOW).
NOT_FINITE, DONE_OK, DONE_RETIRE, DONE_SLOW = 0, 1, 2, 3

if _compiled.AVAILABLE:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    def _is_ctl(a):
        return isinstance(a, _types.Array) and a.dtype == _types.int64 and a.ndim == 1

    def _slot(context, builder, aryty, ary, idx):
        a = context.make_array(aryty)(context, builder, ary)
        return _cgutils.get_item_pointer(context, builder, aryty, a, [idx])

    def _atomic_load(order):
        """An intrinsic (ctl, i) -> ctl[i]: an atomic load with this memory order."""
        @_intrinsic
        def load(typingctx, ctl, i):
            if not _is_ctl(ctl):
                return None

            def codegen(context, builder, sig, args):
                return builder.load_atomic(_slot(context, builder, sig.args[0], args[0], args[1]), order, 8)
            return _types.int64(ctl, i), codegen
        return load

    def _atomic_store(order):
        """An intrinsic (ctl, i, v): ctl[i] = v, an atomic store with this memory order."""
        @_intrinsic
        def store(typingctx, ctl, i, v):
            if not _is_ctl(ctl):
                return None

            def codegen(context, builder, sig, args):
                v = context.cast(builder, args[2], sig.args[2], _types.int64)
                builder.store_atomic(v, _slot(context, builder, sig.args[0], args[0], args[1]), order, 8)
                return context.get_dummy_value()
            return _types.void(ctl, i, v), codegen
        return store

    # acquire / release: what was written before a release store is seen by the acquire load
    # that reads it (and the load is made again each time, never hoisted out of a spin loop);
    # seq_cst: one total order over all such operations (``post`` and ``next_post`` need it:
    # each stores, then loads the slot the other stores).
    load_acquire, store_release = _atomic_load("acquire"), _atomic_store("release")
    load_seqcst, store_seqcst = _atomic_load("seq_cst"), _atomic_store("seq_cst")

    @_intrinsic
    def claim(typingctx, ctl, i, expected, new):
        """Compare-and-swap: ctl[i] = new if it was expected; whether it was."""
        if not _is_ctl(ctl):
            return None

        def codegen(context, builder, sig, args):
            e = context.cast(builder, args[2], sig.args[2], _types.int64)
            n = context.cast(builder, args[3], sig.args[3], _types.int64)
            p = _slot(context, builder, sig.args[0], args[0], args[1])
            return builder.extract_value(builder.cmpxchg(p, e, n, "acq_rel", "acquire"), 1)
        return _types.boolean(ctl, i, expected, new), codegen

    @_intrinsic
    def pause(typingctx):
        """The x86 spin-wait hint (``llvm.x86.sse2.pause``)."""
        def codegen(context, builder, sig, args):
            fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(_ir.VoidType(), []),
                                                 "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()
        return _types.void(), codegen

    _SYS_FUTEX, _FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 202, 128, 129      # x86-64 Linux

    def _syscall(builder, args):
        i64 = _ir.IntType(64)
        fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(i64, [i64], var_arg=True),
                                             "syscall")
        builder.call(fn, [_ir.Constant(i64, a) if isinstance(a, int) else a for a in args])

    @_intrinsic
    def futex_wait(typingctx, ctl, i, expected, us):
        """Sleep until woken (``futex_wake``) or ``us`` microseconds passed, unless the low 32
        bits of ctl[i] differ from those of ``expected`` (checked by the kernel as it goes to
        sleep, so a wake between the caller's check and the sleep is not lost). Without
        futexes (``FUTEX``): usleep(min(us, POLL_US))."""
        if not (_is_ctl(ctl) and isinstance(expected, _types.Integer) and isinstance(us, _types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            i32, i64 = _ir.IntType(32), _ir.IntType(64)
            us_ = context.cast(builder, args[3], sig.args[3], _types.int64)
            if not FUTEX:                                      # libc's usleep(min(us, POLL_US))
                fn = _cgutils.get_or_insert_function(builder.module, _ir.FunctionType(i32, [i32]), "usleep")
                short = builder.select(builder.icmp_signed("<", us_, _ir.Constant(i64, POLL_US)), us_,
                                       _ir.Constant(i64, POLL_US))
                builder.call(fn, [builder.trunc(short, i32)])
                return context.get_dummy_value()
            addr = builder.ptrtoint(_slot(context, builder, sig.args[0], args[0], args[1]), i64)
            e = context.cast(builder, args[2], sig.args[2], _types.int64)
            low = builder.and_(e, _ir.Constant(i64, 0xFFFFFFFF))
            ts = _cgutils.alloca_once(builder, _ir.LiteralStructType([i64, i64]))     # struct timespec
            million = _ir.Constant(i64, 1_000_000)
            builder.store(builder.sdiv(us_, million), builder.gep(ts, [_ir.Constant(i32, 0), _ir.Constant(i32, 0)]))
            builder.store(builder.mul(builder.srem(us_, million), _ir.Constant(i64, 1000)),
                          builder.gep(ts, [_ir.Constant(i32, 0), _ir.Constant(i32, 1)]))
            _syscall(builder, [_SYS_FUTEX, addr, _FUTEX_WAIT_PRIVATE, low, builder.ptrtoint(ts, i64), 0, 0])
            return context.get_dummy_value()
        return _types.void(ctl, i, expected, us), codegen

    @_intrinsic
    def futex_wake(typingctx, ctl, i):
        """Wake a thread sleeping in ``futex_wait`` on ctl[i] (nothing without futexes)."""
        if not _is_ctl(ctl):
            return None

        def codegen(context, builder, sig, args):
            if FUTEX:
                addr = builder.ptrtoint(_slot(context, builder, sig.args[0], args[0], args[1]),
                                        _ir.IntType(64))
                _syscall(builder, [_SYS_FUTEX, addr, _FUTEX_WAKE_PRIVATE, 1, 0, 0, 0])
            return context.get_dummy_value()
        return _types.void(ctl, i), codegen

    @_compiled._jit(inline="always")
    def post(ctl, post_, sleep, s):
        """The caller: publish step s in ``ctl[post_]``, and wake the helper if it sleeps
        (``ctl[sleep]``). The store and the load are sequentially consistent, as are the
        helper's in ``next_post``, so one of the two sees the other's: a helper about to sleep
        either sees s or is woken (and a wake before it sleeps finds ctl[post_] changed)."""
        store_seqcst(ctl, post_, s)
        if load_seqcst(ctl, sleep) != 0:
            futex_wake(ctl, post_)

    @_compiled._jit()
    def wake(ctl, post_):
        """Wake the helper sleeping on ``ctl[post_]`` (from Python, after setting its STOP)."""
        futex_wake(ctl, post_)

    @_compiled._jit(inline="always")
    def next_post(ctl, post_, sleep, stop, last, idle_spins, idle_waits, wait_us):
        """A helper's wait for work: the first number in ``ctl[post_]`` other than ``last``, or -1
        when it should leave: told to stop (``ctl[stop]``, checked before anything new is
        claimed), or ``idle_spins`` spins and then ``idle_waits`` sleeps (``futex_wait``, up to
        ``wait_us`` each, ``ctl[sleep]`` = 1 meanwhile) passed without a new number."""
        spins = waits = 0
        while True:
            if load_acquire(ctl, stop) != 0:
                return -1
            s = load_acquire(ctl, post_)
            if s != last:
                return -1 if load_acquire(ctl, stop) != 0 else s
            if spins < idle_spins:
                spins += 1
                pause()
            elif waits < idle_waits:
                waits += 1
                store_seqcst(ctl, sleep, 1)
                if load_seqcst(ctl, post_) == last and load_acquire(ctl, stop) == 0:
                    futex_wait(ctl, post_, last, wait_us)
                store_release(ctl, sleep, 0)
            else:
                return -1

    @_compiled._jit(nogil=True)
    def serve(ctl, Hp, W_hh, B_hh, HW, idle_spins, idle_waits, wait_us):
        """The helper's loop: for each step posted, every layer's HW[k] = Hp[k] W_hh[k]^T + B_hh[k]
        it can claim, in order. Between steps it spins, then after ``idle_spins`` spins sleeps
        until woken (``next_post``); returns after ``idle_waits`` sleeps without a new step, or
        when told to stop (``ctl[STOP]``, checked before claiming anything of a new step)."""
        s = load_acquire(ctl, POST)
        while True:
            s = next_post(ctl, POST, SLEEP, STOP, s, idle_spins, idle_waits, wait_us)
            if s < 0:
                return
            for k in range(Hp.shape[0]):
                if claim(ctl, CLAIM + k, s - 1, s):
                    product(ctl[MV_H], W_hh[k], Hp[k], B_hh[k], HW[k], s)
                    store_release(ctl, DONE + k, s)

    @_compiled._jit(inline="always")
    def product(mv, W, x, b, out, s):
        """out = x W^T + b, the streamed step's products (step s: W's rows read back and forth
        from step to step, ``_compiled.matvec_turns``; mv: ``_matvec``'s kernel, or 0)."""
        _compiled.matvec_turns(mv, W, x, b, out, 0, W.shape[0], s)

    @_compiled._jit(inline="always")
    def input_product(ctl, k, W, x, b, out, s):
        """Layer k's x W_ih^T + b in a streamed step s (``product`` with the kernel for rows of D
        floats at layer 0, of H after: ``MV_X``, ``MV_H``)."""
        product(ctl[MV_X if k == 0 else MV_H], W, x, b, out, s)

    @_compiled._jit(inline="always")
    def begin(ctl, Ws, Bs):
        """The caller, once every layer's h_prev is in Hp: number the step and publish it to the
        helper if it serves this workspace with these very weights (Ws, Bs: the stack's
        (W_ih_l0, W_hh_l0, ...) and biases; their W_hh and b_hh data addresses against those it
        was given). Returns the step's number and ``DONE_OK``, or ``DONE_RETIRE`` / ``DONE_SLOW``
        when the helper must be sent away (the step is then not published: the caller does all
        of it)."""
        s = ctl[STEP] + 1
        ctl[STEP] = s
        if ctl[BOUND] == 0:
            return s, DONE_OK
        for k in range(len(Ws) // 2):
            if Ws[2 * k + 1].ctypes.data != ctl[WPTR + k] or Bs[2 * k + 1].ctypes.data != ctl[BPTR + k]:
                return s, DONE_RETIRE
        if ctl[SLOW] >= SLOW_LIMIT:
            return s, DONE_SLOW
        if s % SLOW_WINDOW == 0:
            ctl[SLOW] = 0                    # a new window for counting slow waits
        post(ctl, POST, SLEEP, s)
        return s, DONE_OK

    @_compiled._jit(inline="always")
    def grace(ctl, i, s, spins):
        """The caller leaves the helper up to ``spins`` spins to claim step s (ctl[i] = s) before
        it tries to claim it itself (``GRACE``: 0 but in tests)."""
        while spins > 0 and load_acquire(ctl, i) != s:
            spins -= 1
            pause()

    @_compiled._jit(inline="always")
    def wait_done(ctl, i, s):
        """The caller's wait for the helper's mark ctl[i] >= s on work it claimed; the spins it took."""
        spins = 0
        while load_acquire(ctl, i) < s:
            pause()
            spins += 1
        return spins

    @_compiled._jit(inline="always")
    def recurrent(ctl, s, k, W, h, b, out):
        """The caller: layer k's out = h W^T + b for step s, computed here unless the helper has
        claimed it, then waited for (a long wait is counted in ``ctl[SLOW]``)."""
        grace(ctl, CLAIM + k, s, ctl[GRACE])
        if claim(ctl, CLAIM + k, s - 1, s):
            product(ctl[MV_H], W, h, b, out, s)
            return
        if wait_done(ctl, DONE + k, s) > SLOW_SPINS + W.size // SLOW_FLOATS_A_SPIN:
            ctl[SLOW] += 1


def allowed(layers):
    """Whether a stack of this many layers may use the helper: enabled, compiled kernels, at
    most ``MAX_LAYERS``, two CPUs for this process and the BLAS allowed two threads or more."""
    if not (ENABLED and _compiled.AVAILABLE and layers <= MAX_LAYERS):
        return False
    if _threads.cpus() < 2:
        return False
    libs = _threads._blas_libs()
    return not libs or max(lib.num_threads for lib in libs) >= 2


def new_ctl(D=0, H=0):
    """A workspace's control array, with the matrix-vector kernel's address for rows of D and of
    H floats where it takes them (``MV_X``, ``MV_H``)."""
    ctl = np.zeros(CTL_SIZE, np.int64)
    if _compiled.AVAILABLE:
        from . import _matvec
        ctl[MV_X], ctl[MV_H] = _matvec.usable(D), _matvec.usable(H)
    return ctl


class Helper:
    """The one helper thread and the workspace it serves; started on first use.

    A workspace (``fast/_stream.Workspace``) has ``ctl``, ``Hp``, ``HW`` and ``off_until``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self.ws = None            # the workspace served (or to serve once awake)
        self.args = None          # serve's arguments for it
        self.serving = False      # inside serve (spinning or computing)

    def after_step(self, ws, status, Ws, Bs):
        """After a compiled step of ``ws`` that returned ``status`` (``begin``'s): send the helper
        away if it must go, else make sure it serves ws from the next step on if it can."""
        if status != DONE_OK:
            self.retire(ws, cooldown=status == DONE_SLOW)
        elif ws.helper and (self.ws is not ws or not self.serving):
            self.offer(ws, Ws, Bs)

    def offer(self, ws, Ws, Bs):
        """After a step of ``ws`` (the stack's weights Ws, Bs) that the helper did not serve: wake
        it for ws, or give it ws if it is free (from the next step on); else ws's steps run on
        one core."""
        if self.ws is ws:
            self._wake.set()
            return
        if ws.off_until > time.monotonic():
            return
        if self.serving:
            # serving another workspace: if that one's stream has paused (the helper asleep on it,
            # after IDLE_SPINS without a step), send the helper away from it; ws gets it at a
            # next step. (Bound to a paused stream for up to IDLE_WAITS x WAIT_US, it left a
            # second stream on one core: a 2-layer LSTM at H=512 streamed after one at H=128
            # took 200-261 us a step against 103 with the helper.)
            old = self.ws
            if old is not None and old.ctl[SLEEP] == 1:
                self.retire(old)
            return
        with self._lock:
            if self.serving:
                return
            if self.ws is not None:
                self.ws.ctl[BOUND] = 0
            ctl = ws.ctl
            for k in range(len(Ws) // 2):
                ctl[WPTR + k] = Ws[2 * k + 1].ctypes.data
                ctl[BPTR + k] = Bs[2 * k + 1].ctypes.data
            ctl[STOP] = 0
            ctl[BOUND] = 1
            self.ws = ws
            self.args = (ctl, ws.Hp, Ws[1::2], Bs[1::2], ws.HW, IDLE_SPINS, IDLE_WAITS, WAIT_US)   # keeps the weights alive
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rnnlab-stream-helper", daemon=True)
                self._thread.start()
        self._wake.set()

    def retire(self, ws, cooldown=False):
        """Stop serving ws: it publishes no more steps, and the helper, seeing STOP, claims
        nothing more and goes back to sleep. With ``cooldown`` (it kept the caller waiting)
        ws is not served again for ``COOLDOWN_S``."""
        ctl = ws.ctl
        ctl[BOUND] = 0
        ctl[STOP] = 1
        if _compiled.AVAILABLE:
            wake(ctl, POST)                  # a helper asleep on this workspace sees STOP now
        if cooldown:
            ctl[SLOW] = 0
            ws.off_until = time.monotonic() + COOLDOWN_S
        with self._lock:
            if self.ws is ws:
                self.ws = self.args = None

    def _run(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                args = self.args
                if args is None:
                    continue
                self.serving = True
            try:
                serve(*args)
            except Exception:                # cannot compile for these arrays: their layer does without
                with self._lock:
                    ws = self.ws
                    if ws is not None and ws.ctl is args[0]:
                        ws.ctl[BOUND] = 0
                        ws.helper = False
                        self.ws = self.args = None
            finally:
                args = None                  # let go of the arrays while asleep
                with self._lock:
                    self.serving = False

    def stop(self, timeout=1.0):
        """Stop serving and wait up to ``timeout`` s for the helper to be back asleep (tests)."""
        if self.ws is not None:
            self.retire(self.ws)
        return left(self, timeout)


def left(helper, timeout):
    """Wait up to ``timeout`` s for a helper sent away to leave ``serve`` (``helper.serving``
    False: back asleep in Python); whether it did."""
    end = time.monotonic() + timeout
    while helper.serving and time.monotonic() < end:
        time.sleep(0.001)
    return not helper.serving


HELPER = Helper()


def _after_fork():
    global HELPER
    HELPER = Helper()        # the child has no helper thread; a new one starts on first use


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
