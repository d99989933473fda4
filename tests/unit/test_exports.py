"""What an agent reads in a workbook cell: tiers and yes/no in their language, never a formula."""

from __future__ import annotations

import openpyxl
import pandas as pd

from pipelines.publish.exports import write_xlsx


def test_tiers_and_booleans_read_in_the_agents_language(tmp_path):
    df = pd.DataFrame(
        {
            "channel_rank": [1, 2, 3],
            "value_tier": ["ordinary", "vip", "member"],
            "complaint_callback": [True, False, True],
            "last_complaint": ["=SUM(A1)", "信号差\n多次重启无效", "ok"],
        }
    )
    write_xlsx(df, tmp_path / "zh.xlsx", "x", "zh")
    rows = [
        [c.value for c in r]
        for r in openpyxl.load_workbook(tmp_path / "zh.xlsx").active.iter_rows()
    ]
    assert rows[0][:3] == ["序号", "客户等级", "投诉回访"]
    assert [r[1] for r in rows[1:]] == ["普通", "贵宾", "会员"]
    assert [r[2] for r in rows[1:]] == ["是", "否", "是"]
    assert rows[1][3] == "=SUM(A1)" and rows[2][3] == "信号差\n多次重启无效"  # text, whole
    ws = openpyxl.load_workbook(tmp_path / "zh.xlsx").active
    assert all(c.data_type == "s" for c in ws["D"][1:])
    write_xlsx(df, tmp_path / "en.xlsx", "x", "en")
    en = openpyxl.load_workbook(tmp_path / "en.xlsx").active
    assert [c.value for c in en["B"][1:]] == ["ordinary", "vip", "member"]


def test_a_list_prints_landscape_one_page_wide_at_a_readable_scale(tmp_path):
    from pipelines.publish.exports import write_workbook
    from pipelines.publish.lists import SHEETS

    long = "近3个月掉话率12.0%，较此前5.0%上升\n" * 3
    df = pd.DataFrame({c: [long if c in ("say", "reasons", "last_complaint") else "x"] * 3
                       for c in SHEETS["retention"]})  # fmt: skip
    about = {"snapshot_month": "2025-12", "model_version": "7", "published_on": "2026-01-02"}
    names = write_workbook({"retention_sms_app": df}, tmp_path / "w.xlsx", "zh", about)
    wb = openpyxl.load_workbook(tmp_path / "w.xlsx")
    ws = wb[names[0]]
    heads = [c.value for c in ws[1]]
    assert "模型版本" not in heads and "数据月份" not in heads and "客户标识" not in heads
    assert ws.page_setup.orientation == "landscape" and ws.page_setup.paperSize == 9
    assert ws.sheet_properties.pageSetUpPr.fitToPage and ws.page_setup.fitToHeight == 0
    assert (ws.page_setup.fitToWidth or 1) == 1  # one page wide (1 is the default, not written)
    assert ws.print_title_rows == "$1:$1"
    assert "2025-12" in ws.oddHeader.left.text and "7" in ws.oddHeader.left.text
    total = sum(ws.column_dimensions[c].width for c in ws.column_dimensions)
    assert total <= 230  # A4 landscape at about 70% or more
    assert ws.row_dimensions[2].height >= 15 * 6  # three wrapped lines of a long text, twice
    legend = [[c.value for c in r] for r in wb[names[-1]].iter_rows(min_row=2, max_row=4)]
    assert legend[0][:2] == ["数据月份", "2025-12"] and legend[2][:2] == ["发布日期", "2026-01-02"]
