"""Shared pieces of the fast loops: the order of a backward sweep in chunks of steps, and W_hh^T.

The backward keeps the pre-activation gradients of ``chunk`` steps at a time
(not all T) and turns each full chunk into weight gradients with one GEMM per
weight: memory for dA stays (chunk, N, G) at any T, and with chunk * N in the
thousands the GEMMs are as efficient as one over all steps.
"""
from __future__ import annotations

import numpy as np


def backward_steps(T, reverse, chunk):
    """Yield (t, slot, done) in the backward's order (T-1..0, or 0..T-1 for the reverse direction).

    slot is t's row in a chunk buffer; done is (lo, hi), the chunk's steps
    lo..hi-1, at the chunk's last step, else None.
    """
    if reverse:
        for lo in range(0, T, chunk):
            hi = min(T, lo + chunk)
            for t in range(lo, hi):
                yield t, t - lo, ((lo, hi) if t == hi - 1 else None)
    else:
        for hi in range(T, 0, -chunk):
            lo = max(0, hi - chunk)
            for t in range(hi - 1, lo - 1, -1):
                yield t, t - lo, ((lo, hi) if t == lo else None)


def recurrent_weight(W_hh, T):
    """W_hh^T (H_out, G) for the loop's h_prev @ W_hh^T: a contiguous copy when T > 2, else the view.

    OpenBLAS multiplies by a C-contiguous (H_out, G) faster than by the transposed view of
    W_hh (measured on 2 threads: (32, 256) x (256, 1024) 159 -> 129 us, (64, 512) x (512, 2048)
    900 -> 877 us; one thread (1, 128) x (128, 512) 3.9 -> 3.5 us); the copy, made once per
    call, pays for itself after a few steps.
    """
    return np.ascontiguousarray(W_hh.T) if T > 2 else W_hh.T
