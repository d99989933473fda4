"""What a campaign measurably saved: churn of the treated against the randomly held-out control.

Intention to treat: everyone drawn into the treated group counts as treated, reached
or not, so the comparison stays randomised. Differences carry Newcombe's hybrid score
interval (Wilson intervals per group), which keeps its coverage for rare outcomes and
unequal groups where the plain Wald interval does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from features import store
from pipelines.campaigns.config import CampaignConfig

RESULT_COLUMNS = [
    "campaign", "contact_month", "by", "level", "n_treated", "n_control", "churn_treated",
    "churn_control", "difference", "low", "high", "saved", "saved_low", "saved_high",
    "saved_value", "reached_share", "n_waiting",
]  # fmt: skip


def wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def difference(
    k_t: float, n_t: float, k_c: float, n_c: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(p_t − p_c, low, high): Newcombe's hybrid score interval of a difference of proportions."""
    if n_t <= 0 or n_c <= 0:
        return (math.nan, math.nan, math.nan)
    z = float(norm.ppf(0.5 + confidence / 2))
    p_t, p_c = k_t / n_t, k_c / n_c
    l_t, u_t = wilson(k_t, n_t, z)
    l_c, u_c = wilson(k_c, n_c, z)
    d = p_t - p_c
    low = d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
    high = d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    return d, low, high


def months_to_detect(
    p_control: float, n_treated: int, n_control: int, effect: float,
    confidence: float = 0.95, power: float = 0.8,
) -> float:  # fmt: skip
    """Months of campaigns this size until an effect of ``effect`` (a churn difference) shows.

    The smallest detectable difference of one month shrinks with the square root of the
    months pooled; returns inf when the effect is zero.
    """
    if effect == 0 or n_treated <= 0 or n_control <= 0 or not 0 < p_control < 1:
        return math.inf
    z = norm.ppf(0.5 + confidence / 2) + norm.ppf(power)
    mde = z * math.sqrt(p_control * (1 - p_control) * (1 / n_treated + 1 / n_control))
    return max(1.0, (mde / abs(effect)) ** 2)


def with_outcomes(rows: pd.DataFrame, features: Path) -> pd.DataFrame:
    """Each row with ``churned``, the label of its snapshot month (churn within the horizon
    of the contact month), and ``outcome``: observed, waiting (the label is not known yet:
    the horizon has not passed, or a prepaid line's inactivity is still being watched) or
    not_in_base (no snapshot row: the number had already left, or never was ours)."""
    out = rows.copy()
    out["churned"] = np.nan
    out["outcome"] = "waiting"
    have = set(store.months(features))
    for month in sorted(set(out["snapshot_month"]) & have):
        snap = store.read_snapshots(features, [month], columns=["msisdn", "label_churn"])
        at = out["snapshot_month"] == month
        lab = out.loc[at, "msisdn"].map(snap.set_index("msisdn")["label_churn"])
        out.loc[at, "churned"] = lab
        absent = ~out.loc[at, "msisdn"].isin(snap["msisdn"])
        out.loc[at, "outcome"] = np.where(absent, "not_in_base",
                                          np.where(lab.notna(), "observed", "waiting"))  # fmt: skip
    return out


def _one(g: pd.DataFrame, cfg: CampaignConfig) -> dict:
    t, c = g[g["group"] == "treated"], g[g["group"] == "control"]
    n_t, n_c = len(t), len(c)
    k_t, k_c = float(t["churned"].sum()), float(c["churned"].sum())
    row = {"n_treated": n_t, "n_control": n_c}
    row["churn_treated"] = k_t / n_t if n_t else math.nan
    row["churn_control"] = k_c / n_c if n_c else math.nan
    if n_t < cfg.min_group or n_c < cfg.min_group:
        d = lo = hi = math.nan
    else:
        d, lo, hi = difference(k_t, n_t, k_c, n_c, cfg.confidence)
    value = float(t["value"].mean()) if n_t and "value" in t else math.nan
    reached = pd.to_numeric(t.get("reached", pd.Series(dtype=float)), errors="coerce")
    row |= {
        "difference": d, "low": lo, "high": hi,
        "saved": -d * n_t, "saved_low": -hi * n_t, "saved_high": -lo * n_t,
        "saved_value": -d * n_t * value,
        "reached_share": float(reached.mean()) if reached.notna().any() else math.nan,
    }  # fmt: skip
    return row


def results(rows: pd.DataFrame, cfg: CampaignConfig) -> pd.DataFrame:
    """Per campaign whose outcome is observed: overall, then by each breakdown column.

    Complaint callbacks are a service promise never held out, so they are not in the
    comparison; rows whose outcome is not yet known are left for a later run and counted
    (``n_waiting``): until then a campaign is measured on the rows already known (its
    postpaid lines first: a prepaid line's churn waits for its inactivity), randomised
    all the same.
    """
    if "complaint_callback" in rows:
        rows = rows[~rows["complaint_callback"].fillna(False).astype(bool)]
    done = rows[rows["churned"].notna()]
    waiting = rows[rows["churned"].isna() & (rows.get("outcome", "waiting") == "waiting")]
    n_wait = waiting.groupby("campaign").size()
    out = []
    for (camp, month), g in done.groupby(["campaign", "contact_month"], sort=True):
        out.append({"campaign": camp, "contact_month": month, "by": "all", "level": "all"}
                   | _one(g, cfg) | {"n_waiting": int(n_wait.get(camp, 0))})  # fmt: skip
        for by in cfg.breakdowns:
            if by not in g or g[by].isna().all():
                continue
            for level, part in g.groupby(by, sort=True):
                if level in ("", None):
                    continue
                out.append({"campaign": camp, "contact_month": month, "by": by,
                            "level": str(level)} | _one(part, cfg))  # fmt: skip
    return pd.DataFrame(out, columns=RESULT_COLUMNS)


def pending(rows: pd.DataFrame) -> pd.DataFrame:
    """Campaigns still waiting for their horizon: name, contact month and group sizes."""
    wait = rows[rows["outcome"] == "waiting"] if "outcome" in rows else rows[rows["churned"].isna()]
    return (
        wait.groupby(["campaign", "contact_month", "group"]).size().unstack(fill_value=0)
        .reset_index()
    )  # fmt: skip
