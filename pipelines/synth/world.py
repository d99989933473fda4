"""A synthetic mobile operator whose churn is driven by the DOMAIN.md signals.

Subscribers live on a social graph of communities; each month they make calls drawn
from their own contacts, get a bill, sometimes complain, and decide to leave with a
latent hazard built from what the operators observed (short tenure with low balance,
no bundles, little data, low off-net share, too high or too low call concentration,
unresolved complaints, dropped calls, bill shocks, contract ending, contacts who
left). Leavers fade for a month or two before they go. Everything is vectorised and
produced one month at a time, so memory stays bounded by one month of events.

All randomness comes from one generator, drawn in a fixed order: the same seed gives
the same world, byte for byte. A month's steps run in the order :meth:`World.step`
lists them; moving a step or a draw, or adding one, changes everything drawn after it.
Retention contacts (:mod:`pipelines.synth.response`) draw from streams of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.lake.config import Numbering
from pipelines.lake.contract import BILLING
from pipelines.synth.calls import Calls, month_calls
from pipelines.synth.config import SynthConfig
from pipelines.synth.hazard import CANCELLED, SILENT, Leaving, drivers
from pipelines.synth.population import PLANS, build_population, plan_fees
from pipelines.synth.response import Response
from pipelines.synth.tickets import TicketDesk

ACTIVE, SUSPENDED_REQUEST, PRE_CANCEL, SUSPENDED_ARREARS = BILLING.enum(
    "status", "active", "suspended_request", "pre_cancel", "suspended_arrears"
)
PREPAID, POSTPAID = BILLING.enum("payment_type", "prepaid", "postpaid")


def month_range(start: str, n: int) -> list[pd.Period]:
    """The ``n`` simulated months from ``start`` (YYYY-MM)."""
    p0 = pd.Period(start, freq="M")
    return [p0 + i for i in range(n)]


@dataclass
class MonthOutput:
    """Everything one simulated month produces, before it is written as extracts."""

    month: pd.Period
    billing: pd.DataFrame
    cdr: pa.Table
    ticket_states: pd.DataFrame  # latest state this month of each ticket that changed
    truth: pd.DataFrame
    response: pd.DataFrame | None = None  # the true effects of contacts (from the 2nd month)
    contacts: pd.DataFrame | None = None  # the month's CRM rows


@dataclass
class _Who:
    """Who takes part in a month, and how much."""

    active: np.ndarray  # has a billing row this month
    mult: np.ndarray  # activity multiplier (0 where not active)
    exiting_now: np.ndarray  # leaves this month by cancelling or porting out
    silent: np.ndarray  # a silent prepaid past its last activity


@dataclass
class _Bill:
    data_mb: np.ndarray
    voice_over: np.ndarray
    data_over: np.ndarray
    voice_charge: np.ndarray
    data_charge: np.ndarray
    sms_charge: np.ndarray
    vas: np.ndarray
    discount: np.ndarray
    total: np.ndarray
    alert: np.ndarray  # more than three times, or under a third of, the last bills


@dataclass
class _Account:
    paid: np.ndarray
    arrears: np.ndarray
    balance: np.ndarray
    points: np.ndarray
    redeemed: np.ndarray


@dataclass
class _Decision:
    hazard: np.ndarray
    decide: np.ndarray
    contrib: dict[str, np.ndarray]


class World:
    """Simulates the operator month by month; iterate :meth:`months` to get outputs."""

    def __init__(self, cfg: SynthConfig, numbering: Numbering, inactivity_months: int = 3):
        self.cfg = cfg
        self.numbering = numbering
        self.rng = np.random.default_rng(cfg.seed)
        self.pop = build_population(cfg, numbering, self.rng)
        self.periods = month_range(cfg.start_month, cfg.months)
        n = cfg.subscribers
        pop = self.pop
        self.fee = fee = plan_fees(pop.plan_idx)
        post, pre = self.rng.choice([0, 100, 200, 500], n), self.rng.exponential(40, n) + 5
        self.balance = np.round(np.where(pop.postpaid, post, pre), 2)
        self.arrears = np.zeros(n)
        self.points = (
            np.clip(-pop.act_month_idx, 0, 180) * fee * self.rng.uniform(0.2, 0.8, n)
        ).astype(np.int64)
        self.bills = np.zeros((n, 3))  # last three bills, newest last
        self.n_bills = np.zeros(n, dtype=np.int64)
        self.contract_end_idx = pop.contract_end_idx.copy()
        self.contract_lapsed_idx = np.full(n, -999)
        self.leaving = Leaving(self.rng, pop, cfg, inactivity_months)
        self.desk = TicketDesk(self.rng, pop.msisdn)
        self._record_seq = 0
        self.prev_drop = np.zeros(n)
        self.prev_shock = np.zeros(n, bool)
        self.response = Response(cfg, self)  # its own random streams: the world stays the same

    def months(self) -> Iterator[MonthOutput]:
        for m in range(len(self.periods)):
            yield self.step(m)

    # -- one month, step by step (the order is the order of the random draws) -------------
    def step(self, m: int, contacts: pd.DataFrame | None = None) -> MonthOutput:
        """Month ``m``; ``contacts`` (msisdn, channel, offer, group) are the system's own."""
        period = self.periods[m]
        self.response.begin(m, contacts)
        who = self._who_is_active(m)
        calls = self._calls(m, who)
        data_mb, shock = self._usage(who)
        bill = self._bills(m, who, calls, data_mb, shock)
        account = self._payments(who, bill)
        self._renew_contracts(m)
        states, unresolved, regulator_open = self._complaints(m, who, calls, bill, account)
        decision = self._decide_churn(m, who, calls, bill, account, unresolved, regulator_open)
        self.response.after_decide(m, who.active, decision)  # sets decision.decide
        status = self._status(m, who, account)
        rows = np.flatnonzero(who.active)
        billing = self._billing_rows(period, rows, who.silent, calls, bill, account, status)
        truth = self._truth_rows(m, period, rows, decision)
        self._roll(m, who, calls, bill, account)
        self.response.close(m, decision.contrib, bill, account, unresolved)
        r = self.response
        return MonthOutput(period, billing, calls.cdr, states, truth, r.truth, r.contacts)

    def _who_is_active(self, m: int) -> _Who:
        """Billed this month, and how active: leavers fade before the exit, silent prepaid stop."""
        lv = self.leaving
        active = (self.pop.act_month_idx <= m) & (m < lv.gone_idx)
        mult = np.ones(self.cfg.subscribers)
        since = m - lv.decided_idx
        fading = (since >= 1) & (m < lv.exit_idx)
        mult[fading] = np.where(since[fading] == 1, 0.6, 0.35)
        silent = (lv.exit_kind == SILENT) & (m >= lv.exit_idx)
        mult[silent] = 0.0
        leaving_now = (lv.exit_kind != SILENT) & (m == lv.exit_idx)
        mult[leaving_now] = 0.3
        return _Who(active, mult * active, leaving_now & active, silent)

    def _calls(self, m: int, who: _Who) -> Calls:
        calls = month_calls(
            self.rng,
            self.pop,
            self.periods[m],
            mult=who.mult,
            exiting_now=who.exiting_now,
            events_per_subscriber=self.cfg.events_per_subscriber_month,
            numbering=self.numbering,
            first_record=self._record_seq,
            prev_drop=self.prev_drop,
        )
        self._record_seq += calls.cdr.num_rows
        return calls

    def _usage(self, who: _Who) -> tuple[np.ndarray, np.ndarray]:
        """(mobile data MB, bill shock): a few get a shock, half of them from data."""
        rng, n = self.rng, self.cfg.subscribers
        data_mb = np.round(self.pop.data_scale * who.mult * np.exp(rng.normal(0, 0.35, n)), 1)
        shock = who.active & (who.mult > 0) & (rng.random(n) < 0.012)
        data_mb = np.where(shock & (rng.random(n) < 0.5), data_mb * 6 + 20000, data_mb)
        return data_mb, shock

    def _bills(
        self, m: int, who: _Who, calls: Calls, data_mb: np.ndarray, shock: np.ndarray
    ) -> _Bill:
        """The bill: a fixed plan fee, overage, VAS, roaming on a shock without data."""
        rng, pop, n = self.rng, self.pop, self.cfg.subscribers
        fee = self.fee * self.cfg.price_factor(self.periods[m])  # a planted tariff change
        active, mult, silent = who.active, who.mult, who.silent
        plan = np.array(PLANS, dtype=object)
        p_min = plan[pop.plan_idx, 2].astype(float)
        p_mb = plan[pop.plan_idx, 3].astype(float)
        voice_ov_min = np.maximum(0, calls.voice_minutes - p_min)
        data_ov_mb = np.maximum(0, data_mb - p_mb)
        voice_over = np.round(voice_ov_min * 0.15, 2)
        data_over = np.round(np.minimum(data_ov_mb * 0.003, 600), 2)
        vas = np.round(
            np.where(rng.random(n) < 0.15, rng.choice([5, 10, 15, 30], n), 0) * (mult > 0), 2
        )
        roam_fee = np.where(shock & ~(data_mb > p_mb), rng.uniform(300, 2500, n), 0)
        vas = np.round(vas + roam_fee, 2)
        big = fee >= 288
        vas = np.round(vas + np.where(big & active, rng.gamma(2.0, fee * 0.35), 0) * (mult > 0), 2)
        sms_charge = np.round(np.maximum(0, calls.sms_mo - 100) * 0.1, 2)
        # the plan fee is fixed; only the exit month is prorated
        base_fee = np.where(who.exiting_now, fee * 0.3, fee)
        voice_charge = np.round(base_fee * 0.45 + voice_over, 2)
        data_charge = np.round(base_fee * 0.55 + data_over, 2)
        voice_charge = np.where(silent, np.round(fee * 0.45, 2), voice_charge)
        data_charge = np.where(silent, np.round(fee * 0.55, 2), data_charge)
        vas = np.where(silent, 0.0, vas)
        sms_charge = np.where(silent, 0.0, sms_charge)
        discount = np.round((pop.family * 0.05 + pop.group * 0.10) * fee, 2)
        total = np.round(voice_charge + data_charge + sms_charge + vas - discount, 2)
        if m == 0:
            # seed bill history so the first alert-bill rule has something to compare to
            self.bills[:] = total[:, None] * np.exp(rng.normal(0, 0.08, (n, 3)))
            self.n_bills[:] = np.where(
                pop.act_month_idx <= -3, 3, np.clip(-pop.act_month_idx, 0, 3)
            )
        prev_avg = self.bills.mean(axis=1)
        alert = (self.n_bills >= 3) & ((total > 3 * prev_avg) | (total < prev_avg / 3)) & active
        return _Bill(data_mb, voice_over, data_over, voice_charge, data_charge, sms_charge, vas,
                     discount, total, alert)  # fmt: skip

    def _payments(self, who: _Who, bill: _Bill) -> _Account:
        """Postpaid pay the bill or fall into arrears; prepaid top up when low; points."""
        rng, pop, n, total = self.rng, self.pop, self.cfg.subscribers, bill.total
        pays = rng.random(n) < np.where(who.mult < 0.5, 0.55, 0.96)
        bal = self.balance.copy()
        arr = self.arrears.copy()
        post = pop.postpaid
        paid_post = np.where(pays, total + arr, 0.0)
        arr_post = np.where(pays, 0.0, arr + total)
        bal_pre = bal - total
        need = bal_pre < 15
        recharge = np.where(
            need & (rng.random(n) < 0.93),
            rng.choice([30, 50, 100, 200], n) + np.ceil(np.maximum(0, -bal_pre)),
            0.0,
        )
        recharge = np.where(who.silent | (who.mult == 0), 0.0, recharge)
        paid = np.where(post, paid_post, recharge)
        arrears = np.where(post, arr_post, np.maximum(0, -(bal_pre + recharge)))
        balance = np.where(post, bal, np.maximum(0, bal_pre + recharge))
        earned = np.floor(np.maximum(total, 0)).astype(np.int64)
        redeem = np.where(
            pop.redeemer & (rng.random(n) < 0.08) & (self.points > 500), self.points // 2, 0
        )
        points = self.points + earned - redeem
        return _Account(
            np.round(paid, 2), np.round(arrears, 2), np.round(balance, 2), points, redeem
        )

    def _renew_contracts(self, m: int) -> None:
        """A contract that ended last month is renewed for two years, or lapses."""
        renew_due = self.contract_end_idx == m - 1
        renewed = renew_due & (self.rng.random(self.cfg.subscribers) < 0.6)
        self.contract_lapsed_idx = np.where(renew_due & ~renewed, m, self.contract_lapsed_idx)
        self.contract_end_idx = np.where(
            renewed, m + 23, np.where(renew_due, -999, self.contract_end_idx)
        )

    def _complaints(
        self, m: int, who: _Who, calls: Calls, bill: _Bill, account: _Account
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """New tickets (dropped calls, bill shocks, arrears raise the odds); the month's states."""
        post = self.pop.postpaid
        p_c = (
            0.006
            + 0.9 * np.maximum(0, calls.drop_rate - 0.015)
            + 0.10 * bill.alert
            + 0.02 * (account.arrears > 0) * post
        )
        p_c = p_c * (who.mult > 0) * who.active
        opens = self.rng.random(self.cfg.subscribers) < p_c
        period = self.periods[m]
        self.desk.open(period, np.flatnonzero(opens), calls.drop_rate, bill.alert)
        return self.desk.month(period)

    def _decide_churn(
        self,
        m: int,
        who: _Who,
        calls: Calls,
        bill: _Bill,
        account: _Account,
        unresolved: np.ndarray,
        regulator_open: np.ndarray,
    ) -> _Decision:
        """Who decides to leave this month, when they will go, and how."""
        pop, post = self.pop, self.pop.postpaid
        contrib = drivers(
            pop,
            m,
            low_balance=np.where(post, account.arrears > 0, account.balance < 20),
            unresolved=unresolved,
            regulator_open=regulator_open,
            drop_rate=calls.drop_rate,
            bill_shock=bill.alert | self.prev_shock,
            contract_end_idx=self.contract_end_idx,
            contract_lapsed_idx=self.contract_lapsed_idx,
            recent_churn=self.leaving.recent_churn(),
        )
        hazard, decide = self.leaving.decide(m, who.active, contrib)
        return _Decision(hazard, decide, contrib)

    def _status(self, m: int, who: _Who, account: _Account) -> np.ndarray:
        """Status at month end: arrears suspend, a cancel is announced, the exit month shows it."""
        pop, n, post, arrears = self.pop, self.cfg.subscribers, self.pop.postpaid, account.arrears
        lv = self.leaving
        status = np.full(n, ACTIVE, dtype=object)
        status[post & (arrears > 2.5 * self.fee)] = SUSPENDED_ARREARS
        status[~post & (arrears > 0)] = SUSPENDED_ARREARS
        status[who.active & (self.rng.random(n) < 0.003)] = SUSPENDED_REQUEST
        pre = (
            (lv.exit_kind == CANCELLED) & (lv.exit_idx == m + 1) & (pop.extra["pre_cancel_u"] < 0.3)
        )
        status[pre] = PRE_CANCEL
        status[who.exiting_now] = lv.exit_kind[who.exiting_now]
        silent_end = (lv.exit_kind == SILENT) & (m == lv.exit_idx + lv.inactivity_months)
        status[silent_end] = CANCELLED
        return status

    def _contract_end_dates(self) -> np.ndarray:
        """Contract end date at month end; a lapsed contract shows empty."""
        ce = self.contract_end_idx
        return np.where(
            ce >= -24,
            (
                np.datetime64(self.periods[0].start_time.date(), "M")
                + ce.clip(-24, 400).astype("timedelta64[M]")
            ).astype("datetime64[D]")
            + np.timedelta64(27, "D"),
            np.datetime64("NaT"),
        )

    def _billing_rows(
        self,
        period: pd.Period,
        rows: np.ndarray,
        silent: np.ndarray,
        calls: Calls,
        bill: _Bill,
        account: _Account,
        status: np.ndarray,
    ) -> pd.DataFrame:
        """One billing row per active subscriber, typed (deliver.py writes the text)."""
        pop = self.pop
        plan = np.array(PLANS, dtype=object)
        return pd.DataFrame(
            {
                "msisdn": pop.msisdn[rows],
                "bill_month": f"{period.year:04d}{period.month:02d}",
                "activation_date": pop.activation[rows],
                "payment_type": np.where(pop.postpaid[rows], POSTPAID, PREPAID),
                "plan_id": plan[pop.plan_idx[rows], 0],
                "plan_fee": self.fee[rows] * self.cfg.price_factor(period),
                "total_charge": bill.total[rows],
                "voice_charge": bill.voice_charge[rows],
                "data_charge": bill.data_charge[rows],
                "sms_charge": bill.sms_charge[rows],
                "vas_charge": bill.vas[rows],
                "voice_overage_charge": np.where(silent, 0, bill.voice_over)[rows],
                "data_overage_charge": np.where(silent, 0, bill.data_over)[rows],
                "discount": bill.discount[rows],
                "paid_amount": account.paid[rows],
                "balance": account.balance[rows],
                "arrears": account.arrears[rows],
                "voice_minutes": calls.voice_minutes[rows].astype(np.int64),
                "data_mb": np.where(silent, 0, bill.data_mb)[rows],
                "sms_count": calls.sms_mo[rows].astype(np.int64),
                "points_balance": account.points[rows],
                "points_redeemed": account.redeemed[rows],
                "family_bundle": pop.family[rows].astype(np.int8),
                "group_bundle": pop.group[rows].astype(np.int8),
                "contract_end_date": self._contract_end_dates()[rows],
                "network_generation": plan[pop.plan_idx[rows], 4],
                "status": status[rows],
            }
        )

    def _truth_rows(
        self, m: int, period: pd.Period, rows: np.ndarray, decision: _Decision
    ) -> pd.DataFrame:
        """The hidden truth of the month: hazard, decisions and every driver."""
        n, lv = self.cfg.subscribers, self.leaving
        return pd.DataFrame(
            {
                "msisdn": self.pop.msisdn[rows],
                "month": str(period),
                "hazard": decision.hazard[rows],
                "decided_this_month": decision.decide[rows],
                "leaving": ((lv.decided_idx < m) & (m < lv.exit_idx))[rows],
                **{
                    f"driver_{k}": np.broadcast_to(np.asarray(v, float), (n,))[rows]
                    for k, v in decision.contrib.items()
                },
            }
        )

    def _roll(self, m: int, who: _Who, calls: Calls, bill: _Bill, account: _Account) -> None:
        """Carry balances, bill history and last month's signals into the next month."""
        self.balance, self.arrears, self.points = account.balance, account.arrears, account.points
        upd = who.active & (who.mult > 0)
        self.bills[upd] = np.column_stack([self.bills[upd, 1:], bill.total[upd]])
        self.n_bills[upd] = np.minimum(self.n_bills[upd] + 1, 3)
        self.prev_drop = calls.drop_rate
        self.prev_shock = bill.alert
        self.leaving.close_month(m)

    def churn_truth(self) -> pd.DataFrame:
        """Per subscriber: the month the churn event happens (EXTRACTS definition) and how."""
        pop, lv = self.pop, self.leaving
        within = lv.exit_idx < len(self.periods)
        month = np.full(pop.msisdn.size, None, dtype=object)
        idx = np.flatnonzero(within)
        month[idx] = [str(self.periods[i]) for i in lv.exit_idx[idx]]
        return pd.DataFrame(
            {
                "msisdn": pop.msisdn,
                "activation_date": pop.activation,
                "payment_type": np.where(pop.postpaid, POSTPAID, PREPAID),
                "churn_month": month,
                "exit_kind": np.where(within, lv.exit_kind, None),
                "decided_month": [
                    str(self.periods[i]) if i < len(self.periods) else None for i in lv.decided_idx
                ],
                "conc_type": pop.extra["conc_type"],
                "p_offnet": pop.p_offnet,
            }
        )
