"""Language-model metrics and the ``metrics.jsonl`` log.

From the summed negative log-likelihood (natural log) over n characters:

    loss        = nll / n                      nats per character
    perplexity  = exp(loss)
    bpc         = loss / ln 2                  bits per character
    accuracy    = fraction of characters whose most likely prediction was right
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from ..losses import log_softmax

__all__ = ["Tally", "MetricsLog", "nats_to_bits"]


def nats_to_bits(nats):
    return nats / math.log(2)


class Tally:
    """Running sums over evaluated positions; ``add`` skips targets equal to ``ignore_index``."""

    def __init__(self):
        self.nll = 0.0
        self.correct = 0
        self.count = 0

    def add(self, logits, targets, ignore_index=-100):
        valid = targets != ignore_index
        if not valid.any():
            return
        z = logits[valid].astype(np.float64)               # (M, V): only positions that count
        y = targets[valid]
        logp = log_softmax(z)
        self.nll += float(-logp[np.arange(len(y)), y].sum())
        self.correct += int((z.argmax(axis=1) == y).sum())
        self.count += int(len(y))

    def summary(self):
        if self.count == 0:
            raise ValueError("no characters were evaluated")
        loss = self.nll / self.count
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpc": nats_to_bits(loss),
                "acc": self.correct / self.count, "chars": self.count}


class MetricsLog:
    """Appends one JSON object per line to ``path`` (flushed to disk at each line)."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def append(self, record):
        line = json.dumps(record, sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
