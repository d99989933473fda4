"""The month's list as a retention team receives it, and its change against last month's.

Subscribers are joined across months by a keyed subscriber key (:mod:`pipelines.privacy`),
never by the number; numbers are masked and every text is made safe here, before
anything is written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.config import Settings
from pipelines.lake import views
from pipelines.lake.numbers import mask_msisdn
from pipelines.privacy import key_id, previous_secret, subscriber_keys, subscriber_secret
from pipelines.publish.exports import neutralise, safe_text

log = logging.getLogger(__name__)

LIST_COLUMNS = [
    "list_rank", "msisdn", "value_tier", "channel", "p_churn", "value", "value_at_risk", "expected_profit",
    "complaint_callback", "callback_due", "control_group",
    "reason_1", "reason_2", "reason_3",
    "reason_1_zh", "reason_2_zh", "reason_3_zh", "reason_1_en", "reason_2_en", "reason_3_en",
    "last_complaint", "snapshot_month", "model_version", "subscriber_key",
]  # fmt: skip


@dataclass
class MonthList:
    rows: pd.DataFrame  # LIST_COLUMNS, in list_rank order, masked and safe
    diff: pd.DataFrame  # new / still_on_list / dropped against the previous list
    key_id: str  # public name of the secret behind subscriber_key


def previous_folder(root: Path, month: str) -> Path | None:
    """The latest list published before ``month`` (staging and swapped-out folders skipped)."""
    earlier = sorted(
        p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".") and p.name < month
    )
    return earlier[-1] if earlier else None


def last_complaint(lake: Path, month: str) -> pd.DataFrame:
    """Each subscriber's latest complaint text as known at the end of ``month``."""
    con = duckdb.connect()
    views.register_views(con, lake, max_month=month, suffix="_t")
    nxt = (pd.Period(month, freq="M") + 1).start_time.strftime("%Y-%m-%d")
    return con.sql(
        f"""SELECT msisdn, arg_max(description, updated_at) AS last_complaint
        FROM complaints_t WHERE updated_at < TIMESTAMP '{nxt}' GROUP BY msisdn"""
    ).df()


def _match_key(settings: Settings, decided: pd.DataFrame, prev_folder: Path, secret: bytes) -> str:
    """The column of ``decided`` that joins with last month's published keys.

    After a key rotation last month's list carries keys under the previous secret; they
    are computed for this month's subscribers too (internally, never published).
    """
    try:
        meta = json.loads((prev_folder / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        meta = {}
    prev_id = (meta.get("subscriber_key") or {}).get("key_id")
    if prev_id in (None, key_id(secret)):
        return "subscriber_key"
    old = previous_secret(settings)
    if old is not None and key_id(old) == prev_id:
        decided["_previous_key"] = subscriber_keys(decided["msisdn"], old)
        return "_previous_key"
    log.warning(
        "the list of %s was published under subscriber key %s, which is no longer here: "
        "this diff cannot match anyone and shows everyone as new",
        prev_folder.name, prev_id,
    )  # fmt: skip
    decided["_previous_key"] = None
    return "_previous_key"


def _list_frame(chosen: pd.DataFrame, keep: list[str], show_full_msisdn: bool) -> pd.DataFrame:
    """The selected rows in rank order: numbers masked (unless asked for), every text safe."""
    if not show_full_msisdn:
        chosen["msisdn"] = mask_msisdn(pa.array(chosen["msisdn"])).to_pylist()
    lst = chosen.reindex(columns=keep).sort_values("list_rank").reset_index(drop=True)
    for c in lst.columns:
        if c == "msisdn" and show_full_msisdn:
            lst[c] = lst[c].map(neutralise)  # asked for on purpose: left whole
        elif lst[c].dtype == object or pd.api.types.is_string_dtype(lst[c]):
            lst[c] = lst[c].map(safe_text)
    lst["callback_due"] = (
        lst["callback_due"].astype(str).replace({"None": "", "NaT": "", "nan": ""})
    )
    return lst


def diff(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    decided: pd.DataFrame,
    match_key: str = "subscriber_key",
) -> pd.DataFrame:
    """New / still on the list / dropped against last month's list.

    ``match_key`` is the column of ``current`` and ``decided`` holding each subscriber's
    key under the secret last month's list was published with (after a key rotation
    that is the previous secret), so the months still join.
    """
    cur = current[["subscriber_key", "msisdn", "list_rank"]].assign(_match=current[match_key])
    if previous is None:
        return cur.drop(columns="_match").assign(change="new", why="first list")
    prev = previous[["subscriber_key", "msisdn", "list_rank"]].rename(
        columns={"list_rank": "previous_rank", "subscriber_key": "_match"}
    )
    m = cur.merge(prev.drop(columns="msisdn"), on="_match", how="left")
    m["change"] = np.where(m.previous_rank.isna(), "new", "still_on_list")
    m["why"] = np.where(m.previous_rank.isna(), "newly at risk", "still at risk")
    gone = prev[~prev._match.isin(cur._match)].copy()
    gone["subscriber_key"] = gone["_match"]
    why = decided.set_index(match_key)["exclusion"]
    gone["why"] = gone._match.map(why).fillna("left the base (churned or no longer active)")
    gone["why"] = gone["why"].replace(
        {
            "not_profitable": "no longer profitable to contact",
            "over_capacity": "below the capacity cut",
        }
    )
    gone["change"] = "dropped"
    return pd.concat([m, gone], ignore_index=True)[
        ["subscriber_key", "msisdn", "change", "why", "list_rank", "previous_rank"]
    ]


def build(settings: Settings, decided: pd.DataFrame, month: str, root: Path) -> MonthList:
    """The list of ``month`` from the policy's decided rows, and its diff against the last list.

    ``root`` holds the published months; the key columns are added to ``decided``, whose
    exclusions explain who dropped off.
    """
    secret = subscriber_secret(settings)
    decided["subscriber_key"] = subscriber_keys(decided["msisdn"], secret)
    prev_list, match_key = None, "subscriber_key"
    prev = previous_folder(root, month)
    if prev is not None:
        prev_list = pd.read_parquet(prev / "all.parquet")
        match_key = _match_key(settings, decided, prev, secret)
    chosen = decided[decided.selected].merge(
        last_complaint(settings.path("lake"), month), on="msisdn", how="left"
    )
    keep = [*LIST_COLUMNS, *([match_key] if match_key != "subscriber_key" else [])]
    lst = _list_frame(chosen, keep, settings.publish.show_full_msisdn)
    return MonthList(lst[LIST_COLUMNS], diff(lst, prev_list, decided, match_key), key_id(secret))
