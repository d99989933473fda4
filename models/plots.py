"""Evaluation charts (ROC, precision-recall, gains and lift, calibration) as matplotlib figures."""

from __future__ import annotations

import matplotlib.pyplot as plt  # no backend forced: inline in notebooks, Agg when headless
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve


def _curves(scores: dict[str, np.ndarray], y: np.ndarray):
    for name, p in scores.items():
        yield name, np.asarray(p, float)


def roc(y, scores: dict[str, np.ndarray]):
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in _curves(scores, y):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title="ROC (out-of-time test)"
    )
    ax.legend(loc="lower right")
    return fig


def precision_recall(y, scores):
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in _curves(scores, y):
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=name)
    ax.axhline(np.mean(y), ls=":", c="grey")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend()
    return fig


def gains_and_lift(y, scores):
    y = np.asarray(y, int)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    share = np.arange(1, len(y) + 1) / len(y)
    for name, p in _curves(scores, y):
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(y[order]) / max(y.sum(), 1)
        a.plot(share, cum, label=name)
        b.plot(share[len(y) // 100 :], (cum / share)[len(y) // 100 :], label=name)
    a.plot([0, 1], [0, 1], ls=":", c="grey")
    a.set(
        xlabel="share of subscribers contacted",
        ylabel="share of churners reached",
        title="Cumulative gains",
    )
    b.axhline(1, ls=":", c="grey")
    b.set(xlabel="share of subscribers contacted", ylabel="lift", title="Lift")
    a.legend()
    return fig


def calibration(y, scores, bins: int = 10):
    y = np.asarray(y, int)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, p in _curves(scores, y):
        order = np.argsort(p, kind="stable")
        parts = [c for c in np.array_split(order, bins) if len(c)]
        ax.plot([p[c].mean() for c in parts], [y[c].mean() for c in parts], marker="o", label=name)
    hi = max(0.05, float(np.max([np.max(p) for p in scores.values()])))
    ax.plot([0, hi], [0, hi], ls=":", c="grey")
    ax.set(
        xlabel="predicted churn probability",
        ylabel="observed churn rate",
        title="Calibration (deciles)",
    )
    ax.legend()
    return fig


ALL = {
    "roc.png": roc,
    "precision_recall.png": precision_recall,
    "gains_lift.png": gains_and_lift,
    "calibration.png": calibration,
}
