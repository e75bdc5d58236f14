"""Multi-layer, optionally bidirectional recurrent layers: ``RNN``, ``LSTM`` and ``GRU``.

The classes hold parameters and run the loops; the math of one time step lives
in ``rnnlab.cells``. One layer's forward over a sequence is

    XW = X W_ih^T + b_ih                    one GEMM for all T steps   (T, N, G)
    for t in 0..T-1 (T-1..0 for the reverse direction):
        h_t[, c_t] = cell.step_forward(XW[t], h_{t-1}[, c_{t-1}], W_hh, b_hh)

and its backward runs the same loop in the opposite order, collecting the
pre-activation gradients dA (T, N, G); the weight gradients are then one GEMM
each over all steps: dW_ih = dA^T X, dW_hh = dA_h^T H_prev, dX = dA W_ih.

Variable lengths (``lengths``) follow PyTorch's packed sequences: at a padded
step a sequence's state is carried unchanged and its output is zero, and the
reverse direction of each sequence starts at its own last valid step. Both are
done with a 0/1 mask m_t: h_t = m_t * h_new + (1 - m_t) * h_{t-1}.

Internally the loops index time first, (T, N, .), and take step t as a[t]. With
``batch_first`` on the compiled float32 path the data stay batch-major in memory
and the (T, N, .) arrays are transposed views (``fast/_steps.py``): no transposing
copies of x, out, dout or dx (the NumPy loops get time-major copies, as before).
As in PyTorch, backward reads what forward kept, which can include ``out`` itself
(the simple RNN's derivative is computed from its outputs): modify a copy of
``out``, not ``out``, between forward and backward.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from . import _validate as V
from ._conventions import GATES, suffix
from .cells import gru as gru_cell
from .cells import lstm as lstm_cell
from .cells import rnn as rnn_cell
from . import fast as _fast

__all__ = ["RNN", "LSTM", "GRU"]


def _own(arr, given):
    """arr, copied if it is the caller's own array ``given``: the caches keep the initial state
    for the backward, which must see it as the forward did even if the caller changes it."""
    return arr.copy() if arr is given else arr


class _Recurrent:
    mode = None  # "rnn", "lstm" or "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 nonlinearity="tanh", proj_size=0, forget_bias=None):
        self.input_size = V.positive_int(input_size, "input_size")
        self.hidden_size = V.positive_int(hidden_size, "hidden_size")
        self.num_layers = V.positive_int(num_layers, "num_layers")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, numbers.Integral) or proj_size < 0:
            raise ValueError(f"proj_size: expected a non-negative integer, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size: expected less than hidden_size={hidden_size}, got {proj_size}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.nonlinearity = nonlinearity
        self.proj_size = int(proj_size)
        self.forget_bias = forget_bias
        self.dtype = V.float_dtype(dtype)
        self.num_directions = 2 if bidirectional else 1
        self.hidden_out = self.proj_size or self.hidden_size   # size of h (P if projected)
        self.rng = np.random.default_rng(seed)
        self.training = True
        self.recorder = None     # optional callable(layer, direction, t, dh, dc) used by diagnostics
        self._cache = None
        self._stream_ws = None   # workspace of the one-call streaming step (fast/_stream.py)
        L = self.num_layers      # and how it picks the weights from params: one C call each
        self._stream_get = (operator.itemgetter(*[f"weight_{s}_l{k}" for k in range(L) for s in ("ih", "hh")]),
                            operator.itemgetter(*[f"bias_{s}_l{k}" for k in range(L) for s in ("ih", "hh")]))
        self.weight_rows = GATES[self.mode] * self.hidden_size     # G: rows of each W_ih, W_hh
        # True: the fused kernels of rnnlab.fast (tested equal); False: the readable cells below
        self.fast = _fast.ENABLED
        self.params = self._init_params()
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    # ---- parameters ---------------------------------------------------------------
    def _shapes(self):
        """Names and shapes of every parameter, in PyTorch's order."""
        G = GATES[self.mode] * self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            d_in = self.input_size if k == 0 else self.num_directions * self.hidden_out
            for reverse in range(self.num_directions):
                s = suffix(k, bool(reverse))
                shapes["weight_ih" + s] = (G, d_in)
                shapes["weight_hh" + s] = (G, self.hidden_out)
                if self.bias:
                    shapes["bias_ih" + s] = (G,)
                    shapes["bias_hh" + s] = (G,)
                if self.proj_size:
                    shapes["weight_hr" + s] = (self.proj_size, self.hidden_size)
        return shapes

    def _init_params(self):
        # PyTorch: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)), H = hidden_size.
        bound = 1.0 / np.sqrt(self.hidden_size)
        # each on a cache line (its rows read whole at every step: ``fast._steps.aligned_empty``)
        params = {name: _fast._steps.aligned_copy(self.rng.uniform(-bound, bound, shape).astype(self.dtype))
                  for name, shape in self._shapes().items()}
        if self.mode == "lstm" and self.bias and self.forget_bias is not None:
            # The seeds' advice: start the forget gate open. Only b_ih + b_hh
            # matters, so the whole value goes on b_ih and b_hh's part is zero.
            H = self.hidden_size
            for name in params:
                if name.startswith("bias_ih"):
                    params[name][H:2 * H] = self.forget_bias
                elif name.startswith("bias_hh"):
                    params[name][H:2 * H] = 0.0
        return params

    def _stream_weights(self):
        """(W_ih_l0, W_hh_l0, W_ih_l1, ...) and the biases likewise (zeros when bias=False)."""
        w, b = self._stream_get
        p = self.params
        if self.bias:
            return w(p), b(p)
        return w(p), (_fast._stream._zeros(self.weight_rows),) * (2 * self.num_layers)

    def state_dict(self):
        """A copy of every parameter, keyed by PyTorch's names."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, mapping):
        """Load parameters from any mapping of array-likes; every name and shape is checked."""
        if not hasattr(mapping, "keys") or not hasattr(mapping, "__getitem__"):
            raise TypeError(f"state_dict: expected a mapping of parameter names to arrays, got {type(mapping).__name__}")
        expected = self._shapes()
        missing = [k for k in expected if k not in mapping]
        extra = [k for k in mapping if k not in expected]
        if missing or extra:
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {extra}")
        new = {}
        for name, shape in expected.items():
            arr = V.as_float_array(mapping[name], name, self.dtype)
            if arr.shape != shape:
                raise ValueError(f"{name}: expected {shape}, got {arr.shape}")
            new[name] = arr
        for name, arr in new.items():
            self.params[name][...] = arr

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def __repr__(self):
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}{extra}, dtype={self.dtype.name})")

    # ---- input checks ---------------------------------------------------------------
    def _check_state(self, state, N, name="state"):
        L = self.num_layers * self.num_directions
        h_shape = (L, N, self.hidden_out)
        if self.mode == "lstm":
            if state is None:
                return (np.zeros(h_shape, self.dtype), np.zeros((L, N, self.hidden_size), self.dtype))
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{name}: expected a tuple (h, c) for an LSTM, got {type(state).__name__}")
            h = V.as_float_array(state[0], f"{name} h", self.dtype, ndim=3)
            c = V.as_float_array(state[1], f"{name} c", self.dtype, ndim=3)
            V.expect_shape(h, h_shape, f"{name} h")
            V.expect_shape(c, (L, N, self.hidden_size), f"{name} c")
            return (_own(h, state[0]), _own(c, state[1]))
        if state is None:
            return np.zeros(h_shape, self.dtype)
        if isinstance(state, (tuple, list)) and len(state) == 2 and np.ndim(state[0]) == 3:
            raise TypeError(f"{name}: expected one array h for {type(self).__name__}, got a pair (that is an LSTM state)")
        h = V.as_float_array(state, name, self.dtype, ndim=3)
        V.expect_shape(h, h_shape, name)
        return _own(h, state)

    @staticmethod
    def _check_lengths(lengths, N, T):
        if lengths is None:
            return None
        arr = np.asarray(lengths)
        if arr.dtype == object or arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
        if arr.shape != (N,):
            raise ValueError(f"lengths: expected shape ({N},), one length per sequence, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise TypeError(f"lengths: expected whole numbers, got {arr}")
        arr = arr.astype(np.int64)
        if arr.min() < 1 or arr.max() > T:
            raise ValueError(f"lengths: expected every length in 1..{T} (the sequence length), "
                             f"got min {arr.min()} and max {arr.max()}")
        return arr

    # ---- forward ----------------------------------------------------------------------
    def forward(self, x, state=None, lengths=None):
        """Run the layers over a batch of sequences.

        x: (N, T, D) (or (T, N, D) if batch_first=False). state: h (or (h, c) for
        the LSTM), each (num_layers * num_directions, N, H). lengths: (N,) ints in 1..T.
        Returns out (N, T, num_directions * H_out) and the final state. ``backward`` may read
        out itself (the compiled float32 path keeps no other copy of the states): change a copy
        of it, not out, before calling ``backward``.
        """
        if lengths is None and _fast.COMPILED and _fast._stream.stack_usable(self):
            done = _fast._stream.forward_stack(self, x, state)      # T = 1: one compiled call
            if done is not None:
                return done
        x = V.as_float_array(x, "x", self.dtype, ndim=3)
        X = x.transpose(1, 0, 2) if self.batch_first else x          # (T, N, D); x is C-contiguous
        if self.batch_first and not _fast.keeps_batch_major(self, x, lengths):
            X = np.ascontiguousarray(X)      # the NumPy loops want time-major steps; the compiled take the view
        T, N, D = X.shape
        if D != self.input_size:
            raise ValueError(f"x: expected {self.input_size} features in the last dimension, got {D} "
                             f"(shape {x.shape}, batch_first={self.batch_first})")
        if T == 0 or N == 0:
            raise ValueError(f"x: expected at least one sequence and one time step, got shape {x.shape}")
        lengths = self._check_lengths(lengths, N, T)
        state = self._check_state(state, N)
        h0, c0 = (state if self.mode == "lstm" else (state, None))
        # mask[t] is (N, 1): 1 where step t is inside the sequence
        mask = None if lengths is None else (np.arange(T)[:, None] < lengths[None, :]).astype(self.dtype)[:, :, None]

        hT = np.empty_like(h0)
        cT = np.empty_like(c0) if c0 is not None else None
        layers = []
        inp = X
        for k in range(self.num_layers):
            outs, dirs = [], []
            for d in range(self.num_directions):
                idx = k * self.num_directions + d
                out, h, c, cache = self._run_direction(inp, h0[idx], None if c0 is None else c0[idx],
                                                       suffix(k, bool(d)), bool(d), mask)
                hT[idx] = h
                if cT is not None:
                    cT[idx] = c
                outs.append(out)
                dirs.append(cache)
            layer_out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            drop = None
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                # inverted dropout between layers, as PyTorch: kept units scaled by 1/(1-p)
                keep = self.rng.random(layer_out.shape) >= self.dropout
                drop = keep.astype(self.dtype) / (1 - self.dropout)
                layer_out = layer_out * drop
            layers.append((inp, dirs, drop))
            inp = layer_out
        self._cache = (layers, mask, inp.shape, x.shape)
        out = inp.transpose(1, 0, 2) if self.batch_first else inp
        return np.ascontiguousarray(out), ((hT, cT) if self.mode == "lstm" else hT)

    __call__ = forward

    def _run_direction(self, X, h, c, s, reverse, mask):
        """One layer, one direction, over all steps. X (T, N, D_k). Returns out (T, N, H_out), h_T, c_T, cache."""
        if self.fast:
            return _fast.run_direction(self, X, h, c, s, reverse, mask)
        p = self.params
        T, N, _ = X.shape
        W_ih, W_hh = p["weight_ih" + s], p["weight_hh" + s]
        b_ih, b_hh = p.get("bias_ih" + s), p.get("bias_hh" + s)
        W_hr = p.get("weight_hr" + s)
        XW = (X.reshape(T * N, -1) @ W_ih.T).reshape(T, N, -1)        # one GEMM for all steps (T, N, G)
        if b_ih is not None:
            XW += b_ih
        out = np.empty((T, N, self.hidden_out), self.dtype)
        H_prev = np.empty((T, N, self.hidden_out), self.dtype)        # state before each step, for dW_hh
        caches = [None] * T
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            H_prev[t] = h
            if self.mode == "lstm":
                h_new, c_new, caches[t] = lstm_cell.step_forward(XW[t], h, c, W_hh, b_hh, W_hr)
            elif self.mode == "gru":
                h_new, caches[t] = gru_cell.step_forward(XW[t], h, W_hh, b_hh)
            else:
                h_new, caches[t] = rnn_cell.step_forward(XW[t], h, W_hh, b_hh, self.nonlinearity)
            if mask is None:
                h, out[t] = h_new, h_new
                c = c_new if self.mode == "lstm" else None
            else:
                m = mask[t]
                out[t] = m * h_new
                h = m * h_new + (1 - m) * h        # padded steps carry the state unchanged
                if self.mode == "lstm":
                    c = m * c_new + (1 - m) * c
        return out, h, c, (caches, H_prev)

    # ---- backward ---------------------------------------------------------------------
    def backward(self, dout, dstate=None):
        """Backprop through time of the most recent ``forward``.

        dout: gradient of the loss with respect to ``out`` (same shape). dstate:
        optional gradient with respect to the final state (same structure).
        Returns dx (shape of x) and the gradient of the initial state; adds the
        parameter gradients into ``self.grads``.
        """
        if self._cache is None:
            raise ValueError("backward: called before forward; run forward(x) first")
        if isinstance(self._cache, _fast._stream.Pending):
            self._cache = self._cache.materialize()
        layers, mask, out_shape_tm, x_shape = self._cache
        T, N, _ = out_shape_tm
        out_shape = (N, T, out_shape_tm[2]) if self.batch_first else out_shape_tm
        dout = V.as_float_array(dout, "dout", self.dtype, ndim=3)
        V.expect_shape(dout, out_shape, "dout")
        dY = dout.transpose(1, 0, 2) if self.batch_first else dout     # dout is C-contiguous (as_float_array)
        L = self.num_layers * self.num_directions
        if dstate is None:
            dh0 = np.zeros((L, N, self.hidden_out), self.dtype)
            dc0 = np.zeros((L, N, self.hidden_size), self.dtype) if self.mode == "lstm" else None
        else:
            st = self._check_state(dstate, N, "dstate")
            dh0, dc0 = (st if self.mode == "lstm" else (st, None))
            dh0, dc0 = dh0.copy(), (None if dc0 is None else dc0.copy())
        Ho = self.hidden_out
        for k in range(self.num_layers - 1, -1, -1):
            X, dirs, drop = layers[k]
            if drop is not None:
                dY = dY * drop                                         # backprop through dropout
            # the fast path's first direction writes every step of dX (no zero fill, no add pass)
            fresh = isinstance(dirs[0], _fast.Cache)
            dX = np.empty_like(X) if fresh else np.zeros_like(X)
            for d in range(self.num_directions):
                idx = k * self.num_directions + d
                dh, dc = self._backprop_direction(
                    X, dY[:, :, d * Ho:(d + 1) * Ho], dh0[idx], None if dc0 is None else dc0[idx],
                    dirs[d], suffix(k, bool(d)), bool(d), mask, dX, k, fresh and d == 0)
                dh0[idx] = dh
                if dc0 is not None:
                    dc0[idx] = dc
            dY = dX
        dx = dY.transpose(1, 0, 2) if self.batch_first else dY
        dx = np.ascontiguousarray(dx)
        return dx, ((dh0, dc0) if self.mode == "lstm" else dh0)

    def _backprop_direction(self, X, dY, dh, dc, cache, s, reverse, mask, dX, layer, write_dX=False):
        """Backward of ``_run_direction``. dY (T, N, H_out) is the gradient of its outputs;
        dh, dc the gradient of its final state. Adds dX (writes it, on the fast path, if
        ``write_dX``) and the parameter gradients; returns dh_0, dc_0."""
        if isinstance(cache, _fast.Cache):
            return _fast.backprop_direction(self, X, dY, dh, dc, cache, s, reverse, mask, dX, layer, write_dX)
        p, g = self.params, self.grads
        caches, H_prev = cache
        T, N, _ = X.shape
        W_ih, W_hh, W_hr = p["weight_ih" + s], p["weight_hh" + s], p.get("weight_hr" + s)
        G = W_ih.shape[0]
        dA = np.empty((T, N, G), self.dtype)                      # gradient of XW (pre-activations, input side)
        dA_h = np.empty((T, N, G), self.dtype) if self.mode == "gru" else dA   # hidden side (differs for GRU)
        if W_hr is not None:
            dH = np.empty((T, N, self.proj_size), self.dtype)     # gradient reaching each projected h
            M = np.empty((T, N, self.hidden_size), self.dtype)
        for t in (range(T) if reverse else range(T - 1, -1, -1)):
            dh_new = dY[t] + dh                                   # out_t and the state h_t are both h_new
            if self.recorder is not None:
                # diagnostics: the total gradient reaching h_t (for the LSTM also c_t, via c_{t+1})
                self.recorder(layer, int(reverse), t, dh_new, dc)
            dc_new = dc
            if mask is not None:
                m = mask[t]
                dh_new = m * dh_new                               # h_t = m * h_new + (1 - m) * h_{t-1}
                dh_keep = (1 - m) * dh
                if self.mode == "lstm":
                    dc_new = m * dc
                    dc_keep = (1 - m) * dc
            if self.mode == "lstm":
                dA[t], dh, dc, dm = lstm_cell.step_backward(dh_new, dc_new, caches[t], W_hh, W_hr)
                if W_hr is not None:
                    dH[t] = dh_new
                    M[t] = caches[t][-1]
            elif self.mode == "gru":
                dA[t], dA_h[t], dh = gru_cell.step_backward(dh_new, caches[t], W_hh)
            else:
                dA[t], dh = rnn_cell.step_backward(dh_new, caches[t], W_hh)
            if mask is not None:
                dh = dh + dh_keep
                if self.mode == "lstm":
                    dc = dc + dc_keep
        # weight gradients: one GEMM each over all time steps
        A = dA.reshape(T * N, G)
        A_h = dA_h.reshape(T * N, G)
        g["weight_ih" + s] += A.T @ X.reshape(T * N, -1)
        g["weight_hh" + s] += A_h.T @ H_prev.reshape(T * N, -1)
        if self.bias:
            g["bias_ih" + s] += A.sum(axis=0)
            g["bias_hh" + s] += A_h.sum(axis=0)
        if W_hr is not None:
            g["weight_hr" + s] += dH.reshape(T * N, -1).T @ M.reshape(T * N, -1)
        dX += (A @ W_ih).reshape(X.shape)
        return dh, dc


class RNN(_Recurrent):
    """Simple (Elman) RNN: h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), f = tanh or relu.

    Options and semantics follow ``torch.nn.RNN`` except that ``batch_first``
    defaults to True. ``seed`` seeds the initialisation and dropout.
    """
    mode = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=True, dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, nonlinearity=nonlinearity)


class LSTM(_Recurrent):
    """Long short-term memory, gates i, f, g, o as ``torch.nn.LSTM``; see ``rnnlab.cells.lstm``.

    ``forget_bias`` (default 1.0) is the initial total forget-gate bias
    (b_ih + b_hh); ``None`` keeps PyTorch's uniform initialisation.
    ``proj_size`` > 0 adds the projection h_t = W_hr (o_t * tanh(c_t)).
    """
    mode = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=False, proj_size=0, forget_bias=1.0,
                 dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed, proj_size=proj_size, forget_bias=forget_bias)


class GRU(_Recurrent):
    """Gated recurrent unit, gates r, z, n as ``torch.nn.GRU``; see ``rnnlab.cells.gru``."""
    mode = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)
