"""``churn simulate`` as a user runs it: a fresh process, a small world, two months in the loop."""

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
    cfg.write_text(  # smaller models: the loop is under test here, not their quality
        f"paths:\n  data_dir: {root / 'data'}\nsynth:\n  seed: 31\n"
        "model:\n  lgbm: {n_estimators: 150}\nuplift:\n  lgbm: {n_estimators: 50}\n"
    )
    run = subprocess.run(
        [str(CHURN), "--config", str(cfg), "simulate", "--months", "2", "--subscribers", "1500",
         "--history", "11"],
        cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    s = make_settings(root / "data", seed=31, subscribers=1500, months=13)
    return s, json.loads(run.stdout), run


def test_each_list_is_worked_the_month_after_and_scored_against_the_truth(simulated):
    s, out, _ = simulated
    assert [x["snapshot_month"] for x in out["lists"]] == ["2025-11", "2025-12"]
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


def test_the_first_list_is_measured_against_its_control_group(simulated):
    s, out, _ = simulated
    first = [c for c in out["campaigns"] if c["campaign"] == "list-2025-11"]
    assert first, [c["campaign"] for c in out["campaigns"]]
    c = first[0]
    assert c["n_treated"] > 0 and c["n_control"] > 0
    assert 0 <= c["churn_treated"] <= 1 and 0 <= c["churn_control"] <= 1
    ledger = pd.read_parquet(s.path("campaigns") / "ledger")
    assert sorted(ledger.snapshot_month.unique()) == ["2025-11", "2025-12", "2026-01"]


def test_nothing_the_simulation_prints_carries_a_number(simulated):
    s, _, run = simulated
    assert not numbers_in((run.stdout + run.stderr).encode(), known_numbers(s))
