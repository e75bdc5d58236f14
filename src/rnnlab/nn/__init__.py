"""Model pieces around the recurrent layers, each with forward/backward like ``rnnlab.LSTM``.

    Embedding       token ids -> vectors (torch.nn.Embedding)
    Linear          affine map of the last axis, per time step (torch.nn.Linear)
    Dropout         inverted dropout, identity in eval (torch.nn.Dropout)
    Sequential      chain of single-array modules with dotted parameter names
    last_valid_step, last_valid_step_backward
                    many-to-one: each sequence's output at its last valid step

Every module has ``params``/``grads`` dicts (gradients accumulate with +=),
``training``, ``forward`` (also ``__call__``), ``backward(dout) -> dinput``,
``zero_grad()``, ``train()``/``eval()``, ``state_dict()``/``load_state_dict()``.
"""
from .dropout import Dropout
from .embedding import Embedding
from .last_step import last_valid_step, last_valid_step_backward
from .linear import Linear
from .sequential import Sequential

__all__ = ["Embedding", "Linear", "Dropout", "Sequential", "last_valid_step", "last_valid_step_backward"]
