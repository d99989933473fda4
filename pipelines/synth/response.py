"""How the synthetic operator's subscribers answer a retention contact, and the true effect of one.

A contact of month ``m`` is resolved at the start of the month, before anyone fades: a
reached pending leaver who decided last month may be talked round (the decision is
revoked); a reached subscriber who has not decided has this month's hazard cut to
``h * (1 - s)``; a sleeping dog (an open complaint) reached by the wrong channel and offer
may be pushed to leave next month. ``s = base_i * channel_gain * match(offer, driver_i)``
where ``base_i`` follows what the operator can see (tenure, value, postpaid, contract)
plus a little hidden noise, and ``driver_i`` is last month's largest hazard driver.

All draws come from streams of their own (never the world's), so a world without
contacts is byte for byte the world without this module. The exact counterfactual
effect of every channel x offer is written to ``truth/response/`` (docs/crm.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.synth.campaigns import (
    CHANNELS,
    CONTACT_COLUMNS,
    OFFERS,
    Known,
    contact_times,
    historical_contacts,
)
from pipelines.synth.config import SynthConfig
from pipelines.synth.hazard import _LAG_P, NEVER, SILENT, exit_kinds, sigmoid

if TYPE_CHECKING:
    from pipelines.synth.world import World

log = logging.getLogger(__name__)

# the operators' rules: which offers answer which driver (docs/domain.md)
MATCH: dict[str, tuple[str, ...]] = {
    "dropped_calls": ("coverage_check",),
    "bill_shock": ("plan_rightsizing",),  # + data_pack / bundle_upgrade by the overage kind
    "unresolved_complaints": ("manager_callback",),
    "contract_end_near": ("renewal_24m",),
    "no_bundle": ("family_bundle",),
    "low_offnet_share": ("family_bundle",),
    "concentration_extreme": ("family_bundle",),
    "contacts_churned": ("family_bundle",),
    "low_data": ("migration_5g",),
    "short_tenure_low_balance": ("plan_rightsizing",),
}
PUSH_CHANNELS = ("sms_app", "call_centre")  # an angry customer wants a person who can fix it
CRM_COLUMNS = [*CONTACT_COLUMNS, "reached", "accepted"]
_SEED_RESPONSE, _SEED_CAMPAIGNS = 104_729, 130_363
HIGH_POINTS = 5000


def effect_column(channel: str, offer: str) -> str:
    return f"effect__{channel}__{offer}"


class Response:
    """The response mechanism of one world; the world calls begin/after_decide/close each month."""

    window: tuple[int, int] = (0, 2)  # (gap, horizon) of the churn label; set by the delivery

    def __init__(self, cfg: SynthConfig, world: World):
        self.cfg, self.rcfg, self.world = cfg, cfg.response, world
        n = cfg.subscribers
        self.rng = np.random.default_rng(cfg.seed + _SEED_RESPONSE)
        self.camp_rng = np.random.default_rng(cfg.seed + _SEED_CAMPAIGNS)
        self.noise = self.rng.normal(0, 0.3, n)  # the hidden part of persuadability
        self.index = {k: i for i, k in enumerate(world.pop.msisdn)}
        self.driver = np.full(n, "", dtype=object)
        self.overage = np.full(n, "", dtype=object)  # "data" / "voice": the bigger overage
        self.unresolved = np.zeros(n, dtype=np.int64)
        self.alert = np.zeros(n, bool)
        self.last_bill = np.zeros(n)
        self.last_redeem = np.full(n, -NEVER)
        self.points = np.zeros(n, dtype=np.int64)
        self._plan: dict[str, np.ndarray] | None = None
        self._m = 0
        self._base = np.zeros(n)
        self._before = (np.full(n, NEVER), np.full(n, NEVER))  # decided, exit before contacts
        self.contacts: pd.DataFrame | None = None
        self.truth: pd.DataFrame | None = None

    # -- who is persuadable ----------------------------------------------------------------
    def base(self, m: int) -> np.ndarray:
        """Save probability of a reached persuadable with the best channel and a matched offer."""
        w, pop = self.world, self.world.pop
        tenure = m - pop.act_month_idx
        z = (
            0.5 * pop.postpaid
            + 0.4 * (tenure >= 24)
            - 0.5 * (tenure < 6)
            + 0.3 * np.clip(np.log(w.fee / 58.0), -1.5, 1.5)
            + 0.3 * (w.contract_end_idx >= m)
            + self.noise
        )
        b = self.rcfg.base_save
        return sigmoid(np.log(b / (1 - b)) + z - 0.55) if 0 < b < 1 else np.full(z.size, b)

    def sleeping_dog(self) -> np.ndarray:
        """An open complaint at the end of last month: the wrong contact makes it worse."""
        return (
            (self.unresolved > 0)
            if self.rcfg.heterogeneous
            else np.zeros(self.unresolved.size, bool)
        )

    def matched(self, offer: str) -> np.ndarray:
        """Whether ``offer`` answers each subscriber's driver of last month."""
        ok = np.isin(self.driver, [d for d, offers in MATCH.items() if offer in offers])
        if offer == "data_pack":
            ok |= (self.driver == "bill_shock") & (self.overage == "data")
        elif offer == "bundle_upgrade":
            ok |= (self.driver == "bill_shock") & (self.overage == "voice")
        elif offer == "points_redemption":
            ok |= self.high_points()
        return ok

    def high_points(self) -> np.ndarray:
        return (self.points >= HIGH_POINTS) & (self.last_redeem < self._m - 6)

    def save(self, m: int, channel: str, offer: str) -> tuple[np.ndarray, np.ndarray]:
        """(save probability if reached, pushes a sleeping dog) for everyone, one channel x offer."""
        n = self.cfg.subscribers
        if not self.rcfg.heterogeneous:
            return np.full(n, self.rcfg.homogeneous_save), np.zeros(n, bool)
        match = np.where(self.matched(offer), 1.0, self.rcfg.mismatch)
        s = np.clip(self._base * self.rcfg.channel_gain[channel] * match, 0, 1)
        push = self.sleeping_dog() & (channel in PUSH_CHANNELS) & (offer != "manager_callback")
        return np.where(push, 0.0, s), push

    # -- one month -------------------------------------------------------------------------
    def begin(self, m: int, external: pd.DataFrame | None = None) -> None:
        """Resolve month ``m``'s contacts; revoke the decisions of the pending leavers saved."""
        self._m, self._plan, self.contacts, self.truth = m, None, None, None
        if m == 0:
            return
        lv, pop = self.world.leaving, self.world.pop
        self._base = self.base(m)
        self._before = (lv.decided_idx.copy(), lv.exit_idx.copy())
        frames = []
        taken = np.zeros(self.cfg.subscribers, bool)
        if external is not None and len(external):
            frames.append(self._external(m, external, taken))
        if self.rcfg.campaigns:
            known = self._known(m, taken)
            frames.append(
                historical_contacts(
                    self.camp_rng, m, known, self.rcfg, pop.msisdn, self.world.periods[m]
                )
            )
        c = pd.concat(frames, ignore_index=True) if frames else None
        if c is None or c.empty:
            return
        n_c = len(c)
        idx = c["_i"].to_numpy(np.int64)
        treated = (c["group"] == "treated").to_numpy()
        reach = c["channel"].map(self.rcfg.reach).to_numpy(float)
        u_reach, u_accept = self.rng.random(n_c), self.rng.random(n_c)
        reached = treated & (u_reach < reach)
        s, push = np.zeros(n_c), np.zeros(n_c, bool)
        for (ch, of), rows in c.groupby(["channel", "offer"], sort=True).indices.items():
            s_all, push_all = self.save(m, ch, of)
            s[rows], push[rows] = s_all[idx[rows]], push_all[idx[rows]]
        d0, e0 = self._before
        pending = (d0[idx] < m) & (e0[idx] >= m)
        saveable = pending & (
            (d0[idx] >= m - self.rcfg.open_months) | (not self.rcfg.heterogeneous)
        )
        s[pending & ~saveable] = 0.0  # already fading: will leave whatever is said
        accepted = reached & ~push & (u_accept < s)
        pushed = reached & push & (u_accept < self.rcfg.push)
        revoke = idx[accepted & saveable]
        lv.decided_idx[revoke] = lv.exit_idx[revoke] = lv.gone_idx[revoke] = NEVER
        lv.exit_kind[revoke] = ""
        self._plan = {"settled": idx[accepted], "pushed": idx[pushed & ~pending]}
        c["reached"] = np.where(treated, reached.astype(int).astype(str), "")
        c["accepted"] = np.where(treated, accepted.astype(int).astype(str), "")
        self.contacts = c.drop(columns="_i")[CRM_COLUMNS]
        log.info(
            "month %d: %d contacts (%d treated, %d reached, %d accepted, %d saved leavers, %d pushed)",
            m, n_c, treated.sum(), reached.sum(), accepted.sum(), revoke.size, pushed.sum(),
        )  # fmt: skip

    def after_decide(self, m: int, active: np.ndarray, decision) -> None:
        """Undo the decisions of those talked round, push the sleeping dogs; the true effects.

        ``decision`` (the world's hazard and deciders of the month) gets the deciders after
        the contacts.
        """
        if m == 0:
            return
        decide = decision.decide
        self.truth = self._effects(m, active, decision.hazard)
        if self._plan is None:
            return
        lv, pop = self.world.leaving, self.world.pop
        undo = np.zeros(decide.size, bool)
        undo[self._plan["settled"]] = True
        undo &= decide
        lv.decided_idx[undo] = lv.exit_idx[undo] = lv.gone_idx[undo] = NEVER
        lv.exit_kind[undo] = ""
        p = self._plan["pushed"]
        p = p[active[p] & (lv.decided_idx[p] >= m)]
        kind = exit_kinds(pop.postpaid[p], self.rng.random(p.size))
        lv.decided_idx[p], lv.exit_idx[p], lv.exit_kind[p] = m, m + 1, kind
        lv.gone_idx[p] = np.where(kind == SILENT, m + 2 + lv.inactivity_months, m + 2)
        out = decide & ~undo
        out[p] = True
        decision.decide = out

    def close(self, m: int, contrib: dict[str, np.ndarray], bill, account, unresolved) -> None:
        """Remember what the next month's contacts answer to: the top driver, overage, points."""
        names = [k for k in contrib if k != "frailty"]
        n = self.cfg.subscribers
        stack = np.column_stack(
            [np.broadcast_to(np.asarray(contrib[k], float), (n,)) for k in names]
        )
        top = stack.argmax(axis=1)
        self.driver = np.where(stack.max(axis=1) > 0, np.array(names, dtype=object)[top], "")
        self.overage = np.where(
            bill.data_over > bill.voice_over, "data", np.where(bill.voice_over > 0, "voice", "")
        )
        self.unresolved = np.asarray(unresolved, np.int64)
        self.alert = np.asarray(bill.alert, bool)
        self.last_bill = np.asarray(bill.total, float)
        self.points = np.asarray(account.points, np.int64)
        self.last_redeem = np.where(account.redeemed > 0, m, self.last_redeem)

    # -- helpers ---------------------------------------------------------------------------
    def _external(self, m: int, ext: pd.DataFrame, taken: np.ndarray) -> pd.DataFrame:
        """The system's own contacts for month ``m`` (a published list fed back into the world)."""
        ext = ext.drop_duplicates("msisdn").copy()
        i = ext["msisdn"].astype(str).map(self.index)
        if "group" not in ext:
            ext["group"] = "treated"
        ext["group"] = ext["group"].fillna("treated")
        bad = i.isna() | ~ext["channel"].isin(CHANNELS) | ~ext["offer"].isin(OFFERS)
        bad |= ~ext["group"].isin(["treated", "control"])
        if bad.any():
            log.warning("month %d: %d external contacts dropped (unknown number, channel, offer "
                        "or group)", m, int(bad.sum()))  # fmt: skip
        ext, i = ext[~bad], i[~bad].astype(np.int64).to_numpy()
        taken[i] = True
        period = self.world.periods[m]
        return pd.DataFrame({
            "campaign": ext.get("campaign", pd.Series(f"system-{period}", index=ext.index)).to_numpy(),
            "msisdn": self.world.pop.msisdn[i],
            "contacted_at": contact_times(self.rng, period, i.size),
            "channel": ext["channel"].to_numpy(), "offer": ext["offer"].to_numpy(),
            "group": ext["group"].to_numpy(),
            "_i": i,
        })  # fmt: skip

    def _known(self, m: int, taken: np.ndarray) -> Known:
        """What the operator knows at the end of month ``m - 1`` (for its old targeting rule)."""
        w, lv = self.world, self.world.leaving
        base = (w.pop.act_month_idx <= m - 1) & (lv.gone_idx > m) & ~taken
        three = w.n_bills >= 3
        tier = np.where(three & (w.bills > 1000).all(axis=1), "member",
                        np.where(three & (w.bills >= 500).all(axis=1), "vip", "ordinary"))  # fmt: skip
        to_end = w.contract_end_idx - (m - 1)
        return Known(base, tier, self.last_bill, (to_end >= 0) & (to_end <= 2),
                     self.unresolved > 0, self.alert)  # fmt: skip

    def _effects(self, m: int, active: np.ndarray, hazard: np.ndarray) -> pd.DataFrame:
        """p0 and the exact effect of every channel x offer, from the state before the contacts."""
        gap, horizon = self.window
        lo, hi = m + gap, m + gap + horizon - 1
        d0, e0 = self._before
        pop = self.world.pop
        pending = (d0 < m) & (e0 >= m)
        in_win = pending & (e0 >= lo) & (e0 <= hi)
        can_decide = active & (d0 > m) & (m - pop.act_month_idx >= 0)
        q = sum(p for lag, p in enumerate(_LAG_P) if lo <= m + 1 + lag <= hi)
        push_in = float(lo <= m + 1 <= hi)
        hq = np.where(can_decide, hazard * q, 0.0)
        p0 = in_win + hq
        saveable = in_win & ((d0 >= m - self.rcfg.open_months) | (not self.rcfg.heterogeneous))
        cols = {}
        for ch in CHANNELS:
            r = self.rcfg.reach[ch]
            for of in OFFERS:
                s, push = self.save(m, ch, of)
                eff = -r * s * (saveable + hq)
                eff = np.where(push & can_decide, r * self.rcfg.push * (push_in - hq), eff)
                cols[effect_column(ch, of)] = eff
        rows = np.flatnonzero(active)
        return pd.DataFrame(
            {
                "msisdn": pop.msisdn[rows],
                "month": str(self.world.periods[m]),
                "p0": p0[rows],
                "committed": (in_win & ~saveable)[rows],
                "persuadable_base": self._base[rows] if self.rcfg.heterogeneous
                else np.full(rows.size, self.rcfg.homogeneous_save),
                "sleeping_dog": self.sleeping_dog()[rows],
                "driver": self.driver[rows],
                **{k: v[rows] for k, v in cols.items()},
            }
        )  # fmt: skip


def true_effects(truth_dir: Path, month: str) -> pd.DataFrame:
    """The true effects of contact month ``month`` (YYYY-MM): p0, effect__<channel>__<offer>."""
    return pd.read_parquet(Path(truth_dir) / "response" / f"month={month}.parquet")


def best_effect(
    frame: pd.DataFrame, channels: list[str] | tuple[str, ...] = CHANNELS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row the most negative effect within ``channels``, and the channel and offer giving it."""
    cols = [effect_column(ch, of) for ch in channels for of in OFFERS]
    values = frame[cols].to_numpy(float)
    k = values.argmin(axis=1)
    pairs = np.array([(ch, of) for ch in channels for of in OFFERS], dtype=object)
    return values[np.arange(len(frame)), k], pairs[k, 0], pairs[k, 1]


def knowable_effects(effects: np.ndarray, truth: pd.DataFrame, hazard: pd.DataFrame) -> np.ndarray:
    """The true effects with the snapshot month's own decisions replaced by their expectation.

    ``effects``: rows of ``truth`` (the contact month's truth) x some channel columns, the
    exact effects. A subscriber who decided to leave in the snapshot month T shows it in
    no extract before the contact (fading starts the month after), so any list drawn from
    data sees only the chance that they decided: their hazard of T. This ranking knows
    every hidden trait (hazard, persuadability, earlier decisions) but not that month's
    draws: an upper bound for a list made from data, tighter than the true-effect oracle.
    ``hazard``: the truth's hazard rows of month T (msisdn, hazard, decided_this_month,
    leaving).
    """
    h = hazard.set_index("msisdn").reindex(truth["msisdn"])
    h_t = h["hazard"].fillna(0.0).to_numpy()
    decided_t = h["decided_this_month"].fillna(False).to_numpy(bool)
    could = ~decided_t & ~h["leaving"].fillna(True).to_numpy(bool) & h["hazard"].notna().to_numpy()
    p0 = truth["p0"].to_numpy(float)
    gain = np.where(p0[:, None] > 0, -effects / np.maximum(p0[:, None], 1e-12), 0.0)  # reach x save
    q = _LAG_P[0]  # a decider of the contact month who leaves within the window
    out = effects.copy()
    out[decided_t] = -gain[decided_t] * (h_t + (1 - h_t) * q * h_t)[decided_t, None]
    out[could] = -gain[could] * (h_t + (1 - h_t) * p0)[could, None]
    return out
