"""The training loop every task shares: shuffled minibatches, Adam, gradient clipping,
and early stopping that keeps the parameters of the best validation epoch.

One epoch:
    for each minibatch (x, y, lengths), in an order drawn from ``rng``:
        yhat = model(x[:, :max(lengths)], lengths)      padding trimmed per batch
        loss, dyhat = loss_fn(yhat, y)
        model.backward(dyhat); clip the global gradient norm; Adam step
    score = val_score(model)                             lower is better

Training stops after ``patience`` epochs without a better score, or at
``epochs``; the best epoch's parameters are then loaded back. Without a
validation set (``val_score=None``) the last epoch is kept.
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np

from ..optim import Adam, clip_grad_norm


def _progress(total, desc, quiet):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, disable=quiet, leave=False)


def _single_threaded():
    # The matrices here are small (batch x hidden); BLAS threads cost more than
    # they give, several times over on 2 cores. threadpoolctl comes with scikit-learn.
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:
        return contextlib.nullcontext()


def fit(model, loss_fn, X, y, lengths=None, val_score=None, epochs=50, batch_size=32, lr=1e-3,
        clip=1.0, patience=None, seed=0, weight_decay=0.0, desc="train", quiet=False):
    """Train ``model`` in place; returns the history, a list of per-epoch dicts."""
    with _single_threaded():
        return _fit(model, loss_fn, X, y, lengths, val_score, epochs, batch_size, lr, clip, patience,
                    seed, weight_decay, desc, quiet)


def _fit(model, loss_fn, X, y, lengths, val_score, epochs, batch_size, lr, clip, patience, seed,
         weight_decay, desc, quiet):
    rng = np.random.default_rng(seed)
    opt = Adam(model.params, lr=lr, weight_decay=weight_decay)
    N = len(X)
    best, best_state, since_best, history = np.inf, None, 0, []
    bar = _progress(epochs, desc, quiet)
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(N)
        total = 0.0
        for i in range(0, N, batch_size):
            idx = order[i:i + batch_size]
            lb = None if lengths is None else lengths[idx]
            xb = X[idx] if lb is None else X[idx, :int(lb.max())]
            model.zero_grad()
            loss, dyhat = loss_fn(model.forward(xb, lb), y[idx])
            model.backward(dyhat)
            if clip:
                clip_grad_norm(model.grads, clip)
            opt.step(model.grads)
            total += loss * len(idx)
        row = {"epoch": epoch, "train_loss": total / N}
        if val_score is not None:
            row["val"] = float(val_score(model))
            if row["val"] < best:
                best, best_state, since_best = row["val"], model.state_dict(), 0
            else:
                since_best += 1
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "epoch"})
        if not np.isfinite(row["train_loss"]):
            break                      # diverged: the best earlier epoch is restored below
        if patience is not None and since_best >= patience:
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
