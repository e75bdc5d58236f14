"""Output heads and their losses. Each loss is a pure function returning ``(loss, dlogits)``:
the loss a Python float averaged as PyTorch's default 'mean', and its gradient
with respect to the first argument, same shape.

    softmax_cross_entropy(logits, targets, ignore_index=-100, mask=None)
    sigmoid_binary_cross_entropy(logits, targets, mask=None)
    mse(pred, target, mask=None)
    softmax(x, axis=-1), log_softmax(x, axis=-1)
"""
from .binary_cross_entropy import sigmoid_binary_cross_entropy
from .cross_entropy import softmax_cross_entropy
from .mse import mse
from .softmax import log_softmax, softmax

__all__ = ["softmax_cross_entropy", "sigmoid_binary_cross_entropy", "mse", "softmax", "log_softmax"]
