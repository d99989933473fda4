"""Measured campaign effects against the synthetic operator's true effects.

The measurement's statistics on real randomised campaigns: the CRM's pilots and targeted
campaigns of two worlds, outcomes from the truth's churn months (the label window of
the contact month), intervals from :mod:`pipelines.campaigns.measure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.campaigns import measure
from pipelines.campaigns.crm import read_contact_history
from pipelines.lake.numbers import NumberPlan
from pipelines.synth.deliver import generate, load_truth
from pipelines.synth.response import effect_column, true_effects
from tests.worlds import make_settings


def _intervals(root, seed: int) -> pd.DataFrame:
    s = make_settings(root, subscribers=2500, months=11, seed=seed,
                      response={"pilot_share": 0.15, "targeted_share": 0.07, "holdout": 0.3})  # fmt: skip
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    crm = read_contact_history(s.path("data_dir") / "crm" / "contact_history.csv",
                               NumberPlan.from_config(s.numbering))  # fmt: skip
    churn = load_truth(s.path("truth"))["subscribers"].set_index("msisdn")["churn_month"]
    last = pd.Period(s.synth.start_month, freq="M") + s.synth.months - 1
    out = []
    for (camp, month), g in crm.groupby(["campaign", "contact_month"]):
        m = pd.Period(month, freq="M")
        if m + 1 > last:  # the window is not over inside the world
            continue
        window = {str(m), str(m + 1)}
        y = g["msisdn"].map(churn).isin(window).astype(float)
        t, c = g["group"] == "treated", g["group"] == "control"
        if c.sum() < 30:
            continue
        d, lo, hi = measure.difference(y[t].sum(), t.sum(), y[c].sum(), c.sum())
        truth = true_effects(s.path("truth"), month).set_index("msisdn")
        treated = g[t]
        eff = [truth.at[n, effect_column(ch, of)] if n in truth.index else np.nan
               for n, ch, of in zip(treated.msisdn, treated.channel, treated.offer, strict=True)]  # fmt: skip
        out.append({"campaign": camp, "difference": d, "low": lo, "high": hi,
                    "true": float(np.nanmean(eff))})  # fmt: skip
    return pd.DataFrame(out)


@pytest.fixture(scope="module")
def intervals(tmp_path_factory) -> pd.DataFrame:
    return pd.concat([_intervals(tmp_path_factory.mktemp(f"cov{seed}"), seed) for seed in (7, 8)],
                     ignore_index=True)  # fmt: skip


def test_measured_intervals_cover_the_true_effect_in_nine_campaigns_of_ten(intervals):
    covered = (intervals.low <= intervals.true) & (intervals.true <= intervals.high)
    assert len(intervals) >= 32
    assert covered.mean() >= 0.9, intervals[~covered]


def test_pooled_pilots_measure_a_saving_as_the_truth_has_it(intervals):
    pilots = intervals[intervals.campaign.str.startswith("pilot")]
    assert (pilots.true < 0).mean() > 0.8  # contacting at random keeps a few on average
    assert pilots.difference.mean() == pytest.approx(pilots.true.mean(), abs=0.01)
