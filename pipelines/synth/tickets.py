"""Complaint tickets: opened by dropped calls, bill shocks and bad luck; resolved, reopened, rated.

A ticket appears in the complaints extract once per state change (open, resolved,
reopened, resolved again), in the month of that change, so a later extract carries new
states of tickets opened earlier. Descriptions are free text as agents type it:
Chinese, quotes, line breaks, formula-like starts, and now and then a callback number.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.lake.contract import COMPLAINTS


def _in_contract_order(column: str, shares: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """An enum column's values in the contract's order, and the share drawn of each."""
    values = COMPLAINTS.enum(column)
    if set(shares) != set(values):
        raise ValueError(
            f"complaints.{column}: shares for {sorted(shares)}, the contract has {values}"
        )
    return np.array(values), np.array([shares[v] for v in values])


CATEGORIES, CATEGORY_P = _in_contract_order(
    "category",
    {
        "network": 0.2,
        "billing": 0.2,
        "service": 0.25,
        "product": 0.15,
        "handset": 0.1,
        "other": 0.1,
    },
)
CHANNELS, CHANNEL_P = _in_contract_order(
    "channel", {"hotline": 0.55, "store": 0.10, "app": 0.20, "wechat": 0.12, "regulator": 0.03}
)
NETWORK, BILLING_ISSUE = COMPLAINTS.enum("category", "network", "billing")
(REGULATOR,) = COMPLAINTS.enum("channel", "regulator")
NORMAL, URGENT = COMPLAINTS.enum("severity", "normal", "urgent")
OPEN, RESOLVED, REOPENED = COMPLAINTS.enum("status", "open", "resolved", "reopened")
# the ticket store: the extract's columns, with the subscriber's index in place of the number
_STORE_COLUMNS = ["sub" if c == "msisdn" else c for c in COMPLAINTS.names]

DESCRIPTIONS = [
    "信号差，通话经常掉线，家里和公司都一样",
    '客户称"上月账单"多扣了流量费，要求核实',
    "营业厅排队时间长，服务态度不好",
    "套餐太贵，想换便宜的，但说合约未到期",
    "手机型号少，想换5G手机没有合适的",
    "=客户要求退订增值业务，已多次反映",
    "+86开头来电骚扰，要求屏蔽",
    "-话费余额与短信提醒不一致",
    "@客服 说好三天回复，至今没有消息",
    "网速慢，晚上8点到11点几乎无法上网\n多次重启无效",
    '投诉内容：资费不透明, 收费项目"不清楚", 要求解释',
    "宽带与手机融合套餐办理后未生效，\n要求尽快处理，否则携号转网",
]
# Agents type the number a customer wants to be called back on into the ticket text, in
# whatever form it was said: free text is personal data too (exports must mask it).
CALLBACK_FORMS = (
    "客户要求回电：{d[0]}{d[1]}{d[2]} {d[3]}{d[4]}{d[5]}{d[6]} {d[7]}{d[8]}{d[9]}{d[10]}",
    "请拨打+86-{n[0]}-{n[1]}-{n[2]}联系客户",
    "联系电话{n[0]}{n[1]}{n[2]}，白天方便",
)
CALLBACK_EVERY = 23  # every 23rd ticket, chosen by ticket number: draws nothing from the RNG


def _with_callback_numbers(desc: np.ndarray, seq: np.ndarray, msisdn: np.ndarray) -> np.ndarray:
    """Every CALLBACK_EVERY-th ticket's text with the subscriber's number, in a typed form."""
    out = desc.copy()
    for j in np.flatnonzero(seq % CALLBACK_EVERY == 0):
        m = str(msisdn[j])
        form = CALLBACK_FORMS[(seq[j] // CALLBACK_EVERY) % len(CALLBACK_FORMS)]
        out[j] = f"{out[j]}；" + form.format(d=m, n=(m[:3], m[3:7], m[7:]))
    return out


class TicketDesk:
    """Every ticket still open or changed lately; draws from the world's random stream."""

    def __init__(self, rng: np.random.Generator, msisdn: np.ndarray):
        self.rng, self.msisdn = rng, msisdn
        self.tickets = pd.DataFrame(columns=_STORE_COLUMNS)
        self._ticket_seq = 0

    def open(
        self, period: pd.Period, subs: np.ndarray, drop_rate: np.ndarray, alert: np.ndarray
    ) -> None:
        """Open a ticket for each of ``subs`` in ``period``, with its whole future of states."""
        if subs.size == 0:
            return
        rng = self.rng
        k = subs.size
        start = np.datetime64(period.start_time.date(), "s")
        opened = start + rng.integers(0, period.days_in_month * 86400, k).astype("timedelta64[s]")
        cat = np.where(
            drop_rate[subs] > 0.03,
            NETWORK,
            np.where(alert[subs], BILLING_ISSUE, rng.choice(CATEGORIES, k, p=CATEGORY_P)),
        )
        channel = rng.choice(CHANNELS, k, p=CHANNEL_P)
        severity = np.where(rng.random(k) < 0.15, URGENT, NORMAL)
        res_days = np.exp(rng.normal(np.log(3), 1.1, k))
        never = rng.random(k) < 0.07
        resolved_at = opened + (res_days * 86400).astype("timedelta64[s]")
        reopen = (~never) & (rng.random(k) < 0.12)
        reopened_at = resolved_at + (rng.uniform(1, 12, k) * 86400).astype("timedelta64[s]")
        resolved2 = reopened_at + (np.exp(rng.normal(np.log(4), 0.8, k)) * 86400).astype(
            "timedelta64[s]"
        )
        sat = np.clip(np.round(5 - np.log1p(res_days) - rng.normal(0, 0.8, k)), 1, 5)
        sat = np.where(rng.random(k) < 0.3, np.nan, sat)
        desc = rng.choice(np.array(DESCRIPTIONS, dtype=object), k)
        seq = np.arange(self._ticket_seq, self._ticket_seq + k)
        desc = _with_callback_numbers(desc, seq, self.msisdn[subs])
        ids = np.array([f"T{period.year:04d}{period.month:02d}{i:07d}" for i in seq])
        self._ticket_seq += k
        base = dict(
            ticket_id=ids,
            sub=subs,
            opened_at=opened,
            category=cat,
            channel=channel,
            severity=severity,
            description=desc,
        )
        ev = [
            pd.DataFrame(
                {
                    **base,
                    "updated_at": opened,
                    "closed_at": np.datetime64("NaT"),
                    "status": OPEN,
                    "satisfaction": np.nan,
                }
            ),
            pd.DataFrame(
                {
                    **base,
                    "updated_at": resolved_at,
                    "closed_at": resolved_at,
                    "status": RESOLVED,
                    "satisfaction": sat,
                }
            )[~never],
            pd.DataFrame(
                {
                    **base,
                    "updated_at": reopened_at,
                    "closed_at": np.datetime64("NaT"),
                    "status": REOPENED,
                    "satisfaction": np.nan,
                }
            )[reopen],
            pd.DataFrame(
                {
                    **base,
                    "updated_at": resolved2,
                    "closed_at": resolved2,
                    "status": RESOLVED,
                    "satisfaction": sat,
                }
            )[reopen],
        ]
        new = pd.concat([e for e in ev if len(e)], ignore_index=True)
        self.tickets = (
            new if self.tickets.empty else pd.concat([self.tickets, new], ignore_index=True)
        )

    def month(self, period: pd.Period) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Latest state in ``period`` of each ticket that changed, and open counts at month end."""
        n = self.msisdn.size
        t = self.tickets
        lo = np.datetime64(period.start_time.date(), "s")
        hi = np.datetime64((period + 1).start_time.date(), "s")
        upd = t["updated_at"].to_numpy("datetime64[s]")
        in_month = (upd >= lo) & (upd < hi)
        states = (
            t[in_month]
            .sort_values(["ticket_id", "updated_at"])
            .groupby("ticket_id", sort=True)
            .tail(1)
        )
        upto = t[upd < hi].sort_values(["ticket_id", "updated_at"]).groupby("ticket_id").tail(1)
        open_now = upto[upto["status"] != RESOLVED]
        unresolved = np.bincount(open_now["sub"].to_numpy(np.int64), minlength=n)
        reg = np.bincount(
            open_now.loc[open_now["channel"] == REGULATOR, "sub"].to_numpy(np.int64), minlength=n
        )
        # keep the ticket store small: drop tickets whose whole history ended resolved before this month
        g = t.sort_values(["ticket_id", "updated_at"]).groupby("ticket_id")
        last = g["updated_at"].transform("max").reindex(t.index).to_numpy("datetime64[s]")
        last_status = g["status"].transform("last").reindex(t.index)
        keep = (last >= lo) | (last_status != RESOLVED).to_numpy()
        self.tickets = t[keep].reset_index(drop=True)
        states = states.assign(msisdn=self.msisdn[states["sub"].to_numpy(np.int64)]).drop(
            columns="sub"
        )
        return states.reset_index(drop=True), unresolved, reg
