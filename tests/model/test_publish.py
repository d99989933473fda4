"""Scoring with the champion, SHAP reasons, and the exported lists a retention team opens."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import mlflow
import numpy as np
import openpyxl
import pandas as pd
import pytest

from features.store import read_snapshots
from models import explain
from pipelines.publish.exports import neutralise, write_xlsx

MOBILE = re.compile(rb"(?<![\d.])1[3-9]\d{9}(?!\d)")  # not inside a decimal fraction


def test_scores_every_active_subscriber_of_the_latest_snapshot_with_the_champion(published):
    s, sc, manifest, _ = published
    assert sc.month == "2025-11"
    snap = read_snapshots(s.path("features"), ["2025-11"])
    scores = pd.read_parquet(sc.path)
    assert len(scores) == len(snap) == sc.scored
    assert scores.p_churn.between(0, 1).all()
    assert manifest["model_version"] == sc.model_version and manifest["run_id"] == sc.run_id


def test_fast_shap_matches_shap_tree_explainer(trained):
    s, res = trained
    model = mlflow.sklearn.load_model(res.model_uri)
    X = (
        read_snapshots(s.path("features"), ["2025-11"])[list(model.feature_names_in_)]
        .astype(float)
        .head(150)
    )
    fast, _ = explain.shap_values(model, X)
    np.testing.assert_allclose(fast, explain.shap_reference(model, X), atol=1e-6)
    # and they add up to the model's margin
    np.testing.assert_allclose(
        fast.sum(axis=1) + model.contributions(X)[:, -1], model.raw_margin(X), atol=1e-6
    )


def test_global_explanations_are_logged_to_the_model_run(published):
    s, sc, _, _ = published
    names = {
        a.path
        for a in mlflow.tracking.MlflowClient(s.tracking_uri()).list_artifacts(
            sc.run_id, f"explanations/{sc.month}"
        )
    }
    assert f"explanations/{sc.month}/shap_summary.png" in names
    assert f"explanations/{sc.month}/shap_importance.csv" in names
    assert sum("shap_dependence_" in n for n in names) == 3


def test_reason_texts_carry_the_subscribers_own_values(published):
    s, sc, _, _ = published
    scores = pd.read_parquet(sc.path)
    feats = read_snapshots(s.path("features"), [sc.month]).set_index("msisdn")
    checked = 0
    for _, row in scores.iterrows():
        f = feats.loc[row.msisdn]
        for k in (1, 2, 3):
            g, text = row[f"reason_{k}"], row[f"reason_{k}_en"]
            if g == "service_complaints":
                assert text.startswith(
                    f"{f.complaints_90d:.0f} complaints in 90 days, {f.open_complaints:.0f} still open"
                )
                checked += 1
            elif g == "usage_decline" and pd.notna(f.calls_change_vs_prev3m):
                assert text.startswith(f"calls {f.calls_change_vs_prev3m:+.0%}")
                assert f"{f.calls_change_vs_prev3m:+.0%}" in row[f"reason_{k}_zh"]
                checked += 1
    assert checked > 50


def test_exports_exist_in_every_format_with_manifest_and_report(published):
    s, sc, manifest, _ = published
    folder = s.path("outputs") / "retention" / sc.month
    for stem in ["all", *manifest["counts"]["by_channel"]]:
        for ext in ("csv", "xlsx", "parquet"):
            assert (folder / f"{stem}.{ext}").exists(), (stem, ext)
    assert (folder / "report.html").read_text(encoding="utf-8").count("<img") == 2
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert {"model_version", "run_id", "snapshot_month", "counts", "config_fingerprint"} <= set(m)
    lst = pd.read_parquet(folder / "all.parquet")
    assert len(lst) == m["counts"]["selected"] > 0
    assert (lst.list_rank == np.arange(1, len(lst) + 1)).all()
    assert lst.control_group.mean() == pytest.approx(s.publish.control_share, abs=0.03)
    assert (folder / "all.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel


def test_publishing_in_a_fresh_process_reads_the_projects_mlflow_store(published, tmp_path):
    s, sc, _, _ = published
    (tmp_path / "settings.json").write_text(s.model_dump_json())
    code = f"""
from pathlib import Path
from pipelines import steps
from pipelines.config import Settings
steps.publish(Settings.model_validate_json(Path("settings.json").read_text()), {sc.month!r})
"""
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=300)
    assert not (tmp_path / "mlflow.db").exists()  # no stray store where it was run
    html = (s.path("outputs") / "retention" / sc.month / "report.html").read_text(encoding="utf-8")
    assert html.count("<img") == 2 and re.search(r"AUC 0\.\d{3}, top-decile lift", html)


def test_xlsx_opens_with_chinese_text_intact_and_a_styled_frozen_filtered_header(published):
    s, sc, _, _ = published
    wb = openpyxl.load_workbook(s.path("outputs") / "retention" / sc.month / "all.xlsx")
    ws = wb.active
    header = [c.value for c in ws[1]]
    assert header[:4] == ["list_rank", "msisdn", "value_tier", "channel"]
    assert ws["A1"].font.bold and ws.freeze_panes == "A2" and ws.auto_filter.ref
    col = header.index("reason_1_zh") + 1
    texts = [ws.cell(r, col).value for r in range(2, ws.max_row + 1) if ws.cell(r, col).value]
    assert texts and any(re.search(r"[\u4e00-\u9fff]", t) for t in texts)


def test_formula_like_text_is_inert(tmp_path):
    df = pd.DataFrame(
        {
            "last_complaint": [
                neutralise(t) for t in ["=cmd|' /C calc'!A0", "+86 call", "-x", "@SUM(A1)", "ok"]
            ]
        }
    )
    assert df.last_complaint.tolist()[:4] == [
        "'=cmd|' /C calc'!A0",
        "'+86 call",
        "'-x",
        "'@SUM(A1)",
    ]
    write_xlsx(df, tmp_path / "x.xlsx", "x")
    ws = openpyxl.load_workbook(tmp_path / "x.xlsx").active
    assert all(ws.cell(r, 1).data_type == "s" for r in range(2, 7))


def test_no_cell_of_the_published_lists_is_a_formula(published):
    s, sc, _, _ = published
    folder = s.path("outputs") / "retention" / sc.month
    df = pd.read_csv(folder / "all.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert not df.apply(lambda c: c.str.match(r"^[=+@]")).any().any()
    ws = openpyxl.load_workbook(folder / "all.xlsx").active
    assert not any(c.data_type == "f" for row in ws.iter_rows() for c in row)


def test_no_unmasked_number_in_any_published_file(published):
    s, sc, _, _ = published
    files = [p for p in (s.path("outputs")).rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".xlsx":
            import zipfile

            with zipfile.ZipFile(p) as z:
                data = b"".join(z.read(n) for n in z.namelist())
        assert not MOBILE.search(data), p
    lst = pd.read_parquet(s.path("outputs") / "retention" / sc.month / "all.parquet")
    assert lst.msisdn.str.fullmatch(r"1\d\d\*{4}\d{4}").all()


def test_diff_against_last_month(published):
    s, sc, _, prev = published
    diff = pd.read_csv(
        s.path("outputs") / "retention" / sc.month / "diff.csv", encoding="utf-8-sig"
    )
    assert set(diff.change) <= {"new", "still_on_list", "dropped"}
    assert {"new", "dropped"} <= set(diff.change)
    assert diff[diff.change == "dropped"].why.notna().all()
    prev_list = pd.read_parquet(s.path("outputs") / "retention" / prev.month / "all.parquet")
    assert (diff.change != "new").sum() == len(prev_list)
