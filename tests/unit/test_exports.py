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
