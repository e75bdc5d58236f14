"""rnnlab against PyTorch on the CPU, side by side in one process.

What is timed (float32, the same shapes, the PyTorch modules loaded with a copy
of the rnnlab layer's weights, the same number of threads for both: PyTorch's
``set_num_threads`` and, through threadpoolctl, NumPy's BLAS):

* grid points: cell x (N, T, D, H), each as a training step (forward + backward
  through time with a random ``dout``, dx included on both sides) and as
  inference (forward only; PyTorch under ``no_grad``);
* streaming: a 2-layer LSTM, N = 1, one step per ``forward`` call (T = 1), the
  state carried from call to call;
* sampling: the character model (``rnnlab.charlm``) one character at a time,
  against the same Embedding -> LSTM -> Linear loop in PyTorch;
* peak memory of one training step at T = 1000 (see ``peak_memory``).

The two libraries take turns (PyTorch, rnnlab, PyTorch, ...), each turn running
enough calls to last ``min_time``; the best turn of ``repeats`` counts. Between
turns the process sleeps for ``PAUSE`` so that the other library's idle worker
threads have stopped spinning (OpenBLAS's spin for about 0.1 s after each threaded
call); on a shared machine the best of several turns is the least disturbed.

For each point: both times, the ratio torch_time / rnnlab_time (> 1: rnnlab is
faster) and rnnlab's GFLOP/s as a fraction of the measured GFLOP/s of one large
float32 GEMM (the roofline: the better of a measurement at the start and one at
the end). On a shared machine the GEMM's own speed drifts during the run, so each
grid point also times the GEMM in turn with the two libraries and reports
rnnlab's fraction of that (``rnnlab_roofline_same_turns``: best over best in those turns), and
the median over the rounds of rnnlab's fraction of the GEMM timed in the same round
(``rnnlab_roofline_paired``, ``paired_fraction``), the estimate least moved by a machine whose
speed changes during the run. Each grid row keeps every turn's time (``turns_ms``). FLOPs
count the GEMMs only (elementwise work is small beside them): forward 2 T N G (D + H_out),
training 3x that (the backward has dX, dh, dW_ih and dW_hh), G = gates * H.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import recurrent
from ._conventions import GATES

SIZES = [(1, 100, 32, 128), (32, 100, 64, 256), (64, 50, 512, 512)]   # (N, T, D, H), from issue 5
QUICK_SIZES = SIZES[:2]
CELLS = ("lstm", "gru", "rnn")
STREAM_SIZES = (128, 512)
TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
LAYERS = {"lstm": recurrent.LSTM, "gru": recurrent.GRU, "rnn": recurrent.RNN}


# ---- timing ---------------------------------------------------------------------------
# Seconds between turns. OpenBLAS's worker threads spin for about 0.1 s after a threaded GEMM
# and take a core from whatever runs next. Measured on the 2-core Intel machine (LSTM N=32,
# T=100, D=64, H=256 inference, PyTorch alone 8.6-9.1 ms): PyTorch's forward timed 0.05 s after
# rnnlab's took 54 ms (median of 9), 31 ms at 0.08 s, 10 ms at 0.1 s and 10-13 ms from there to
# 0.3 s; in turns of 0.05 s with 0.05 s between them its best of 7 was 14.5 ms, with 0.15 or
# 0.25 s 9.1-9.4 ms (rnnlab 22.8-23.2 ms in all of them). The bench slept 0.05 s until
# 2026-12-06, which flattered rnnlab's ratios (0.63 instead of 0.40 there).
PAUSE = 0.2


def _calls_for(fn, min_time):
    """How many calls of ``fn`` last about ``min_time`` seconds: calls for a tenth of it to warm
    up (one call of a slow function), then calls timed for another tenth. Timed from one call
    after one warm-up call, a fast function's count came from a cold call: the streamed step at
    H=512 took 250-660 us for its first few steps right after PyTorch's turn and ~110 us warm,
    so its turns lasted 18 ms (165 calls) instead of 50, and the first steps after each 0.2 s
    pause weighed three times as much in them."""
    def calls_in(seconds):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return calls, elapsed

    calls_in(min_time / 10)
    calls, elapsed = calls_in(min_time / 10)
    return max(1, int(min_time / max(elapsed / calls, 1e-7)))


def time_turns(fns, repeats=5, min_time=0.05, pause=PAUSE):
    """Best seconds per call of each function, taking turns (fns[0], fns[1], ..., fns[0], ...)."""
    return [min(turns) for turns in turn_times(fns, repeats, min_time, pause)]


def turn_times(fns, repeats=5, min_time=0.05, pause=PAUSE):
    """Seconds per call of each function in each of ``repeats`` turns: one list per function,
    turn k of every list timed in the same round (fns[0], fns[1], ..., then the next round)."""
    counts = [_calls_for(fn, min_time) for fn in fns]
    turns = [[] for _ in fns]
    for _ in range(repeats):
        for j, (fn, n) in enumerate(zip(fns, counts)):
            time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            turns[j].append((time.perf_counter() - t0) / n)
    return turns


def paired_fraction(n_flops, seconds, gemm_flops, gemm_seconds):
    """The median over rounds of (GFLOP/s in round k) / (the GEMM's GFLOP/s in round k).

    Each round's two measurements were taken within a second of each other, so a machine
    that slows down for a while (a shared virtual machine does) slows both sides of that
    round's fraction alike; and a few rounds in which only one side was disturbed do not move
    the median. Best over best, by contrast, compares the luckiest moment of a 0.3 s training
    step with the luckiest of a 0.1 s GEMM, timed more often (the start and end peaks)."""
    return float(np.median([(n_flops / s) / (gemm_flops / g) for s, g in zip(seconds, gemm_seconds)]))


class Gemm:
    """The roofline's GEMM (n x n times n x n, float32) as a function to time with the others.

    Through NumPy's BLAS, through MKL too when rnnlab's loops run on it (``fast/_mkl.py``),
    through rnnlab's panels kernel on every core where its large GEMMs take it
    (``fast/_gemm.py``: NumPy's OpenBLAS held to narrower kernels than the CPU's, as
    ``OPENBLAS_CORETYPE`` can do), and through PyTorch's ``torch.mm`` when ``torch`` is given:
    ``gemm_peak`` times each and keeps the fastest as ``backend``, so that the roofline is the
    fastest GEMM in the process, not only one that rnnlab's loops do not use."""

    def __init__(self, n=2048, torch=None):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((n, n), dtype=np.float32)
        self.b = rng.standard_normal((n, n), dtype=np.float32)
        self.c = np.empty((n, n), np.float32)
        self.flops = 2 * n ** 3
        self.backends = {"numpy": lambda: np.matmul(self.a, self.b, out=self.c)}
        mkl = recurrent._fast._mkl
        if mkl.active(np.float32, n ** 3):
            self.backends["mkl"] = lambda: mkl.matmul(self.a, self.b, self.c)
        gemm = recurrent._fast._gemm
        if gemm.wider_than_blas():               # rnnlab's own kernel on every core (``fast/_gemm.py``)
            self.backends["rnnlab"] = lambda: gemm.panels_matmul(self.a, self.b, self.c)
        if torch is not None:
            ta, tb, tc = (torch.from_numpy(v) for v in (self.a, self.b, self.c))
            self.backends["torch"] = lambda: torch.mm(ta, tb, out=tc)
        self.backend = "numpy"
        self.peaks = {}          # GFLOP/s of each backend, best over every gemm_peak

    def __call__(self):
        self.backends[self.backend]()


def gemm_peak(threads, gemm, repeats=10):
    """GFLOP/s of ``gemm`` (a ``Gemm``), best of ``repeats``, on ``threads`` threads: the faster
    of its backends, which becomes ``gemm.backend``."""
    with _blas_threads(threads):
        for name, fn in gemm.backends.items():
            fn()
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
            gemm.peaks[name] = max(gemm.peaks.get(name, 0.0), gemm.flops / best / 1e9)
    gemm.backend = max(gemm.peaks, key=gemm.peaks.get)
    return gemm.peaks[gemm.backend]


@contextlib.contextmanager
def _blas_threads(n):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:      # without threadpoolctl the BLAS keeps its own setting (reported in the JSON)
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def flops(cell, N, T, D, H, train):
    G = GATES[cell] * H
    fwd = 2 * T * N * G * (D + H)
    return 3 * fwd if train else fwd


# ---- the pairs being timed ------------------------------------------------------------------
def _pair_layers(torch, cell, D, H, num_layers=1, seed=0):
    layer = LAYERS[cell](D, H, num_layers=num_layers, dtype=np.float32, seed=seed)
    mod = getattr(torch.nn, TORCH_NAMES[cell])(D, H, num_layers=num_layers, batch_first=True)
    mod.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    return layer, mod


def grid_point(torch, cell, N, T, D, H, repeats, min_time, pause, gemm=None):
    """Training and inference timings of one cell and size: two result dicts. With ``gemm`` (a
    ``Gemm``) it takes turns with the two libraries, and each row also holds the GEMM's GFLOP/s
    in those same turns (``gemm_gflops_same_turns``) and rnnlab's fraction of it."""
    rng = np.random.default_rng(1)
    layer, mod = _pair_layers(torch, cell, D, H)
    x = rng.standard_normal((N, T, D), dtype=np.float32)
    dout = rng.standard_normal((N, T, H), dtype=np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    dt = torch.from_numpy(dout.copy())

    def r_train():
        layer.forward(x)
        layer.backward(dout)

    def t_train():
        out, _ = mod(xt)
        out.backward(dt)

    def r_infer():
        layer.forward(x)

    def t_infer():
        with torch.no_grad():
            mod(xt)

    rows = []
    for kind, ft, fr in (("train", t_train, r_train), ("infer", t_infer, r_infer)):
        layer.train(kind == "train")
        turns = turn_times((ft, fr) + ((gemm,) if gemm else ()), repeats, min_time, pause)
        times = [min(t) for t in turns]
        n_flops = flops(cell, N, T, D, H, kind == "train")
        row = _row(kind, cell, (N, T, D, H), times[0], times[1], n_flops)
        row["turns_ms"] = {name: [t * 1e3 for t in ts] for name, ts in zip(("torch", "rnnlab", "gemm"), turns)}
        if gemm:
            row["gemm_gflops_same_turns"] = gemm.flops / times[2] / 1e9
            row["rnnlab_roofline_same_turns"] = row["rnnlab_gflops"] / row["gemm_gflops_same_turns"]
            row["rnnlab_roofline_paired"] = paired_fraction(n_flops, turns[1], gemm.flops, turns[2])
        rows.append(row)
    return rows


def _row(kind, cell, size, torch_s, rnnlab_s, n_flops=None):
    row = {"kind": kind, "cell": cell, "N": size[0], "T": size[1], "D": size[2], "H": size[3],
           "torch_ms": torch_s * 1e3, "rnnlab_ms": rnnlab_s * 1e3, "ratio": torch_s / rnnlab_s}
    if n_flops is not None:
        row["rnnlab_gflops"] = n_flops / rnnlab_s / 1e9
        row["torch_gflops"] = n_flops / torch_s / 1e9
    return row


def streaming_point(torch, H, repeats, min_time, pause):
    """A 2-layer LSTM (D = H), N = 1: seconds per ``forward`` of one step, state carried."""
    rng = np.random.default_rng(2)
    layer, mod = _pair_layers(torch, "lstm", H, H, num_layers=2)
    layer.eval()
    mod.eval()
    x = rng.standard_normal((1, 1, H), dtype=np.float32)
    xt = torch.from_numpy(x.copy())
    state = {"r": None, "t": None}

    def r_step():
        _, state["r"] = layer.forward(x, state["r"])

    def t_step():
        with torch.no_grad():
            _, state["t"] = mod(xt, state["t"])

    ts, rs = time_turns((t_step, r_step), repeats, min_time, pause)
    row = _row("stream", "lstm", (1, 1, H, H), ts, rs, 2 * flops("lstm", 1, 1, H, H, False))
    row["layers"] = 2
    return row


def sampling_point(torch, repeats, min_time, pause, n_chars=100, vocab=65):
    """Characters per second of the character model sampled one character at a time (None without charlm)."""
    try:
        from .charlm import CharLM, CharLMConfig
    except ImportError:
        return None
    model = CharLM(CharLMConfig(vocab_size=vocab)).eval()
    c = model.config
    p = model.params
    emb = torch.nn.Embedding(vocab, c.embed_dim)
    lstm = torch.nn.LSTM(c.embed_dim, c.hidden_size, num_layers=c.num_layers, batch_first=True)
    head = torch.nn.Linear(c.hidden_size, vocab)
    emb.weight.data = torch.from_numpy(p["embed.weight"].copy())
    lstm.load_state_dict({k[4:]: torch.from_numpy(v.copy()) for k, v in p.items() if k.startswith("rnn.")})
    head.weight.data = torch.from_numpy(p["head.weight"].copy())
    head.bias.data = torch.from_numpy(p["head.bias"].copy())

    def r_sample():
        rng = np.random.default_rng(0)
        ids, state = np.zeros(1, np.int64), None
        for _ in range(n_chars):
            logits, state = model.step(ids, state)
            z = logits[0] - logits[0].max()
            prob = np.exp(z)
            prob /= prob.sum()
            ids[0] = rng.choice(vocab, p=prob)

    def t_sample():
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            ids, state = torch.zeros((1, 1), dtype=torch.long), None
            for _ in range(n_chars):
                out, state = lstm(emb(ids), state)
                prob = torch.softmax(head(out[:, -1]), dim=-1)
                ids = torch.multinomial(prob, 1, generator=gen)

    ts, rs = time_turns((t_sample, r_sample), repeats, min_time, pause)
    return {"kind": "sample", "cell": c.cell, "H": c.hidden_size, "E": c.embed_dim, "vocab": vocab,
            "torch_chars_per_s": n_chars / ts, "rnnlab_chars_per_s": n_chars / rs, "ratio": ts / rs}


# ---- memory ---------------------------------------------------------------------------------
_MEMORY_SCRIPT = r"""
import gc, json, sys
import numpy as np
lib, cell, N, T, D, H = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

rng = np.random.default_rng(0)
if lib == "torch":
    import torch
    torch.set_num_threads(1)
    mod = getattr(torch.nn, {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell])(D, H, batch_first=True)
    def step(T):
        x = torch.from_numpy(rng.standard_normal((N, T, D), dtype=np.float32)).requires_grad_(True)
        out, _ = mod(x)
        out.backward(torch.ones_like(out))
else:
    import rnnlab
    layer = getattr(rnnlab, cell.upper())(D, H, dtype=np.float32, seed=0)
    def step(T):
        x = rng.standard_normal((N, T, D), dtype=np.float32)
        out, _ = layer.forward(x)
        layer.backward(np.ones_like(out))
        layer._cache = None          # what a training loop's next forward would replace
step(2)                               # warm-up: one-time allocations (kernels, caches) are not counted
gc.collect()
base = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak-RSS mark to the current RSS
        f.write("5")
    method = "VmHWM after clear_refs"
except OSError:
    method = "ru_maxrss (may include earlier peaks)"
step(T)
print(json.dumps({"peak_bytes": status("VmHWM") - base, "method": method}))
"""


def peak_memory(cell="lstm", N=32, T=1000, D=64, H=256):
    """Peak memory of one training step (input included) for both libraries.

    Both are measured the same way, each in a fresh subprocess: the rise of the
    peak resident set size (VmHWM, reset just before the step) above the RSS
    before it. rnnlab is also measured in this process with tracemalloc, which
    sees every NumPy allocation (NumPy reports them to tracemalloc).
    """
    out = {"cell": cell, "N": N, "T": T, "D": D, "H": H}
    for lib in ("torch", "rnnlab"):
        res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, lib, cell, str(N), str(T), str(D), str(H)],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"memory measurement of {lib} failed: {res.stderr.strip().splitlines()[-1:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        out[f"{lib}_rss_mb"] = r["peak_bytes"] / 2 ** 20
        out["rss_method"] = r["method"]
    out["rnnlab_tracemalloc_mb"] = _tracemalloc_peak(cell, N, T, D, H) / 2 ** 20
    out["ratio"] = out["torch_rss_mb"] / max(out["rnnlab_rss_mb"], 1e-9)
    return out


def _tracemalloc_peak(cell, N, T, D, H):
    import tracemalloc
    layer = LAYERS[cell](D, H, dtype=np.float32, seed=0)
    x = np.random.default_rng(0).standard_normal((N, T, D), dtype=np.float32)
    gc.collect()
    tracemalloc.start()
    try:
        out, _ = layer.forward(x)
        layer.backward(np.ones_like(out))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---- the whole benchmark ------------------------------------------------------------------
def run(threads=None, quick=False, repeats=None, sizes=None, cells=CELLS, stream_sizes=None,
        sampling=True, memory=True, memory_T=1000, min_time=None, pause=None, progress=True,
        sample_chars=100, gemm_n=2048):
    """Run the benchmark and return the result dict (see the module docstring)."""
    try:
        import torch
    except ImportError:
        from .errors import UsageError
        raise UsageError("bench: PyTorch is needed to compare against; install it with "
                         "pip install 'rnnlab[test]'") from None
    threads = threads or os.cpu_count() or 1
    repeats = repeats or (3 if quick else 5)
    sizes = (QUICK_SIZES if quick else SIZES) if sizes is None else sizes
    stream_sizes = (STREAM_SIZES[:1] if quick else STREAM_SIZES) if stream_sizes is None else stream_sizes
    min_time = min_time if min_time is not None else (0.02 if quick else 0.05)
    pause = PAUSE if pause is None else pause
    torch.set_num_threads(threads)

    jobs = [("grid", c, s) for c in cells for s in sizes] + [("stream", H, None) for H in stream_sizes]
    if sampling:
        jobs.append(("sample", None, None))
    if memory:
        jobs.append(("memory", None, None))
    bar = _progress(len(jobs) + 1, progress)
    result = {"machine": _machine(), "threads": threads, "repeats": repeats, "min_time_s": min_time,
              "pause_s": pause,
              "torch_version": torch.__version__, "numpy_version": np.__version__,
              "fast_path": recurrent._fast.describe()}
    with _blas_threads(threads):
        result["blas"] = _blas_info()
    gemm = Gemm(gemm_n, torch)      # timed at the start, in each grid point's turns and at the end
    result["gemm_peak_gflops"] = gemm_peak(threads, gemm)
    bar.update(1)
    points, stream, sample, mem = [], [], None, None
    with _blas_threads(threads):
        for what, a, b in jobs:
            bar.set_description(f"{what} {a or ''} {b or ''}".strip())
            if what == "grid":
                points += grid_point(torch, a, *b, repeats, min_time, pause, gemm)
            elif what == "stream":
                stream.append(streaming_point(torch, a, repeats, min_time, pause))
            elif what == "sample":
                sample = sampling_point(torch, repeats, min_time, pause, sample_chars)
            else:
                mem = peak_memory(T=memory_T if not quick else min(memory_T, 200))
            bar.update(1)
    # measured again at the end: on a shared machine the better of the two is the roofline
    result["gemm_peak_gflops"] = max(result["gemm_peak_gflops"], gemm_peak(threads, gemm))
    result["gemm_peak_by_blas"] = dict(gemm.peaks)
    bar.close()
    peak = result["gemm_peak_gflops"]
    for row in points + stream:
        row["rnnlab_roofline"] = row["rnnlab_gflops"] / peak
        row["torch_roofline"] = row["torch_gflops"] / peak
    result.update(points=points, streaming=stream, sampling=sample, memory=mem)
    return result


def _progress(total, enabled):
    try:
        from tqdm import tqdm
        return tqdm(total=total, disable=not enabled, file=sys.stderr, leave=False)
    except ImportError:
        class _Null:
            def update(self, n=1): pass
            def set_description(self, s): pass
            def close(self): pass
        return _Null()


def _machine():
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    return info


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


# ---- the table ----------------------------------------------------------------------------
def _blas_lines(result):
    """Which BLAS NumPy ran (and MKL, when rnnlab's loops ran on it, or whether they called
    NumPy's from compiled code), and a warning when
    OPENBLAS_CORETYPE forced OpenBLAS's kernels."""
    blas = result.get("blas") or []
    lines = [f"NumPy BLAS: {b.get('internal_api')} {b.get('version')}, {b.get('architecture')} kernels"
             for b in blas if b.get("internal_api") != "mkl"]
    fast = result.get("fast_path") or {}
    mkl = fast.get("mkl") or {}
    loops = (f"batch split onto idle cores {fast.get('split')} (its threads pinned apart "
             f"{fast.get('pin', 'off')}); tiny loops' units on two cores "
             f"{fast.get('pair', 'off')}; LSTM inference loops {fast.get('infer_loops', 'off')}")
    if mkl.get("enabled"):
        lines.append(f"rnnlab's loops: GEMMs through {mkl.get('version') or 'MKL'}, W_hh packed once a call "
                     f"({mkl.get('threading')} threading); {loops}; input products before the LSTM inference steps "
                     f"{fast.get('ahead', 'off')}; LSTM inference split by units where W_hh outgrows L2 "
                     f"{fast.get('units_mkl', 'off')}")
    elif fast.get("blas_loops"):
        gemms = (f"; large GEMMs through the panels kernel on every core {fast['panels_gemm']}"
                 if "panels_gemm" in fast else "")
        lines.append(f"rnnlab's loops: NumPy's BLAS called from compiled code "
                     f"({(fast.get('blas') or {}).get('symbol')}); on one core: panels kernel "
                     f"{fast.get('panels')}{gemms}; {loops}")
    peaks = result.get("gemm_peak_by_blas") or {}
    if len(peaks) > 1:
        lines.append("GEMM roofline, each GEMM: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    forced = (result.get("machine") or {}).get("OPENBLAS_CORETYPE")
    if forced:
        lines.append(f"warning: OPENBLAS_CORETYPE={forced} is set, so OpenBLAS runs {forced} kernels instead of "
                     f"this CPU's own (rerun with it unset to measure NumPy at full speed)")
    return lines


def format_table(result):
    """The result as a plain-text table (one line per point)."""
    pause = result.get("pause_s")
    turns = f"best of {result['repeats']}" + (f" turns {pause:g} s apart" if pause is not None else "")
    lines = [f"threads {result['threads']}, {turns}, float32; "
             f"GEMM roofline {result['gemm_peak_gflops']:.0f} GFLOP/s; "
             f"ratio = torch time / rnnlab time (> 1: rnnlab faster)",
             "roofline: rnnlab GF/s over that GEMM's; same turns: over the GEMM timed in turn with "
             "this point's runs; paired: median over rounds of rnnlab's fraction of that round's GEMM",
             *_blas_lines(result),
             f"{'point':<34}{'torch ms':>10}{'rnnlab ms':>11}{'ratio':>8}{'rnnlab GF/s':>13}{'roofline':>10}"
             f"{'same turns':>12}{'paired':>8}"]
    for r in result["points"] + result["streaming"]:
        if r["kind"] == "stream":
            name = f"stream LSTM x2 N=1 H={r['H']} (per step)"
        else:
            name = f"{r['kind']} {r['cell'].upper()} N={r['N']} T={r['T']} D={r['D']} H={r['H']}"
        same, paired = r.get("rnnlab_roofline_same_turns"), r.get("rnnlab_roofline_paired")
        lines.append(f"{name:<34}{r['torch_ms']:>10.3f}{r['rnnlab_ms']:>11.3f}{r['ratio']:>8.2f}"
                     f"{r['rnnlab_gflops']:>13.1f}{r['rnnlab_roofline']:>9.0%}"
                     + (f"{same:>11.0%}{paired:>8.0%}" if same is not None else ""))
    s = result.get("sampling")
    if s:
        lines.append(f"sample charlm {s['cell'].upper()} H={s['H']}: torch {s['torch_chars_per_s']:.0f} chars/s, "
                     f"rnnlab {s['rnnlab_chars_per_s']:.0f} chars/s, ratio {s['ratio']:.2f}")
    m = result.get("memory")
    if m:
        lines.append(f"peak memory, one training step {m['cell'].upper()} N={m['N']} T={m['T']} D={m['D']} "
                     f"H={m['H']}: torch {m['torch_rss_mb']:.1f} MB, rnnlab {m['rnnlab_rss_mb']:.1f} MB "
                     f"(RSS rise, {m['rss_method']}); rnnlab tracemalloc {m['rnnlab_tracemalloc_mb']:.1f} MB")
    return "\n".join(lines)
