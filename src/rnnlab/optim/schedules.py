"""Learning-rate schedules: each is a function ``factor(step) -> float`` of the number of
optimizer steps already taken (0 for the first step), and the learning rate of that
step is ``base_lr * factor(step)``. ``apply_schedule`` sets it on an optimizer.

    constant()                          1
    step_lr(step_size, gamma)           gamma ** (step // step_size)       (torch StepLR)
    cosine_with_warmup(W, S, f_min)     (step + 1) / W                     step < W
                                        f_min + (1 - f_min) (1 + cos(pi (step - W) / (S - W))) / 2
                                                                           W <= step <= S
                                        f_min                              step > S

The warm-up reaches 1 at step W - 1 (its first step already has a small non-zero
rate rather than a wasted step at 0); the cosine then falls from 1 at step W to
f_min at step S, as torch's CosineAnnealingLR with T_max = S - W.
"""
from __future__ import annotations

import math
import numbers

from ._optimizer import hyper


def _nonneg_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


def _check_step(step):
    return _nonneg_int(step, "step")


def constant():
    def factor(step):
        _check_step(step)
        return 1.0
    return factor


def step_lr(step_size, gamma=0.1):
    step_size = _nonneg_int(step_size, "step_size")
    if step_size == 0:
        raise ValueError("step_size: expected a positive integer, got 0")
    gamma = hyper(gamma, "gamma")

    def factor(step):
        return gamma ** (_check_step(step) // step_size)
    return factor


def cosine_with_warmup(warmup_steps, total_steps, min_factor=0.0):
    warmup_steps = _nonneg_int(warmup_steps, "warmup_steps")
    total_steps = _nonneg_int(total_steps, "total_steps")
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps: expected more than warmup_steps={warmup_steps}, got {total_steps}")
    min_factor = hyper(min_factor, "min_factor", 0.0, 1.0)

    def factor(step):
        step = _check_step(step)
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step >= total_steps:
            return min_factor
        progress = (step - warmup_steps) / (total_steps - warmup_steps)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def apply_schedule(optimizer, base_lr, schedule, step):
    """Set ``optimizer.lr = base_lr * schedule(step)`` and return it."""
    optimizer.lr = base_lr * schedule(step)
    return optimizer.lr
