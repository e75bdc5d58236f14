"""The tiny loops' matrix-vector product, V rows of W at a time, in LLVM IR.

A tiny LSTM loop (one or two sequences, ``_compiled._tiny``) multiplies h_{t-1} by
W_hh at every step: out[r] = b[r] + sum_k x[k] W[r, k] for the rows r of W (G, K).
The Numba kernel (``_compiled.matvec_rows``) takes four rows at a time, each a dot
product that LLVM vectorises along k and then sums across the vector's lanes, one
horizontal sum per row: the sums cost about as much as the multiply-adds.

This kernel takes V rows at a time (V floats a vector: 16 with AVX-512, else 8),
one accumulator vector per row along k (V independent chains of FMAs), and adds
the V accumulators' lanes together in one tree of shuffles, log2(V) levels, into
one vector that holds the V rows' sums:

    level 1: (a, b) -> [a[l] + a[l + V/2] | b[l] + b[l + V/2]]   (V/2 lanes of each)
    level 2: each half the same way, V/4 lanes of each of four rows, and so on

so every row's lanes are added in the same order wherever the row sits in its
group: a row's sum does not depend on which rows are computed with it, and
``_pair``'s two cores, each with its own rows, give the one-core loop's bits. Rows
past the end of a last, partial group read the last row again (their lanes are not
stored). Measured on the Intel machine (2026-12-07), one thread, W in L2, best of
10 x 2000 calls, W on a cache line (as the layers make their parameters:
``_steps.aligned_empty``): (512, 128) 2.35 against the Numba kernel's 2.81 us,
(1024, 256) 8.67 against 10.56, (512, 32) 0.86 against 0.95; with W 16 bytes off a
line both are slower, (512, 128) 3.39-3.43 against 3.77-4.09 us; (2048, 512), from
L3, a tie at 144 us. (Packing W so that the kernel reads it in one stream gained
another 12 % off a line, 3.01 against 3.40 us, not enough to pay for the packing at
every call.)

K must be a multiple of V (``usable``); the callers keep the Numba kernel
otherwise, for the whole call. Compiled for this CPU by llvmlite when first used
(as ``_panels``); ``ENABLED = False`` (or ``RNNLAB_MATVEC=0``) keeps the Numba
kernel.
"""
from __future__ import annotations

import os
import threading

ENABLED = os.environ.get("RNNLAB_MATVEC", "1") != "0"

_state = {"tried": False, "engine": None, "address": 0, "error": None, "vector": None}
_lock = threading.Lock()


def vector():
    """Floats a vector of the kernel: ``_panels``'s choice for this CPU (16 with AVX-512F, else 8)."""
    if _state["vector"] is None:
        from . import _panels
        _state["vector"] = _panels._vector()
    return _state["vector"]


def _mask(lanes):
    return "<" + ", ".join(f"i32 {k}" for k in lanes) + ">"


def module_ir(V):
    """The kernel ``rnnlab_matvec(x, w, K, R, b, out)`` for V-float vectors, as LLVM IR text:
    out[r] = b[r] + sum_k x[k] w[r K + k] for r < R (x (K,), w (R, K), b and out (R,)); K a
    multiple of V."""
    vt = f"<{V} x float>"
    lines = [f"declare {vt} @llvm.fmuladd.v{V}f32({vt}, {vt}, {vt})",
             "define void @rnnlab_matvec(ptr %x, ptr %w, i64 %K, i64 %R, ptr %b, ptr %out) {",
             "entry:",
             f"  %rup = add i64 %R, {V - 1}",
             f"  %ng = udiv i64 %rup, {V}",
             f"  %nc = udiv i64 %K, {V}",
             "  %last = sub i64 %R, 1",
             "  %anyg = icmp sgt i64 %ng, 0",
             "  br i1 %anyg, label %group, label %done",
             "group:",
             "  %g = phi i64 [0, %entry], [%g1, %stored]",
             f"  %r0 = mul i64 %g, {V}"]
    add = lines.append
    for i in range(V):                                     # the group's row pointers, past R: the last row
        add(f"  %ri{i} = add i64 %r0, {i}")
        add(f"  %rc{i} = icmp sgt i64 %ri{i}, %last")
        add(f"  %rr{i} = select i1 %rc{i}, i64 %last, i64 %ri{i}")
        add(f"  %ro{i} = mul i64 %rr{i}, %K")
        add(f"  %rp{i} = getelementptr float, ptr %w, i64 %ro{i}")
    add("  %anyc = icmp sgt i64 %nc, 0")
    add("  br i1 %anyc, label %kloop, label %kend")
    add("kloop:")                                          # a[i] += w[row i, kV:kV+V] * x[kV:kV+V]
    add("  %c = phi i64 [0, %group], [%c1, %kloop]")
    for i in range(V):
        add(f"  %a{i} = phi {vt} [zeroinitializer, %group], [%n{i}, %kloop]")
    add(f"  %ko = mul i64 %c, {V}")
    add("  %xp = getelementptr float, ptr %x, i64 %ko")
    add(f"  %xv = load {vt}, ptr %xp, align 4")
    for i in range(V):
        add(f"  %wp{i} = getelementptr float, ptr %rp{i}, i64 %ko")
        add(f"  %wv{i} = load {vt}, ptr %wp{i}, align 4")
        add(f"  %n{i} = call {vt} @llvm.fmuladd.v{V}f32({vt} %wv{i}, {vt} %xv, {vt} %a{i})")
    add("  %c1 = add i64 %c, 1")
    add("  %cm = icmp slt i64 %c1, %nc")
    add("  br i1 %cm, label %kloop, label %kend")
    add("kend:")
    vecs = []
    for i in range(V):
        add(f"  %e{i} = phi {vt} [zeroinitializer, %group], [%n{i}, %kloop]")
        vecs.append((f"%e{i}", [i] * V))                    # (value, the row of each lane)
    width, level = V, 0
    while len(vecs) > 1:                                    # a level of the tree: vectors in pairs
        half = width // 2
        nxt = []
        for j in range(0, len(vecs), 2):
            (pa, ra), (pb, rb) = vecs[j], vecs[j + 1]
            lo, hi, rows = [], [], []
            for s in range(0, V, width):                    # each run of ``width`` lanes: one row's
                lo += list(range(s, s + half)) + list(range(V + s, V + s + half))
                hi += list(range(s + half, s + width)) + list(range(V + s + half, V + s + width))
                rows += [ra[s]] * half + [rb[s]] * half
            add(f"  %l{level}_{j} = shufflevector {vt} {pa}, {vt} {pb}, <{V} x i32> {_mask(lo)}")
            add(f"  %h{level}_{j} = shufflevector {vt} {pa}, {vt} {pb}, <{V} x i32> {_mask(hi)}")
            add(f"  %s{level}_{j} = fadd {vt} %l{level}_{j}, %h{level}_{j}")
            nxt.append((f"%s{level}_{j}", rows))
        vecs, width, level = nxt, half, level + 1
    total, rows = vecs[0]                                   # lane l: the sum of row rows[l]
    add(f"  %sum = shufflevector {vt} {total}, {vt} poison, <{V} x i32> {_mask([rows.index(r) for r in range(V)])}")
    add("  %left = sub i64 %R, %r0")
    add(f"  %full = icmp sge i64 %left, {V}")
    add("  br i1 %full, label %whole, label %part")
    add("whole:")
    add("  %bp = getelementptr float, ptr %b, i64 %r0")
    add(f"  %bv = load {vt}, ptr %bp, align 4")
    add(f"  %res = fadd {vt} %sum, %bv")
    add("  %op = getelementptr float, ptr %out, i64 %r0")
    add(f"  store {vt} %res, ptr %op, align 4")
    add("  br label %stored")
    add("part:")                                            # a last, partial group: row by row
    for i in range(V):
        add(f"  %pi{i} = icmp sgt i64 %left, {i}")
        add(f"  br i1 %pi{i}, label %ps{i}, label %stored")
        add(f"ps{i}:")
        add(f"  %pr{i} = add i64 %r0, {i}")
        add(f"  %pbp{i} = getelementptr float, ptr %b, i64 %pr{i}")
        add(f"  %pb{i} = load float, ptr %pbp{i}, align 4")
        add(f"  %pe{i} = extractelement {vt} %sum, i32 {i}")
        add(f"  %pv{i} = fadd float %pe{i}, %pb{i}")
        add(f"  %pop{i} = getelementptr float, ptr %out, i64 %pr{i}")
        add(f"  store float %pv{i}, ptr %pop{i}, align 4")
    add("  br label %stored")
    add("stored:")
    add("  %g1 = add i64 %g, 1")
    add("  %gm = icmp slt i64 %g1, %ng")
    add("  br i1 %gm, label %group, label %done")
    add("done:")
    add("  ret void")
    add("}")
    return "\n".join(lines)


def _compile(V):
    """The kernel for V-float vectors compiled for this CPU: (its engine, the kernel's address)."""
    from . import _panels
    engine = _panels.compile_ir(module_ir(V))
    return engine, engine.get_function_address("rnnlab_matvec")


def address():
    """The kernel's address (compiled on first call), or 0 where it cannot be compiled (no
    llvmlite, or it failed: ``describe``) or ``ENABLED`` is off."""
    if not ENABLED:
        return 0
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["engine"], _state["address"] = _compile(vector())
            except Exception as e:                           # noqa: BLE001 (any failure: the Numba kernel)
                _state["error"] = f"{type(e).__name__}: {e}"
        return _state["address"]


def usable(K):
    """The kernel's address for rows of K floats, or 0 (the callers keep the Numba kernel)."""
    return address() if K > 0 and K % vector() == 0 else 0


def describe():
    """For ``rnnlab.fast.describe``."""
    if not ENABLED:
        return "off (RNNLAB_MATVEC=0)"
    if address() == 0:
        return f"unavailable ({_state['error']})"
    return f"{vector()} rows at a time, {32 * vector()}-bit vectors"
