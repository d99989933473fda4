"""Publish a month: the outreach policy on the scores, the lists, their exports, manifest and report.

Everything is written to a staging folder and swapped in whole, so a retention team
never opens half a month. The flows and the CLI call this through :mod:`pipelines.steps`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features import store
from models.score import explain_subscribers, scored_by, scores_path
from pipelines.campaigns import crm, ledger, uplift
from pipelines.campaigns.run import contact_history
from pipelines.config import Settings
from pipelines.lake.numbers import NumberPlan, normalize_msisdn
from pipelines.privacy import share
from pipelines.publish import exports, lists, policy, report

log = logging.getLogger(__name__)


def _read_ids(path: Path, plan: NumberPlan) -> set[str]:
    if not path.exists():
        return set()
    df = pd.read_csv(path, dtype=str)
    col = "msisdn" if "msisdn" in df.columns else df.columns[0]
    return set(filter(None, normalize_msisdn(pa.array(df[col].astype(str)), plan).to_pylist()))


# snapshot features the lists need (win-back, renewal, reminders); read from the snapshot
# when the scores file does not carry them
SNAPSHOT_COLUMNS = [
    "calls_1m", "data_mb_1m", "calls_change_vs_prev3m", "data_mb_change_vs_prev3m",
    "has_contract", "months_to_contract_end", "alert_bill", "arpu_1m",
    "points_balance", "points_redeemed_6m", "arrears",
]  # fmt: skip


def with_snapshot(settings: Settings, scored: pd.DataFrame, month: str) -> pd.DataFrame:
    """The scores with the snapshot columns they lack, joined on the number (internal)."""
    missing = [c for c in SNAPSHOT_COLUMNS if c not in scored.columns]
    if not missing:
        return scored
    try:
        snap = store.read_snapshots(settings.path("features"), [month])
    except FileNotFoundError:
        log.warning("no feature snapshot of %s: win-back, renewal and reminders are empty", month)
        return scored
    have = [c for c in missing if c in snap.columns]
    return scored.merge(snap[["msisdn", *have]], on="msisdn", how="left")


def _write_control(settings: Settings, control: pd.DataFrame, month: str) -> Path:
    """The held-out subscribers, full numbers, next to the scores (owner-only): for measurement."""
    path = scores_path(settings.path("scores"), month).with_name("control_group.parquet")
    tmp = path.with_name(f".{path.name}.tmp")
    keep = ["msisdn", "subscriber_key", "value_tier", "channel", "p_churn", "value",
            "value_at_risk", "expected_profit", "snapshot_month", "model_version"]  # fmt: skip
    control.reindex(columns=keep).to_parquet(tmp, index=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def decide(
    settings: Settings, scored: pd.DataFrame, month: str, *, use_uplift: bool = True,
    uplift_version=None,
) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Every scored subscriber ranked, with the policy's verdict, and how the ranking was made.

    With an uplift champion the ranking is by expected incremental value and the channel
    by the largest gain; without one, by value at risk and the tier's channel, and the
    manifest says why. ``uplift_version``: rank with that uplift model instead (comparisons).
    """
    cfg = settings.publish
    as_of = (pd.Period(month, freq="M") + 1).start_time - pd.Timedelta(seconds=1)
    values = policy.expected_values(scored, settings.economics)
    effects, why = (
        uplift.effects(settings, month, scored, uplift_version)
        if use_uplift
        else (None, "risk ranking asked for")
    )
    method = "risk"
    if effects is not None:
        values = policy.uplift_gains(values.merge(effects, on="msisdn", how="left"),
                                     settings.economics)  # fmt: skip
        method = "uplift"
    log.info("ranking: %s", why)
    ranked = policy.rank(values)
    decided = policy.apply_policy(
        ranked, cfg, economics=settings.economics, as_of=as_of,
        contact_history=crm.treated(contact_history(settings)),
        do_not_contact=_read_ids(settings.crm_file(cfg.do_not_contact, "do_not_contact.csv"),
                                 NumberPlan.from_config(settings.numbering)),
        seed=settings.model.seed + int(month.replace("-", "")),
    )  # fmt: skip
    return decided, {"method": method, "why": why}


def _with_reasons(
    settings: Settings, decided: pd.DataFrame, month: str, published: dt.date
) -> pd.DataFrame:
    """The decided rows with SHAP reasons for everyone any list (or the control) holds.

    Scores made with ``model.explain: listed`` carry none: the lists are drawn first
    (their rules need no reasons), then their rows are explained with the model that
    scored them. Scores explained in full are returned as they are.
    """
    if "reason_1" in decided.columns:
        return decided
    rows, named, control = lists.split(decided, settings.publish, published)
    who = set(rows["msisdn"]) | set(control["msisdn"])
    for part in named.values():
        who |= set(part["msisdn"])
    version = scored_by(decided, settings.model.name)
    why = explain_subscribers(settings.path("features"), settings.reasons, version, month, who)
    log.info("explained the %d subscribers on the month's lists (SHAP reasons)", len(why))
    return decided.merge(why, on="msisdn", how="left")


def _swap_in(settings: Settings, stage: Path, final: Path) -> None:
    """Replace the published month by the staged one; readers see the old or the new, whole."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.replace(final, old)
    share(settings, stage)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def _timing_model(settings: Settings, scored: pd.DataFrame) -> str | None:
    """The timing model behind ``expected_leave_month`` (None: the column is empty this month)."""
    if "timing_model_version" not in scored or scored["timing_model_version"].isna().all():
        return None
    return f"{settings.timing.name} v{scored['timing_model_version'].dropna().iat[0]}"


def first_published(folder: Path) -> dt.date | None:
    """The day a month's lists were first published, from its manifest (None if never)."""
    try:
        meta = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        return dt.date.fromisoformat(meta["published_on"])
    except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError):
        return None


def publish(settings: Settings, month: str | None = None, published: dt.date | None = None) -> dict:
    """Apply the outreach policy to the scores and write the month's lists, manifest, diff and report.

    ``published`` is the day the lists appear; callback due dates are judged against it.
    By default it is the day the month was first published (a rerun keeps the teams'
    due dates), else today (UTC).
    """
    month = month or store.latest_month(settings.path("features"))
    root = settings.path("outputs") / "retention"
    published = published or first_published(root / month) or dt.datetime.now(dt.UTC).date()
    scored = with_snapshot(
        settings, pd.read_parquet(scores_path(settings.path("scores"), month)), month
    )
    decided, ranking = decide(settings, scored, month)
    decided = _with_reasons(settings, decided, month, published)
    made = lists.build(settings, decided, month, root, published)
    lst, diff = made.rows, made.diff
    control_file = _write_control(settings, made.control, month)
    ledger.record(
        settings.path("campaigns"), month,
        ledger.entries(decided, month, published, ranking["method"]),
    )  # fmt: skip

    final = root / month
    stage = root / f".{month}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    exports.write_all_formats(lst, stage, "all")
    for name, part in made.lists.items():
        exports.write_all_formats(part, stage, name, xlsx=False)
    lang = settings.publish.language
    about = {"snapshot_month": month, "model_version": str(scored["model_version"].iat[0]),
             "published_on": str(published)}  # fmt: skip
    sheets = exports.write_workbook(made.lists, stage / f"retention_{month}.xlsx", lang, about)
    diff.to_csv(stage / "diff.csv", index=False, encoding="utf-8-sig")
    counts = {
        "scored": len(scored),
        "selected": int(len(lst)),
        "contact": int(len(lst)),
        "control_group": len(made.control),
        "complaint_callbacks": int(lst.complaint_callback.sum()),
        "by_channel": lst.channel.value_counts().to_dict(),
        "by_tier": lst.value_tier.value_counts().to_dict(),
        "lists": {name: len(part) for name, part in made.lists.items()},
        "excluded": decided.exclusion.value_counts().to_dict(),
        "diff": diff.change.value_counts().to_dict(),
    }
    manifest = {
        "snapshot_month": month,
        "published_on": str(published),
        "model": settings.model.name,
        "model_version": str(scored["model_version"].iat[0]),
        "run_id": str(scored["run_id"].iat[0]),
        "timing_model": _timing_model(settings, scored),
        "tracking_uri": settings.tracking_uri(),
        "config_fingerprint": settings.fingerprint(),
        "published_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "msisdn_masked": not settings.publish.show_full_msisdn,
        "subscriber_key": {"kind": "HMAC-SHA256", "key_id": made.key_id},
        "counts": counts,
        "ranking": ranking,
        "control_group_file": f"<scores>/{month}/{control_file.name}",
        "workbook": {"file": f"retention_{month}.xlsx", "language": lang, "sheets": sheets},
        "files": sorted(p.name for p in stage.iterdir()) + ["manifest.json", "report.html"],
    }
    (stage / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
    )
    # the report is made from the contact rows; the control group is counted in the manifest
    (stage / "report.html").write_text(
        report.render(settings.tracking_uri(), month, lst, diff, scored, manifest, settings),
        encoding="utf-8",
    )
    _swap_in(settings, stage, final)
    log.info("published %s: %s", final, counts)
    return manifest
