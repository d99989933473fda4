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
    out["priority"] = out["value_at_risk"]
    return out


UPLIFT = "uplift_"  # the uplift model's effect columns: uplift_<channel>


def uplift_gains(valued: pd.DataFrame, economics: Economics) -> pd.DataFrame:
    """Expected incremental value of the best channel per subscriber, from the uplift model.

    gain = −effect × value − (the channel's contact cost + the incentive); the channel
    with the largest gain is chosen, never one whose effect is ≥ 0. The gain becomes the
    expected profit and the priority, so ranking and the profitability cut follow it.
    """
    from models.uplift import incremental_value

    arms = [c for c in valued.columns if c.startswith(UPLIFT)]
    out = valued.copy()
    eff = out[arms].set_axis([c.removeprefix(UPLIFT) for c in arms], axis=1)
    known = eff.notna().all(axis=1)
    cost = {a: economics.contact_cost_by_channel.get(a, economics.contact_cost) + economics.incentive
            for a in eff.columns}  # fmt: skip
    best = incremental_value(eff[known], out.loc[known, "value"], cost)
    out["uplift_arm"] = best["arm"].reindex(out.index)
    out["uplift"] = best["effect"].where(best["arm"].notna()).reindex(out.index)
    out["contact_would_harm"] = (eff > 0).all(axis=1) & known
    out["expected_profit"] = best["gain"].reindex(out.index).fillna(0.0)
    out["priority"] = out["expected_profit"]
    return out


def rank(scored: pd.DataFrame) -> pd.DataFrame:
    """Highest priority first (value at risk, or the uplift gain); ties: probability, a stable key."""
    by = "priority" if "priority" in scored else "value_at_risk"
    return scored.sort_values(
        [by, "p_churn", "msisdn"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def is_silent(df: pd.DataFrame) -> pd.Series:
    """Lines already gone quiet at the snapshot: no calls and no data in T, or both down 100%.

    A retention call cannot reach them; they belong on the win-back list. Missing
    columns count as "not known silent", so older scores files still publish.
    """

    def col(name: str) -> pd.Series:
        return pd.to_numeric(df.get(name, pd.Series(np.nan, index=df.index)), errors="coerce")

    no_use = (col("calls_1m") == 0) & (col("data_mb_1m") == 0)
    gone = (col("calls_change_vs_prev3m") <= -1) & (col("data_mb_change_vs_prev3m") <= -1)
    return (no_use | gone).fillna(False).astype(bool)


TIER_ZH = {"member": "会员", "vip": "贵宾", "ordinary": "普通"}
CHANNEL_ZH = {"account_manager": "客户经理", "call_centre": "呼叫中心", "sms_app": "短信/APP"}


def _channel(df: pd.DataFrame, cfg: PublishConfig) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Channel per subscriber and the plain reason for it, in Chinese and English.

    The tier decides, except that an ordinary-tier subscriber worth at least
    ``call_value_threshold`` is called by a person: value, not the tier, is what is lost.
    """
    by_tier = cfg.channel_by_tier
    tier = df["value_tier"].where(df["value_tier"].isin(list(by_tier)), "ordinary")
    channel = tier.map(by_tier)
    zh = tier.map(
        lambda t: f"{TIER_ZH.get(t, t)}客户按等级由{CHANNEL_ZH.get(by_tier[t], by_tier[t])}联系"
    )
    en = tier.map(lambda t: f"{t} tier: {by_tier[t]} by tier")
    people = by_tier.get("vip", by_tier["ordinary"])
    worth = (channel == by_tier["ordinary"]) & (df["value"] >= cfg.call_value_threshold)
    value = df["value"].map(lambda v: f"{v:,.0f}")
    channel = channel.where(~worth, people)
    zh = zh.where(
        ~worth,
        "普通等级，但客户价值" + value + f"元，不低于{cfg.call_value_threshold:,.0f}元："
        f"改由{CHANNEL_ZH.get(people, people)}人工致电，不发短信",
    )
    en = en.where(
        ~worth,
        "ordinary tier but worth " + value + f" CNY (at least {cfg.call_value_threshold:,.0f}): "
        f"a person calls ({people}) instead of {by_tier['ordinary']}",
    )
    return channel, zh, en


def _uplift_channel(df: pd.DataFrame) -> None:
    """The channel with the largest expected gain, and the reason in words (in place)."""
    arm = df["uplift_arm"]
    has = arm.notna()
    df.loc[has, "channel"] = arm[has]
    pts = (-df.loc[has, "uplift"] * 100).map(lambda v: f"{v:.1f}")
    zh = arm[has].map(lambda a: CHANNEL_ZH.get(a, a))
    df.loc[has, "channel_reason_zh"] = (
        "预计" + zh + "联系可使离网概率降低" + pts + "个百分点，各渠道中收益最高"
    )
    df.loc[has, "channel_reason_en"] = (
        "contact by " + arm[has] + " expected to cut churn risk by " + pts
        + " points: the best gain of the channels"
    )  # fmt: skip


def _with_room(channel: str, cfg: PublishConfig, taken: dict[str, int]) -> str | None:
    """The channel itself while it has room, else the next in ``overflow_order`` that has."""
    order = cfg.overflow_order
    later = order[order.index(channel) + 1 :] if channel in order else []
    for ch in [channel, *later]:
        cap = cfg.capacity_per_channel.get(ch)
        if cap is None or taken.get(ch, 0) < cap:
            return ch
    return None


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

    Adds ``selected``, ``channel``, ``channel_reason_zh/_en``, ``silent``, ``exclusion``,
    ``complaint_callback``, ``callback_due`` and ``control_group``. ``as_of`` is the end of the snapshot month.
    """
    df = ranked.copy()
    n_base = len(df)
    df["channel"], df["channel_reason_zh"], df["channel_reason_en"] = _channel(df, cfg)
    df["exclusion"] = pd.Series([None] * n_base, index=df.index, dtype=object)
    df["silent"] = is_silent(df)

    # a high-value subscriber whose complaint was just resolved gets a callback within N days
    high = df["value_tier"].isin(["member", "vip"])
    resolved_days = df["days_since_complaint_resolved"]
    callback = high & resolved_days.notna() & (resolved_days <= cfg.complaint_callback_days)
    df["complaint_callback"] = callback
    df.loc[callback, "channel_reason_zh"] += "；投诉解决后需在期限内回访"
    df.loc[callback, "channel_reason_en"] += "; complaint callback owed"
    due = (
        as_of
        - pd.to_timedelta(resolved_days.fillna(0), unit="D")
        + pd.Timedelta(days=cfg.complaint_callback_days)
    )
    df["callback_due"] = due.where(callback).dt.date

    if do_not_contact:
        df.loc[df["msisdn"].isin(do_not_contact), "exclusion"] = "do_not_contact"
    if contact_history is not None and len(contact_history):
        # only what was known at the snapshot: a later contact is the future
        contact_history = contact_history[contact_history["contacted_at"] <= as_of]
        if "group" in contact_history:  # a held-out control row was not contacted
            contact_history = contact_history[
                contact_history["group"].fillna("treated") != "control"
            ]
        last = contact_history.groupby("msisdn")["contacted_at"].max()
        since = _months_between(df["msisdn"].map(last), as_of)
        cycle = df["value_tier"].map(cfg.revisit_months).fillna(cfg.revisit_months["ordinary"])
        recent = since.notna() & (since < cycle) & ~callback
        df.loc[recent & df["exclusion"].isna(), "exclusion"] = "contacted_within_cycle"
    # a silent line is not reachable by a retention call: it goes to win-back instead
    df.loc[df["silent"] & ~callback & df["exclusion"].isna(), "exclusion"] = "silent_winback"
    if "uplift_arm" in df:  # the uplift model chooses the channel, and never a harmful contact
        harm = df["contact_would_harm"].fillna(False).astype(bool) & ~callback
        df.loc[harm & df["exclusion"].isna(), "exclusion"] = "contact_would_harm"
        _uplift_channel(df)

    # the profitable head of the ranking, within overall and per-channel capacity
    capacity = max(1, int(n_base * economics.capacity_share))
    eligible = df["exclusion"].isna()
    unprofitable = eligible & (df["expected_profit"] <= 0) & ~callback
    cut = np.flatnonzero(unprofitable.to_numpy())
    first_loss = cut[0] if len(cut) else n_base
    positions = np.arange(n_base)
    df.loc[eligible & ~callback & (positions >= first_loss), "exclusion"] = "not_profitable"
    selected = df["exclusion"].isna()
    # callbacks first, then by rank, counted against capacity; a full channel overflows
    # to the next one in ``overflow_order`` (a person's call before an SMS), else out
    order = np.lexsort((positions, ~df["complaint_callback"].to_numpy()))
    taken_total = 0
    taken: dict[str, int] = {}
    keep = np.zeros(n_base, bool)
    col = {
        c: df.columns.get_loc(c)
        for c in ("exclusion", "channel", "channel_reason_zh", "channel_reason_en")
    }
    for i in order:
        if not selected.iat[i]:
            continue
        ch = df["channel"].iat[i]
        if not df["complaint_callback"].iat[i]:
            if taken_total >= capacity:
                df.iat[i, col["exclusion"]] = "over_capacity"
                continue
            to = _with_room(ch, cfg, taken)
            if to is None:
                df.iat[i, col["exclusion"]] = "over_capacity"
                continue
            if to != ch:
                cap = cfg.capacity_per_channel[ch]
                df.iat[i, col["channel"]] = to
                df.iat[i, col["channel_reason_zh"]] += (
                    f"；{CHANNEL_ZH.get(ch, ch)}本月名额（{cap}）已满，改由{CHANNEL_ZH.get(to, to)}联系"
                )
                df.iat[i, col["channel_reason_en"]] += (
                    f"; {ch} full ({cap} this month): {to} instead"
                )
                ch = to
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
