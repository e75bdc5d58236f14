"""Text for character models: reading a file safely, the vocabulary, encoding.

A corpus is a list of documents (strings). The vocabulary is the sorted set of
characters that occur in it; a character's id is its index in that list, so
the list alone (saved with every checkpoint) rebuilds the encoding.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import UsageError

__all__ = ["read_text", "Vocabulary", "corpus_digest", "split_documents"]


def read_text(path, name="--text"):
    """The contents of ``path`` as a string, or a UsageError that says what is wrong.

    Refuses a missing or empty file, a binary file (one with NUL bytes: no text
    format uses them, every binary format does), and bytes that are not UTF-8.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError(f"{name}: no such file {path!r}")
    if os.path.isdir(path):
        raise UsageError(f"{name}: {path!r} is a directory; expected a UTF-8 text file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise UsageError(f"{name}: {path!r} is empty; expected a UTF-8 text file")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UsageError(f"{name}: {path!r} looks binary (a NUL byte at offset {nul}); "
                         f"expected a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{name}: {path!r} is not valid UTF-8 (byte {data[e.start]:#04x} at offset "
                         f"{e.start}); convert it, e.g. iconv -f latin1 -t utf-8") from None
    return text.removeprefix("\ufeff")   # a byte-order mark is not part of the text


def corpus_digest(documents):
    """SHA-256 of the documents (with their boundaries), to recognise a corpus on --resume."""
    h = hashlib.sha256()
    for doc in documents:
        b = doc.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class Vocabulary:
    """Characters <-> ids. ``chars`` is the sorted list of distinct characters."""

    def __init__(self, chars):
        chars = list(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError(f"chars: expected a non-empty list of single characters, got {chars[:5]!r}...")
        if len(set(chars)) != len(chars):
            raise ValueError("chars: expected distinct characters, got duplicates")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_documents(cls, documents):
        return cls(sorted(set().union(*map(set, documents))))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def missing(self, text):
        """The characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text, name="text"):
        """Ids (int64 array) of ``text``; a UsageError lists any unknown characters."""
        unknown = self.missing(text)
        if unknown:
            shown = "".join(unknown[:20])
            raise UsageError(f"{name}: {len(unknown)} character(s) not in the model's vocabulary of "
                             f"{len(self)}: {shown!r}; use only characters the model was trained on")
        return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in ids)

    def __repr__(self):
        return f"Vocabulary({len(self)} chars)"


def split_documents(documents, val_fraction):
    """(train, validation): the validation part is the last ``val_fraction`` of the concatenated corpus.

    The cut falls inside one document; its two halves become separate documents
    (the validation streams start from a fresh state there).
    """
    total = sum(len(d) for d in documents)
    cut = total - int(round(total * val_fraction))
    train, val, pos = [], [], 0
    for doc in documents:
        end = pos + len(doc)
        if end <= cut:
            train.append(doc)
        elif pos >= cut:
            val.append(doc)
        else:
            train.append(doc[:cut - pos])
            val.append(doc[cut - pos:])
        pos = end
    return [d for d in train if d], [d for d in val if d]
