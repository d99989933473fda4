"""Has the scoring month moved away from what the champion was trained on?

Plain, tested statistics rather than a monitoring framework: Evidently and NannyML pin
pandas, numpy or scikit-learn below this project's versions, and what is needed here
fits in a page.

- **PSI** (population stability index) per feature and for the score: the reference
  (the champion's training window) is cut at its own deciles, the month is counted in
  the same bins; a feature with few distinct values gets one bin per value plus one
  for values the reference never had. Missing values are not a bin: their share is
  compared on its own, because "more missing" and "moved" call for different action.
- **KS**: the largest gap between the two empirical distributions of the filled values.
- **Confidence-based performance estimation** (CBPE, as NannyML does it): with
  calibrated probabilities, each subscriber is a churner with probability p, so the
  expected ROC AUC over all label draws can be computed before any label arrives.
- **Quarantine rates**: rows quarantined per source and month, against the source's
  own history.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

_EPS = 1e-4  # floor of a bin's share: an empty bin would make PSI infinite


def _bin_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges at the reference's quantiles (duplicates folded: heavy ties make fewer bins)."""
    qs = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def _shares(ref: np.ndarray, cur: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin shares of the filled reference and current values, on the reference's bins."""
    values = np.unique(ref)
    if len(values) <= bins:  # a flag, a count of few values: one bin per value, and "other"
        r = np.array([*(np.mean(ref == v) for v in values), 0.0])
        c = np.array([*(np.mean(cur == v) for v in values), np.mean(~np.isin(cur, values))])
        return r, c
    edges = _bin_edges(ref, bins)
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    return r / len(ref), c / len(cur)


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index of the filled values; NaN when either side has none."""
    ref = _filled(reference)
    cur = _filled(current)
    if not len(ref) or not len(cur):
        return float("nan")
    r, c = _shares(ref, cur, bins)
    r, c = np.clip(r, _EPS, None), np.clip(c, _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def ks(reference, current) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of the filled values (NaN when a side is empty)."""
    ref, cur = np.sort(_filled(reference)), np.sort(_filled(current))
    if not len(ref) or not len(cur):
        return float("nan")
    grid = np.concatenate([ref, cur])
    f_ref = np.searchsorted(ref, grid, side="right") / len(ref)
    f_cur = np.searchsorted(cur, grid, side="right") / len(cur)
    return float(np.max(np.abs(f_ref - f_cur)))


def _filled(x) -> np.ndarray:
    a = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype=float)
    return a[np.isfinite(a)]


def _missing(x) -> float:
    a = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype=float)
    return float(np.mean(~np.isfinite(a))) if len(a) else float("nan")


def status(psi_value: float, missing_change: float, cfg) -> str:
    """``alarm``, ``watch`` or ``stable`` for one feature (``cfg``: the monitor settings).

    More missing values than the reference is an alarm of its own (an extract lost a
    column); fewer is worth a look but rarely harms the model.
    """
    if (
        np.isfinite(psi_value) and psi_value >= cfg.psi_alarm
    ) or missing_change >= cfg.missing_alarm:
        return "alarm"
    if (
        np.isfinite(psi_value) and psi_value >= cfg.psi_watch
    ) or missing_change <= -cfg.missing_alarm:
        return "watch"
    return "stable"


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], cfg
) -> pd.DataFrame:
    """One row per feature: PSI, KS, missing share then and now, and its status; worst first."""
    rows = []
    for f in features:
        p = psi(reference[f], current[f], cfg.bins)
        m_ref, m_cur = _missing(reference[f]), _missing(current[f])
        rows.append({"feature": f, "psi": p, "ks": ks(reference[f], current[f]),
                     "missing_reference": m_ref, "missing_current": m_cur,
                     "status": status(p, m_cur - m_ref, cfg)})  # fmt: skip
    out = pd.DataFrame(rows)
    order = out["status"].map({"alarm": 0, "watch": 1, "stable": 2})
    return (
        out.assign(_o=order, _p=out["psi"].fillna(-1))
        .sort_values(["_o", "_p"], ascending=[True, False])
        .drop(columns=["_o", "_p"])
        .reset_index(drop=True)
    )


def estimated_auc(p) -> float:
    """Expected ROC AUC when each row is a churner with its own calibrated probability p.

    AUC counts, over churner/stayer pairs, the share ranked the right way (ties half).
    With independent labels the expected count of right-way pairs is
    ``sum_{i ranked above j} p_i (1 - p_j)`` plus half of the tied pairs; the expected
    number of pairs is ``sum p * sum (1-p) - sum p(1-p)``. Both are exact; the ratio of
    expectations is what CBPE reports (close to the expected ratio on a big base).
    """
    p = np.clip(np.asarray(p, dtype=float), 0, 1)
    if len(p) < 2:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    q = 1 - ps
    # for each row, the stayer weight strictly below it and among its ties
    uniq, start, counts = np.unique(ps, return_index=True, return_counts=True)
    cum_q = np.concatenate([[0.0], np.cumsum(q)])
    below = np.repeat(cum_q[start], counts)  # sum of (1-p) of rows with smaller p
    tie_q = np.repeat(cum_q[start + counts] - cum_q[start], counts)
    right = np.sum(ps * below) + 0.5 * np.sum(ps * (tie_q - q))
    pairs = ps.sum() * q.sum() - np.sum(ps * q)
    return float(right / pairs) if pairs > 0 else float("nan")


def expected_brier(p) -> float:
    """Brier score expected if the probabilities are calibrated: mean of p(1 - p)."""
    p = np.clip(np.asarray(p, dtype=float), 0, 1)
    return float(np.mean(p * (1 - p))) if len(p) else float("nan")


def auc_standard_error(auc: float, n_pos: float, n_neg: float) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from n_pos churners, n_neg stayers."""
    if not (n_pos > 0 and n_neg > 0) or not np.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(math.sqrt(max(var, 0.0)))


def quarantine_rates(lake: Path, sources: list[str], cfg) -> pd.DataFrame:
    """Rows quarantined per source and data month, against that source's earlier months.

    From the lake manifests: each delivered file's rows read and quarantined,
    dated by the latest month it holds. A month alarms when its rate is more than
    ``quarantine_factor`` times the median of the earlier months and at least
    ``quarantine_min_increase`` above it.
    """
    rows = []
    for src in sources:
        man = Path(lake) / src / "_manifest.json"
        if not man.exists():
            continue
        for f in json.loads(man.read_text()).get("files", {}).values():
            months = [
                p.split("month=")[1].split("/")[0] for p in f.get("parts", []) if "month=" in p
            ]
            if not months:
                continue
            c = f.get("counts", {})
            rows.append({"source": src, "month": max(months),
                         "quarantined": int(c.get("quarantined", 0)), "rows": int(c.get("read", 0))})  # fmt: skip
    if not rows:
        return pd.DataFrame(
            columns=["source", "month", "quarantined", "rows", "rate", "median_before", "status"]
        )
    df = (
        pd.DataFrame(rows)
        .groupby(["source", "month"], as_index=False)[["quarantined", "rows"]]
        .sum()
    )
    df = df.sort_values(["source", "month"]).reset_index(drop=True)
    df["rate"] = df["quarantined"] / df["rows"].where(df["rows"] > 0)
    df["median_before"] = df.groupby("source")["rate"].transform(
        lambda s: s.expanding().median().shift(1)
    )
    high = (df["rate"] > cfg.quarantine_factor * df["median_before"]) & (
        df["rate"] > df["median_before"] + cfg.quarantine_min_increase
    )
    df["status"] = np.where(high, "alarm", np.where(df["median_before"].isna(), "new", "stable"))
    return df
