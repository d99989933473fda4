"""Writers of what leaves the building: CSV (UTF-8 with BOM, for Excel), XLSX and Parquet.

A published cell must never run as a formula in a spreadsheet, and free text must not
carry a phone number out: :func:`safe_text` is what every published text goes through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.lake.numbers import mask_text

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MONEY_COLUMNS = ("value", "value_at_risk", "expected_profit")


def neutralise(value):
    """A text a spreadsheet would run as a formula is made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_text(value):
    """Free text as it may leave the building: numbers inside it masked, formulas inert."""
    return neutralise(mask_text(value)) if isinstance(value, str) else value


def write_xlsx(df: pd.DataFrame, path: Path, sheet: str) -> None:
    """A styled sheet (frozen, filtered header) whose cells are written as typed, never parsed."""
    import xlsxwriter

    wb = xlsxwriter.Workbook(
        str(path),
        {"strings_to_formulas": False, "strings_to_numbers": False, "strings_to_urls": False},
    )
    ws = wb.add_worksheet(sheet[:31])
    head = wb.add_format(
        {
            "bold": True,
            "bg_color": "#1F4E78",
            "font_color": "#FFFFFF",
            "border": 1,
            "text_wrap": True,
        }
    )
    pct = wb.add_format({"num_format": "0.0%"})
    money = wb.add_format({"num_format": "#,##0.00"})
    for j, c in enumerate(df.columns):
        ws.write_string(0, j, str(c), head)
        width = (
            min(60, max(len(str(c)), *(len(str(v)) for v in df[c].head(200))) + 2)
            if len(df)
            else len(str(c)) + 2
        )
        fmt = pct if c == "p_churn" else money if c in MONEY_COLUMNS else None
        ws.set_column(j, j, width, fmt)
    for i, row in enumerate(df.itertuples(index=False), start=1):
        for j, v in enumerate(row):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            if isinstance(v, bool | np.bool_):
                ws.write_boolean(i, j, bool(v))
            elif isinstance(v, int | float | np.integer | np.floating):
                ws.write_number(i, j, float(v))
            else:
                ws.write_string(i, j, str(v))
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(df), 1), len(df.columns) - 1)
    wb.close()


def write_all_formats(df: pd.DataFrame, folder: Path, stem: str) -> None:
    """``<stem>.csv``, ``<stem>.xlsx`` and ``<stem>.parquet``: one list, whichever tool opens it."""
    df.to_csv(folder / f"{stem}.csv", index=False, encoding="utf-8-sig")
    write_xlsx(df, folder / f"{stem}.xlsx", stem)
    df.to_parquet(folder / f"{stem}.parquet", index=False)
