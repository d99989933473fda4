"""The subscribers of the synthetic operator, built once: numbers, tariffs, habits, the social graph.

Everyone gets a number in the operator's own ranges, a tenure, prepaid or postpaid, a
plan, bundles, usage habits, home and work cells, and contacts on a graph of
communities of about 30 (on-net subscribers, other operators' mobiles, a landline,
a service line), weighted so that some people live on one or two contacts and others
scatter their calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from pipelines.lake.config import Numbering
from pipelines.lake.contract import BILLING
from pipelines.synth.config import SynthConfig

SERVICE_CODES = np.array(["10086", "10010", "10000", "95588", "95533", "12345", "95555", "12306"])
AREA_CODES = np.array(["010", "021", "020", "0755", "028", "027", "0571", "025", "023", "029"])
G3, G4, G5 = BILLING.enum("network_generation", "3G", "4G", "5G")
# plan_id, monthly fee, voice minutes, data MB, network generation, weight prepaid, weight postpaid
PLANS = [
    ("G3-08", 8, 50, 300, G3, 0.07, 0.01),
    ("G3-18", 18, 100, 500, G3, 0.06, 0.02),
    ("G4-19", 19, 100, 3072, G4, 0.20, 0.05),
    ("G4-38", 38, 200, 10240, G4, 0.25, 0.12),
    ("G4-58", 58, 300, 20480, G4, 0.17, 0.18),
    ("G4-88", 88, 500, 30720, G4, 0.09, 0.15),
    ("G5-128", 128, 600, 40960, G5, 0.08, 0.18),
    ("G5-188", 188, 1000, 61440, G5, 0.05, 0.13),
    ("G5-288", 288, 1500, 102400, G5, 0.02, 0.08),
    ("G5-388", 388, 2000, 153600, G5, 0.01, 0.05),
    ("G5-588", 588, 3000, 204800, G5, 0.00, 0.02),
    ("G5-888", 888, 5000, 307200, G5, 0.00, 0.01),
]


def plan_fees(plan_idx: np.ndarray) -> np.ndarray:
    """Monthly fee of each subscriber's plan."""
    return np.array([p[1] for p in PLANS], float)[plan_idx]


@dataclass
class Population:
    """What every subscriber is and whom they call; fixed for the whole simulation."""

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
