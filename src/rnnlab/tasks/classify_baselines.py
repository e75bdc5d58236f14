"""Baselines for sequence classification, on the network's exact train and test sequences.

    majority            always the most frequent training class
    logistic_summary    logistic regression (scikit-learn, L2, C = 1) on a fixed-size summary of
                        each sequence: per-feature mean, std, min, max, first and last frame,
                        and the length; standardised on the training split. What a practitioner
                        tries before any sequence model: it ignores the order within a sequence.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._optional import require
from .metrics import classification_report


def summary_features(seqs):
    """(N, 6D + 1): mean, std, min, max, first, last of each feature, and the length."""
    return np.stack([np.concatenate([s.mean(0), s.std(0), s.min(0), s.max(0), s[0], s[-1], [len(s)]])
                     for s in seqs])


def summary_baselines(train, y_train, test, y_test, classes):
    lm = require("sklearn.linear_model", "the logistic-regression baseline")
    pre = require("sklearn.preprocessing", "the logistic-regression baseline")
    majority = int(np.bincount(y_train, minlength=len(classes)).argmax())
    out = {"majority": classification_report(y_test, np.full(len(y_test), majority), classes)}
    scaler = pre.StandardScaler().fit(summary_features(train))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # lbfgs convergence notes; max_iter is generous
        clf = lm.LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(summary_features(train)), y_train)
    pred = clf.predict(scaler.transform(summary_features(test)))
    out["logistic_summary"] = classification_report(y_test, pred, classes)
    return out
