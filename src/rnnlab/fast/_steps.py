"""Shared pieces of the fast loops: the order of a backward sweep in chunks of steps, W_hh^T, and
the backward's recurrent product.

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
    return transposed(W_hh) if T > 2 else W_hh.T


def transposed(W):
    """A C-contiguous copy of W^T: by the tiled compiled transpose for float32 when Numba is there
    (``_compiled.transpose2d``; NumPy's strided copy of a (2048, 512) W_hh^T took 2.72 ms, tiled
    0.91 ms, measured), else by NumPy."""
    from . import _compiled          # here, not at the top: _compiled imports this module
    if _compiled.AVAILABLE and W.dtype == np.float32:
        out = np.empty(W.shape[::-1], W.dtype)
        _compiled.transpose2d(W, out)
        return out
    return np.ascontiguousarray(W.T)


# Between these batch sizes the backward's dh = dA W_hh is computed as (W_hh^T dA^T)^T.
TRANSPOSED_MIN_ROWS = 16
TRANSPOSED_MAX_ROWS = 48


class RecurrentGrad:
    """The backward's per-step product dh = dA W_hh (dA (N, G), W_hh (G, H_out)).

    On its own OpenBLAS computes it much faster transposed, as W_hh^T dA^T with a tall,
    narrow result (H_out, N) copied back to (N, H_out): measured on the 2-core machine
    (AVX-512 kernels, two threads) (32, 1024) x (1024, 256) 167 -> 62 us. Inside the
    backward loop the gain is smaller; whole LSTM backwards, T = 50, best of 7: N = 16,
    H = 256 6.28 -> 5.40 ms; N = 32, H = 256 11.07 -> 10.04 ms; but N = 8 no change and
    N = 64, H = 512 51.8 -> 53.1 ms. Hence the window of batch sizes above.
    """

    def __init__(self, W_hh, N, T):
        self.W = W_hh
        self.transposed = TRANSPOSED_MIN_ROWS <= N <= TRANSPOSED_MAX_ROWS and T > 2
        if self.transposed:
            self.WT = transposed(W_hh)                             # (H_out, G), copied once per call
            self.buf = np.empty((W_hh.shape[1], N), W_hh.dtype)

    def __call__(self, dA_k, out):
        """out (N, H_out) <- dA_k W_hh; returns out."""
        if self.transposed:
            np.matmul(self.WT, dA_k.T, out=self.buf)
            out[...] = self.buf.T
        else:
            np.matmul(dA_k, self.W, out=out)
        return out
