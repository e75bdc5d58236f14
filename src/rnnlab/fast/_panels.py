"""One core's GEMM for the loops' per-step products: B packed once a call, register tiles in LLVM IR.

A loop's step product out (N, C) = x (N, K) B (K, C) has the same B at every
step (W_hh^T forward, W_hh backward). OpenBLAS repacks B at every call and, on
one thread, reached 57-76 GFLOP/s for the steps of the bench's sizes here (best
of 300, its faster way round at each size). This
module packs B once a call into panels of 16 columns, panel p holding
B[:, 16p:16p+16] row after row ((C / 16, K * 16), so one step of k reads 16
consecutive floats), and multiplies with a register-tiled kernel:

    for each panel p:                  (its K x 16 floats stay in L1 / L2)
        for each block of 6 rows of x: (the last 7 or 8 rows as 4 + 3 or 4 + 4;
                                        1 to 5 for the last block otherwise)
            acc (6 x 16, twelve 8-float vector registers) = 0
            for k in 0..K-1:
                acc[r, :] += x[r, k] * B_p[k, :]   (2 vector loads, 6 broadcasts, 12 FMAs)
            out[rows, 16p:16p+16] = acc  (or += acc, ``acc`` set)

The kernel is written as LLVM IR with explicit <8 x float> vectors and
``llvm.fmuladd`` (one FMA where the CPU has them) and compiled for this CPU by
llvmlite (which Numba runs on) when first used; the compiled loops call it
through its address (``_compiled._panels_call``). Measured on the 2-core AVX2
machine, one thread, best of 300: (16, 256) x (256, 1024) 94.9 us against
OpenBLAS's 122.2 us (its faster way round, W h^T) = 88 against 69 GFLOP/s; (16,
1024) x (1024, 256) 95.1 against 126.3 us; (8, 256) x (256, 1024) 73.8 against
133.4 us; (64, 512) x (512, 2048) 1622 against 1749 us. For the input
projections (thousands of rows) it only ties OpenBLAS, which keeps them.

The last rows: a tile of r rows keeps 2r chains of FMAs going, and Zen 3 needs 8
(two FMA units, 4 cycles each) to stay busy, so a tile of 1 or 2 rows runs at a
quarter or half speed. Rows left over after the 6-row tiles as 7 or 8 therefore
go as 4 + 3 or 4 + 4 (``SPLIT_TAIL``; ``RNNLAB_PANELS_TAIL=0`` restores 6 + 1 and
6 + 2). Interleaved in one process, 20 rounds, median of the rounds' best of 30:
(32, 512) x (512, 2048) 693 against 721 us, (32, 2048) x (2048, 512) 686 against
717 us, (32, 256) x (256, 1024) 178 against 186 us, (8, 256) x (256, 1024) 50.5
against 59.8 us; (64, 512) x (512, 2048), whose tiles did not change, 1365
against 1353 us. A row's sums do not depend on its tile: the results are the
same bits.

Where the CPU has 512-bit vectors (AVX-512F) the kernel uses them: panels of 32 columns (two
<16 x float> vectors) and tiles of 8 rows, 16 chains of FMAs in 16 of the 32 vector registers
(``LAYOUTS``; ``RNNLAB_PANELS_VECTOR=8`` keeps the 256-bit layout). Measured on the 2-core AMD
EPYC with AVX-512 (Zen 5, 2026-12-07), one thread, best of 5 x 300 calls, GFLOP/s, 256-bit
layout (6 x 16) / 512-bit layouts 8 x 32, 6 x 32, 12 x 32, 12 x 16 / OpenBLAS (Haswell kernels,
as this machine's environment sets ``OPENBLAS_CORETYPE``; its own SkylakeX kernels reached 40-109):

    (16, 320) x (320, 1024)    124 / 240  227  231  188 / 91
    (32, 512) x (512, 2048)    127 / 264  247  265  215 / 106
    (32, 2048) x (2048, 512)   131 / 275  259  270  216 / 108
    (8, 256) x (256, 1024)     104 / 227  186  223  183 / 71

Used by the compiled loops where their BLAS runs on one thread (the batch
split's parts, ``_split``, or a BLAS limited to one thread) and C
is a multiple of the panel width (16, or 32 with 512-bit vectors; other products
stay with the BLAS), and by ``_gemm`` for the large GEMMs where it has wider
vectors than NumPy's BLAS; for those the kernel also reads x by columns
(``Layout.tile_ir``'s ``cols``: x a transposed view). ``ENABLED = False`` (or
``RNNLAB_PANELS=0``) leaves the products to the BLAS. Sums run in k order per
output (no reassociation); results differ from the BLAS's only by rounding.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

ENABLED = os.environ.get("RNNLAB_PANELS", "1") != "0"
SPLIT_TAIL = os.environ.get("RNNLAB_PANELS_TAIL", "1") != "0"
# floats in a vector -> (vectors a panel, rows a tile): 256-bit, 2 x 8 floats, 6 rows (12
# accumulators + 2 of B + 1 broadcast <= 16 registers); 512-bit, 2 x 16 floats, 8 rows (16
# accumulators of 32 registers)
LAYOUTS = {8: (2, 6), 16: (2, 8)}
_FORCED = os.environ.get("RNNLAB_PANELS_VECTOR")


class Layout:
    """A kernel's shape: ``vector`` floats a vector register, ``vectors`` of them a panel (its
    ``width`` in columns), ``rows`` rows of x a register tile."""
    KERNELS = ((1, False), (1, True), (2, False))     # (sources, x by columns) of the drivers compiled

    def __init__(self, vector, vectors, rows, split_tail=True):
        self.vector, self.vectors, self.rows, self.split_tail = vector, vectors, rows, split_tail
        self.width = vector * vectors

    def __repr__(self):
        return f"Layout({self.vector}, {self.vectors}, {self.rows})"

    def tail(self):
        """Rows left after the full tiles that go as two tiles of about half (``split_tail``):
        rows + 1 and rows + 2 (7 and 8 for 6-row tiles), so no last tile of one or two rows."""
        return (self.rows + 1, self.rows + 2) if self.split_tail else ()

    def k_loop_ir(self, R, add, entry, tag, K, rowptrs, kstep, w, start):
        """Lines (through ``add``) of the loop acc[r, :] += x[r, k] w[k, :] over k < K for the
        R rows whose start addresses are ``rowptrs`` (element k at + k ``kstep``), w a panel
        (K, width); entered from block ``entry``, with the accumulators ``start`` (names, or
        None for zeros); skipped if K <= 0. Blocks and values are named with ``tag``. Returns the
        accumulators' names after the loop (in block ``{tag}end``)."""
        V, NV = self.vector, self.vectors
        vt = f"<{V} x float>"
        init = start or [["zeroinitializer"] * NV for _ in range(R)]
        add(f"  %{tag}any = icmp sgt i64 {K}, 0")
        add(f"  br i1 %{tag}any, label %{tag}loop, label %{tag}end")
        add(f"{tag}loop:")
        add(f"  %{tag}k = phi i64 [0, %{entry}], [%{tag}k1, %{tag}loop]")
        for r in range(R):
            for v in range(NV):
                add(f"  %{tag}a{r}_{v} = phi {vt} [{init[r][v]}, %{entry}], [%{tag}n{r}_{v}, %{tag}loop]")
        add(f"  %{tag}wo = mul i64 %{tag}k, {self.width}")
        add(f"  %{tag}xk = mul i64 %{tag}k, {kstep}")
        for v in range(NV):
            add(f"  %{tag}wo{v} = add i64 %{tag}wo, {v * V}")
            add(f"  %{tag}wp{v} = getelementptr float, ptr {w}, i64 %{tag}wo{v}")
            add(f"  %{tag}w{v} = load {vt}, ptr %{tag}wp{v}, align 4")
        for r in range(R):
            add(f"  %{tag}xp{r} = getelementptr float, ptr {rowptrs[r]}, i64 %{tag}xk")
            add(f"  %{tag}xs{r} = load float, ptr %{tag}xp{r}, align 4")
            add(f"  %{tag}xi{r} = insertelement {vt} poison, float %{tag}xs{r}, i32 0")
            add(f"  %{tag}xb{r} = shufflevector {vt} %{tag}xi{r}, {vt} poison, <{V} x i32> zeroinitializer")
            for v in range(NV):
                add(f"  %{tag}n{r}_{v} = call {vt} @llvm.fmuladd.v{V}f32({vt} %{tag}xb{r}, {vt} %{tag}w{v}, "
                    f"{vt} %{tag}a{r}_{v})")
        add(f"  %{tag}k1 = add i64 %{tag}k, 1")
        add(f"  %{tag}more = icmp slt i64 %{tag}k1, {K}")
        add(f"  br i1 %{tag}more, label %{tag}loop, label %{tag}end")
        add(f"{tag}end:")
        out = [[f"%{tag}e{r}_{v}" for v in range(NV)] for r in range(R)]
        for r in range(R):
            for v in range(NV):
                add(f"  {out[r][v]} = phi {vt} [{init[r][v]}, %{entry}], [%{tag}n{r}_{v}, %{tag}loop]")
        return out

    @staticmethod
    def tile_name(R, sources=1, cols=False):
        """The name of the tile function for R rows (``tile_ir``)."""
        return f"kc{R}" if cols else (f"k{R}" if sources == 1 else f"k{R}s{sources}")

    def tile_ir(self, R, sources=1, cols=False):
        """k<R> (k<R>s<n> for n sources): out[0:R, 0:width] (row stride ldc) <- (or +=, if acc) the
        sum over the sources i of x_i[0:R, 0:K_i] (row stride ldx_i) times the panel w_i (K_i,
        width), in one register tile: each source's k loop starts from the previous one's
        accumulators, so the sum runs in the order of one product over the stacked inputs
        ([x_1 | x_2 ...] by rows, w_1 over w_2 ...), with one store. ``cols`` (kc<R>): x is stored by
        columns, x[r, k] at x + k ldx + r (x the transpose of a C-contiguous array)."""
        V, NV = self.vector, self.vectors
        vt = f"<{V} x float>"
        params = "".join(f"i64 %K{i}, ptr %x{i}, i64 %ldx{i}, ptr %w{i}, " for i in range(sources))
        lines = [f"define internal void @{self.tile_name(R, sources, cols)}({params}ptr %c, i64 %ldc, i1 %acc) "
                 "alwaysinline {", "entry:"]
        add = lines.append
        acc, entry = None, "entry"
        for i in range(sources):
            for r in range(R):
                add(f"  %xo{i}_{r} = mul i64 {r}, {1 if cols else f'%ldx{i}'}")
                add(f"  %xr{i}_{r} = getelementptr float, ptr %x{i}, i64 %xo{i}_{r}")
            acc = self.k_loop_ir(R, add, entry, f"s{i}", f"%K{i}", [f"%xr{i}_{r}" for r in range(R)],
                                 f"%ldx{i}" if cols else 1, f"%w{i}", acc)
            entry = f"s{i}end"
        for r in range(R):
            add(f"  %co{r} = mul i64 {r}, %ldc")
            for v in range(NV):
                add(f"  %cq{r}_{v} = add i64 %co{r}, {v * V}")
                add(f"  %cp{r}_{v} = getelementptr float, ptr %c, i64 %cq{r}_{v}")
                add(f"  %old{r}_{v} = load {vt}, ptr %cp{r}_{v}, align 4")
                add(f"  %sum{r}_{v} = fadd {vt} %old{r}_{v}, {acc[r][v]}")
                add(f"  %res{r}_{v} = select i1 %acc, {vt} %sum{r}_{v}, {vt} {acc[r][v]}")
                add(f"  store {vt} %res{r}_{v}, ptr %cp{r}_{v}, align 4")
        add("  ret void")
        add("}")
        return "\n".join(lines)

    def panel_rows_ir(self, add, setup, call):
        """Lines of the loop over the panels p < %np and, in each, over the row tiles of the %N
        rows (rows + 1 or rows + 2 left go as two tiles of about half, ``tail``; then the rows
        left over), from block ``entry`` (which checked there is work) to block ``exit``.
        ``setup(add)`` emits the panel's values (after %p); ``call(add, L, r, tag)`` a tile's
        call for L rows from the row index value r, its values named with ``tag``."""
        R = self.rows
        add("ploop:")
        add("  %p = phi i64 [0, %entry], [%p1, %pnext]")
        setup(add)
        add("  br label %rloop")
        add("rloop:")
        add("  %r = phi i64 [0, %ploop], [%r1, %rbody]")
        add(f"  %r1 = add i64 %r, {R}")
        add("  %fitsR = icmp sle i64 %r1, %N")
        add("  %left0 = sub i64 %N, %r")
        if self.tail():
            add(f"  %isa = icmp eq i64 %left0, {self.tail()[0]}")
            add(f"  %isb = icmp eq i64 %left0, {self.tail()[1]}")
            add("  %split = or i1 %isa, %isb")
        else:
            add("  %split = icmp ne i64 0, 0")                   # never
        add("  %nsplit = xor i1 %split, true")
        add("  %fits = and i1 %fitsR, %nsplit")
        add("  br i1 %fits, label %rbody, label %rest")
        add("rbody:")
        call(add, R, "%r", "full")
        add("  br label %rloop")
        add("rest:")                                            # the last N mod rows (or the tail)
        cases = [f"i64 {L}, label %rem{L}" for L in list(range(1, R)) + list(self.tail())]
        add("  switch i64 %left0, label %pnext [" + " ".join(cases) + "]")
        for L in range(1, R):
            add(f"rem{L}:")
            call(add, L, "%r", f"rem{L}")
            add("  br label %pnext")
        for L in self.tail():
            a = (L + 1) // 2
            add(f"rem{L}:")
            add(f"  %rh{L} = add i64 %r, {a}")
            call(add, a, "%r", f"ta{L}")
            call(add, L - a, f"%rh{L}", f"tb{L}")
            add("  br label %pnext")
        add("pnext:")
        add("  %p1 = add i64 %p, 1")
        add("  %pmore = icmp slt i64 %p1, %np")
        add("  br i1 %pmore, label %ploop, label %exit")
        add("exit:")

    def driver_ir(self, sources=1, cols=False):
        """rnnlab_panels(N, C, K, x, ldx, panels, out, ldc, acc): out (N, C) <- (or +=) x (N, K) B,
        B packed by ``pack``; the panels one by one, each over the row tiles of x. With two
        sources, rnnlab_panels2(N, C, K1, x1, ldx1, panels1, K2, x2, ldx2, panels2, out, ldc, acc):
        out <- (or +=) x1 B1 + x2 B2 (``tile_ir``). ``cols`` (rnnlab_panels_cols): x stored by
        columns. Nothing is done where the K's add up to 0."""
        W = self.width
        name = "rnnlab_panels" + ("_cols" if cols else "" if sources == 1 else str(sources))
        params = "".join(f"i64 %K{i}, ptr %x{i}, i64 %ldx{i}, ptr %b{i}, " for i in range(sources))
        lines = [f"define void @{name}(i64 %N, i64 %C, {params}ptr %c, i64 %ldc, i32 %acc32) {{", "entry:"]
        add = lines.append
        add("  %acc = icmp ne i32 %acc32, 0")
        add(f"  %np = udiv i64 %C, {W}")
        ksum = "0"
        for i in range(sources):
            add(f"  %pstride{i} = mul i64 %K{i}, {W}")
            add(f"  %ksum{i} = add i64 {ksum}, %K{i}")
            ksum = f"%ksum{i}"
        add("  %anyp = icmp sgt i64 %np, 0")
        add(f"  %anyk = icmp sgt i64 {ksum}, 0")
        add("  %anyn = icmp sgt i64 %N, 0")
        add("  %any0 = and i1 %anyp, %anyk")
        add("  %any = and i1 %any0, %anyn")
        add("  br i1 %any, label %ploop, label %exit")

        def setup(add):
            for i in range(sources):
                add(f"  %wo{i} = mul i64 %p, %pstride{i}")
                add(f"  %wp{i} = getelementptr float, ptr %b{i}, i64 %wo{i}")
            add(f"  %co = mul i64 %p, {W}")
            add("  %cpp = getelementptr float, ptr %c, i64 %co")

        def call(add, L, r, tag):
            args = []
            for i in range(sources):
                add(f"  %xo{i}{tag} = mul i64 {r}, {1 if cols else f'%ldx{i}'}")
                add(f"  %xr{i}{tag} = getelementptr float, ptr %x{i}, i64 %xo{i}{tag}")
                args.append(f"i64 %K{i}, ptr %xr{i}{tag}, i64 %ldx{i}, ptr %wp{i}, ")
            add(f"  %co{tag} = mul i64 {r}, %ldc")
            add(f"  %cr{tag} = getelementptr float, ptr %cpp, i64 %co{tag}")
            add(f"  call void @{self.tile_name(L, sources, cols)}({''.join(args)}ptr %cr{tag}, i64 %ldc, i1 %acc)")

        self.panel_rows_ir(add, setup, call)
        add("  ret void")
        add("}")
        return "\n".join(lines)

    def pack_ir(self):
        """rnnlab_pack(w, ldw, np, nk, pstride, o): the panels of B = W^T from the rows of W (rows
        stride ldw): panel p (at o + p pstride) gets rows width p .. width (p + 1) - 1 of W,
        columns 0..nk-1 (nk a multiple of the vector), transposed: for each vector's worth of
        rows and of k, a vector x vector block loaded by rows and transposed in registers
        (log2(vector) rounds of two-vector shuffles, each swapping the off-diagonal blocks of
        one size), then stored by k."""
        V, Wd = self.vector, self.width
        vt = f"<{V} x float>"
        lines = ["define internal void @pack_block(ptr %w, i64 %ldw, i64 %nk, ptr %o) alwaysinline {", "entry:",
                 "  %any = icmp sgt i64 %nk, 0", "  br i1 %any, label %loop, label %exit", "loop:",
                 "  %k = phi i64 [0, %entry], [%k1, %loop]"]
        add = lines.append
        for j in range(V):
            add(f"  %ro{j} = mul i64 {j}, %ldw")
            add(f"  %ri{j} = add i64 %ro{j}, %k")
            add(f"  %rp{j} = getelementptr float, ptr %w, i64 %ri{j}")
            add(f"  %v0_{j} = load {vt}, ptr %rp{j}, align 4")
        d, st = V // 2, 0
        mask = lambda m: f"<{V} x i32> <" + ", ".join(f"i32 {x}" for x in m) + ">"
        while d >= 1:                 # swap the d x d blocks off the diagonal of each 2d x 2d block
            for a in range(V):
                if a & d:
                    continue
                b = a + d
                lo = [c if c & d == 0 else V + c - d for c in range(V)]
                hi = [c + d if c & d == 0 else V + c for c in range(V)]
                add(f"  %v{st + 1}_{a} = shufflevector {vt} %v{st}_{a}, {vt} %v{st}_{b}, {mask(lo)}")
                add(f"  %v{st + 1}_{b} = shufflevector {vt} %v{st}_{a}, {vt} %v{st}_{b}, {mask(hi)}")
            d, st = d // 2, st + 1
        for i in range(V):
            add(f"  %ki{i} = add i64 %k, {i}")
            add(f"  %oo{i} = mul i64 %ki{i}, {Wd}")
            add(f"  %op{i} = getelementptr float, ptr %o, i64 %oo{i}")
            add(f"  store {vt} %v{st}_{i}, ptr %op{i}, align 4")
        add(f"  %k1 = add i64 %k, {V}")
        add("  %more = icmp slt i64 %k1, %nk")
        add("  br i1 %more, label %loop, label %exit")
        add("exit:")
        add("  ret void")
        add("}")
        lines += ["define void @rnnlab_pack(ptr %w, i64 %ldw, i64 %np, i64 %nk, i64 %pstride, ptr %o) {", "entry:",
                  "  %any = icmp sgt i64 %np, 0", "  br i1 %any, label %ploop, label %exit", "ploop:",
                  "  %p = phi i64 [0, %entry], [%p1, %hend]", "  br label %hloop", "hloop:",
                  "  %h = phi i64 [0, %ploop], [%h1, %hloop]",
                  f"  %row = mul i64 %p, {Wd}", "  %row2 = add i64 %row, %h", "  %wo = mul i64 %row2, %ldw",
                  "  %wp = getelementptr float, ptr %w, i64 %wo", "  %oo0 = mul i64 %p, %pstride",
                  "  %oo1 = add i64 %oo0, %h", "  %op = getelementptr float, ptr %o, i64 %oo1",
                  "  call void @pack_block(ptr %wp, i64 %ldw, i64 %nk, ptr %op)",
                  f"  %h1 = add i64 %h, {V}", f"  %hm = icmp slt i64 %h1, {Wd}",
                  "  br i1 %hm, label %hloop, label %hend", "hend:", "  %p1 = add i64 %p, 1",
                  "  %pm = icmp slt i64 %p1, %np", "  br i1 %pm, label %ploop, label %exit", "exit:",
                  "  ret void", "}"]
        return "\n".join(lines)

    def module_ir(self):
        """The whole module as LLVM IR text."""
        V = self.vector
        return "\n".join([f"declare <{V} x float> @llvm.fmuladd.v{V}f32(<{V} x float>, <{V} x float>, "
                          f"<{V} x float>)"]
                         + [self.tile_ir(R, n, cols) for n, cols in self.KERNELS for R in range(1, self.rows + 1)]
                         + [self.driver_ir(n, cols) for n, cols in self.KERNELS] + [self.pack_ir()])

    def compile(self):
        """This layout's kernels compiled for this CPU (``Compiled``: keep it, its engine owns the code)."""
        engine = compile_ir(self.module_ir())
        return Compiled(self, engine, engine.get_function_address("rnnlab_panels"),
                        engine.get_function_address("rnnlab_panels_cols"),
                        engine.get_function_address("rnnlab_panels2"),
                        engine.get_function_address("rnnlab_pack"))

    def panels_shape(self, K, C):
        """The shape of B (K, C)'s panels."""
        return (C // self.width, K * self.width)

    def pack_rows(self, blocks, out, packer=None):
        """The blocks (K_i, C) stacked along K as B (K, C), packed into out (``panels_shape``): row
        p of out is B[:, width p : width (p + 1)] row by row. With ``packer`` (``Compiled.packer``,
        for C-contiguous float32 out), a float32 block whose columns are contiguous (b = W.T, W's
        rows with any stride: the loops' weights, the input projections' W^T) goes, but for its
        last K mod vector rows, through the compiled transposes (``pack_ir``); the rest by NumPy."""
        C, W, V = blocks[0].shape[1], self.width, self.vector
        K = sum(b.shape[0] for b in blocks)
        o3 = out.reshape(C // W, K, W)
        if packer is not None and not (out.dtype == np.float32 and out.flags.c_contiguous):
            raise ValueError(f"panels pack: out {out.shape} {out.dtype} must be C-contiguous float32")
        k0 = 0
        for b in blocks:
            Kb = b.shape[0]
            by_pack = packer is not None and b.dtype == np.float32 and b.strides[0] == 4 and b.strides[1] % 4 == 0
            nk = Kb - Kb % V if by_pack else 0
            if nk:
                _pack_signature(packer)(b.ctypes.data, b.strides[1] // 4, C // W, nk, K * W, o3[0, k0:].ctypes.data)
            if nk < Kb:
                o3[:, k0 + nk:k0 + Kb] = b[nk:].reshape(Kb - nk, C // W, W).transpose(1, 0, 2)
            k0 += Kb
        return out

    def pack(self, B, packer=None):
        """B (K, C) as its panels, a new (C / width, K * width) float32 array: row p is
        B[:, width p : width (p + 1)] row by row (``pack_rows`` with one block)."""
        return self.pack_rows((B,), np.empty(self.panels_shape(*B.shape), np.float32), packer)


class Compiled:
    """A layout's compiled kernels' addresses: ``rows`` (x by rows), ``cols`` (x by columns),
    ``two`` (two sources by rows) and ``packer`` (``Layout.pack_ir``)."""

    def __init__(self, layout, engine, rows, cols, two, packer):
        self.layout, self.engine, self.rows, self.cols, self.two = layout, engine, rows, cols, two
        self.packer = packer

    def _operand(self, x, panels, out, by_cols):
        """x's leading dimension, and whether x is read by rows, for out (N, C) <- x (N, K) B with
        B's panels, where everything fits (float32, x's rows contiguous or, with ``by_cols``, its
        columns, out's rows contiguous, C a multiple of the width); else a ValueError."""
        (N, K), (C, W) = x.shape, (out.shape[1], self.layout.width)
        by_rows = x.strides[1] == 4 or K == 0
        if (x.dtype != np.float32 or out.dtype != np.float32 or not (by_rows or (by_cols and x.strides[0] == 4))
                or out.strides[1] != 4 or out.shape[0] != N or panels.shape != (C // W, K * W) or C % W):
            raise ValueError(f"panels matmul: x {x.shape} {x.dtype}, panels {panels.shape}, out {out.shape} "
                             f"{out.dtype} do not fit (float32, x rows{' or columns' if by_cols else ''} "
                             f"contiguous, out rows contiguous, C a multiple of {W})")
        return (x.strides[0] if by_rows else x.strides[1]) // 4, by_rows

    def matmul(self, x, panels, out, accumulate=False):
        """out (N, C) <- (or +=) x (N, K) B from Python (tests and ``_gemm``; the loops call the
        address), with B's panels (``Layout.pack``). x: float32 with a unit stride along k (its
        rows) or along n (the transpose of a C-contiguous array: the ``cols`` kernel); out
        float32 with contiguous rows. Returns out."""
        ldx, by_rows = self._operand(x, panels, out, by_cols=True)
        _signature(self.rows if by_rows else self.cols)(len(x), out.shape[1], x.shape[1], x.ctypes.data, ldx, panels.ctypes.data,
                       out.ctypes.data, out.strides[0] // 4, int(accumulate))
        return out

    def matmul2(self, x1, panels1, x2, panels2, out, accumulate=False):
        """out (N, C) <- (or +=) x1 (N, K1) B1 + x2 (N, K2) B2 from Python (tests), with the B's
        panels; x1, x2 float32 with contiguous rows."""
        (ld1, _), (ld2, _) = (self._operand(x, p, out, by_cols=False) for x, p in ((x1, panels1), (x2, panels2)))
        _signature2(self.two)(len(x1), out.shape[1], x1.shape[1], x1.ctypes.data, ld1, panels1.ctypes.data,
                              x2.shape[1], x2.ctypes.data, ld2, panels2.ctypes.data, out.ctypes.data,
                              out.strides[0] // 4, int(accumulate))
        return out


_pack_signature = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                   ctypes.c_int64, ctypes.c_void_p)
_signature2 = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                               ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
_signature = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32)
def compile_ir(text):
    """LLVM IR text compiled for this CPU (its name and features, -O3) by llvmlite's MCJIT: the
    engine, which owns the code (keep it while the functions are used; their addresses from
    ``engine.get_function_address``). ``_matvec``'s kernel is compiled here too."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(text)
    module.verify()
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=llvm.get_host_cpu_features().flatten(), opt=3)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return engine


_state = {"tried": False, "compiled": None, "error": None, "layout": None}
_lock = threading.Lock()


def _vector():
    """Floats in this CPU's widest vector register the kernel uses: 16 with AVX-512F, else 8
    (``RNNLAB_PANELS_VECTOR`` = 8 or 16 chooses)."""
    if _FORCED in ("8", "16"):
        return int(_FORCED)
    try:
        import llvmlite.binding as llvm
        return 16 if llvm.get_host_cpu_features().get("avx512f", False) else 8
    except Exception:      # noqa: BLE001 (no llvmlite: ``address`` reports it)
        return 8


def layout():
    """The layout the loops' kernel uses on this CPU."""
    if _state["layout"] is None:
        V = _vector()
        _state["layout"] = Layout(V, *LAYOUTS[V], split_tail=SPLIT_TAIL)
    return _state["layout"]


def address():
    """The kernel's address (compiled on first call), or None where it cannot be compiled (no
    llvmlite, or it failed: the reason is in ``describe()``) or ``ENABLED`` is off."""
    if not ENABLED:
        return None
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                _state["compiled"] = layout().compile()
            except Exception as e:                                 # noqa: BLE001 (any failure: use the BLAS)
                _state["error"] = f"{type(e).__name__}: {e}"
        return None if _state["compiled"] is None else _state["compiled"].rows


def compiled():
    """The loops' layout's ``Compiled`` kernels, or None (as ``address``)."""
    return _state["compiled"] if address() is not None else None


def usable(C, dtype=np.float32):
    """Whether a product with C output columns can run here: float32, C a multiple of the
    layout's panel width."""
    return dtype == np.float32 and C > 0 and address() is not None and C % layout().width == 0


def _packer():
    kernel = compiled()
    return None if kernel is None else kernel.packer


def pack(B):
    """B (K, C) as the loops' kernel's panels (``Layout.pack``; by the compiled transposes where
    the kernel is compiled and B's columns are contiguous)."""
    return layout().pack(B, _packer())


def pack_rows(blocks, out):
    """The blocks (K_i, C) stacked along K as the loops' kernel's panels, into out: by the compiled
    transposes where the kernel is compiled (``Layout.pack_ir``: 3.5x NumPy's strided copy here,
    0.057 against 0.203 ms for (1024, 512) rows), else NumPy's copy."""
    return layout().pack_rows(blocks, out, _packer())


def matmul(x, panels, out, accumulate=False):
    """out (N, C) <- (or +=) x (N, K) B through the loops' kernel (``Compiled.matmul``)."""
    if compiled() is None:
        raise RuntimeError(f"the panels kernel is unavailable: {describe()}")
    return compiled().matmul(x, panels, out, accumulate)


def describe():
    """For ``rnnlab.fast.describe``: whether the kernel is in use, and why not."""
    if not ENABLED:
        return "off (RNNLAB_PANELS=0)"
    if address() is None:
        return f"unavailable ({_state['error']})"
    lay = layout()
    tail = "" if SPLIT_TAIL else " to the last row (RNNLAB_PANELS_TAIL=0)"
    return (f"{lay.rows} x {lay.width} register tiles of {32 * lay.vector}-bit vectors{tail}, "
            f"LLVM IR compiled for {_host()}")


def _host():
    try:
        import llvmlite.binding as llvm
        return llvm.get_host_cpu_name()
    except Exception:      # noqa: BLE001
        return "this CPU"
