"""Recurrent cells as pure functions: one time step forward, and its backward.

Each module holds one cell, its equations in the docstring, a ``step_forward``
that returns ``(new state..., cache)`` and a ``step_backward`` that walks the
forward lines in reverse. The input projection ``W_ih x_t + b_ih`` is computed
by the caller for all time steps in one GEMM and passed in as ``xw``; the weight
gradients are likewise formed by the caller in one GEMM over all steps from the
pre-activation gradients the backward returns.
"""
from . import gru, lstm, rnn

__all__ = ["rnn", "lstm", "gru"]
