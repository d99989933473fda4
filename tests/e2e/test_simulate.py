"""``churn simulate`` as a user runs it: a fresh process, a small world, one month in the loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.leaks import known_numbers, numbers_in
from tests.worlds import make_settings

CHURN = Path(sys.prefix) / "bin" / "churn"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("simworld")
    cfg = root / "churn.yaml"
    cfg.write_text(  # smaller models, little dirt: the loop is under test here, not them
        f"paths:\n  data_dir: {root / 'data'}\nsynth:\n  seed: 33\n  dirt: {{rate: 0.001}}\n"
        "model:\n  lgbm: {n_estimators: 150}\nuplift:\n  lgbm: {n_estimators: 50}\n"
    )
    run = subprocess.run(
        [str(CHURN), "--config", str(cfg), "simulate", "--months", "1", "--subscribers", "1500",
         "--history", "11"],
        cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    s = make_settings(root / "data", seed=33, subscribers=1500, months=12)
    return s, json.loads(run.stdout), run


def test_each_list_is_worked_the_month_after_and_scored_against_the_truth(simulated):
    s, out, _ = simulated
    assert [x["snapshot_month"] for x in out["lists"]] == ["2025-11"]
    for x in out["lists"]:
        assert x["contact_month"] == str(pd.Period(x["snapshot_month"], freq="M") + 1)
        assert x["treated"] == x["contact"] > 0 and x["control"] > 0
        assert x["ranking"]["method"] in ("risk", "uplift") and x["ranking"]["why"]
        assert x["true_saved"] == pytest.approx(-x["true_effect"] * x["treated"], rel=1e-6)
    crm = pd.read_csv(s.path("data_dir") / "crm" / "contact_history.csv", dtype=str,
                      keep_default_na=False)  # fmt: skip
    worked = crm[crm.campaign == "list-2025-11"]
    assert set(worked.contacted_at.str[:7]) == {"2025-12"}
    assert (worked[worked.group == "control"].reached == "").all()
    assert set(worked[worked.group == "treated"].reached) <= {"0", "1"}


def test_the_worked_list_waits_for_its_window_and_the_crm_campaigns_are_measured(simulated):
    s, out, _ = simulated
    waiting = {w["campaign"] for w in out["waiting"]}
    assert "list-2025-11" in waiting  # its window 2025-12..2026-01 is not over yet
    measured = [c for c in out["campaigns"] if c["campaign"].startswith("pilot-")]
    assert measured and all(c["n_treated"] > 0 and c["n_control"] > 0 for c in measured)
    ledger = pd.read_parquet(s.path("campaigns") / "ledger")
    assert sorted(ledger.snapshot_month.unique()) == ["2025-11", "2025-12"]
    assert set(ledger[ledger.snapshot_month == "2025-11"].group) == {"treated", "control"}


def test_nothing_the_simulation_prints_carries_a_number(simulated):
    s, _, run = simulated
    assert not numbers_in((run.stdout + run.stderr).encode(), known_numbers(s))
