"""A synthetic mobile operator whose churn is driven by the DOMAIN.md signals.

Subscribers live on a social graph of communities; each month they make calls drawn
from their own contacts, get a bill, sometimes complain, and decide to leave with a
latent hazard built from what the operators observed (short tenure with low balance,
no bundles, little data, low off-net share, too high or too low call concentration,
unresolved complaints, dropped calls, bill shocks, contract ending, contacts who
left). Leavers fade for a month or two before they go. Everything is vectorised and
produced one month at a time, so memory stays bounded by one month of events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import sparse

from pipelines.lake.config import Numbering
from pipelines.synth.config import SynthConfig

SERVICE_CODES = np.array(["10086", "10010", "10000", "95588", "95533", "12345", "95555", "12306"])
AREA_CODES = np.array(["010", "021", "020", "0755", "028", "027", "0571", "025", "023", "029"])
# plan_id, monthly fee, voice minutes, data MB, network generation, weight prepaid, weight postpaid
PLANS = [
    ("G3-08", 8, 50, 300, "3G", 0.07, 0.01),
    ("G3-18", 18, 100, 500, "3G", 0.06, 0.02),
    ("G4-19", 19, 100, 3072, "4G", 0.20, 0.05),
    ("G4-38", 38, 200, 10240, "4G", 0.25, 0.12),
    ("G4-58", 58, 300, 20480, "4G", 0.17, 0.18),
    ("G4-88", 88, 500, 30720, "4G", 0.09, 0.15),
    ("G5-128", 128, 600, 40960, "5G", 0.08, 0.18),
    ("G5-188", 188, 1000, 61440, "5G", 0.05, 0.13),
    ("G5-288", 288, 1500, 102400, "5G", 0.02, 0.08),
    ("G5-388", 388, 2000, 153600, "5G", 0.01, 0.05),
    ("G5-588", 588, 3000, 204800, "5G", 0.00, 0.02),
    ("G5-888", 888, 5000, 307200, "5G", 0.00, 0.01),
]
COMPLAINT_CATEGORIES = np.array(["network", "billing", "service", "product", "handset", "other"])
CHANNELS = np.array(["hotline", "store", "app", "wechat", "regulator"])
CHANNEL_P = np.array([0.55, 0.10, 0.20, 0.12, 0.03])
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
    out = desc.copy()
    for j in np.flatnonzero(seq % CALLBACK_EVERY == 0):
        m = str(msisdn[j])
        form = CALLBACK_FORMS[(seq[j] // CALLBACK_EVERY) % len(CALLBACK_FORMS)]
        out[j] = f"{out[j]}；" + form.format(d=m, n=(m[:3], m[3:7], m[7:]))
    return out


DRIVERS = [
    "short_tenure_low_balance",
    "no_bundle",
    "low_data",
    "low_offnet_share",
    "concentration_extreme",
    "unresolved_complaints",
    "dropped_calls",
    "bill_shock",
    "contract_end_near",
    "contacts_churned",
    "frailty",
]


def month_range(start: str, n: int) -> list[pd.Period]:
    p0 = pd.Period(start, freq="M")
    return [p0 + i for i in range(n)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class MonthOutput:
    """Everything one simulated month produces, before it is written as extracts."""

    month: pd.Period
    billing: pd.DataFrame
    cdr: pa.Table
    ticket_states: pd.DataFrame  # latest state this month of each ticket that changed
    truth: pd.DataFrame


@dataclass
class Population:
    msisdn: np.ndarray
    activation: np.ndarray  # datetime64[D]
    act_month_idx: np.ndarray  # simulation month index of activation (<=0 = before start)
    postpaid: np.ndarray
    plan_idx: np.ndarray
    family: np.ndarray
    group: np.ndarray
    data_scale: np.ndarray
    call_rate: np.ndarray
    p_offnet: np.ndarray
    p_oneoff: np.ndarray
    p_mo: np.ndarray
    p_roam: np.ndarray
    home_cell: np.ndarray
    work_cell: np.ndarray
    frailty: np.ndarray
    redeemer: np.ndarray
    contract_end_idx: np.ndarray  # month index of contract end, -999 = none
    # contacts (CSR): kind 0 on-net subscriber, 1 off-net mobile, 2 landline, 3 service
    c_ptr: np.ndarray
    c_kind: np.ndarray
    c_target: np.ndarray
    c_key: np.ndarray
    c_top1: np.ndarray
    offnet_pool: np.ndarray
    offnet_pool_ported_own: np.ndarray
    landline_pool: np.ndarray
    onnet_W: sparse.csr_matrix
    cell_drop: np.ndarray
    extra: dict = field(default_factory=dict)


def _unique_mobiles(
    rng: np.random.Generator, n: int, prefixes: list[str], taken: set[str]
) -> np.ndarray:
    out: list[str] = []
    pref = np.array(prefixes)
    while len(out) < n:
        k = int((n - len(out)) * 1.1) + 10
        cand = np.char.add(
            rng.choice(pref, k), np.char.zfill(rng.integers(0, 10**8, k).astype(str), 8)
        )
        for c in dict.fromkeys(cand.tolist()):
            if c not in taken:
                taken.add(c)
                out.append(c)
                if len(out) == n:
                    break
    return np.array(out)


def build_population(
    cfg: SynthConfig, numbering: Numbering, rng: np.random.Generator
) -> Population:
    n = cfg.subscribers
    months = cfg.months
    start = np.datetime64(cfg.start_month + "-01", "D")
    taken: set[str] = set()
    msisdn = _unique_mobiles(rng, n, numbering.own_mobile_prefixes, taken)

    # Tenure: a long uniform tail over 15 years plus many recent joiners; ~7% join
    # during the simulated window.
    tenure_days = np.where(
        rng.random(n) < 0.55, rng.uniform(0, 15 * 365, n), rng.exponential(22 * 30.4, n)
    ).clip(0, 15 * 365)
    joins_in_window = rng.random(n) < 0.07
    join_offset = rng.uniform(30, (months - 1) * 30.4, n)
    activation = np.where(
        joins_in_window,
        start + join_offset.astype("timedelta64[D]"),
        start - (tenure_days.astype(int) + 1).astype("timedelta64[D]"),
    ).astype("datetime64[D]")
    act_month = activation.astype("datetime64[M]")
    act_month_idx = (act_month - start.astype("datetime64[M]")).astype(int)

    postpaid = rng.random(n) < np.clip(0.30 + tenure_days / (15 * 365) * 0.35, 0, 0.9)
    wp = np.array([p[5] for p in PLANS])
    wq = np.array([p[6] for p in PLANS])
    plan_idx = np.where(
        postpaid,
        rng.choice(len(PLANS), n, p=wq / wq.sum()),
        rng.choice(len(PLANS), n, p=wp / wp.sum()),
    )
    family = rng.random(n) < 0.22
    group = rng.random(n) < np.where(postpaid, 0.25, 0.04)
    fee = np.array([p[1] for p in PLANS])[plan_idx]
    data_scale = np.exp(rng.normal(np.log(1500 + 30 * fee), 1.1, n))
    call_rate = np.exp(rng.normal(0, 0.6, n)) * (0.8 + fee / 400)
    p_offnet = rng.beta(2.0, 3.2, n)
    # Call concentration: most people call a handful of close ties and some strangers;
    # some live on one or two contacts, others scatter calls over one-off numbers.
    conc_type = rng.choice(3, n, p=[0.78, 0.11, 0.11])  # 0 typical, 1 concentrated, 2 scattered
    p_oneoff = np.where(conc_type == 2, rng.beta(6, 4, n), rng.beta(1.3, 9, n))
    p_mo = rng.beta(8, 7, n)
    p_roam = rng.beta(0.4, 25, n)

    n_cells = max(20, n // 120)
    cell_drop = np.where(
        rng.random(n_cells) < 0.12,
        rng.uniform(0.05, 0.12, n_cells),
        rng.uniform(0.002, 0.012, n_cells),
    )
    home_cell = rng.integers(0, n_cells, n)
    work_cell = rng.integers(0, n_cells, n)
    frailty = rng.normal(0, 0.45, n)
    redeemer = rng.random(n) < 0.65
    has_contract = postpaid & (rng.random(n) < 0.65)
    contract_end_idx = np.where(has_contract, rng.integers(0, 24, n), -999)

    # Social graph: communities of ~30; contacts mostly inside the community.
    order = rng.permutation(n)
    comm = np.empty(n, dtype=np.int64)
    comm[order] = np.arange(n) // 30
    n_comm = comm.max() + 1
    comm_members = [np.sort(order[i * 30 : (i + 1) * 30]) for i in range(n_comm)]
    k = np.where(conc_type == 1, rng.integers(1, 3, n), 3 + rng.poisson(9, n))
    k_off = np.minimum(k, rng.binomial(k, p_offnet))
    k_on = k - k_off
    # off-net pool: per community numbers of other operators (a few ported ones keep our prefixes)
    pool_per_comm = 40
    offnet_pool = _unique_mobiles(
        rng, n_comm * pool_per_comm, numbering.other_mobile_prefixes, taken
    )
    ported = rng.random(offnet_pool.size) < 0.04
    ported_nums = _unique_mobiles(rng, int(ported.sum()), numbering.own_mobile_prefixes, taken)
    offnet_pool[ported] = ported_nums
    landline_pool = np.char.add(
        rng.choice(AREA_CODES, n_comm * 5),
        np.char.zfill(rng.integers(0, 10**8, n_comm * 5).astype(str), 8),
    )

    kinds, targets, weights, ptr = [], [], [], [0]
    alpha = np.where(conc_type == 1, 0.3, np.where(conc_type == 2, 3.0, 0.8))
    for i in range(n):
        members = comm_members[comm[i]]
        on = rng.choice(members, size=min(k_on[i], members.size), replace=False)
        on = on[on != i]
        off = comm[i] * pool_per_comm + rng.choice(pool_per_comm, size=k_off[i], replace=False)
        n_land = int(rng.random() < 0.5)
        land = comm[i] * 5 + rng.integers(0, 5, n_land)
        svc = rng.integers(0, SERVICE_CODES.size, 1)
        kk = np.concatenate(
            [np.zeros(on.size), np.ones(off.size), np.full(land.size, 2), [3]]
        ).astype(np.int8)
        tt = np.concatenate([on, off, land, svc]).astype(np.int64)
        w = rng.gamma(alpha[i], 1.0, tt.size) + 1e-6
        w[-1] = min(w[-1], 0.02 * w.sum())  # the service line is a minor contact
        kinds.append(kk)
        targets.append(tt)
        weights.append(w / w.sum())
        ptr.append(ptr[-1] + tt.size)
    c_kind = np.concatenate(kinds)
    c_target = np.concatenate(targets)
    c_weight = np.concatenate(weights)
    c_ptr = np.array(ptr)
    seg = np.repeat(np.arange(n), np.diff(c_ptr))
    cw = np.cumsum(c_weight)
    c_key = seg + cw - np.repeat(cw[c_ptr[:-1]] - c_weight[c_ptr[:-1]], np.diff(c_ptr))
    c_top1 = np.maximum.reduceat(c_weight, c_ptr[:-1])
    on_mask = c_kind == 0
    onnet_W = sparse.csr_matrix(
        (c_weight[on_mask], (seg[on_mask], c_target[on_mask])), shape=(n, n)
    )
    return Population(
        msisdn=msisdn,
        activation=activation,
        act_month_idx=act_month_idx,
        postpaid=postpaid,
        plan_idx=plan_idx,
        family=family,
        group=group,
        data_scale=data_scale,
        call_rate=call_rate,
        p_offnet=p_offnet,
        p_oneoff=p_oneoff,
        p_mo=p_mo,
        p_roam=p_roam,
        home_cell=home_cell,
        work_cell=work_cell,
        frailty=frailty,
        redeemer=redeemer,
        contract_end_idx=contract_end_idx,
        c_ptr=c_ptr,
        c_kind=c_kind,
        c_target=c_target,
        c_key=c_key,
        c_top1=c_top1,
        offnet_pool=offnet_pool,
        offnet_pool_ported_own=ported,
        landline_pool=landline_pool,
        onnet_W=onnet_W,
        cell_drop=cell_drop,
        extra={"conc_type": conc_type, "pre_cancel_u": rng.random(n)},
    )


_HOUR_W = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 6, 8, 9, 9, 8, 8, 9, 9, 9, 9, 10, 11, 11, 9, 6, 3], float
)
_HOUR_P = _HOUR_W / _HOUR_W.sum()


class World:
    """Simulates the operator month by month; iterate :meth:`months` to get outputs."""

    def __init__(self, cfg: SynthConfig, numbering: Numbering, inactivity_months: int = 3):
        self.cfg = cfg
        self.inactivity_months = inactivity_months
        self.numbering = numbering
        self.rng = np.random.default_rng(cfg.seed)
        self.pop = build_population(cfg, numbering, self.rng)
        self.periods = month_range(cfg.start_month, cfg.months)
        n = cfg.subscribers
        pop = self.pop
        fee = np.array([p[1] for p in PLANS], float)[pop.plan_idx]
        self.fee = fee
        self.balance = np.round(
            np.where(
                pop.postpaid,
                self.rng.choice([0, 100, 200, 500], n),
                self.rng.exponential(40, n) + 5,
            ),
            2,
        )
        self.arrears = np.zeros(n)
        self.points = (
            np.clip(-pop.act_month_idx, 0, 180) * fee * self.rng.uniform(0.2, 0.8, n)
        ).astype(np.int64)
        self.bills = np.zeros((n, 3))  # last three bills, newest last
        self.n_bills = np.zeros(n, dtype=np.int64)
        self.contract_end_idx = pop.contract_end_idx.copy()
        self.contract_lapsed_idx = np.full(n, -999)
        # leaving process
        self.exit_idx = np.full(n, 10**6)  # month index of the churn event
        self.exit_kind = np.full(n, "", dtype=object)
        self.decided_idx = np.full(n, 10**6)
        self.gone_idx = np.full(n, 10**6)  # first month with no billing row at all
        self.churn_history = np.zeros((n, 0))
        self.b0: float | None = None
        # Burn-in: some subscribers decided to leave before the window opens, so the
        # first months already show steady-state churn instead of a warm-up.
        pre = (self.rng.random(n) < 2.2 * cfg.target_monthly_churn) & (pop.act_month_idx < -1)
        d = -self.rng.integers(1, 3, n)
        ex = d + 1 + self.rng.choice(3, n, p=[0.3, 0.45, 0.25])
        pre &= ex >= 0
        u = self.rng.random(n)
        kind = np.where(
            pop.postpaid,
            np.where(u < 0.55, "cancelled", "ported_out"),
            np.where(u < 0.35, "cancelled", np.where(u < 0.60, "ported_out", "silent")),
        )
        self.decided_idx = np.where(pre, d, self.decided_idx)
        self.exit_idx = np.where(pre, ex, self.exit_idx)
        self.exit_kind = np.where(pre, kind, self.exit_kind)
        self.gone_idx = np.where(
            pre, np.where(kind == "silent", ex + inactivity_months + 1, ex + 1), self.gone_idx
        )
        self.tickets = pd.DataFrame(
            columns=[
                "ticket_id",
                "sub",
                "opened_at",
                "updated_at",
                "closed_at",
                "category",
                "channel",
                "severity",
                "status",
                "satisfaction",
                "description",
            ]
        )
        self._ticket_seq = 0
        self._record_seq = 0
        self.prev_drop = np.zeros(n)
        self.prev_shock = np.zeros(n, bool)

    # -- helpers -------------------------------------------------------------------------
    def _state_mult(self, m: int) -> np.ndarray:
        """Activity multiplier: leavers fade before the exit, silent prepaid go to zero."""
        mult = np.ones(self.cfg.subscribers)
        since = m - self.decided_idx
        fading = (since >= 1) & (m < self.exit_idx)
        mult[fading] = np.where(since[fading] == 1, 0.6, 0.35)
        silent = (self.exit_kind == "silent") & (m >= self.exit_idx)
        mult[silent] = 0.0
        leaving_now = (self.exit_kind != "silent") & (m == self.exit_idx)
        mult[leaving_now] = 0.3
        return mult

    def _active(self, m: int) -> np.ndarray:
        return (self.pop.act_month_idx <= m) & (m < self.gone_idx)

    # -- one month -------------------------------------------------------------------------
    def step(self, m: int) -> MonthOutput:
        rng = self.rng
        pop = self.pop
        n = self.cfg.subscribers
        period = self.periods[m]
        p_start = np.datetime64(period.start_time.date(), "s")
        days = period.days_in_month
        active = self._active(m)
        mult = self._state_mult(m) * active
        season = 1.0 + 0.08 * np.sin(2 * np.pi * (period.month - 2) / 12)
        exiting_now = (self.exit_kind != "silent") & (m == self.exit_idx) & active

        # ---- CDR events -------------------------------------------------------------
        lam = pop.call_rate * self.cfg.events_per_subscriber_month * mult * season
        n_ev = rng.poisson(lam)
        owner = np.repeat(np.arange(n), n_ev)
        e = owner.size
        is_sms = rng.random(e) < 0.28
        oneoff = rng.random(e) < pop.p_oneoff[owner]
        u = rng.random(e)
        lo, hi = pop.c_ptr[owner], pop.c_ptr[owner + 1]
        # choose a contact by weight inside the owner's segment
        pos = _segment_search(pop.c_key, owner, lo, hi, u)
        ckind = pop.c_kind[pos]
        ctarget = pop.c_target[pos]
        other = np.empty(e, dtype=object)
        operator = np.empty(e, dtype=object)
        k0 = (ckind == 0) & ~oneoff
        other[k0] = pop.msisdn[ctarget[k0]]
        operator[k0] = "own"
        k1 = (ckind == 1) & ~oneoff
        other[k1] = pop.offnet_pool[ctarget[k1]]
        operator[k1] = "other"
        k2 = (ckind == 2) & ~oneoff
        other[k2] = pop.landline_pool[ctarget[k2]]
        operator[k2] = "unknown"
        k3 = (ckind == 3) & ~oneoff
        other[k3] = SERVICE_CODES[ctarget[k3]]
        operator[k3] = "unknown"
        n1 = int(oneoff.sum())
        if n1:
            own_one = rng.random(n1) < 0.45
            pref = np.where(
                own_one,
                rng.choice(np.array(self.numbering.own_mobile_prefixes), n1),
                rng.choice(np.array(self.numbering.other_mobile_prefixes), n1),
            )
            other[oneoff] = np.char.add(
                pref, np.char.zfill(rng.integers(0, 10**8, n1).astype(str), 8)
            )
            operator[oneoff] = np.where(own_one, "own", "other")
        # timing: weekly rhythm and daily peaks; leavers stop early in their exit month
        day = rng.integers(0, days, e)
        day = np.where(exiting_now[owner], day % 10, day)
        act_day = (pop.activation - np.datetime64(period.start_time.date(), "D")).astype(int)
        day = np.clip(day, np.maximum(act_day[owner], 0), days - 1)
        dow = (
            (np.datetime64(period.start_time.date(), "D") + day.astype("timedelta64[D]"))
            .astype("datetime64[D]")
            .view("int64")
        )
        weekend = ((dow + 3) % 7) >= 5
        # thin out weekend business calls by moving a share to a weekday
        move = weekend & (rng.random(e) < 0.25)
        day = np.where(move, (day + 2) % days, day)
        hour = rng.choice(24, e, p=_HOUR_P)
        sec = rng.integers(0, 3600, e)
        start = p_start + (day * 86400 + hour * 3600 + sec).astype("timedelta64[s]")
        dur = np.where(is_sms, 0, np.round(np.exp(rng.normal(4.1, 1.05, e))).astype(np.int64) + 1)
        roam = rng.random(e) < pop.p_roam[owner]
        where = rng.random(e)
        cell = np.where(
            where < 0.55,
            pop.home_cell[owner],
            np.where(where < 0.85, pop.work_cell[owner], rng.integers(0, pop.cell_drop.size, e)),
        )
        p_drop = np.where(is_sms, 0.0, pop.cell_drop[cell])
        r = rng.random(e)
        result = np.where(r < 0.02, "failed", np.where(r < 0.02 + p_drop, "dropped", "completed"))
        dur = np.where(result == "failed", 0, dur)
        dur = np.where(result == "dropped", np.maximum(1, dur // 3), dur)
        direction = np.where(rng.random(e) < pop.p_mo[owner], "MO", "MT")
        cell_id = np.where(
            roam,
            np.char.add("R", np.char.zfill((cell % 97).astype(str), 4)),
            np.char.add("C", np.char.zfill(cell.astype(str), 5)),
        )
        rec_ids = np.char.add(
            f"E{period.year:04d}{period.month:02d}",
            np.char.zfill(np.arange(self._record_seq, self._record_seq + e).astype(str), 10),
        )
        self._record_seq += e
        order = np.argsort(start, kind="stable")
        cdr = pa.table(
            {
                "record_id": pa.array(rec_ids[order]),
                "msisdn": pa.array(pop.msisdn[owner[order]]),
                "other_number": pa.array(other[order].astype(str)),
                "direction": pa.array(direction[order]),
                "event_type": pa.array(np.where(is_sms, "sms", "voice")[order]),
                "start_time": pa.array(start[order]),
                "duration_s": pa.array(dur[order]),
                "call_result": pa.array(result[order]),
                "cell_id": pa.array(cell_id[order]),
                "roaming": pa.array(roam[order].astype(np.int8)),
                "other_operator": pa.array(operator[order].astype(str)),
            }
        )
        # per-subscriber monthly call statistics for the hazard
        voice = ~is_sms
        n_voice = np.bincount(owner[voice], minlength=n)
        n_drop = np.bincount(owner[voice & (result == "dropped")], minlength=n)
        drop_rate = np.where(n_voice > 0, n_drop / np.maximum(n_voice, 1), self.prev_drop)
        voice_minutes = np.ceil(np.bincount(owner[voice], weights=dur[voice], minlength=n) / 60.0)
        sms_mo = np.bincount(owner[is_sms & (direction == "MO")], minlength=n)

        # ---- billing -----------------------------------------------------------------
        plan = np.array(PLANS, dtype=object)
        p_min = plan[pop.plan_idx, 2].astype(float)
        p_mb = plan[pop.plan_idx, 3].astype(float)
        fee = self.fee
        data_mb = np.round(pop.data_scale * mult * np.exp(rng.normal(0, 0.35, n)), 1)
        shock = active & (mult > 0) & (rng.random(n) < 0.012)
        data_mb = np.where(shock & (rng.random(n) < 0.5), data_mb * 6 + 20000, data_mb)
        voice_ov_min = np.maximum(0, voice_minutes - p_min)
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
        sms_charge = np.round(np.maximum(0, sms_mo - 100) * 0.1, 2)
        silent = (self.exit_kind == "silent") & (m >= self.exit_idx)
        # the plan fee is fixed; only the exit month is prorated
        base_fee = np.where(exiting_now, fee * 0.3, fee)
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
        # payment
        pays = rng.random(n) < np.where(mult < 0.5, 0.55, 0.96)
        paid = np.zeros(n)
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
        recharge = np.where(silent | (mult == 0), 0.0, recharge)
        paid = np.where(post, paid_post, recharge)
        arrears = np.where(post, arr_post, np.maximum(0, -(bal_pre + recharge)))
        balance = np.where(post, bal, np.maximum(0, bal_pre + recharge))
        paid = np.round(paid, 2)
        arrears = np.round(arrears, 2)
        balance = np.round(balance, 2)
        # points
        earned = np.floor(np.maximum(total, 0)).astype(np.int64)
        redeem = np.where(
            pop.redeemer & (rng.random(n) < 0.08) & (self.points > 500), self.points // 2, 0
        )
        points = self.points + earned - redeem
        # contract
        renew_due = self.contract_end_idx == m - 1
        renewed = renew_due & (rng.random(n) < 0.6)
        self.contract_lapsed_idx = np.where(renew_due & ~renewed, m, self.contract_lapsed_idx)
        self.contract_end_idx = np.where(
            renewed, m + 23, np.where(renew_due, -999, self.contract_end_idx)
        )

        # ---- complaints -----------------------------------------------------------------
        p_c = (
            0.006
            + 0.9 * np.maximum(0, drop_rate - 0.015)
            + 0.10 * alert
            + 0.02 * (arrears > 0) * post
        )
        p_c = p_c * (mult > 0) * active
        opens = rng.random(n) < p_c
        self._open_tickets(m, np.flatnonzero(opens), drop_rate, alert)
        states, unresolved, regulator_open = self._ticket_month(m)

        # ---- hazard -------------------------------------------------------------------------
        tenure_m = m - pop.act_month_idx
        low_bal = np.where(post, arrears > 0, balance < 20)
        contrib = {
            "short_tenure_low_balance": 0.55 * (tenure_m < 12) + 0.65 * ((tenure_m < 12) & low_bal),
            "no_bundle": 0.45 * (~pop.family & ~pop.group),
            "low_data": 0.45 * (pop.data_scale < 600),
            "low_offnet_share": 1.4 * np.clip((0.32 - pop.p_offnet) / 0.32, 0, 1),
            "concentration_extreme": 0.85 * (pop.c_top1 > 0.55) + 0.85 * (pop.p_oneoff > 0.45),
            "unresolved_complaints": 0.75 * np.minimum(unresolved, 2) + 0.5 * regulator_open,
            "dropped_calls": 9.0 * np.clip(drop_rate - 0.02, 0, 0.12),
            "bill_shock": 1.0 * (alert | self.prev_shock),
            "contract_end_near": 0.8
            * ((self.contract_end_idx >= m) & (self.contract_end_idx - m <= 1))
            + 0.5 * ((m - self.contract_lapsed_idx) <= 2),
            "contacts_churned": 2.5
            * np.asarray(pop.onnet_W @ self._recent_churn(m)).ravel().clip(0, 0.6),
            "frailty": pop.frailty,
        }
        x = sum(contrib.values()) + rng.normal(0, 0.25, n)
        if self.b0 is None:
            self.b0 = _solve_intercept(x[active], self.cfg.target_monthly_churn)
        hazard = _sigmoid(self.b0 + x)
        can_decide = active & (self.decided_idx > m) & (tenure_m >= 0)
        decide = can_decide & (rng.random(n) < hazard)
        lag = rng.choice(3, n, p=[0.3, 0.45, 0.25])
        self.decided_idx = np.where(decide, m, self.decided_idx)
        self.exit_idx = np.where(decide, m + 1 + lag, self.exit_idx)
        kind_r = rng.random(n)
        kind = np.where(
            post,
            np.where(kind_r < 0.55, "cancelled", "ported_out"),
            np.where(kind_r < 0.35, "cancelled", np.where(kind_r < 0.60, "ported_out", "silent")),
        )
        self.exit_kind = np.where(decide, kind, self.exit_kind)
        inact = self.inactivity_months
        self.gone_idx = np.where(
            decide,
            np.where(kind == "silent", m + 1 + lag + inact + 1, m + 1 + lag + 1),
            self.gone_idx,
        )

        # ---- status at month end ----------------------------------------------------------
        status = np.full(n, "active", dtype=object)
        status[post & (arrears > 2.5 * fee)] = "suspended_arrears"
        status[~post & (arrears > 0)] = "suspended_arrears"
        status[active & (rng.random(n) < 0.003)] = "suspended_request"
        pre = (
            (self.exit_kind == "cancelled")
            & (self.exit_idx == m + 1)
            & (pop.extra["pre_cancel_u"] < 0.3)
        )
        status[pre] = "pre_cancel"
        status[exiting_now] = self.exit_kind[exiting_now]
        silent_end = (self.exit_kind == "silent") & (m == self.exit_idx + self.inactivity_months)
        status[silent_end] = "cancelled"

        # contract end date string at month end: a lapsed contract shows empty
        ce = self.contract_end_idx
        ce_dates = np.where(
            ce >= -24,
            (
                np.datetime64(self.periods[0].start_time.date(), "M")
                + ce.clip(-24, 400).astype("timedelta64[M]")
            ).astype("datetime64[D]")
            + np.timedelta64(27, "D"),
            np.datetime64("NaT"),
        )

        rows = np.flatnonzero(active)
        billing = pd.DataFrame(
            {
                "msisdn": pop.msisdn[rows],
                "bill_month": f"{period.year:04d}{period.month:02d}",
                "activation_date": pop.activation[rows],
                "payment_type": np.where(post[rows], "postpaid", "prepaid"),
                "plan_id": plan[pop.plan_idx[rows], 0],
                "plan_fee": fee[rows],
                "total_charge": total[rows],
                "voice_charge": voice_charge[rows],
                "data_charge": data_charge[rows],
                "sms_charge": sms_charge[rows],
                "vas_charge": vas[rows],
                "voice_overage_charge": np.where(silent, 0, voice_over)[rows],
                "data_overage_charge": np.where(silent, 0, data_over)[rows],
                "discount": discount[rows],
                "paid_amount": paid[rows],
                "balance": balance[rows],
                "arrears": arrears[rows],
                "voice_minutes": voice_minutes[rows].astype(np.int64),
                "data_mb": np.where(silent, 0, data_mb)[rows],
                "sms_count": sms_mo[rows].astype(np.int64),
                "points_balance": points[rows],
                "points_redeemed": redeem[rows],
                "family_bundle": pop.family[rows].astype(np.int8),
                "group_bundle": pop.group[rows].astype(np.int8),
                "contract_end_date": ce_dates[rows],
                "network_generation": plan[pop.plan_idx[rows], 4],
                "status": status[rows],
            }
        )
        truth = pd.DataFrame(
            {
                "msisdn": pop.msisdn[rows],
                "month": str(period),
                "hazard": hazard[rows],
                "decided_this_month": decide[rows],
                "leaving": ((self.decided_idx < m) & (m < self.exit_idx))[rows],
                **{
                    f"driver_{k}": np.broadcast_to(np.asarray(v, float), (n,))[rows]
                    for k, v in contrib.items()
                },
            }
        )
        # roll state
        self.balance, self.arrears, self.points = balance, arrears, points
        upd = active & (mult > 0)
        self.bills[upd] = np.column_stack([self.bills[upd, 1:], total[upd]])
        self.n_bills[upd] = np.minimum(self.n_bills[upd] + 1, 3)
        self.prev_drop = drop_rate
        self.prev_shock = alert
        self._churn_months_append(m)
        return MonthOutput(period, billing, cdr, states, truth)

    def _recent_churn(self, m: int) -> np.ndarray:
        if self.churn_history.shape[1] == 0:
            return np.zeros(self.cfg.subscribers)
        return self.churn_history[:, -3:].max(axis=1)

    def _churn_months_append(self, m: int) -> None:
        churned_now = (self.exit_idx == m).astype(float)
        self.churn_history = (
            np.column_stack([self.churn_history[:, -2:], churned_now])
            if self.churn_history.size
            else churned_now[:, None]
        )

    # -- complaint tickets ------------------------------------------------------------------
    def _open_tickets(
        self, m: int, subs: np.ndarray, drop_rate: np.ndarray, alert: np.ndarray
    ) -> None:
        if subs.size == 0:
            return
        rng = self.rng
        period = self.periods[m]
        k = subs.size
        start = np.datetime64(period.start_time.date(), "s")
        opened = start + rng.integers(0, period.days_in_month * 86400, k).astype("timedelta64[s]")
        cat = np.where(
            drop_rate[subs] > 0.03,
            "network",
            np.where(
                alert[subs],
                "billing",
                rng.choice(COMPLAINT_CATEGORIES, k, p=[0.2, 0.2, 0.25, 0.15, 0.1, 0.1]),
            ),
        )
        channel = rng.choice(CHANNELS, k, p=CHANNEL_P)
        severity = np.where(rng.random(k) < 0.15, "urgent", "normal")
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
        desc = _with_callback_numbers(desc, seq, self.pop.msisdn[subs])
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
                    "status": "open",
                    "satisfaction": np.nan,
                }
            ),
            pd.DataFrame(
                {
                    **base,
                    "updated_at": resolved_at,
                    "closed_at": resolved_at,
                    "status": "resolved",
                    "satisfaction": sat,
                }
            )[~never],
            pd.DataFrame(
                {
                    **base,
                    "updated_at": reopened_at,
                    "closed_at": np.datetime64("NaT"),
                    "status": "reopened",
                    "satisfaction": np.nan,
                }
            )[reopen],
            pd.DataFrame(
                {
                    **base,
                    "updated_at": resolved2,
                    "closed_at": resolved2,
                    "status": "resolved",
                    "satisfaction": sat,
                }
            )[reopen],
        ]
        new = pd.concat([e for e in ev if len(e)], ignore_index=True)
        self.tickets = (
            new if self.tickets.empty else pd.concat([self.tickets, new], ignore_index=True)
        )

    def _ticket_month(self, m: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Latest state in month m of each ticket that changed, and open counts at month end."""
        period = self.periods[m]
        n = self.cfg.subscribers
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
        open_now = upto[upto["status"] != "resolved"]
        unresolved = np.bincount(open_now["sub"].to_numpy(np.int64), minlength=n)
        reg = np.bincount(
            open_now.loc[open_now["channel"] == "regulator", "sub"].to_numpy(np.int64), minlength=n
        )
        # keep the ticket store small: drop tickets whose whole history ended resolved before this month
        g = t.sort_values(["ticket_id", "updated_at"]).groupby("ticket_id")
        last = g["updated_at"].transform("max").reindex(t.index).to_numpy("datetime64[s]")
        last_status = g["status"].transform("last").reindex(t.index)
        keep = (last >= lo) | (last_status != "resolved").to_numpy()
        self.tickets = t[keep].reset_index(drop=True)
        states = states.assign(msisdn=self.pop.msisdn[states["sub"].to_numpy(np.int64)]).drop(
            columns="sub"
        )
        return states.reset_index(drop=True), unresolved, reg

    def months(self) -> Iterator[MonthOutput]:
        for m in range(len(self.periods)):
            yield self.step(m)

    def churn_truth(self) -> pd.DataFrame:
        """Per subscriber: the month the churn event happens (EXTRACTS definition) and how."""
        pop = self.pop
        within = self.exit_idx < len(self.periods)
        month = np.full(pop.msisdn.size, None, dtype=object)
        idx = np.flatnonzero(within)
        month[idx] = [str(self.periods[i]) for i in self.exit_idx[idx]]
        return pd.DataFrame(
            {
                "msisdn": pop.msisdn,
                "activation_date": pop.activation,
                "payment_type": np.where(pop.postpaid, "postpaid", "prepaid"),
                "churn_month": month,
                "exit_kind": np.where(within, self.exit_kind, None),
                "decided_month": [
                    str(self.periods[i]) if i < len(self.periods) else None
                    for i in self.decided_idx
                ],
                "conc_type": pop.extra["conc_type"],
                "p_offnet": pop.p_offnet,
            }
        )


def _segment_search(
    key: np.ndarray, owner: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Index of the contact whose cumulative weight first passes u, inside each owner's segment.

    ``key`` is segment number + cumulative weight within the segment, one increasing
    array for everybody, so a single searchsorted serves every event at once.
    """
    idx = np.searchsorted(key, owner + np.minimum(u, 1 - 1e-9), side="left")
    return np.clip(idx, lo, hi - 1)


def _solve_intercept(x: np.ndarray, target: float) -> float:
    lo, hi = -15.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(mid + x).mean() > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2
