"""Campaign measurement by hand: intervals, saved subscribers, the power note, the CRM file."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.campaigns import measure
from pipelines.campaigns.config import CampaignConfig
from pipelines.campaigns.crm import read_contact_history
from pipelines.lake.errors import ChurnError


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 against 48/80, method 10
    d, lo, hi = measure.difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_intervals_cover_the_true_difference_of_rare_outcomes():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        n_t, n_c, p_c, eff = 900, 100, 0.06, -0.02  # a list and its 10% control
        k_t, k_c = rng.binomial(n_t, p_c + eff), rng.binomial(n_c, p_c)
        _, lo, hi = measure.difference(k_t, n_t, k_c, n_c)
        hits += lo <= eff <= hi
    assert 0.93 <= hits / 2000 <= 0.975


def test_results_count_saved_subscribers_and_value_and_leave_callbacks_out():
    rows = pd.DataFrame({
        "campaign": "list-2025-06", "contact_month": "2025-07",
        "group": ["treated"] * 100 + ["control"] * 50,
        "churned": [1.0] * 5 + [0.0] * 95 + [1.0] * 5 + [0.0] * 45,
        "value": 1200.0, "channel": ["sms_app"] * 60 + ["call_centre"] * 40 + ["sms_app"] * 50,
        "complaint_callback": False,
    })  # fmt: skip
    cb = rows.iloc[:3].assign(complaint_callback=True, churned=1.0)
    out = measure.results(pd.concat([rows, cb]), CampaignConfig(min_group=10))
    top = out[out.by == "all"].iloc[0]
    assert (top.n_treated, top.n_control) == (100, 50)
    assert top.difference == pytest.approx(0.05 - 0.10)
    assert top.saved == pytest.approx(5.0) and top.saved_value == pytest.approx(6000.0)
    assert top.low < top.difference < top.high and top.saved_low < 5 < top.saved_high
    by = out[out.by == "channel"].set_index("level")
    assert by.loc["sms_app"].n_treated == 60
    assert math.isnan(by.loc["call_centre"].difference)  # no control of its own: not compared


def test_a_campaign_waits_for_its_horizon():
    rows = pd.DataFrame({"campaign": "list-2025-11", "contact_month": "2025-12",
                         "group": ["treated", "control"], "churned": [np.nan, np.nan]})  # fmt: skip
    assert measure.results(rows, CampaignConfig()).empty
    assert measure.pending(rows)[["treated", "control"]].iloc[0].tolist() == [1, 1]


def test_power_note_needs_more_months_for_a_smaller_effect():
    one = measure.months_to_detect(0.05, 9000, 1000, -0.02)
    assert 1.0 <= one < 1.1  # about one month at this size
    small = measure.months_to_detect(0.05, 900, 100, -0.01)
    assert small > 10 and measure.months_to_detect(0.05, 900, 100, 0.0) == math.inf


def test_the_crm_file_names_its_bad_rows_and_keeps_the_rest(tmp_path, caplog):
    from pipelines.config import load_config
    from pipelines.lake.numbers import NumberPlan

    plan = NumberPlan.from_config(load_config(environ={}).numbering)
    p = tmp_path / "contact_history.csv"
    p.write_text(
        "campaign,msisdn,contacted_at,channel,offer,group,reached,accepted\n"
        "pilot-2025-03,+86 138 0013 8000,2025-03-04 10:00:00,sms_app,data_pack,treated,1,0\n"
        "pilot-2025-03,13800138001,2025-03-04,sms_app,data_pack,control,,\n"
        "pilot-2025-03,12345,2025-03-04,sms_app,data_pack,treated,1,1\n"
        "pilot-2025-03,13800138002,not a date,sms_app,data_pack,treated,1,1\n"
        "pilot-2025-03,13800138003,2025-03-05,sms_app,data_pack,maybe,1,1\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING):
        h = read_contact_history(p, plan)
    assert h.msisdn.tolist() == ["13800138000", "13800138001"]
    assert h.contact_month.tolist() == ["2025-03", "2025-03"] and h.reached.iat[0] == 1
    assert "3 of 5 rows unusable" in caplog.text and "13800138002" not in caplog.text
    old = tmp_path / "old.csv"
    old.write_text("msisdn,contacted_at\n13800138000,2025-02-01\n", encoding="utf-8")
    assert read_contact_history(old, plan)[["campaign", "group"]].iloc[0].tolist() == [
        "crm",
        "treated",
    ]
    (tmp_path / "bad.csv").write_text("number;when\n1;2\n", encoding="utf-8")
    with pytest.raises(ChurnError, match="needs columns msisdn and contacted_at"):
        read_contact_history(tmp_path / "bad.csv", plan)
    assert read_contact_history(tmp_path / "none.csv", plan) is None


def test_too_little_randomised_history_is_named_not_fitted():
    from models.config import UpliftConfig
    from models.uplift_train import too_little

    cfg = UpliftConfig(min_campaign_months=3, test_months=1, min_control=50, min_treated=50)

    def frame(months: int, n_control: int, n_sms: int) -> pd.DataFrame:
        per = ["control"] * n_control + ["sms_app"] * n_sms
        return pd.DataFrame({"contact_month": [f"2025-0{m + 1}" for m in range(months) for _ in per],
                             "treatment": per * months})  # fmt: skip

    assert "2 randomised contact month(s)" in too_little(frame(2, 60, 60), cfg)
    assert "hold 40 control rows" in too_little(frame(3, 20, 60), cfg)  # 2 training months
    thin_test = pd.concat([frame(2, 60, 60), frame(3, 20, 60).query("contact_month == '2025-03'")])
    assert "test months 2025-03 hold 20 control rows" in too_little(thin_test, cfg)
    assert too_little(frame(3, 60, 60), cfg) is None
