"""Outreach policy on hand-made cases: every DOMAIN rule, one at a time."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.publish import policy

AS_OF = pd.Timestamp("2025-06-30 23:59:59")


def _cfg(capacity_share: float = 1.0, **over):
    """The publish settings with ``over`` applied, and the economics with that capacity."""
    s = load_config(environ={})
    cfg = s.publish.model_copy(deep=True)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg, s.economics.model_copy(update={"capacity_share": capacity_share})


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = dict(
        p_churn=0.5,
        arpu_3m=100.0,
        value_tier="ordinary",
        days_since_complaint_resolved=None,
        payment_type="prepaid",
    )
    return pd.DataFrame([base | {"msisdn": f"138000000{i:02d}"} | r for i, r in enumerate(rows)])


def _run(rows, cfg=None, **kw):
    cfg, eco = cfg or _cfg(capacity_share=1.0, control_share=0.0)
    ranked = policy.rank(policy.expected_values(_frame(rows), eco))
    return policy.apply_policy(ranked, cfg, economics=eco, as_of=AS_OF, **kw).set_index("msisdn")


def test_ranking_follows_expected_value_at_risk():
    df = policy.rank(policy.expected_values(_frame([
        {"p_churn": 0.9, "arpu_3m": 10}, {"p_churn": 0.2, "arpu_3m": 1000}, {"p_churn": 0.5, "arpu_3m": 100},
    ]), _cfg()[1]))  # fmt: skip
    assert list(df.value_at_risk) == sorted(df.value_at_risk, reverse=True)
    assert df.value_at_risk.iloc[0] == pytest.approx(0.2 * 1000 * 12)


def test_tier_decides_the_channel():
    d = _run([{"value_tier": "member"}, {"value_tier": "vip"}, {"value_tier": "ordinary"}])
    assert d.channel.tolist() == ["account_manager", "call_centre", "sms_app"]


def test_high_value_complaint_resolved_recently_gets_a_callback_within_three_days():
    d = _run([
        {"value_tier": "vip", "days_since_complaint_resolved": 2.0, "p_churn": 0.001},  # unprofitable, still called
        {"value_tier": "ordinary", "days_since_complaint_resolved": 1.0},
        {"value_tier": "member", "days_since_complaint_resolved": 9.0},
    ])  # fmt: skip
    vip, ordinary, member = (d.loc[f"1380000000{i}"] for i in range(3))
    assert bool(vip.complaint_callback) and bool(vip.selected)
    assert str(vip.callback_due) == "2025-07-01"  # resolved 2 days before month end, + 3 days
    assert not ordinary.complaint_callback and not member.complaint_callback


def test_revisit_cycles_use_the_contact_history():
    rows = [{"value_tier": "vip"}, {"value_tier": "vip"}, {"value_tier": "member"}]
    hist = pd.DataFrame({"msisdn": ["13800000000", "13800000001", "13800000002"],
                         "contacted_at": pd.to_datetime(["2025-05-10", "2025-02-10", "2025-05-10"])})  # fmt: skip
    d = _run(rows, contact_history=hist)
    assert d.loc["13800000000", "exclusion"] == "contacted_within_cycle"  # VIP: 3-month cycle
    assert bool(d.loc["13800000001", "selected"])  # VIP called 4 months ago: due again
    assert bool(d.loc["13800000002", "selected"])  # member: monthly cycle


def test_do_not_contact_is_honoured():
    d = _run([{}, {}], do_not_contact={"13800000001"})
    assert (
        d.loc["13800000001", "exclusion"] == "do_not_contact"
        and not d.loc["13800000001", "selected"]
    )
    assert bool(d.loc["13800000000", "selected"])


def test_overall_and_channel_capacity():
    rows = [{"p_churn": 0.9 - i * 0.01} for i in range(10)] + [
        {"value_tier": "vip", "p_churn": 0.95} for _ in range(5)
    ]
    d = _run(
        rows,
        cfg=_cfg(
            capacity_share=0.4,
            control_share=0.0,
            capacity_per_channel={"call_centre": 2, "sms_app": 100},
        ),
    )
    assert d.selected.sum() == 6
    assert (d[d.selected].channel == "call_centre").sum() == 2
    assert set(d[~d.selected].exclusion) == {"over_capacity"}


def test_unprofitable_tail_is_cut():
    d = _run([{"p_churn": 0.5}, {"p_churn": 0.01, "arpu_3m": 1.0}])
    assert (
        d.loc["13800000001"].exclusion == "not_profitable"
        and d.loc["13800000001"].expected_profit <= 0
    )


def test_control_group_share_is_drawn_from_the_selected_and_seeded():
    rows = [{"p_churn": 0.9} for _ in range(200)]
    cfg = _cfg(capacity_share=1.0, control_share=0.1)
    a = _run(rows, cfg=cfg, seed=7)
    b = _run(rows, cfg=cfg, seed=7)
    assert a.control_group.sum() == 20 and a[a.control_group].selected.all()
    assert a.control_group.equals(b.control_group)
