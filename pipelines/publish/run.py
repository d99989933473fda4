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
from models.score import scores_path
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


def _contact_history(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    h = pd.read_csv(path, dtype={"msisdn": str})
    h["contacted_at"] = pd.to_datetime(h["contacted_at"])
    return h


def _decide(settings: Settings, scored: pd.DataFrame, month: str) -> pd.DataFrame:
    """Every scored subscriber ranked, with the policy's verdict (selected, channel, exclusion)."""
    cfg = settings.publish
    as_of = (pd.Period(month, freq="M") + 1).start_time - pd.Timedelta(seconds=1)
    values = policy.expected_values(scored, settings.economics)
    ranked = policy.rank(values)
    return policy.apply_policy(
        ranked, cfg, economics=settings.economics, as_of=as_of,
        contact_history=_contact_history(settings.crm_file(cfg.contact_history, "contact_history.csv")),
        do_not_contact=_read_ids(settings.crm_file(cfg.do_not_contact, "do_not_contact.csv"),
                                 NumberPlan.from_config(settings.numbering)),
        seed=settings.model.seed + int(month.replace("-", "")),
    )  # fmt: skip


def _swap_in(settings: Settings, stage: Path, final: Path) -> None:
    """Replace the published month by the staged one; readers see the old or the new, whole."""
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.replace(final, old)
    share(settings, stage)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)


def publish(settings: Settings, month: str | None = None) -> dict:
    """Apply the outreach policy to the scores and write the month's lists, manifest, diff and report."""
    month = month or store.latest_month(settings.path("features"))
    scored = pd.read_parquet(scores_path(settings.path("scores"), month))
    decided = _decide(settings, scored, month)
    root = settings.path("outputs") / "retention"
    made = lists.build(settings, decided, month, root)
    lst, diff = made.rows, made.diff

    final = root / month
    stage = root / f".{month}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    exports.write_all_formats(lst, stage, "all")
    for ch, part in lst.groupby("channel"):
        exports.write_all_formats(part.reset_index(drop=True), stage, str(ch))
    diff.to_csv(stage / "diff.csv", index=False, encoding="utf-8-sig")
    counts = {
        "scored": len(scored),
        "selected": int(len(lst)),
        "contact": int((~lst.control_group).sum()),
        "control_group": int(lst.control_group.sum()),
        "complaint_callbacks": int(lst.complaint_callback.sum()),
        "by_channel": lst.channel.value_counts().to_dict(),
        "by_tier": lst.value_tier.value_counts().to_dict(),
        "excluded": decided.exclusion.value_counts().to_dict(),
        "diff": diff.change.value_counts().to_dict(),
    }
    manifest = {
        "snapshot_month": month,
        "model": settings.model.name,
        "model_version": str(scored["model_version"].iat[0]),
        "run_id": str(scored["run_id"].iat[0]),
        "tracking_uri": settings.tracking_uri(),
        "config_fingerprint": settings.fingerprint(),
        "published_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "msisdn_masked": not settings.publish.show_full_msisdn,
        "subscriber_key": {"kind": "HMAC-SHA256", "key_id": made.key_id},
        "counts": counts,
        "files": sorted(p.name for p in stage.iterdir()) + ["manifest.json", "report.html"],
    }
    (stage / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
    )
    (stage / "report.html").write_text(
        report.render(settings.tracking_uri(), month, lst, diff, scored, manifest),
        encoding="utf-8",
    )
    _swap_in(settings, stage, final)
    log.info("published %s: %s", final, counts)
    return manifest
