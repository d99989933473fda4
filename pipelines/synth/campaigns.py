"""The synthetic operator's own past retention campaigns: a randomised pilot and a rule-based push.

Every contact month the operator (a) runs a small randomised pilot: a random share of
the base, half contacted with a random channel and offer, half held out; and (b) works
its old rule on what it knew at the end of last month: a contract ending within two
months, an open complaint or an alert bill, the biggest bills first, with a random
hold-out. Both go through the response mechanism (:mod:`pipelines.synth.response`) and
end up in the CRM extract ``crm/contact_history.csv`` (docs/crm.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.synth.config import ResponseConfig

CHANNELS = ("account_manager", "call_centre", "sms_app")
OFFERS = (
    "coverage_check", "plan_rightsizing", "data_pack", "bundle_upgrade", "points_redemption",
    "migration_5g", "renewal_24m", "manager_callback", "family_bundle",
)  # fmt: skip
CONTACT_COLUMNS = ["campaign", "msisdn", "contacted_at", "channel", "offer", "group"]


@dataclass
class Known:
    """What the operator knows of each subscriber at the end of the month before the contact."""

    base: np.ndarray  # on the base and free to contact this month
    tier: np.ndarray  # member / vip / ordinary, from the last three bills
    value: np.ndarray  # last bill
    contract_near: np.ndarray  # contract ends within two months
    complaint: np.ndarray  # an open complaint
    alert: np.ndarray  # an alert bill


def contact_times(rng: np.random.Generator, period: pd.Period, n: int) -> np.ndarray:
    """Timestamps within ``period``, in working hours, as text."""
    start = np.datetime64(period.start_time.date(), "s")
    secs = rng.integers(0, period.days_in_month, n) * 86400 + rng.integers(9 * 3600, 20 * 3600, n)
    stamps = np.datetime_as_string(start + secs.astype("timedelta64[s]"), unit="s")
    return np.char.replace(stamps, "T", " ").astype(object)


def rule_offer(known: Known, idx: np.ndarray) -> np.ndarray:
    """The old rule's offer: a callback for a complaint, renewal near contract end, else a better plan."""
    return np.where(
        known.complaint[idx],
        "manager_callback",
        np.where(known.contract_near[idx], "renewal_24m", "plan_rightsizing"),
    ).astype(object)


def rule_channel(known: Known, idx: np.ndarray) -> np.ndarray:
    """VIP and members get a person (members their account manager), everyone else an SMS."""
    tier = known.tier[idx]
    return np.where(
        tier == "member", "account_manager", np.where(tier == "vip", "call_centre", "sms_app")
    ).astype(object)


def historical_contacts(
    rng: np.random.Generator,
    m: int,
    known: Known,
    cfg: ResponseConfig,
    msisdn: np.ndarray,
    period: pd.Period,
) -> pd.DataFrame:
    """Month ``m``'s pilot and targeted contacts (CONTACT_COLUMNS plus the subscriber index ``_i``)."""
    base = np.flatnonzero(known.base)
    n_pilot = int(round(cfg.pilot_share * base.size))
    pilot = np.sort(rng.choice(base, n_pilot, replace=False)) if n_pilot else base[:0]
    treated = rng.permutation(n_pilot) < n_pilot // 2
    p_channel = np.array(CHANNELS, dtype=object)[rng.integers(0, len(CHANNELS), n_pilot)]
    p_offer = np.array(OFFERS, dtype=object)[rng.integers(0, len(OFFERS), n_pilot)]

    free = known.base.copy()
    free[pilot] = False
    rule = free & (known.contract_near | known.complaint | known.alert)
    cand = np.flatnonzero(rule)
    cand = cand[np.argsort(-known.value[cand], kind="stable")]
    target = np.sort(cand[: int(round(cfg.targeted_share * base.size))])
    held = rng.random(target.size) < cfg.holdout

    ym = f"{period}"
    frames = [
        pd.DataFrame(
            {
                "campaign": f"pilot-{ym}",
                "_i": pilot,
                "channel": p_channel,
                "offer": p_offer,
                "group": np.where(treated, "treated", "control"),
            }
        ),
        pd.DataFrame(
            {
                "campaign": f"targeted-{ym}",
                "_i": target,
                "channel": rule_channel(known, target),
                "offer": rule_offer(known, target),
                "group": np.where(held, "control", "treated"),
            }
        ),
    ]
    out = pd.concat(frames, ignore_index=True)
    out["msisdn"] = msisdn[out["_i"].to_numpy(np.int64)]
    out["contacted_at"] = contact_times(rng, period, len(out))
    return out[[*CONTACT_COLUMNS, "_i"]]
