"""Who goes on the retention list, through which channel, and who is held out as control.

Pure functions over a scored frame, so each DOMAIN rule can be tested on a handful of
hand-made rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.config import Economics
from pipelines.publish.config import PublishConfig


def expected_values(scored: pd.DataFrame, economics: Economics) -> pd.DataFrame:
    """Value at risk and expected profit of one contact (Verbraken's churn profit, per subscriber).

    A contacted churner stays with probability ``acceptance_rate`` and keeps their value
    minus the incentive; a contacted non-churner takes the incentive anyway; every
    contact costs ``contact_cost``.
    """
    out = scored.copy()
    value = economics.value(out["arpu_3m"])
    p = out["p_churn"]
    out["value"] = value
    out["value_at_risk"] = p * value
    out["expected_profit"] = (
        p * economics.acceptance_rate * (value - economics.incentive)
        - (1 - p) * economics.incentive
        - economics.contact_cost
    )
    return out


def rank(scored: pd.DataFrame) -> pd.DataFrame:
    """Highest expected value at risk first (ties: higher probability, then a stable key)."""
    return scored.sort_values(
        ["value_at_risk", "p_churn", "msisdn"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def _months_between(a: pd.Series, b: pd.Timestamp) -> pd.Series:
    return (b.year - a.dt.year) * 12 + (b.month - a.dt.month)


def apply_policy(
    ranked: pd.DataFrame,
    cfg: PublishConfig,
    *,
    economics: Economics,
    as_of: pd.Timestamp,
    contact_history: pd.DataFrame | None = None,
    do_not_contact: set[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Decide per subscriber: on the list (with channel) or not (with the reason why).

    Adds ``selected``, ``channel``, ``exclusion``, ``complaint_callback``, ``callback_due``
    and ``control_group``. ``as_of`` is the end of the snapshot month.
    """
    df = ranked.copy()
    n_base = len(df)
    df["channel"] = (
        df["value_tier"].map(cfg.channel_by_tier).fillna(cfg.channel_by_tier["ordinary"])
    )
    df["exclusion"] = pd.Series([None] * n_base, index=df.index, dtype=object)

    # a high-value subscriber whose complaint was just resolved gets a callback within N days
    high = df["value_tier"].isin(["member", "vip"])
    resolved_days = df["days_since_complaint_resolved"]
    callback = high & resolved_days.notna() & (resolved_days <= cfg.complaint_callback_days)
    df["complaint_callback"] = callback
    due = (
        as_of
        - pd.to_timedelta(resolved_days.fillna(0), unit="D")
        + pd.Timedelta(days=cfg.complaint_callback_days)
    )
    df["callback_due"] = due.where(callback).dt.date

    if do_not_contact:
        df.loc[df["msisdn"].isin(do_not_contact), "exclusion"] = "do_not_contact"
    if contact_history is not None and len(contact_history):
        last = contact_history.groupby("msisdn")["contacted_at"].max()
        since = _months_between(df["msisdn"].map(last), as_of)
        cycle = df["value_tier"].map(cfg.revisit_months).fillna(cfg.revisit_months["ordinary"])
        recent = since.notna() & (since < cycle) & ~callback
        df.loc[recent & df["exclusion"].isna(), "exclusion"] = "contacted_within_cycle"

    # the profitable head of the ranking, within overall and per-channel capacity
    capacity = max(1, int(n_base * economics.capacity_share))
    eligible = df["exclusion"].isna()
    unprofitable = eligible & (df["expected_profit"] <= 0) & ~callback
    cut = np.flatnonzero(unprofitable.to_numpy())
    first_loss = cut[0] if len(cut) else n_base
    positions = np.arange(n_base)
    df.loc[eligible & ~callback & (positions >= first_loss), "exclusion"] = "not_profitable"
    selected = df["exclusion"].isna()
    # callbacks first, then by rank, counted against capacity
    order = np.lexsort((positions, ~df["complaint_callback"].to_numpy()))
    taken_total = 0
    taken: dict[str, int] = {}
    keep = np.zeros(n_base, bool)
    for i in order:
        if not selected.iat[i]:
            continue
        ch = df["channel"].iat[i]
        cap = cfg.capacity_per_channel.get(ch)
        if not df["complaint_callback"].iat[i] and (
            taken_total >= capacity or (cap is not None and taken.get(ch, 0) >= cap)
        ):
            df.iat[i, df.columns.get_loc("exclusion")] = "over_capacity"
            continue
        keep[i] = True
        taken_total += 1
        taken[ch] = taken.get(ch, 0) + 1
    df["selected"] = keep

    # random control group among the selected (callbacks are a service promise: never held out)
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(keep & ~df["complaint_callback"].to_numpy())
    n_ctrl = int(round(len(pool) * cfg.control_share))
    ctrl = np.zeros(n_base, bool)
    if n_ctrl:
        ctrl[rng.choice(pool, n_ctrl, replace=False)] = True
    df["control_group"] = ctrl
    df["list_rank"] = np.where(keep, np.cumsum(keep), 0)
    return df
