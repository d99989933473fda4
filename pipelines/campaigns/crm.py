"""The CRM's contact history (docs/crm.md), read and checked once for every consumer.

Rows that cannot be used (no valid number, no date, an unknown group) are counted and
named in one log line, never silently dropped; an unreadable file is one clear error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipelines.lake.errors import ChurnError
from pipelines.lake.numbers import NumberPlan, normalize_msisdn

log = logging.getLogger(__name__)

COLUMNS = ["campaign", "msisdn", "contacted_at", "channel", "offer", "group", "reached", "accepted"]
GROUPS = ("treated", "control")


def read_contact_history(path: Path, plan: NumberPlan) -> pd.DataFrame | None:
    """Every usable contact (and held-out control) row; None when the CRM delivered nothing.

    The older two-column form ``msisdn,contacted_at[,channel]`` is read as treated
    contacts of one campaign named ``crm``.
    """
    if not path.exists():
        return None
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ChurnError(f"{path}: not a readable contact history CSV ({e})") from None
    if not {"msisdn", "contacted_at"} <= set(raw.columns):
        raise ChurnError(f"{path}: needs columns msisdn and contacted_at (has {list(raw.columns)})")
    df = raw.reindex(columns=COLUMNS, fill_value="")
    df["campaign"] = df["campaign"].where(df["campaign"] != "", "crm")
    df["group"] = df["group"].str.strip().str.lower().where(df["group"] != "", "treated")
    df["msisdn"] = normalize_msisdn(pa.array(df["msisdn"].str.strip()), plan).to_pandas()
    df["contacted_at"] = pd.to_datetime(df["contacted_at"], errors="coerce", format="mixed")
    for c in ("reached", "accepted"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df["msisdn"].isna() | df["contacted_at"].isna() | ~df["group"].isin(GROUPS)
    if bad.any():
        log.warning(
            "%s: %d of %d rows unusable (%d without a valid number, %d without a date, "
            "%d with a group other than treated/control); they are left out",
            path.name, int(bad.sum()), len(df), int(df["msisdn"].isna().sum()),
            int(df["contacted_at"].isna().sum()), int((~df["group"].isin(GROUPS)).sum()),
        )  # fmt: skip
    out = df[~bad].reset_index(drop=True)
    out["contact_month"] = out["contacted_at"].dt.to_period("M").astype(str)
    return out


def treated(history: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows of people actually contacted (a control row is a promise not to)."""
    return None if history is None else history[history["group"] == "treated"]
