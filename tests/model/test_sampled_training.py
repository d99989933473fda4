"""Training past RAM: every churner, a seeded share of stayers weighted back, calibrated whole."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import steps
from tests.worlds import make_settings


def test_a_sampled_training_table_ranks_and_calibrates_like_the_whole_one(trained, tmp_path):
    s0, full = trained
    (tmp_path / "features").symlink_to(s0.path("features"))
    s = make_settings(tmp_path)
    s.model.stayer_share = 0.2
    s.timing.enabled = False
    table = steps.training_table(s)
    valid = str(pd.Period(full.test_period, freq="M") - 1)
    train = table[~table.snapshot_month.isin([full.test_period, valid])]
    assert train["sample_weight"].max() == pytest.approx(5.0)
    assert (table[table.snapshot_month == full.test_period]["sample_weight"] == 1).all()
    assert table[full.feature_columns].dtypes.eq("float32").all()
    res = steps.train(s)
    assert res.test_period == full.test_period
    # the same month, the same features: a fifth of the stayers costs almost nothing
    # (0.005 at 100k x 12 in make bench; this world's test month has ~270 churners)
    assert res.metrics["roc_auc"] == pytest.approx(full.metrics["roc_auc"], abs=0.01)
    assert res.metrics["ece"] <= 0.02  # calibrated on the unsampled validation month
    assert res.metrics["brier"] == pytest.approx(full.metrics["brier"], rel=0.05)
