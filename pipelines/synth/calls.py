"""A month of calls and SMS: each subscriber's events, drawn from their contacts, as CDR rows.

Events follow each subscriber's call rate, fade with a leaver's activity, and pick a
contact by weight (or a one-off number); they keep a weekly rhythm and daily peaks,
roam now and then, and drop more often in bad cells. The per-subscriber counts the
hazard and the bill need come out with the records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.lake.config import Numbering
from pipelines.lake.contract import CDR
from pipelines.synth.population import SERVICE_CODES, Population

OWN, OTHER, UNKNOWN = CDR.enum("other_operator", "own", "other", "unknown")
COMPLETED, DROPPED, FAILED = CDR.enum("call_result", "completed", "dropped", "failed")
MO, MT = CDR.enum("direction", "MO", "MT")
VOICE, SMS = CDR.enum("event_type", "voice", "sms")

_HOUR_W = np.array(
    [1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 6, 8, 9, 9, 8, 8, 9, 9, 9, 9, 10, 11, 11, 9, 6, 3], float
)
_HOUR_P = _HOUR_W / _HOUR_W.sum()


@dataclass
class Calls:
    """The month's CDR rows (by start time) and what they say per subscriber."""

    cdr: pa.Table
    drop_rate: np.ndarray  # share of voice calls dropped; last month's without a call
    voice_minutes: np.ndarray  # billed minutes, rounded up per subscriber
    sms_mo: np.ndarray  # SMS sent


def month_calls(
    rng: np.random.Generator,
    pop: Population,
    period: pd.Period,
    *,
    mult: np.ndarray,
    exiting_now: np.ndarray,
    events_per_subscriber: float,
    numbering: Numbering,
    first_record: int,
    prev_drop: np.ndarray,
) -> Calls:
    """Draw the month's events; record ids count on from ``first_record``."""
    n = pop.msisdn.size
    p_start = np.datetime64(period.start_time.date(), "s")
    days = period.days_in_month
    season = 1.0 + 0.08 * np.sin(2 * np.pi * (period.month - 2) / 12)
    lam = pop.call_rate * events_per_subscriber * mult * season
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
    operator[k0] = OWN
    k1 = (ckind == 1) & ~oneoff
    other[k1] = pop.offnet_pool[ctarget[k1]]
    operator[k1] = OTHER
    k2 = (ckind == 2) & ~oneoff
    other[k2] = pop.landline_pool[ctarget[k2]]
    operator[k2] = UNKNOWN
    k3 = (ckind == 3) & ~oneoff
    other[k3] = SERVICE_CODES[ctarget[k3]]
    operator[k3] = UNKNOWN
    n1 = int(oneoff.sum())
    if n1:
        own_one = rng.random(n1) < 0.45
        pref = np.where(
            own_one,
            rng.choice(np.array(numbering.own_mobile_prefixes), n1),
            rng.choice(np.array(numbering.other_mobile_prefixes), n1),
        )
        other[oneoff] = np.char.add(pref, np.char.zfill(rng.integers(0, 10**8, n1).astype(str), 8))
        operator[oneoff] = np.where(own_one, OWN, OTHER)
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
    result = np.where(r < 0.02, FAILED, np.where(r < 0.02 + p_drop, DROPPED, COMPLETED))
    dur = np.where(result == FAILED, 0, dur)
    dur = np.where(result == DROPPED, np.maximum(1, dur // 3), dur)
    direction = np.where(rng.random(e) < pop.p_mo[owner], MO, MT)
    cell_id = np.where(
        roam,
        np.char.add("R", np.char.zfill((cell % 97).astype(str), 4)),
        np.char.add("C", np.char.zfill(cell.astype(str), 5)),
    )
    rec_ids = np.char.add(
        f"E{period.year:04d}{period.month:02d}",
        np.char.zfill(np.arange(first_record, first_record + e).astype(str), 10),
    )
    order = np.argsort(start, kind="stable")
    cdr = pa.table(
        {
            "record_id": pa.array(rec_ids[order]),
            "msisdn": pa.array(pop.msisdn[owner[order]]),
            "other_number": pa.array(other[order].astype(str)),
            "direction": pa.array(direction[order]),
            "event_type": pa.array(np.where(is_sms, SMS, VOICE)[order]),
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
    n_drop = np.bincount(owner[voice & (result == DROPPED)], minlength=n)
    drop_rate = np.where(n_voice > 0, n_drop / np.maximum(n_voice, 1), prev_drop)
    voice_minutes = np.ceil(np.bincount(owner[voice], weights=dur[voice], minlength=n) / 60.0)
    sms_mo = np.bincount(owner[is_sms & (direction == MO)], minlength=n)
    return Calls(cdr, drop_rate, voice_minutes, sms_mo)


def _segment_search(
    key: np.ndarray, owner: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Index of the contact whose cumulative weight first passes u, inside each owner's segment.

    ``key`` is segment number + cumulative weight within the segment, one increasing
    array for everybody, so a single searchsorted serves every event at once.
    """
    idx = np.searchsorted(key, owner + np.minimum(u, 1 - 1e-9), side="left")
    return np.clip(idx, lo, hi - 1)
