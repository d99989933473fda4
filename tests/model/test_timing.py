"""Time to churn on the trained world: the month label, the hazard model, the month on the lists."""

from __future__ import annotations

import numpy as np
import openpyxl
import pandas as pd

from features.labels import LABEL, OFFSET
from features.store import read_snapshots
from models import registry, timing
from pipelines import steps
from pipelines.synth.deliver import load_truth


def test_the_month_label_follows_the_churn_label_and_the_truth(trained):
    s, _ = trained
    df = read_snapshots(s.path("features"), columns=["msisdn", "snapshot_month", "payment_type",
                                                     LABEL.name, OFFSET.name])  # fmt: skip
    lab, off = df[LABEL.name], df[OFFSET.name]
    H = s.churn.horizon_months
    assert lab.isna().any() and lab.notna().any()
    assert off[lab.isna()].isna().all()  # null until observed, like label_churn
    assert (off.notna() == (lab == 1)).all()  # a month for every churner, for no one else
    assert off.dropna().between(0, H).all() and set(off.dropna()) >= set(range(1, H + 1))
    # 0 only for lines already silent at T, whose proven churn started at or before T
    assert (df.loc[off == 0, "payment_type"] == "prepaid").all()
    truth = load_truth(s.path("truth"))["subscribers"][["msisdn", "churn_month", "exit_kind"]]
    m = df[lab == 1].merge(truth, on="msisdn")
    ahead = pd.PeriodIndex(m.churn_month, freq="M") - pd.PeriodIndex(m.snapshot_month, freq="M")
    m["ahead"] = [d.n for d in ahead]
    hard = m[m.exit_kind.isin(["cancelled", "ported_out"])]
    assert len(hard) > 200 and (hard[OFFSET.name] == hard.ahead).all()
    silent = m[m.exit_kind == "silent"]
    assert ((silent[OFFSET.name] == 0) == (silent.ahead <= 0)).mean() > 0.98


def test_the_hazard_model_beats_the_naive_timing_out_of_time(trained):
    s, res = trained
    champ = registry.find(s.tracking_uri(), s.timing.name)
    assert champ is not None, "no timing champion was registered by steps.train"
    m = champ.metrics
    assert champ.params["test_period"] == res.test_period == "2025-07"
    assert champ.params["churn_model_version"] == res.version
    assert 0.5 < m["baseline_td_auc_k1"] < m["test_td_auc_k1"], m
    assert m["test_td_auc_k2"] == m["baseline_td_auc_k2"]  # at the horizon both are p_churn
    assert m["test_month_hit_rate"] > m["baseline_month_hit_rate"], m
    assert m["test_leaver_auc_k1"] > 0.6, m  # among leavers: month 1 against month 2


def test_listed_subscribers_get_a_month_of_leaving_inside_the_window(published):
    s, sc, manifest, _ = published
    window = timing.window_months(sc.month, s.churn.gap_months, s.churn.horizon_months)
    assert window == ["2025-12", "2026-01"]
    folder = s.path("outputs") / "retention" / sc.month
    lst = pd.read_parquet(folder / "all.parquet")
    assert len(lst) and lst.expected_leave_month.isin(window).all()
    assert (lst.p_leave_next_month <= lst.p_churn + 1e-12).all()
    # the timing champion when the month was published (other tests retrain it later)
    name, version = manifest["timing_model"].split(" v")
    assert name == s.timing.name
    assert 1 <= int(version) <= int(registry.find(s.tracking_uri(), s.timing.name).version)
    wb = openpyxl.load_workbook(folder / f"retention_{sc.month}.xlsx")
    ws = wb[[n for n in wb.sheetnames if n.startswith("维系")][0]]
    heads = [c.value for c in ws[1]]
    assert "预计离网月份" in heads
    col = heads.index("预计离网月份")
    assert {r[col].value for r in ws.iter_rows(min_row=2)} <= set(window)


def test_without_a_timing_model_or_the_month_label_nothing_fails(trained):
    s, _ = trained
    snap = read_snapshots(s.path("features"), ["2025-11"])
    none = timing.leave_months(s.tracking_uri(), "no-such-model", snap, np.zeros(len(snap)),
                               "2025-11")  # fmt: skip
    assert none is None
    old = snap.drop(columns=[OFFSET.name])  # a snapshot built before the month label
    out = steps._train_timing(s, old, {})
    assert "skipped" in out and OFFSET.name in out["skipped"]
