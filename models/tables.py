"""A customer-level table as data scientists bring it, made ready to train on.

Public churn tables and operators' own exports share the same habits: a ``Yes``/``No``
label, contract and payment types as text, a number stored as text with blanks where
it is not known yet. Each column is used, coerced or dropped for a stated reason, and
the label is read in its common spellings or refused in one line naming what it holds.
Text columns with few levels become LightGBM categoricals (integer codes, with the
levels kept so the codes can be read back); the logistic baseline one-hot encodes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.lake.errors import ChurnError

log = logging.getLogger(__name__)

YES = {"1", "1.0", "yes", "y", "true", "t", "是", "churn", "churned"}
NO = {"0", "0.0", "no", "n", "false", "f", "否"}
NUMBER_SHARE = 0.95  # a text column whose filled values parse as numbers this often is numeric


class TableError(ChurnError, ValueError):
    """The table cannot be trained on as given (one line says why)."""


@dataclass
class PreparedTable:
    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    levels: dict[str, list[str]] = field(default_factory=dict)
    columns: list[dict] = field(default_factory=list)  # column, use, why


def read_label(values: pd.Series, name: str) -> pd.Series:
    """0/1 (float, NaN where unknown) from 0/1, Yes/No, True/False, 是/否 and kin."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    text = values.astype("string").str.strip().str.lower()
    blank = text.isna() | (text == "")
    yes, no = text.isin(YES), text.isin(NO)
    odd = ~(yes | no | blank)
    if odd.any():
        found = sorted(values[odd].astype(str).unique())[:6]
        raise TableError(
            f"label column {name!r}: values {found} are not 0/1, Yes/No, True/False or 是/否"
        )
    if not yes.any() or not no.any():
        raise TableError(f"label column {name!r} holds one class only: nothing to learn")
    return pd.Series(np.where(yes, 1.0, np.where(no, 0.0, np.nan)), index=values.index)


def _as_number(values: pd.Series) -> pd.Series | None:
    """The column as numbers when nearly every filled cell is one ('29.85', ' ', '1,024')."""
    text = values.astype("string").str.strip().str.replace(",", "", regex=False)
    filled = text.notna() & (text != "")
    if not filled.any():
        return None
    num = pd.to_numeric(text.where(filled), errors="coerce")
    if num[filled].notna().mean() < NUMBER_SHARE:
        return None
    return num.astype(float)


def prepare_table(
    frame: pd.DataFrame,
    *,
    id_col: str,
    label_col: str,
    time_col: str | None = None,
    max_levels: int = 50,
) -> PreparedTable:
    """Features, categoricals and a per-column account of what was done with each column."""
    missing = [c for c in (id_col, label_col, time_col) if c and c not in frame.columns]
    if missing:
        raise TableError(f"the table has no column(s) {missing}; columns are {list(frame.columns)}")
    out = pd.DataFrame(index=frame.index)
    out[label_col] = read_label(frame[label_col], label_col)
    if time_col:
        out[time_col] = frame[time_col]
    feats, cats, levels, report = [], [], {}, []
    for c in frame.columns:
        if c in (id_col, label_col, time_col):
            continue
        v = frame[c]
        if pd.api.types.is_bool_dtype(v) or pd.api.types.is_numeric_dtype(v):
            out[c] = v.astype(float)
            feats.append(c)
            report.append({"column": c, "use": "numeric", "why": "numbers"})
            continue
        num = _as_number(v)
        if num is not None:
            blanks = int(num.isna().sum() - v.isna().sum())
            out[c] = num
            feats.append(c)
            report.append({"column": c, "use": "numeric (coerced)",
                           "why": f"numbers stored as text; {blanks} blank cell(s) read as missing"})  # fmt: skip
            continue
        text = v.astype("string").str.strip().replace("", pd.NA)
        k = int(text.nunique())
        if k < 2:
            report.append({"column": c, "use": "dropped", "why": "one value only"})
        elif k > max_levels:
            report.append({"column": c, "use": "dropped",
                           "why": f"{k} distinct texts (> {max_levels}): free text or an id"})  # fmt: skip
        else:
            lv = sorted(text.dropna().unique().tolist())
            out[c] = text.map({x: float(i) for i, x in enumerate(lv)}).astype(float)
            feats.append(c)
            cats.append(c)
            levels[c] = lv
            report.append({"column": c, "use": "categorical", "why": f"{k} levels"})
    if not feats:
        raise TableError("the table has no column to learn from besides id, label and time")
    for r in report:
        log.info("column %-24s %-18s %s", r["column"], r["use"], r["why"])
    return PreparedTable(out, feats, cats, levels, report)
