"""``churn simulate``: the synthetic operator lives on month by month with the system in the loop.

The world first runs its configured history (``synth.months``, with the operator's own
pilots and targeted campaigns). Then, each further month, the system does what it
does every month (ingest, features, train when due, uplift, score, publish, measure),
and the list published for snapshot T is what the operator works in T+1: the treated
rows are contacted through the chosen channel with the chosen offer, the control rows
are held out. The world answers as its hidden response says, so the lists' measured
savings can be set against the truth.

Cross-file dirt that only makes sense once a delivery is complete (a truncated last
file, re-deliveries) is switched off here; row-level dirt stays.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipelines import steps
from pipelines.campaigns import ledger
from pipelines.config import Settings
from pipelines.synth.deliver import Delivery
from pipelines.synth.response import effect_column, knowable_effects, true_effects

log = logging.getLogger(__name__)

FALLBACK_OFFER = "plan_rightsizing"  # a contact without a reason-specific offer


def _world_settings(settings: Settings, months: int) -> Settings:
    s = settings.model_copy(deep=True)
    s.synth.months = settings.synth.months + months
    d = s.synth.dirt
    d.truncated_last_line = d.delivered_twice = d.corrected_redelivery = False
    return s


def contacts_of(campaigns, month: str) -> pd.DataFrame:
    """The list of snapshot ``month`` as the operator works it: who, how, with what, or held out."""
    rows = ledger.read(campaigns)
    rows = rows[rows["snapshot_month"] == month]
    return pd.DataFrame({
        "campaign": rows["campaign"], "msisdn": rows["msisdn"], "channel": rows["channel"],
        "offer": rows["offer"].where(rows["offer"] != "", FALLBACK_OFFER), "group": rows["group"],
    }).reset_index(drop=True)  # fmt: skip


def true_saving(contacts: pd.DataFrame, effects: pd.DataFrame) -> dict:
    """What contacting the treated rows truly changes: expected churners saved (−Σ effect)."""
    t = contacts[contacts["group"] == "treated"].merge(effects, on="msisdn", how="inner")
    eff = np.array([t.at[i, effect_column(ch, of)] if effect_column(ch, of) in t else np.nan
                    for i, ch, of in zip(t.index, t["channel"], t["offer"], strict=True)])  # fmt: skip
    return {"treated": int(len(t)), "true_saved": float(-np.nansum(eff)),
            "true_effect": float(np.nanmean(eff)) if len(t) else float("nan")}  # fmt: skip


def _system_month(s: Settings, month: str, published: dt.date, first: bool) -> dict:
    """One month of the system's work on what has been delivered so far (no Prefect).

    After the first month only the snapshots a new month can change are rebuilt: the new
    one and those whose label window it completes.
    """
    from features.build import choose_months

    steps.ingest(s)
    months = choose_months(s.path("lake"), s.features)
    keep = s.churn.horizon_months + s.churn.gap_months + 1
    steps.build_features(s, None if first else months[-keep:])
    due, why = steps.retrain_due(s)
    trained = steps.train(s).summary() if due else why
    up = steps.train_uplift(s)
    steps.score(s, month)
    measured = steps.measure_campaigns(s)
    manifest = steps.publish(s, month, published)
    return {"train": trained, "uplift": up, "ranking": manifest["ranking"],
            "contact": manifest["counts"]["contact"],
            "control": manifest["counts"]["control_group"], "measured": measured}  # fmt: skip


def simulate(settings: Settings, months: int, *, show_progress: bool = True) -> dict:
    """Run the history, then ``months`` months with the system in the loop; a summary per list."""
    s = _world_settings(settings, months)
    steps.clear_derived(s)
    crm = s.path("data_dir") / "crm"
    delivery = Delivery(s, s.path("landing"), s.path("truth"), crm=crm)
    world, history = delivery.world, settings.synth.months
    for m in tqdm(range(history), desc="history months", disable=not show_progress):
        delivery.write_month(world.step(m))
    delivery.write_crm()
    lists = []
    for m in tqdm(range(history, history + months), desc="months in the loop",
                  disable=not show_progress):  # fmt: skip
        snapshot, contact = str(world.periods[m - 1]), world.periods[m]
        work = _system_month(s, snapshot, contact.start_time.date(), first=m == history)
        contacts = contacts_of(s.path("campaigns"), snapshot)
        delivery.write_month(world.step(m, contacts))
        delivery.write_crm()
        truth = true_saving(contacts, true_effects(s.path("truth"), str(contact)))
        lists.append({"snapshot_month": snapshot, "contact_month": str(contact)} | truth
                     | {k: work[k] for k in ("ranking", "contact", "control", "uplift")})  # fmt: skip
        log.info("list %s worked in %s: %s", snapshot, contact, lists[-1])
    last = str(world.periods[history + months - 1])
    final = _system_month(s, last, (world.periods[-1] + 1).start_time.date(), first=False)
    delivery.finish()
    return {"lists": lists, "campaigns": final["measured"]["campaigns"],
            "waiting": final["measured"]["waiting"]}  # fmt: skip


def _greedy(gain: np.ndarray, channels: list[str], capacity: dict[str, int], total: int) -> list:
    """(row, channel) pairs by falling gain, one channel per row, within the capacities."""
    order = np.dstack(np.unravel_index(np.argsort(-gain, axis=None, kind="stable"), gain.shape))[0]
    used: dict[str, int] = {}
    taken, out = set(), []
    for i, j in order:
        if len(out) == total or gain[i, j] <= 0:
            break
        ch = channels[j]
        if i in taken or used.get(ch, 0) >= capacity.get(ch, total):
            continue
        taken.add(i)
        used[ch] = used.get(ch, 0) + 1
        out.append((i, ch))
    return out


def compare_targeting(settings: Settings, month: str) -> dict:
    """Lists for snapshot ``month`` scored exactly with the world's true effects of the
    contact month, at the same capacity:

    - ``risk``: ranked by value at risk; ``uplift``: as published (the champion's ranking,
      or the risk ranking when there is none); ``learned``: the newest uplift model's
      ranking, champion or not (what the gate turned down would have done);
    - ``oracle``: the true effects, greedily under the channel capacities;
    - ``knowable``: the same for the true effects with the snapshot month's own decisions
      replaced by their chance (``knowable_effects``): the bound for a list made from data.

    Everyone gets the offer the reasons pick (the same for all), so what is compared is
    whom to contact and through which channel. The capacity is the risk list's size and
    the configured channel capacities.
    """
    from models import registry
    from models.score import scores_path
    from pipelines.publish.run import decide, with_snapshot

    scored = with_snapshot(settings, pd.read_parquet(scores_path(settings.path("scores"), month)),
                           month)  # fmt: skip
    if "offer_code" not in scored:  # scored with explain: listed: the offers of everyone
        from models.score import explain_subscribers, scored_by

        why = explain_subscribers(settings.path("features"), settings.reasons,
                                  scored_by(scored, settings.model.name), month, scored["msisdn"])  # fmt: skip
        scored = scored.merge(why, on="msisdn", how="left")
    contact = str(pd.Period(month, freq="M") + 1)
    truth = true_effects(settings.path("truth"), contact)
    offers = scored.set_index("msisdn")["offer_code"].reindex(truth["msisdn"]).fillna("")
    offers = offers.where(offers != "", FALLBACK_OFFER).to_numpy()
    picks = {}
    for name, use in (("risk", False), ("uplift", True)):
        d, ranking = decide(settings, scored, month, use_uplift=use)
        picks[name] = (d.loc[d["selected"], ["msisdn", "channel"]], ranking["method"])
    latest = registry.latest_version(settings.tracking_uri(), settings.uplift.name)
    if latest is not None:
        d, ranking = decide(settings, scored, month, uplift_version=latest)
        picks["learned"] = (d.loc[d["selected"], ["msisdn", "channel"]],
                            f"{ranking['method']} v{latest.version}")  # fmt: skip
    k = len(picks["risk"][0])
    channels = sorted({c for p, _ in picks.values() for c in p["channel"]} | {"sms_app"})
    eff = np.column_stack([
        np.array([truth.at[i, effect_column(ch, of)] for i, of in zip(truth.index, offers, strict=True)])
        for ch in channels
    ])  # fmt: skip
    value = settings.economics.value(
        scored.set_index("msisdn")["arpu_3m"].reindex(truth["msisdn"]).to_numpy()
    )
    pos = {m: i for i, m in enumerate(truth["msisdn"])}
    out: dict[str, dict] = {}
    for name, (sel, method) in picks.items():
        sel = sel.head(k)
        rows = np.array([pos.get(m, -1) for m in sel["msisdn"]], dtype=int)
        cols = np.array([channels.index(c) for c in sel["channel"]], dtype=int)
        ok = rows >= 0
        out[name] = _saved(method, eff, value, rows[ok], cols[ok])
    hazard = pd.read_parquet(settings.path("truth") / "hazard" / f"month={month}.parquet")
    cap = settings.publish.capacity_per_channel
    for name, rank in (("oracle", eff), ("knowable", knowable_effects(eff, truth, hazard))):
        best = _greedy(-rank, channels, cap, k)
        rows = np.array([i for i, _ in best], dtype=int)
        cols = np.array([channels.index(ch) for _, ch in best], dtype=int)
        out[name] = _saved("true effects" if name == "oracle" else "true effects, month T "
                           "decisions as chances", eff, value, rows, cols)  # fmt: skip
    return out


def _saved(method: str, eff: np.ndarray, value: np.ndarray, rows, cols) -> dict:
    """Expected churners and value saved by contacting ``rows`` through channel ``cols``."""
    e = eff[rows, cols] if len(rows) else np.zeros(0)
    return {"method": method, "contacted": int(len(rows)), "saved": float(-e.sum()),
            "saved_value": float(-(e * value[rows]).sum()) if len(rows) else 0.0}  # fmt: skip
