"""A planted price rise moves the billing features and nothing else (the drift alarm's test)."""

from __future__ import annotations

import pytest

from features import store
from features.build import FEATURES, model_features
from models import drift
from models.config import MonitorConfig
from pipelines import steps
from tests.worlds import make_settings, run_ingest

CHANGE = "2025-07"
BEFORE = ["2025-05", "2025-06"]
# what a price moves: the bill and what is read off it (ARPU makes the value tier)
PRICED = {f.name for f in FEATURES if f.family == "billing"} | {"plan_fee"}


@pytest.fixture(scope="module")
def priced_world(tmp_path_factory):
    """The same 2,000-subscriber world twice: with every plan fee x1.5 from 2025-07, and without."""
    out = {}
    for name, change in (("raised", {"month": CHANGE, "factor": 1.5}), ("same", None)):
        s = make_settings(tmp_path_factory.mktemp(name), subscribers=2000, months=8, seed=8,
                          tariff_change=change)  # fmt: skip
        from pipelines.synth.deliver import generate

        generate(s, s.path("landing"), s.path("truth"), show_progress=False)
        run_ingest(s)
        steps.build_features(s, [*BEFORE, CHANGE])
        snaps = store.read_snapshots(s.path("features"))
        ref = snaps[snaps.snapshot_month.isin(BEFORE)]
        cur = snaps[snaps.snapshot_month == CHANGE]
        out[name] = drift.feature_drift(ref, cur, model_features(), MonitorConfig())
    return out


def test_a_price_rise_alarms_on_the_billing_features(priced_world):
    raised = priced_world["raised"].set_index("feature")
    assert raised.loc["arpu_1m", "status"] == "alarm"
    same = priced_world["same"].set_index("feature")
    assert raised.loc["arpu_1m", "psi"] > 3 * same.loc["arpu_1m", "psi"]
    alarmed = set(raised.index[raised.status == "alarm"])
    assert len(alarmed & PRICED) >= 2


def test_a_price_rise_leaves_calls_usage_complaints_and_social_features_alone(priced_world):
    raised = priced_world["raised"].set_index("feature")
    same = priced_world["same"].set_index("feature")
    new_alarms = set(raised.index[raised.status == "alarm"]) - set(same.index[same.status == "alarm"])
    assert new_alarms, "the price rise raised no alarm at all"
    assert new_alarms <= PRICED, f"alarms outside billing: {sorted(new_alarms - PRICED)}"
    # the features a price cannot touch keep the PSI they have without it
    untouched = [f for f in model_features() if f not in PRICED]
    assert (raised.loc[untouched, "psi"] - same.loc[untouched, "psi"]).abs().max() < 0.1
