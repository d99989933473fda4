"""The latent churn hazard: the DOMAIN.md signals as drivers, calibrated to a target churn rate.

Each month every subscriber's drivers add up, with some noise, to a log-odds of
deciding to leave; the intercept is solved once, on the first month, so that the
share of deciders matches ``synth.target_monthly_churn``. The drivers are written to
the truth, so a model can be compared with the best possible.
"""

from __future__ import annotations

import numpy as np

from pipelines.lake.contract import BILLING
from pipelines.synth.config import SynthConfig
from pipelines.synth.population import Population

CANCELLED, PORTED_OUT = BILLING.enum("status", "cancelled", "ported_out")
SILENT = "silent"  # a prepaid number that goes quiet: churn by inactivity, not a billing status
_LAG_P = [0.3, 0.45, 0.25]  # months from deciding to leaving: 1, 2 or 3
NEVER = 10**6  # month index of an event that does not happen


def exit_kinds(postpaid: np.ndarray, u: np.ndarray) -> np.ndarray:
    """How each decider leaves, from a uniform draw: postpaid cancel or port; prepaid may go silent."""
    return np.where(
        postpaid,
        np.where(u < 0.55, CANCELLED, PORTED_OUT),
        np.where(u < 0.35, CANCELLED, np.where(u < 0.60, PORTED_OUT, SILENT)),
    )


def drivers(
    pop: Population,
    m: int,
    *,
    low_balance: np.ndarray,
    unresolved: np.ndarray,
    regulator_open: np.ndarray,
    drop_rate: np.ndarray,
    bill_shock: np.ndarray,
    contract_end_idx: np.ndarray,
    contract_lapsed_idx: np.ndarray,
    recent_churn: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each driver's contribution to the log-odds of deciding to leave in month ``m``.

    The order is the order they are summed in (and the truth's driver columns).
    """
    tenure_m = m - pop.act_month_idx
    return {
        "short_tenure_low_balance": 0.55 * (tenure_m < 12) + 0.65 * ((tenure_m < 12) & low_balance),
        "no_bundle": 0.45 * (~pop.family & ~pop.group),
        "low_data": 0.45 * (pop.data_scale < 600),
        "low_offnet_share": 1.4 * np.clip((0.32 - pop.p_offnet) / 0.32, 0, 1),
        "concentration_extreme": 0.85 * (pop.c_top1 > 0.55) + 0.85 * (pop.p_oneoff > 0.45),
        "unresolved_complaints": 0.75 * np.minimum(unresolved, 2) + 0.5 * regulator_open,
        "dropped_calls": 9.0 * np.clip(drop_rate - 0.02, 0, 0.12),
        "bill_shock": 1.0 * bill_shock,
        "contract_end_near": 0.8 * ((contract_end_idx >= m) & (contract_end_idx - m <= 1))
        + 0.5 * ((m - contract_lapsed_idx) <= 2),
        "contacts_churned": 2.5 * np.asarray(pop.onnet_W @ recent_churn).ravel().clip(0, 0.6),
        "frailty": pop.frailty,
    }


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_intercept(x: np.ndarray, target: float) -> float:
    """The intercept that makes the mean hazard of ``x`` equal ``target`` (bisection)."""
    lo, hi = -15.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sigmoid(mid + x).mean() > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


class Leaving:
    """Who has decided to leave, when they go and how; drawn from the world's random stream."""

    def __init__(
        self, rng: np.random.Generator, pop: Population, cfg: SynthConfig, inactivity_months: int
    ):
        n = cfg.subscribers
        self.rng, self.pop, self.inactivity_months = rng, pop, inactivity_months
        self.target = cfg.target_monthly_churn
        self.exit_idx = np.full(n, NEVER)  # month index of the churn event
        self.exit_kind = np.full(n, "", dtype=object)
        self.decided_idx = np.full(n, NEVER)
        self.gone_idx = np.full(n, NEVER)  # first month with no billing row at all
        self.churn_history = np.zeros((n, 0))
        self.b0: float | None = None
        self._burn_in()

    def _burn_in(self) -> None:
        """Some decided before the window opens, so the first months already show steady churn."""
        rng, pop, n = self.rng, self.pop, self.pop.msisdn.size
        pre = (rng.random(n) < 2.2 * self.target) & (pop.act_month_idx < -1)
        d = -rng.integers(1, 3, n)
        ex = d + 1 + rng.choice(3, n, p=_LAG_P)
        pre &= ex >= 0
        kind = exit_kinds(pop.postpaid, rng.random(n))
        self.decided_idx = np.where(pre, d, self.decided_idx)
        self.exit_idx = np.where(pre, ex, self.exit_idx)
        self.exit_kind = np.where(pre, kind, self.exit_kind)
        self.gone_idx = np.where(
            pre, np.where(kind == SILENT, ex + self.inactivity_months + 1, ex + 1), self.gone_idx
        )

    def decide(
        self, m: int, active: np.ndarray, contrib: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(hazard, decided this month): the drivers plus noise; deciders get an exit month and kind.

        The intercept is solved on the first month, so its deciders match the target rate.
        """
        rng, pop, n = self.rng, self.pop, self.pop.msisdn.size
        x = sum(contrib.values()) + rng.normal(0, 0.25, n)
        if self.b0 is None:
            self.b0 = solve_intercept(x[active], self.target)
        hazard = sigmoid(self.b0 + x)
        tenure_m = m - pop.act_month_idx
        can_decide = active & (self.decided_idx > m) & (tenure_m >= 0)
        decide = can_decide & (rng.random(n) < hazard)
        lag = rng.choice(3, n, p=_LAG_P)
        self.decided_idx = np.where(decide, m, self.decided_idx)
        self.exit_idx = np.where(decide, m + 1 + lag, self.exit_idx)
        kind = exit_kinds(pop.postpaid, rng.random(n))
        self.exit_kind = np.where(decide, kind, self.exit_kind)
        inact = self.inactivity_months
        self.gone_idx = np.where(
            decide,
            np.where(kind == SILENT, m + 1 + lag + inact + 1, m + 1 + lag + 1),
            self.gone_idx,
        )
        return hazard, decide

    def recent_churn(self) -> np.ndarray:
        """Whether each subscriber churned in the last three months (for their contacts)."""
        if self.churn_history.shape[1] == 0:
            return np.zeros(self.pop.msisdn.size)
        return self.churn_history[:, -3:].max(axis=1)

    def close_month(self, m: int) -> None:
        """Remember who churned in month ``m``."""
        churned_now = (self.exit_idx == m).astype(float)
        self.churn_history = (
            np.column_stack([self.churn_history[:, -2:], churned_now])
            if self.churn_history.size
            else churned_now[:, None]
        )
