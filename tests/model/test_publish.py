"""Scoring with the champion, SHAP reasons, and the exported lists a retention team opens."""

from __future__ import annotations

import json
import re
import stat
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
from tests.leaks import contents, known_numbers
from tests.worlds import load_model

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
    model = load_model(s, res.model_uri)
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


NOTHING = re.compile(r"n/a|nan|-0(?:\.0+)?(?![.\d])|(?:^|[;；]\s*)0 ", re.I)
PAIR = re.compile(
    r"(-?[\d.]+)%?(?: CNY)?(?: of calls over 3 months| of all| this month)?, "
    r"(up|down|above|below) (?:from|the 3-month average of) (-?[\d.]+)"
)
PAIR_ZH = re.compile(
    r"(-?[\d.]+)%?元?，(?:较此前|)(上升|下降|高于|低于)?(?:近3月平均)?(-?[\d.]+)%?元?(上升|下降)?"
)


def _pairs(text: str, zh: bool) -> list[tuple[float, str, float]]:
    """(now, direction, before) for every directed comparison in one text."""
    if not zh:
        return [(float(a), w, float(b)) for a, w, b in PAIR.findall(text)]
    out = []
    for a, w1, b, w2 in PAIR_ZH.findall(text):
        if w1 or w2:
            out.append((float(a), w1 or w2, float(b)))
    return out


def test_reason_texts_carry_the_subscribers_own_values(published):
    """Over every text of the published scores: nothing empty-headed, every direction true."""
    s, sc, _, _ = published
    scores = _fully_explained(s, sc)
    feats = read_snapshots(s.path("features"), [sc.month]).set_index("msisdn")
    rising = {"up", "above", "上升", "高于"}
    texts = directed = checked = 0
    for _, row in scores.iterrows():
        f = feats.loc[row.msisdn]
        for k in (1, 2, 3):
            g = row[f"reason_{k}"]
            en, zh = row[f"reason_{k}_en"], row[f"reason_{k}_zh"]
            assert (en == "") == (zh == "") == pd.isna(g), (g, en, zh)
            for text, is_zh in ((en, False), (zh, True)):
                if not text:
                    continue
                texts += 1
                assert not NOTHING.search(text), text
                for now, word, before in _pairs(text, is_zh):
                    assert (now > before) if word in rising else (now < before), text
                    directed += 1
            if g == "service_complaints" and "complaints in 90 days" in en:
                assert (
                    f"complaints in 90 days: {f.complaints_90d:.0f}" in en and f.complaints_90d > 0
                )
                checked += 1
            elif g == "usage_decline" and en.startswith("calls "):
                word = "up" if f.calls_change_vs_prev3m > 0 else "down"
                assert en.startswith(f"calls {word} {abs(f.calls_change_vs_prev3m):.0%}"), en
                assert ("上升" if word == "up" else "下降") in zh
                checked += 1
    assert texts > 1000 and directed > 100 and checked > 50, (texts, directed, checked)
    assert (scores.offer_code != "").mean() > 0.5
    said = scores[scores.offer_code != ""]
    assert (said.offer_zh != "").all() and (said.say_zh != "").all() and (said.say_en != "").all()


def _fully_explained(s, sc) -> pd.DataFrame:
    """The month's scores with every subscriber's reasons (what ``--explain all`` writes)."""
    from models.score import explain_subscribers, scored_by

    scores = pd.read_parquet(sc.path)
    version = scored_by(scores, s.model.name)
    why = explain_subscribers(s.path("features"), s.reasons, version, sc.month, scores.msisdn)
    return scores.merge(why, on="msisdn", how="left", validate="1:1")


def test_reasons_made_at_publishing_are_the_full_explanations_of_everyone_listed(published):
    """By default scoring explains a sample; publishing explains whoever a list holds."""
    import datetime as dt

    from pipelines.publish import lists
    from pipelines.publish.run import _with_reasons, decide, with_snapshot

    s, sc, _, _ = published
    scored = with_snapshot(s, pd.read_parquet(sc.path), sc.month)
    assert s.model.explain == "listed" and "reason_1" not in scored.columns
    d, _ = decide(s, scored, sc.month)
    day = dt.date(2025, 12, 3)
    mine = _with_reasons(s, d, sc.month, day)
    rows, named, control = lists.split(mine, s.publish, day)
    on_a_list = set(rows.msisdn) | set(control.msisdn)
    for part in named.values():
        on_a_list |= set(part.msisdn)
    groups = [c for c in mine.columns if c.startswith("shap_group_")]
    explained = mine[mine[groups].notna().any(axis=1)]
    assert set(explained.msisdn) == on_a_list
    assert len(on_a_list) < 0.8 * len(mine)  # the point: most are never explained
    full = _fully_explained(s, sc).set_index("msisdn")
    cols = [c for c in full.columns if c.startswith(("reason_", "say_", "offer_", "shap_group_"))]
    got = explained.set_index("msisdn")[cols]
    pd.testing.assert_frame_equal(got, full.loc[got.index, cols], check_dtype=False)


LISTS = ("callbacks", "winback", "renewal", "reminders")


def test_exports_exist_in_every_format_with_manifest_and_report(published):
    s, sc, manifest, _ = published
    folder = s.path("outputs") / "retention" / sc.month
    for ext in ("csv", "xlsx", "parquet"):
        assert (folder / f"all.{ext}").exists(), ext
    assert set(LISTS) <= set(manifest["counts"]["lists"])
    for stem in manifest["counts"]["lists"]:
        for ext in ("csv", "parquet"):
            assert (folder / f"{stem}.{ext}").exists(), (stem, ext)
    assert (folder / f"retention_{sc.month}.xlsx").exists()
    assert (folder / "report.html").read_text(encoding="utf-8").count("<img") == 2
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert {"model_version", "run_id", "snapshot_month", "counts", "config_fingerprint"} <= set(m)
    lst = pd.read_parquet(folder / "all.parquet")
    assert len(lst) == m["counts"]["selected"] == m["counts"]["contact"] > 0
    assert (lst.list_rank == np.arange(1, len(lst) + 1)).all()
    assert "control_group" not in lst.columns
    held = m["counts"]["control_group"]
    pool = held + len(lst) - m["counts"]["complaint_callbacks"]
    assert held / pool == pytest.approx(s.publish.control_share, abs=0.03)
    assert (folder / "all.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel


def _control(s, month) -> pd.DataFrame:
    return pd.read_parquet(s.path("scores") / month / "control_group.parquet")


def test_the_control_group_is_kept_apart_for_measurement_and_owner_only(published):
    s, sc, manifest, _ = published
    path = s.path("scores") / sc.month / "control_group.parquet"
    control = _control(s, sc.month)
    assert len(control) == manifest["counts"]["control_group"] > 0
    assert control.msisdn.str.fullmatch(r"1\d{10}").all()  # full numbers: internal only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_control_row_in_any_contact_sheet_or_file(published):
    s, sc, _, _ = published
    folder = s.path("outputs") / "retention" / sc.month
    held = set(_control(s, sc.month).subscriber_key)
    files = list(folder.glob("*.parquet"))
    assert len(files) > 5
    for p in files:
        assert not held & set(pd.read_parquet(p).subscriber_key), p.name
    for p in folder.glob("*.csv"):
        df = pd.read_csv(p, dtype=str, encoding="utf-8-sig")
        assert not held & set(df.subscriber_key), p.name
    wb = openpyxl.load_workbook(folder / f"retention_{sc.month}.xlsx")
    cells = {c.value for ws in wb.worksheets for row in ws.iter_rows() for c in row}
    assert not held & cells


def test_ranks_restart_per_channel_and_win_back_is_off_the_retention_list(published):
    s, sc, manifest, _ = published
    folder = s.path("outputs") / "retention" / sc.month
    channels = [n for n in manifest["counts"]["lists"] if n.startswith("retention_")]
    assert channels
    retention = set()
    for name in channels:
        part = pd.read_parquet(folder / f"{name}.parquet")
        assert (part.channel_rank == np.arange(1, len(part) + 1)).all(), name
        retention |= set(part.subscriber_key)
    winback = pd.read_parquet(folder / "winback.parquet")
    assert len(winback) > 0 and not retention & set(winback.subscriber_key)
    assert not set(pd.read_parquet(folder / "all.parquet").subscriber_key) & set(
        winback.subscriber_key
    )
    cb = pd.read_parquet(folder / "callbacks.parquet")
    published_on = pd.Timestamp(manifest["published_on"])
    late = pd.to_datetime(cb.callback_due) < published_on
    assert (cb.callback_overdue == late).all()
    assert (pd.to_datetime(cb.due) >= published_on).all()


def test_the_month_workbook_agents_open(published):
    s, sc, manifest, _ = published
    wb = openpyxl.load_workbook(
        s.path("outputs") / "retention" / sc.month / f"retention_{sc.month}.xlsx"
    )
    assert wb.sheetnames == manifest["workbook"]["sheets"] and wb.sheetnames[-1] == "说明"
    assert {"投诉回访", "挽回-沉默用户", "合约续约", "提醒服务"} <= set(wb.sheetnames)
    legend = {r[0].value for r in wb["说明"].iter_rows(min_row=2)}
    for ws in wb.worksheets:
        assert ws.page_setup.orientation == "landscape" and ws.print_title_rows == "$1:$1"
        assert ws.sheet_properties.pageSetUpPr.fitToPage and ws.page_setup.fitToHeight == 0
        head = [c.value for c in ws[1]]
        if ws.title != "说明":
            assert set(head) <= legend, ws.title
            assert all(re.search(r"[\u4e00-\u9fff]", h) for h in head), head
        for row in ws.iter_rows(min_row=2):
            for c in row:
                assert c.data_type not in ("f", "b"), (ws.title, c.coordinate)
                assert not (isinstance(c.value, str) and c.value.startswith("'")), c.coordinate
    ws = wb[[n for n in wb.sheetnames if n.startswith("维系")][0]]
    assert [c.value for c in ws[1]][:8] == [
        "序号", "手机号码", "客户等级", "沟通话术", "推荐优惠", "离网原因", "客户价值(元)", "完成期限",
    ]  # fmt: skip


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
    assert header[:4] == ["list_rank", "channel_rank", "msisdn", "value_tier"]
    # the header row and the first two columns (rank, number) stay in view
    assert ws["A1"].font.bold and ws.freeze_panes == "C2" and ws.auto_filter.ref
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
    for name in ("all.xlsx", f"retention_{sc.month}.xlsx"):
        for ws in openpyxl.load_workbook(folder / name).worksheets:
            assert not any(c.data_type == "f" for row in ws.iter_rows() for c in row)
    for p in folder.glob("*.csv"):
        df = pd.read_csv(p, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        assert not df.apply(lambda c: c.str.match(r"^[=+@]")).any().any(), p.name


def test_no_unmasked_number_in_any_published_file(published):
    s, sc, _, _ = published
    files = [p for p in (s.path("outputs")).rglob("*") if p.is_file()]
    assert files
    known = known_numbers(s)
    for p in files:  # what a reader sees: Parquet decoded, XLSX unzipped (raw Parquet bytes
        data = contents(p)  # hold runs of digits that are no number at all)
        hits = {m.group(0).decode() for m in MOBILE.finditer(data)}
        assert not hits & known, (p, sorted(hits & known)[:3])
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
    held = set(_control(s, sc.month).subscriber_key)  # held back now: not in the diff at all
    assert (diff.change != "new").sum() == len(set(prev_list.subscriber_key) - held)


def test_every_published_list_is_in_the_ledger_once_and_rerunning_replaces_it(published):
    from pipelines import steps
    from pipelines.campaigns import ledger

    s, sc, manifest, _ = published
    month = manifest["snapshot_month"]
    rows = ledger.read(s.path("campaigns"))
    assert sorted(rows.snapshot_month.unique()) == ["2025-10", month]
    mine = rows[rows.snapshot_month == month]
    assert (mine.group == "control").sum() == manifest["counts"]["control_group"]
    assert (mine.group == "treated").sum() == manifest["counts"]["contact"]
    assert set(mine.campaign) == {f"list-{month}"} and mine.msisdn.is_unique
    assert (
        manifest["ranking"]["method"] == "risk" and "no uplift model" in manifest["ranking"]["why"]
    )
    again = steps.publish(s, month)
    assert again["published_on"] == manifest["published_on"]  # the teams' due dates stay
    after = ledger.read(s.path("campaigns"))
    pd.testing.assert_frame_equal(after[after.snapshot_month == month].reset_index(drop=True),
                                  mine.reset_index(drop=True))  # fmt: skip
    assert oct(ledger.ledger_dir(s.path("campaigns")).stat().st_mode & 0o777) == "0o700"
