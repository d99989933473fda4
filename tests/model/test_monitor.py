"""Monitoring the champion: performance estimated before labels, decay that calls for retraining."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import store
from models import drift, registry
from models.monitor import read_report
from pipelines import steps
from tests.worlds import make_settings


@pytest.fixture()
def world_copy(trained, tmp_path):
    """The trained world's lake, features and model store, copied so a test may change them."""
    s, res = trained
    root = tmp_path / "copy"
    for name in ("lake", "features", "mlflow"):
        shutil.copytree(s.path(name), root / name)
    return make_settings(root, subscribers=s.synth.subscribers, months=s.synth.months,
                         seed=s.synth.seed), res  # fmt: skip


def _month_after(m: str, k: int = 1) -> str:
    return str(pd.Period(m, freq="M") + k)


def _plant(s, source_month: str, target_month: str, shuffle: list[str] | None = None) -> None:
    """Overwrite ``target_month``'s snapshot with ``source_month``'s rows, labels included,
    each of the ``shuffle`` features permuted across subscribers (the link to churn broken)."""
    snap = store.read_snapshots(s.path("features"), [source_month])
    rng = np.random.default_rng(0)
    for f in shuffle or []:
        snap[f] = snap[f].to_numpy()[rng.permutation(len(snap))]
    snap["snapshot_month"] = target_month
    schema = pq.read_schema(store.snapshot_path(s.path("features"), source_month))
    store.write_snapshot(s.path("features"), target_month,
                         pa.Table.from_pandas(snap, schema=schema, preserve_index=False))  # fmt: skip


def test_the_estimated_auc_of_a_stable_month_is_close_to_the_realised_one(world_copy):
    s, res = world_copy
    out = steps.monitor(s, res.test_period)
    bt = pd.DataFrame(read_report(s.path("reports"), out["month"])["backtest"]).set_index("month")
    row = bt.loc[res.test_period]
    assert row["role"] == "test"
    # the test AUC of training, on the float32 training table; the backtest scores the
    # snapshot's float64 values, as scoring does: equal but for a few rounded values
    assert row["realised_auc"] == pytest.approx(res.metrics["roc_auc"], abs=1e-4)
    # the realised AUC of a few hundred churners is itself noisy: within 0.03, or 3 of
    # its standard errors when those are wider (0.013 here: 3 SE is 0.04)
    tol = max(0.03, 3 * row["realised_auc_se"])
    assert abs(row["estimated_auc"] - row["realised_auc"]) < tol
    # labels drawn from the calibrated probabilities: then CBPE must be right to 0.01
    p = registry.load(registry.champion(s.tracking_uri(), s.model.name)).predict_proba(
        store.read_snapshots(s.path("features"), [res.test_period])[res.feature_columns].astype(
            float
        )
    )[:, 1]
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    drawn = np.mean([roc_auc_score(rng.random(len(p)) < p, p) for _ in range(20)])
    assert drift.estimated_auc(p) == pytest.approx(drawn, abs=0.01)


def test_a_planted_decay_triggers_retraining_and_the_same_month_unchanged_does_not(world_copy):
    s, res = world_copy
    test, after = res.test_period, _month_after(res.test_period)
    est = registry.load(registry.champion(s.tracking_uri(), s.model.name)).estimator_
    top = pd.Series(est.booster_.feature_importance("gain"), est.feature_name_)
    drivers = top.sort_values(ascending=False).index[:8].tolist()
    s.monitor.retrain_features_alarmed = 1000  # judge decay alone: the warm-up moves features

    _plant(s, test, after)  # the test month again, a month later: nothing decayed
    calm = steps.monitor(s, after)
    due, why = steps.retrain_due(s, calm)
    assert not calm["retrain"], calm["why"]
    assert not due, why  # a month after the test month: not due by calendar, and no evidence

    _plant(s, test, after, shuffle=drivers)  # the drivers no longer say who leaves
    decayed = steps.monitor(s, after)
    assert decayed["retrain"]
    assert "realised AUC" in decayed["why"] and "estimated AUC" in decayed["why"]
    due, why = steps.retrain_due(s, decayed)
    assert due and why.startswith("evidence: ")
    rep = read_report(s.path("reports"), after)
    real = {r["month"]: r["realised_auc"] for r in rep["backtest"]}
    assert real[after] < real[test] - 0.05


def test_evidence_without_a_newer_labelled_month_does_not_retrain(world_copy):
    s, res = world_copy
    s.monitor.retrain_features_alarmed = 1  # any moved feature is evidence
    out = steps.monitor(s)
    assert out["retrain"]
    due, why = steps.retrain_due(s, out)
    assert not due and "learn the same data" in why


def test_the_report_is_written_logged_to_mlflow_and_replaced_on_a_rerun(world_copy):
    s, res = world_copy
    first = steps.monitor(s)
    second = steps.monitor(s)
    rep = read_report(s.path("reports"), first["month"])
    assert rep["headline"] == second["headline"] and rep["month"] == first["month"]
    assert {r["feature"] for r in rep["features"]} == set(res.feature_columns)
    json.dumps(rep, allow_nan=False)  # strict JSON: NaN became null
    client = registry.connect(s.tracking_uri())
    exp = client.get_experiment_by_name(s.model.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.monitor_month = '{first['month']}'")
    assert [r.info.run_id for r in runs] == [second["run_id"]]  # the first was replaced
    m = runs[0].data.metrics
    assert m["estimated_auc"] == pytest.approx(second["estimated_auc"])
    assert m["features_alarm"] == second["features_alarm"]
    assert sum(k.startswith("psi_") for k in m) == len(res.feature_columns)


def test_without_a_champion_monitoring_is_skipped_with_the_reason(tmp_path, trained):
    s0, _ = trained
    s = make_settings(tmp_path)
    shutil.copytree(s0.path("features"), s.path("features"))
    out = steps.monitor(s)
    assert "skipped" in out and "train first" in out["skipped"]


def test_the_managers_report_says_stable_or_what_moved(world_copy):
    from pipelines.publish.report import TEXT, _monitoring

    s, _ = world_copy
    assert _monitoring(s, "2025-11", TEXT["en"]) == ""  # not monitored: nothing said
    s.monitor.psi_alarm = 0.05
    out = steps.monitor(s, "2025-11")
    line = _monitoring(s, "2025-11", TEXT["en"])
    assert f"{out['features_alarm']} feature(s) shifted" in line
    assert f"about {out['estimated_auc']:.3f}" in line
    s.monitor.psi_alarm, s.monitor.psi_watch, s.monitor.missing_alarm = 100, 50, 1.0
    steps.monitor(s, "2025-11")
    assert _monitoring(s, "2025-11", TEXT["zh"]).startswith(
        "本月的用户数据与模型训练时相比没有明显变化"
    )
