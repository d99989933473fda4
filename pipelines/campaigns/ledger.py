"""The campaign ledger: every published list, contacted and held out, as the operator ran it.

One file per snapshot month, ``<campaigns>/ledger/snapshot=YYYY-MM.parquet``, replaced
whole when a month is published again (idempotent). It holds full numbers, so it lives
in an owner-only folder; nothing in it is published.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pandas as pd

from pipelines.lake.store import write_atomically

COLUMNS = [
    "campaign", "snapshot_month", "contact_month", "msisdn", "group", "channel", "offer",
    "reason", "value_tier", "p_churn", "value", "value_at_risk", "uplift", "ranking",
    "list_rank", "complaint_callback", "model_version", "published_on",
]  # fmt: skip


def ledger_dir(campaigns: Path) -> Path:
    return campaigns / "ledger"


def campaign_name(month: str) -> str:
    """The campaign of the list made from snapshot ``month`` (worked in the month after)."""
    return f"list-{month}"


def entries(decided: pd.DataFrame, month: str, published: dt.date, ranking: str) -> pd.DataFrame:
    """The ledger rows of one published month: everyone selected, treated or control."""
    on = decided[decided["selected"]]
    contact = (pd.Period(month, freq="M") + 1).strftime("%Y-%m")
    out = pd.DataFrame(
        {
            "campaign": campaign_name(month),
            "snapshot_month": month,
            "contact_month": contact,
            "msisdn": on["msisdn"].astype(str),
            "group": on["control_group"].map({True: "control", False: "treated"}),
            "channel": on["channel"],
            "offer": on.get("offer_code", pd.Series("", index=on.index)).fillna(""),
            "reason": on.get("reason_1", pd.Series("", index=on.index)).fillna(""),
            "value_tier": on["value_tier"],
            "p_churn": on["p_churn"].astype(float),
            "value": on["value"].astype(float),
            "value_at_risk": on["value_at_risk"].astype(float),
            "uplift": pd.to_numeric(on.get("uplift", pd.Series(float("nan"), index=on.index))),
            "ranking": ranking,
            "list_rank": on["list_rank"].astype(int),
            "complaint_callback": on["complaint_callback"].astype(bool),
            "model_version": on.get("model_version", pd.Series("", index=on.index)).astype(str),
            "published_on": str(published),
        }
    )
    return out[COLUMNS].reset_index(drop=True)


def record(campaigns: Path, month: str, rows: pd.DataFrame) -> Path:
    """Write (or replace) one month's entries, all at once."""
    path = ledger_dir(campaigns) / f"snapshot={month}.parquet"
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    write_atomically(path, buf.getvalue())
    return path


def read(campaigns: Path) -> pd.DataFrame:
    """Every recorded month (empty frame with the ledger's columns when none)."""
    files = sorted(ledger_dir(campaigns).glob("snapshot=*.parquet"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
