"""Sentiment: a sentence's words -> P(positive), many-to-one with padding through ``lengths``.

    ids (N, T) -> Embedding (N, T, E) -> recurrent layers -> final state -> Linear -> logit
    P(positive) = sigmoid(logit), trained with binary cross-entropy

Split: stratified 80% train / 10% validation / 10% test with a fixed seed. The
vocabulary (words seen at least twice) is built from the training part alone;
the validation part picks the epoch; VADER is scored on exactly the test part,
its threshold chosen on the training part (see baselines.py).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from ..losses import sigmoid_binary_cross_entropy
from . import baselines as B
from ._optional import require
from .fit import fit
from .metrics import classification_report
from .model import SequenceModel
from .text_data import Vocab, tokenize


@dataclass
class SentimentConfig:
    cell: str = "gru"
    embed: int = 64
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.5          # on the final state: 8,000 sentences overfit within a few epochs
    epochs: int = 20
    batch: int = 32
    lr: float = 2e-3
    clip: float = 1.0
    weight_decay: float = 0.0
    patience: int = 4             # epochs without a better validation loss before stopping
    max_len: int = 60             # tokens kept per sentence (99% of the snippets are shorter)
    min_count: int = 2            # words seen fewer times in training become <unk>
    seed: int = 0
    limit: int = 0                # if > 0, use only this many sentences (quick runs)


def split_indices(labels, seed):
    """Stratified 80/10/10 train/validation/test indices."""
    train_test_split = require("sklearn.model_selection", "the sentiment split").train_test_split
    idx = np.arange(len(labels))
    tr, rest = train_test_split(idx, test_size=0.2, stratify=labels, random_state=seed)
    va, te = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return tr, va, te


def predict_proba(model, vocab, texts, max_len):
    X, L = vocab.encode([tokenize(t) for t in texts], max_len)
    z = model.predict(X, L)[:, 0]
    return 1.0 / (1.0 + np.exp(-z))


def _bce(logits, targets):
    return sigmoid_binary_cross_entropy(logits, targets[:, None].astype(logits.dtype))


def train_sentiment(data, cfg: SentimentConfig, quiet=False):
    """Returns (model, meta, results)."""
    start = time.perf_counter()
    texts, labels = data.texts, data.labels
    if cfg.limit and cfg.limit < len(texts):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(texts), cfg.limit, replace=False))
        texts, labels = [texts[i] for i in keep], labels[keep]
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 5:
        raise ValueError(f"labels: expected at least 5 sentences of each label, got {counts.tolist()}")
    tr, va, te = split_indices(labels, cfg.seed)
    toks = [tokenize(t) for t in texts]
    vocab = Vocab.build([toks[i] for i in tr], cfg.min_count)
    Xtr, Ltr = vocab.encode([toks[i] for i in tr], cfg.max_len)
    Xva, Lva = vocab.encode([toks[i] for i in va], cfg.max_len)
    model = SequenceModel(cfg.embed, cfg.hidden, 1, cell=cfg.cell, num_layers=cfg.layers,
                          bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                          vocab_size=len(vocab.words), seed=cfg.seed)

    def val_loss(m):
        return _bce(m.predict(Xva, Lva).astype(np.float32), labels[va])[0]

    history = fit(model, _bce, Xtr, labels[tr], Ltr, val_score=val_loss, epochs=cfg.epochs,
                  batch_size=cfg.batch, lr=cfg.lr, clip=cfg.clip, patience=cfg.patience, seed=cfg.seed,
                  weight_decay=cfg.weight_decay, desc=f"sentiment {data.name}", quiet=quiet)
    p = predict_proba(model, vocab, [texts[i] for i in te], cfg.max_len)
    results = {"task": "sentiment", "dataset": data.name, "level": "word",
               "split": f"stratified 80/10/10 train/validation/test, seed {cfg.seed}",
               "n_train": len(tr), "n_validation": len(va), "n_test": len(te), "vocab_size": len(vocab.words),
               **classification_report(labels[te], (p >= 0.5).astype(int), data.label_names), "baselines": {}}
    if data.positive_known:
        s_tr = B.vader_scores([texts[i] for i in tr])
        cut = B.vader_threshold(s_tr, labels[tr] == 1)
        s_te = B.vader_scores([texts[i] for i in te])
        results["baselines"]["vader"] = {
            **classification_report(labels[te], (s_te > cut).astype(int), data.label_names),
            "threshold": cut, "test_accuracy_at_zero": float(np.mean((s_te > 0) == labels[te]))}
    else:
        results["baselines"]["vader"] = None
        results["baselines_notes"] = {"vader": f"neither label of {data.label_names} reads as positive"}
    results.update({"epochs_run": len(history), "best_epoch": 1 + int(np.argmin([r["val"] for r in history])),
                    "config": asdict(cfg), "wall_seconds": round(time.perf_counter() - start, 2)})
    meta = {"model": model.config, "config": asdict(cfg), "vocab": vocab.words, "labels": data.label_names}
    return model, meta, results
