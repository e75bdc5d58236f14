"""The memory lab: see vanishing gradients and long-term memory, and measure them.

    diagnostics      GradientHorizon (a layer.recorder: ||dL/dh_t|| at every step), recording(),
                     gate_stats, gate_trace, recurrent_spectrum, grad_norms, update_ratios
    forensics        the first NaN/Inf (step, layer, direction, gate, t, row) and a reproducer file
    memory_tasks     the adding problem, the copy task and digits read row by row, with baselines
    experiment       MemoryConfig, train_run, run: the 'rnnlab experiment memory' runs
    run_diagnostics  diagnose_charlm: the same measurements on a trained character model
    figures, report  matplotlib PNGs (Agg) and self-contained HTML reports

Recording is opt-in: with ``layer.recorder = None`` (the default) backprop does no extra work.
"""
from . import diagnostics, forensics, memory_tasks
from .diagnostics import GradientHorizon, recording

__all__ = ["diagnostics", "forensics", "memory_tasks", "GradientHorizon", "recording"]
