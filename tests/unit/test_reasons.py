"""Reason texts from facts: direction words, skipped facts and groups, segment offers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.config import ReasonConfig
from models.explain import fact_text, reason_texts, says_nothing
from pipelines.config import load_config

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def reasons() -> ReasonConfig:
    return load_config(environ={}).reasons


def _texts(reasons: ReasonConfig, shap: dict[str, list[float]], values: dict) -> pd.DataFrame:
    groups = pd.DataFrame(
        {g: shap.get(g, [0.0] * len(next(iter(shap.values())))) for g in reasons.groups}
    )
    return reason_texts(groups, pd.DataFrame(values), reasons)


def test_direction_words_follow_the_sign_of_the_change(reasons):
    fact = reasons.groups["social_circle"].facts[1]
    down = fact_text(fact, {"offnet_call_share_1m": 0.05, "offnet_call_share_prev3m": 0.12})
    up = fact_text(fact, {"offnet_call_share_1m": 0.12, "offnet_call_share_prev3m": 0.05})
    assert down == ("off-net calls 5% of all, down from 12%", "异网通话占比5%，较此前12%下降")
    assert up == ("off-net calls 12% of all, up from 5%", "异网通话占比12%，较此前5%上升")
    calls = reasons.groups["usage_decline"].facts[0]
    assert fact_text(calls, {"calls_change_vs_prev3m": -0.35}) == (
        "calls down 35% against the previous 3 months",
        "通话量较前3个月下降35%",
    )


def test_a_change_that_rounds_away_or_a_missing_value_is_not_said(reasons):
    fact = reasons.groups["social_circle"].facts[1]
    assert (
        fact_text(fact, {"offnet_call_share_1m": 0.101, "offnet_call_share_prev3m": 0.099}) is None
    )
    assert (
        fact_text(fact, {"offnet_call_share_1m": 0.1, "offnet_call_share_prev3m": np.nan}) is None
    )
    assert fact_text(fact, {"offnet_call_share_1m": 0.1}) is None
    calls = reasons.groups["usage_decline"].facts[0]
    assert fact_text(calls, {"calls_change_vs_prev3m": -0.004}) is None
    assert fact_text(calls, {"calls_change_vs_prev3m": float("inf")}) is None


def test_zero_counts_and_negative_months_are_not_said_as_such(reasons):
    g = reasons.groups
    assert fact_text(g["service_complaints"].facts[1], {"complaints_90d": 0}) is None
    assert fact_text(g["social_circle"].facts[0], {"churned_contacts_3m": 0}) is None
    ended = fact_text(g["contract"].facts[2], {"months_to_contract_end": -2.2})
    assert ended == ("contract ended 2 month(s) ago", "合约已到期2个月")
    assert fact_text(g["contract"].facts[1], {"months_to_contract_end": -0.2}) is None
    assert fact_text(g["contract"].facts[0], {"months_to_contract_end": 0.2})[0] == (
        "contract ends within half a month"
    )


def test_a_group_with_nothing_to_say_gives_its_place_to_the_next(reasons):
    out = _texts(
        reasons,
        {"service_complaints": [0.9], "social_circle": [0.5], "usage_decline": [0.3], "network": [0.2]},
        {
            "complaints_90d": [0], "complaints_180d": [0], "open_complaints": [0],
            "status_suspended": [0],
            "churned_contacts_3m": [2], "offnet_call_share_1m": [np.nan],
            "calls_change_vs_prev3m": [0.001], "data_mb_change_vs_prev3m": [np.nan],
            "dropped_call_rate_3m": [0.04], "dropped_call_rate_prev3m": [0.01],
        },
    )  # fmt: skip
    r = out.iloc[0]
    assert [r.reason_1, r.reason_2] == ["social_circle", "network"]
    assert r.reason_1_en == "frequent contacts who left the network in 3 months: 2"
    assert r.reason_2_zh == "近3个月掉话率4.0%，较此前1.0%上升"
    assert pd.isna(r.reason_3) and r.reason_3_en == "" and r.reason_3_zh == ""


def test_no_text_ever_says_n_a_nan_or_minus_zero(reasons):
    rng = np.random.default_rng(0)
    n = 400
    feats = [f for rg in reasons.groups.values() for f in rg.features]
    values = pd.DataFrame(
        {
            f: np.where(rng.random(n) < 0.3, np.nan, rng.normal(0, 1, n).round(rng.integers(0, 3)))
            for f in feats
        }
    )
    values["months_to_contract_end"] = rng.choice([np.nan, -0.3, -0.0, 0.0, 0.4, 2.6, -3.0], n)
    shap = {g: list(rng.normal(0.3, 0.5, n)) for g in reasons.groups}
    out = _texts(reasons, shap, values.to_dict("list"))
    texts = (
        out[[f"reason_{k}_{lang}" for k in (1, 2, 3) for lang in ("en", "zh")]].to_numpy().ravel()
    )
    said = [t for t in texts if t]
    assert len(said) > n  # plenty is said
    for t in said:
        assert not says_nothing(t), t
        assert "n/a" not in t and "nan" not in t.lower() and "-0" not in t.replace("-0.", "#"), t


def test_a_segment_flag_picks_its_specific_offer_over_the_groups(reasons):
    base = {
        "arpu_1m": [180.0] * 3, "arpu_3m": [120.0] * 3,
        "seg_heavy_data_overage": [1, 0, 0], "open_complaints": [0, 0, 1],
    }  # fmt: skip
    out = _texts(reasons, {"tariff_billing": [0.8, 0.8, 0.8]}, base)
    assert out.offer_code.tolist() == ["data_pack", "plan_rightsizing", "manager_callback"]
    assert out.offer_zh[0] == "流量包" and out.offer_en[1] == "plan right-sizing to your actual use"
    assert out.say_zh[2].startswith("关于您之前反映的问题")
    assert (out.reason_1 == "tariff_billing").all()
    assert out.reason_1_en[0] == "bill 180 CNY this month, above the 3-month average of 120 CNY"


def test_nothing_to_say_and_no_segment_leaves_the_action_empty(reasons):
    out = _texts(reasons, {"network": [0.01]}, {"dropped_call_rate_3m": [0.05]})
    assert out.offer_code[0] == "" and out.say_en[0] == "" and pd.isna(out.reason_1[0])


def test_every_offer_named_exists():
    from pydantic import ValidationError

    cfg = load_config(environ={}).reasons.model_dump()
    cfg["segments"]["complaint"]["offer"] = "free_phone"
    with pytest.raises(ValidationError, match="free_phone"):
        ReasonConfig.model_validate(cfg)


def test_a_bounded_value_that_still_reads_zero_is_not_said(reasons):
    ends = reasons.groups["contract"].facts[1]  # months_to_contract_end >= 0.5
    assert fact_text(ends, {"months_to_contract_end": 0.5}) is None  # would read "0 month(s)"
    assert fact_text(ends, {"months_to_contract_end": 0.6})[1] == "合约1个月后到期"


def test_a_direction_word_without_a_change_is_refused():
    from pydantic import ValidationError

    from models.config import ReasonFact

    with pytest.raises(ValidationError, match="no `change`"):
        ReasonFact(en="calls {up|down}", zh="通话{上升|下降}")


def test_what_to_say_carries_the_subscribers_own_numbers_when_they_say_something(reasons):
    base = {
        "arpu_1m": [180.0] * 3, "arpu_3m": [120.0] * 3, "seg_heavy_data_overage": [1, 1, 1],
        "data_overage_charge_3m": [35.4, 0.2, None],
    }  # fmt: skip
    out = _texts(reasons, {"tariff_billing": [0.8, 0.8, 0.8]}, base)
    plain_zh, plain_en = reasons.offers["data_pack"].say_zh, reasons.offers["data_pack"].say_en
    assert out.say_zh[0] == "近3个月您的流量超套费月均35元，" + plain_zh
    assert out.say_en[0] == "Extra data cost you 35 CNY a month over 3 months. " + plain_en
    assert out.say_zh[1] == plain_zh and out.say_zh[2] == plain_zh  # 0 CNY and unknown: not said
