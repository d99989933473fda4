"""Evaluation a retention team can read: ranking, calibration, lift, and profit (EMP)."""

from __future__ import annotations

import numpy as np
from empulse.metrics import empc_score
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from models.config import Economics


def lift_at(y: np.ndarray, p: np.ndarray, share: float) -> float:
    k = max(1, int(round(len(y) * share)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / max(y.mean(), 1e-12))


def precision_recall_at(y: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    k = max(1, int(round(len(y) * share)))
    top = np.argsort(-p, kind="stable")[:k]
    hits = y[top].sum()
    return float(hits / k), float(hits / max(y.sum(), 1))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed - predicted| over equal-frequency bins, weighted by bin size."""
    order = np.argsort(p, kind="stable")
    err = 0.0
    for chunk in np.array_split(order, bins):
        if len(chunk):
            err += len(chunk) * abs(y[chunk].mean() - p[chunk].mean())
    return float(err / len(y))


def evaluate(y, p, *, economics: Economics, clv: np.ndarray | None = None) -> dict[str, float]:
    """Ranking, calibration and profit metrics; EMP with the economics the outreach policy uses."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    prec, rec = precision_recall_at(y, p, economics.capacity_share)
    e = economics
    kw = dict(alpha=e.acceptance_alpha, beta=e.acceptance_beta, incentive_cost=e.incentive,
              contact_cost=e.contact_cost)  # fmt: skip
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "lift_1pct": lift_at(y, p, 0.01),
        "lift_5pct": lift_at(y, p, 0.05),
        "lift_10pct": lift_at(y, p, 0.10),
        "lift_20pct": lift_at(y, p, 0.20),
        "top_decile_lift": lift_at(y, p, 0.10),
        "precision_at_capacity": prec,
        "recall_at_capacity": rec,
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "emp": float(empc_score(y, p, clv=e.clv, **kw)),
        "emp_contact_fraction": float(empc_score.optimal_rate(y, p, clv=e.clv, **kw)),
        "base_rate": float(y.mean()),
        "n": float(len(y)),
    }
    if clv is not None:
        out["emp_own_value"] = float(empc_score(y, p, clv=np.asarray(clv, float), **kw))
        out["emp_own_value_contact_fraction"] = float(
            empc_score.optimal_rate(y, p, clv=np.asarray(clv, float), **kw)
        )
    return out
