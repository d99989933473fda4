"""Drift statistics on examples small enough to check by hand, and against brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models import drift
from models.config import MonitorConfig

CFG = MonitorConfig()


def test_psi_of_a_flag_by_hand():
    # reference 50/50, now 80/20: PSI = (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)
    ref = [0] * 50 + [1] * 50
    cur = [0] * 80 + [1] * 20
    want = 0.3 * np.log(0.8 / 0.5) + (-0.3) * np.log(0.2 / 0.5)
    assert drift.psi(ref, cur) == pytest.approx(want, rel=1e-9)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert drift.psi(ref, rng.normal(size=20_000)) < 0.01
    small, big = (
        drift.psi(ref, rng.normal(0.2, 1, 20_000)),
        drift.psi(ref, rng.normal(1, 1, 20_000)),
    )
    assert 0.01 < small < 0.1 < CFG.psi_alarm < big


def test_psi_counts_values_the_reference_never_had():
    ref = [1, 2, 3] * 100
    assert drift.psi(ref, [1, 2, 3] * 100) == pytest.approx(0.0, abs=1e-12)
    assert drift.psi(ref, [1, 2, 3, 7] * 100) > CFG.psi_alarm  # a quarter is a new value


def test_psi_ignores_missing_values_and_is_nan_without_any():
    ref = [1.0, 2.0, 3.0, 4.0] * 50
    cur = [1.0, 2.0, 3.0, 4.0, np.nan, np.nan] * 50
    assert drift.psi(ref, cur) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(drift.psi(ref, [np.nan] * 10))


def test_ks_by_hand():
    assert drift.ks([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert drift.ks([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    assert drift.ks([1, 2], [5, 6]) == 1.0


def test_status_reads_psi_and_the_missing_share():
    assert drift.status(0.01, 0.0, CFG) == "stable"
    assert drift.status(0.15, 0.0, CFG) == "watch"
    assert drift.status(0.3, 0.0, CFG) == "alarm"
    assert drift.status(0.0, 0.2, CFG) == "alarm"  # a column went missing
    assert drift.status(0.0, -0.2, CFG) == "watch"  # more filled than before
    assert drift.status(float("nan"), 0.0, CFG) == "stable"


def test_feature_drift_puts_the_moved_feature_first():
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(size=5000)})
    cur = pd.DataFrame({"a": rng.normal(size=5000), "b": rng.normal(2, 1, 5000)})
    out = drift.feature_drift(ref, cur, ["a", "b"], CFG)
    assert out["feature"].tolist() == ["b", "a"]
    assert out["status"].tolist() == ["alarm", "stable"]
    assert set(out.columns) >= {"psi", "ks", "missing_reference", "missing_current"}


def _brute_expected_auc(p: np.ndarray) -> float:
    """Ratio of expectations over every ordered pair, straight from the definition."""
    right = pairs = 0.0
    for i, j in itertools.permutations(range(len(p)), 2):
        w = p[i] * (1 - p[j])  # i churner, j stayer
        pairs += w
        right += w * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    return right / pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimated_auc_equals_the_pairwise_sum(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(1, 6, 40), 2)  # rounded: ties on purpose
    assert drift.estimated_auc(p) == pytest.approx(_brute_expected_auc(p), rel=1e-12)


def test_estimated_auc_matches_labels_drawn_from_calibrated_probabilities():
    rng = np.random.default_rng(3)
    p = rng.beta(0.5, 10, 40_000)
    realised = np.mean([roc_auc_score(rng.random(len(p)) < p, p) for _ in range(5)])
    assert drift.estimated_auc(p) == pytest.approx(realised, abs=0.01)
    assert drift.estimated_auc(np.full(100, 0.1)) == pytest.approx(0.5)  # no ranking at all


def test_expected_brier_and_standard_error():
    assert drift.expected_brier([0.5, 0.5]) == pytest.approx(0.25)
    assert drift.expected_brier([0.0, 1.0]) == 0.0
    # Hanley-McNeil by hand, AUC 0.8 with 50 and 50: Q1 = 0.8/1.2, Q2 = 2*0.64/1.8,
    # var = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500 = 0.0019804, SE 0.04450
    assert drift.auc_standard_error(0.8, 50, 50) == pytest.approx(0.04450, abs=1e-5)
    assert drift.auc_standard_error(0.8, 500, 5000) < drift.auc_standard_error(0.8, 50, 500)
    assert np.isnan(drift.auc_standard_error(0.8, 0, 10))


def _manifest(lake, source, files):
    (lake / source).mkdir(parents=True, exist_ok=True)
    entries = {
        name: {"parts": [f"month={m}/part-0.parquet"], "counts": {"read": n, "quarantined": q}}
        for name, (m, n, q) in files.items()
    }
    (lake / source / "_manifest.json").write_text(json.dumps({"files": entries}))


def test_quarantine_rate_alarms_on_a_month_far_above_the_sources_history(tmp_path):
    lake = tmp_path / "lake"
    months = {f"b{i}.csv": (f"2025-0{i}", 1000, 2) for i in range(1, 6)}
    _manifest(lake, "billing", months | {"b6.csv": ("2025-06", 1000, 40)})
    _manifest(lake, "cdr", {f"c{i}.csv": (f"2025-0{i}", 1000, 3) for i in range(1, 7)})
    out = drift.quarantine_rates(lake, ["billing", "cdr", "complaints"], CFG)
    by = out.set_index(["source", "month"])["status"]
    assert by[("billing", "2025-06")] == "alarm"
    assert by[("billing", "2025-01")] == "new"
    assert (out[out.source == "cdr"]["status"].iloc[1:] == "stable").all()
    assert out.loc[out.source == "billing", "rate"].iloc[-1] == pytest.approx(0.04)


def test_a_small_quarantine_rise_on_a_clean_source_is_not_an_alarm(tmp_path):
    lake = tmp_path / "lake"
    _manifest(lake, "billing", {"a": ("2025-01", 10_000, 1), "b": ("2025-02", 10_000, 5)})
    out = drift.quarantine_rates(lake, ["billing"], CFG)
    assert out["status"].tolist() == ["new", "stable"]  # 5x, but only +0.04 points
