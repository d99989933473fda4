"""Time to churn: the time-dependent AUC by hand, the person-period rows, the month arithmetic."""

from __future__ import annotations

import numpy as np
import openpyxl
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models.timing import (
    WINDOW_MONTH,
    HazardModel,
    auc,
    event_months,
    median_month,
    person_period,
    time_dependent_auc,
    window_months,
)


def test_time_dependent_auc_on_a_hand_counted_example():
    # window months of leaving (0: stays through the window; NaN: not known, skipped)
    event = np.array([1, 2, 0, 1, 0, 2, np.nan])
    F = np.array(  # predicted P(gone by the end of month 1), P(gone by month 2)
        [[0.6, 0.7], [0.5, 0.8], [0.1, 0.2], [0.3, 0.4], [0.3, 0.5], [0.2, 0.6], [0.99, 0.99]]
    )
    td = time_dependent_auc(F, event)
    # k=1: gone {0.6, 0.3} against still there {0.5, 0.1, 0.3, 0.2}: 0.6 beats all 4; 0.3 beats
    # 0.1 and 0.2, ties 0.3 (half), loses to 0.5 -> (4 + 2.5) / 8
    assert td[1] == pytest.approx(6.5 / 8)
    # k=2: gone {0.7, 0.8, 0.4, 0.6} against {0.2, 0.5}: only 0.4 < 0.5 loses -> 7 / 8
    assert td[2] == pytest.approx(7 / 8)


def test_auc_is_mann_whitney_with_ties_half():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 300).astype(float)  # many ties
    y = rng.random(300) < 0.3
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(auc([0.1, 0.2], [False, False]))


def test_person_period_has_a_row_per_month_at_risk():
    X = pd.DataFrame({"a": [10.0, 20.0, 30.0, 40.0]}, index=[7, 8, 9, 5])
    before = X.copy()
    pp, y, rows = person_period(X, [0, 1, 2, 3], horizon=2)
    # stays: months 1, 2 without leaving; leaves in 1: one row; in 2: two rows;
    # leaves after the horizon: at risk through it, no event
    assert rows.tolist() == [0, 0, 1, 2, 2, 3, 3]
    assert pp[WINDOW_MONTH].tolist() == [1, 2, 1, 1, 2, 1, 2]
    assert y.tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert pp["a"].tolist() == [10, 10, 20, 30, 30, 40, 40]
    pd.testing.assert_frame_equal(X, before)  # the input is not changed
    # the conditional hazard of a 2-month window: leavers only, month 1 against month 2
    pp, y, _ = person_period(X.iloc[1:3], [1, 2], horizon=1)
    assert pp[WINDOW_MONTH].tolist() == [1, 1] and y.tolist() == [1, 0]


def test_event_months_from_the_two_labels():
    label = [0, 1, 1, 1, None, 1]
    offset = [None, 0, 1, 2, None, None]  # 0: already silent at T; last: built before the offset
    ev = event_months(pd.Series(label, dtype="float"), pd.Series(offset, dtype="float"), 2)
    np.testing.assert_array_equal(ev, [0, 1, 1, 2, np.nan, np.nan])


def test_median_month_and_calendar_months():
    q = np.array([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    assert median_month(q).tolist() == [1, 2, 1, 3]
    assert window_months("2025-11", 0, 2) == ["2025-12", "2026-01"]
    assert window_months("2025-11", 1, 2) == ["2026-01", "2026-02"]


@pytest.mark.parametrize("learner", ["lgbm", "logistic"])
def test_hazard_model_learns_who_leaves_first(learner):
    rng = np.random.default_rng(1)
    n = 600
    X = pd.DataFrame({"fading": rng.normal(size=n), "noise": rng.normal(size=n)})
    p1 = 1 / (1 + np.exp(-2 * X["fading"]))  # fading lines leave sooner
    u = rng.random(n)
    month = np.where(u < p1, 1, np.where(u < p1 + (1 - p1) / 2, 2, 3))
    params = {"n_estimators": 60, "num_leaves": 4, "min_child_samples": 20, "n_jobs": 1}
    m = HazardModel(horizon=3, learner=learner, lgbm_params=params, seed=0)
    m.fit(X[:400], month[:400], X[400:], month[400:])
    q = m.predict_proba(X[400:])
    np.testing.assert_allclose(q.sum(axis=1), 1)
    assert set(m.predict(X[400:])) <= {1, 2, 3}
    assert auc(q[:, 0], month[400:] == 1) > 0.7
    with pytest.raises(ValueError, match="window months"):
        m.fit(X[:3], [0, 1, 2])


def test_the_expected_month_has_a_chinese_header_and_is_left_out_when_empty(tmp_path):
    from pipelines.publish.exports import LABELS, write_workbook

    assert LABELS["expected_leave_month"][:2] == ("预计离网月份", "Expected month of leaving")
    with_month = pd.DataFrame({"channel_rank": [1], "p_churn": [0.4],
                               "expected_leave_month": ["2025-12"]})  # fmt: skip
    empty = with_month.assign(expected_leave_month=[None])
    write_workbook({"retention_sms_app": with_month, "renewal": empty}, tmp_path / "w.xlsx", "zh")
    wb = openpyxl.load_workbook(tmp_path / "w.xlsx")
    heads = [[c.value for c in ws[1]] for ws in wb.worksheets[:2]]
    assert heads == [["序号", "离网概率", "预计离网月份"], ["序号", "离网概率"]]
    assert wb.worksheets[0]["C2"].value == "2025-12"
