"""The month's list as a retention team receives it, and its change against last month's.

Subscribers are joined across months by a keyed subscriber key (:mod:`pipelines.privacy`),
never by the number; numbers are masked and every text is made safe here, before
anything is written.
"""

from __future__ import annotations

import datetime as dt
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
from pipelines.lake.numbers import mask_msisdn, mask_text
from pipelines.privacy import key_id, previous_secret, subscriber_keys, subscriber_secret
from pipelines.publish.config import PublishConfig

log = logging.getLogger(__name__)

REASONS = [f"reason_{k}{s}" for s in ("", "_zh", "_en") for k in (1, 2, 3)]
TAIL = ["snapshot_month", "model_version", "subscriber_key"]  # model/version columns last
# the machine columns of all.* (contacted rows of every channel, for systems and the diff)
LIST_COLUMNS = [
    "list_rank", "channel_rank", "msisdn", "value_tier", "say", "offer", "reasons", "value", "due",
    "channel", "channel_reason", "p_churn", "value_at_risk", "expected_profit",
    "complaint_callback", "callback_due", "callback_overdue", "offer_code", "uplift",
    "expected_leave_month", "p_leave_next_month", *REASONS, "last_complaint", *TAIL,
]  # fmt: skip
# what each list an agent works from shows, action first
SHEETS: dict[str, list[str]] = {
    "retention": [
        "channel_rank", "msisdn", "value_tier", "say", "offer", "reasons", "value", "due",
        "channel_reason", "p_churn", "expected_leave_month", "uplift", "last_complaint",
        "offer_code", *TAIL,
    ],
    "callbacks": [
        "list_rank", "msisdn", "value_tier", "due", "callback_overdue", "callback_due",
        "last_complaint", "say", "offer", "reasons", "value", "channel", "offer_code", *TAIL,
    ],
    "winback": [
        "list_rank", "msisdn", "value_tier", "say", "offer", "reasons", "value", "calls_1m",
        "data_mb_1m", "p_churn", "last_complaint", "due", *TAIL,
    ],
    "renewal": [
        "list_rank", "msisdn", "value_tier", "say", "offer", "months_to_contract_end", "value",
        "p_churn", "expected_leave_month", "value_at_risk", "reasons", "due", *TAIL,
    ],
    "reminders": [
        "list_rank", "msisdn", "value_tier", "reminder", "value", "alert_bill", "arpu_1m",
        "arpu_3m", "points_balance", "arrears", "due", *TAIL,
    ],
}  # fmt: skip
TEXT = {  # fixed talking points of the lists whose offer the model does not pick
    "winback": (
        "线路已沉默：先问清停用原因，再给出针对该原因的方案",
        "line has gone silent: first learn why, then offer what answers that reason",
    ),
    "renewal": ("合约即将到期：邀请续约", "contract ends soon: invite a renewal"),
    "renewal_offer": ("续约24个月享优惠", "offer tied to staying 24 months"),
    "over": ("本月账单明显高于平时，提醒核对消费", "bill far above usual: over-spend reminder"),
    "under": ("本月账单明显低于平时，提醒套餐权益", "bill far below usual: under-spend reminder"),
    "points": ("积分{:,.0f}未兑换，提醒积分兑换", "{:,.0f} points unredeemed: redemption reminder"),
    "arrears": ("欠费{:,.0f}元，提醒缴费", "arrears {:,.0f} CNY: payment reminder"),
    "also": ("另请提醒：", "also remind: "),
}


@dataclass
class MonthList:
    rows: pd.DataFrame  # LIST_COLUMNS: every contacted row, masked, list_rank order
    lists: dict[str, pd.DataFrame]  # retention_<channel>, callbacks, winback, renewal, reminders
    control: pd.DataFrame  # held-out subscribers, full numbers: internal only, never shared
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


def _masked(rows: pd.DataFrame, show_full_msisdn: bool) -> pd.DataFrame:
    """Numbers masked (unless asked for) and numbers inside texts masked.

    Formula neutralising is left to the CSV writer: XLSX cells are written as strings,
    which never run, so agents see the text exactly as the subscriber wrote it.
    """
    out = rows.copy()
    if not show_full_msisdn:
        out["msisdn"] = mask_msisdn(pa.array(out["msisdn"])).to_pylist()
    for c in out.columns:
        if c != "msisdn" and (out[c].dtype == object or pd.api.types.is_string_dtype(out[c])):
            out[c] = out[c].map(lambda v: mask_text(v) if isinstance(v, str) else v)
    return out


def _text(df: pd.DataFrame, name: str, lang: str) -> pd.Series:
    """A language column of the scores (``say_zh``...) when present, else empty."""
    col = df.get(f"{name}_{lang}")
    return pd.Series("", index=df.index) if col is None else col.fillna("").astype(str)


def _reasons(df: pd.DataFrame, lang: str) -> pd.Series:
    """The three reasons in words, one line each."""
    cols = [df.get(f"reason_{k}_{lang}", pd.Series("", index=df.index)) for k in (1, 2, 3)]
    joined = pd.concat([c.fillna("").astype(str) for c in cols], axis=1)
    return joined.apply(lambda r: "\n".join(t for t in r if t), axis=1)


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df.get(name, pd.Series(np.nan, index=df.index)), errors="coerce")


def _reminders(df: pd.DataFrame, high_points: float, lang: str) -> pd.Series:
    """Over/under-spend on an alert bill, high unredeemed points, arrears: one line each."""
    i = 0 if lang == "zh" else 1
    alert = _num(df, "alert_bill") == 1
    over = _num(df, "arpu_1m") > _num(df, "arpu_3m")
    points = _num(df, "points_balance")
    unredeemed = (points >= high_points) & (_num(df, "points_redeemed_6m").fillna(0) <= 0)
    arrears = _num(df, "arrears")
    out = []
    for j in range(len(df)):
        lines = []
        if alert.iat[j]:
            lines.append(TEXT["over" if over.iat[j] else "under"][i])
        if unredeemed.iat[j]:
            lines.append(TEXT["points"][i].format(points.iat[j]))
        if arrears.iat[j] > 0:
            lines.append(TEXT["arrears"][i].format(arrears.iat[j]))
        out.append("\n".join(lines))
    return pd.Series(out, index=df.index, dtype=object)


def _ranked(df: pd.DataFrame, by: str = "value_at_risk") -> pd.DataFrame:
    out = df.sort_values([by, "msisdn"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True).assign(list_rank=lambda d: np.arange(1, len(d) + 1))


def _due(published: dt.date) -> tuple[str, str]:
    """Work a month's list by the end of the month it is published in."""
    return str(published), str((pd.Timestamp(published) + pd.offsets.MonthEnd(0)).date())


def split(
    decided: pd.DataFrame,
    cfg: PublishConfig,
    published: dt.date,
    lang: str | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    """The contact rows, the month's lists and the control group, from the policy's verdict.

    Pure on a frame (numbers not yet masked), so each list's rule is tested by hand.
    The control group appears in no contact list, including renewal and reminders.
    """
    lang = lang or cfg.language
    d = decided.copy()
    d["say"], d["offer"] = _text(d, "say", lang), _text(d, "offer", lang)
    d["offer_code"] = d.get("offer_code", pd.Series("", index=d.index)).fillna("")
    d["reasons"] = _reasons(d, lang)
    d["channel_reason"] = _text(d, "channel_reason", lang)
    today, month_end = _due(published)
    d["due"] = month_end
    cb_due = pd.to_datetime(d["callback_due"], errors="coerce")
    pub = pd.Timestamp(published)
    d["callback_overdue"] = d["complaint_callback"] & (cb_due < pub)
    d.loc[d["complaint_callback"], "due"] = cb_due.where(cb_due > pub, pub).dt.date.astype(str)
    d["callback_due"] = cb_due.dt.date.astype(str).where(d["complaint_callback"], "")
    control = d[d["control_group"]].copy()
    contact = d[d["selected"] & ~d["control_group"]]
    rows = _ranked(contact, "priority" if "priority" in contact else "value_at_risk")
    rows["channel_rank"] = rows.groupby("channel").cumcount() + 1
    lists: dict[str, pd.DataFrame] = {}
    retention = rows[~rows["complaint_callback"]]
    for ch, part in retention.groupby("channel", sort=True):
        part = part.reset_index(drop=True)
        lists[f"retention_{ch}"] = part.assign(channel_rank=np.arange(1, len(part) + 1))
    callbacks = rows[rows["complaint_callback"]].copy()
    callbacks["_due"] = pd.to_datetime(callbacks["due"])
    lists["callbacks"] = _ranked(callbacks.assign(_k=-callbacks["_due"].astype("int64")), "_k")
    # one contact a month: whoever is on a call or SMS list above is not on renewal or
    # reminders (their reminder rides along in what to say); control, do-not-contact and
    # silent lines are on neither
    held = d["control_group"] | (d["exclusion"] == "do_not_contact") | d["silent"]
    on_list = d["selected"] & ~d["control_group"]
    winback = d[d["exclusion"] == "silent_winback"].copy()
    winback["say"], winback["offer"] = TEXT["winback"][0 if lang == "zh" else 1], ""
    lists["winback"] = _ranked(winback, "value")
    ends = _num(d, "months_to_contract_end")
    soon = (_num(d, "has_contract") == 1) & ends.between(0, cfg.renewal_window_months)
    renewal = d[soon & ~held & ~on_list].copy()
    renewal["months_to_contract_end"] = renewal["months_to_contract_end"].round(1)
    i = 0 if lang == "zh" else 1
    renewal["say"], renewal["offer"] = TEXT["renewal"][i], TEXT["renewal_offer"][i]
    lists["renewal"] = _ranked(renewal, "value_at_risk").head(cfg.list_capacity.get("renewal"))
    d["reminder"] = _reminders(d, cfg.high_points, lang)
    spare = (d["reminder"] != "") & ~held & ~on_list & ~d["msisdn"].isin(lists["renewal"]["msisdn"])
    lists["reminders"] = _ranked(d[spare], "value").head(cfg.list_capacity.get("reminders"))
    also = d.loc[on_list, ["msisdn", "reminder"]].set_index("msisdn")["reminder"]
    note = TEXT["also"][i]
    for name, part in lists.items():
        if name.startswith("retention_") or name == "callbacks":
            extra = part["msisdn"].map(also).fillna("")
            part["say"] = part["say"].where(extra == "", part["say"] + "\n" + note + extra)
    return rows, lists, control


def diff(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    decided: pd.DataFrame,
    match_key: str = "subscriber_key",
    hidden: set | None = None,
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
    gone = prev[~prev._match.isin(cur._match) & ~prev._match.isin(hidden or set())].copy()
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


def build(
    settings: Settings, decided: pd.DataFrame, month: str, root: Path, published: dt.date
) -> MonthList:
    """The lists of ``month`` from the policy's decided rows, and the diff against the last list.

    ``root`` holds the published months; ``published`` is the day the lists appear, from
    which callback due dates are judged. The key columns are added to ``decided``.
    """
    cfg = settings.publish
    secret = subscriber_secret(settings)
    decided["subscriber_key"] = subscriber_keys(decided["msisdn"], secret)
    prev_list, match_key = None, "subscriber_key"
    prev = previous_folder(root, month)
    if prev is not None:
        prev_list = pd.read_parquet(prev / "all.parquet")
        match_key = _match_key(settings, decided, prev, secret)
    with_text = decided.merge(last_complaint(settings.path("lake"), month), on="msisdn", how="left")
    with_text["last_complaint"] = with_text["last_complaint"].map(
        lambda t: t.replace("\r\n", "\n").replace("\r", "\n") if isinstance(t, str) else t
    )
    rows, named, control = split(with_text, cfg, published)
    keep = [*LIST_COLUMNS, *([match_key] if match_key != "subscriber_key" else [])]
    lst = _masked(rows.reindex(columns=keep), cfg.show_full_msisdn)
    out = {
        name: _masked(df.reindex(columns=SHEETS[name.split("_")[0]]), cfg.show_full_msisdn)
        for name, df in named.items()
    }
    hidden = set(decided.loc[decided["control_group"], match_key].dropna())
    changes = diff(lst, prev_list, decided, match_key, hidden)
    return MonthList(lst[LIST_COLUMNS], out, control, changes, key_id(secret))
