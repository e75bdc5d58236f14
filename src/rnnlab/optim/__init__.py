"""Optimizers, learning-rate schedules and gradient clipping, each matching ``torch.optim``.

Optimizers update a dict of parameters in place from a dict of gradients:

    opt = Adam(model.params, lr=1e-3)
    opt.step(model.grads)          # same names; the gradients are not modified
    opt.lr = 5e-4                  # settable at any time (see schedules)
    state = opt.state_dict()       # flat dict of arrays (safetensors-friendly), exact resume

    SGD(params, lr, momentum=0, nesterov=False, weight_decay=0)
    Adagrad(params, lr=0.01, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)
    RMSprop(params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)
    Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

Schedules: ``constant()``, ``step_lr(step_size, gamma)``, ``cosine_with_warmup(warmup_steps,
total_steps, min_factor=0)``, applied with ``apply_schedule(opt, base_lr, schedule, step)``.
Clipping: ``clip_grad_norm(grads, max_norm) -> norm``, ``clip_grad_value(grads, v)``,
``find_nonfinite(grads) -> first name with NaN/Inf or None``.
"""
from ._optimizer import Optimizer
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm, clip_grad_value, find_nonfinite
from .rmsprop import RMSprop
from .schedules import apply_schedule, constant, cosine_with_warmup, step_lr
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
           "constant", "step_lr", "cosine_with_warmup", "apply_schedule",
           "clip_grad_norm", "clip_grad_value", "find_nonfinite"]
