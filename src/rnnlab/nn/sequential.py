"""Sequential: a chain of single-array modules, run forward in order and backward in reverse.

    y = f_K(...f_2(f_1(x)))          dx = f_1'(...f_K'(dy))

Parameters and gradients of the children appear under dotted names
(``"embed.weight"``, ``"head.bias"``) and are the children's own arrays, not
copies, so an optimizer that updates ``seq.params[name]`` in place updates the
child.

Sequential is for modules that map one array to one array (Embedding, Linear,
Dropout, another Sequential). It refuses the recurrent layers (RNN, LSTM, GRU)
because they do not have that shape: ``forward(x, state, lengths)`` takes the
carried state and the sequence lengths besides ``x`` and returns ``(out, state)``,
and ``backward(dout, dstate)`` returns ``(dx, dstate0)``. A chain that passes
one array along has nowhere to put the state in or out, and hiding it inside
the chain would hide exactly what a stateful model (truncated BPTT, sampling
one character at a time) must carry from one call to the next. The refusal is
a TypeError at the first ``forward``, when a module returns a tuple.

A recurrent model chains its parts by hand; ``rnnlab.charlm.CharLM`` is the
example to copy (Embedding -> recurrent layer -> Linear):

    e = embed.forward(ids)                    # (N, T) -> (N, T, E)
    h, state = rnn.forward(e, state)          # (N, T, H), state in and out
    z = head.forward(h)                       # (N, T, V)

    dh = head.backward(dz)                    # backward in reverse order
    de, dstate0 = rnn.backward(dh, dstate)
    embed.backward(de)
"""
from __future__ import annotations

from ._module import load_into


class Sequential:
    """``Sequential(embed=Embedding(...), head=Linear(...))`` or ``Sequential([("embed", ...), ...])``.

    Not for recurrent layers (see the module docstring; ``rnnlab.charlm.CharLM`` chains them by hand).
    """

    def __init__(self, *pairs, **named):
        if pairs and named:
            raise TypeError("Sequential: give either one list of (name, module) pairs or keyword arguments, not both")
        if len(pairs) > 1:
            raise TypeError(f"Sequential: expected one list of (name, module) pairs, got {len(pairs)} positional arguments")
        items = list(pairs[0]) if pairs else list(named.items())
        if not items:
            raise ValueError("Sequential: expected at least one module, got none")
        self.modules = {}
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"Sequential: expected (name, module) pairs, got {item!r}")
            name, module = item
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"Sequential: module names must be non-empty strings without '.', got {name!r}")
            if name in self.modules:
                raise ValueError(f"Sequential: duplicate module name {name!r}")
            for attr in ("forward", "backward", "params", "grads"):
                if not hasattr(module, attr):
                    raise TypeError(f"Sequential: module {name!r} ({type(module).__name__}) has no {attr!r}")
            self.modules[name] = module
        self.training = True

    def __getitem__(self, name):
        return self.modules[name]

    @property
    def params(self):
        """Every child's parameters under ``"<child>.<param>"``; the arrays are the children's own."""
        return {f"{n}.{k}": v for n, m in self.modules.items() for k, v in m.params.items()}

    @property
    def grads(self):
        return {f"{n}.{k}": v for n, m in self.modules.items() for k, v in m.grads.items()}

    def forward(self, x):
        for name, module in self.modules.items():
            x = module.forward(x)
            if isinstance(x, tuple):
                raise TypeError(f"Sequential: module {name!r} returned a tuple (a recurrent layer returns "
                                f"(out, state)); chain recurrent layers by hand, as rnnlab.charlm.CharLM does")
        return x

    __call__ = forward

    def backward(self, dout):
        for module in reversed(self.modules.values()):
            dout = module.backward(dout)       # an Embedding first in the chain returns None
        return dout

    def zero_grad(self):
        for m in self.modules.values():
            m.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        for m in self.modules.values():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, mapping):
        """Names and shapes of everything are checked before anything is copied."""
        load_into(self.params, mapping, "Sequential")

    def __repr__(self):
        inner = ",\n".join(f"  {n}: {m!r}" for n, m in self.modules.items())
        return f"Sequential(\n{inner}\n)"
