"""Measure every campaign whose horizon has passed: the system's lists and the CRM's own.

The ledger says whom each published list put in the treated and control groups; the
CRM's contact history adds the operator's other randomised campaigns (pilots, targeted
campaigns with a hold-out) and, for the lists, who was actually reached. Outcomes are
the churn labels of the feature snapshots, so a campaign is measured exactly as the
model is judged.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math

import pandas as pd

from features import store
from pipelines.campaigns import crm, ledger, measure
from pipelines.config import Settings
from pipelines.lake.numbers import NumberPlan
from pipelines.lake.store import write_atomically

log = logging.getLogger(__name__)


def contact_history(settings: Settings) -> pd.DataFrame | None:
    """The CRM's contact history, checked (None when the CRM has delivered none)."""
    path = settings.crm_file(settings.campaigns.contact_history, "contact_history.csv")
    return crm.read_contact_history(path, NumberPlan.from_config(settings.numbering))


def _crm_campaigns(history: pd.DataFrame, features, economics) -> pd.DataFrame:
    """The CRM's own randomised campaigns as experiment rows, valued from the snapshot before."""
    rows = history.copy()
    rows["snapshot_month"] = (pd.PeriodIndex(rows["contact_month"], freq="M") - 1).strftime("%Y-%m")
    have = set(store.months(features))
    parts = []
    for month, part in rows.groupby("snapshot_month"):
        if month in have:
            snap = store.read_snapshots(features, [month], ["msisdn", "value_tier", "arpu_3m"])
            part = part.merge(snap, on="msisdn", how="left")
            part["value"] = economics.value(part["arpu_3m"])
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else rows
    return out.reindex(columns=[*ledger.COLUMNS, "reached", "accepted"])


def experiment_rows(settings: Settings) -> pd.DataFrame:
    """Every treated or held-out row of every campaign, with reached/accepted where known."""
    lists = ledger.read(settings.path("campaigns"))
    history = contact_history(settings)
    feats = settings.path("features")
    if history is None or history.empty:
        return lists.assign(reached=math.nan, accepted=math.nan)
    names = set(lists["campaign"])
    own = history[~history["campaign"].isin(names)]
    outcome = history[history["campaign"].isin(names)]
    if len(outcome):  # the CRM reports who on a list was reached and who accepted
        key = ["campaign", "msisdn"]
        got = outcome[[*key, "reached", "accepted"]].drop_duplicates(key, keep="last")
        lists = lists.merge(got, on=key, how="left")
    else:
        lists = lists.assign(reached=math.nan, accepted=math.nan)
    parts = [lists, _crm_campaigns(own, feats, settings.economics)] if len(own) else [lists]
    return pd.concat([p for p in parts if len(p)], ignore_index=True)


def measure_all(settings: Settings) -> dict:
    """Results of every observed campaign, written to ``<campaigns>/results.parquet``.

    Returns a summary: per campaign its overall line, the campaigns still waiting, and
    a power note for the latest list.
    """
    cfg = settings.campaigns
    rows = measure.with_outcomes(experiment_rows(settings), settings.path("features"))
    table = measure.results(rows, cfg)
    folder = settings.path("campaigns")
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    write_atomically(folder / "results.parquet", buf.getvalue())
    overall = table[table["by"] == "all"]
    summary = {
        "measured_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "campaigns": json.loads(overall.to_json(orient="records")),
        "waiting": json.loads(measure.pending(rows).to_json(orient="records")),
        "power": _power_note(rows, cfg, settings.economics.acceptance_rate),
    }
    write_atomically(
        folder / "summary.json", json.dumps(summary, indent=1, ensure_ascii=False).encode()
    )
    log.info("campaigns measured: %d observed, %d waiting", len(overall), len(summary["waiting"]))
    summary["mlflow_run_id"] = log_to_mlflow(settings, summary, table)
    return summary


def _power_note(rows: pd.DataFrame, cfg, acceptance: float) -> dict:
    """How many months of the latest list's size until its expected effect is detectable."""
    lists = rows[rows["campaign"].astype(str).str.startswith("list-")]
    if lists.empty:
        return {}
    last = lists[lists["snapshot_month"] == lists["snapshot_month"].max()]
    t, c = last[last["group"] == "treated"], last[last["group"] == "control"]
    expected = (
        -float(t["uplift"].mean())
        if t["uplift"].notna().any()
        else float(0.3 * t["p_churn"].mean())
    )  # without an uplift model: the DOMAIN figure for a contacted leaver, on the risk
    p_c = float(last["p_churn"].mean())
    months = measure.months_to_detect(p_c, len(t), len(c), expected, cfg.confidence, cfg.power)
    return {
        "campaign": str(last["campaign"].iat[0]), "n_treated": len(t), "n_control": len(c),
        "expected_difference": -expected, "months_to_detect": months,
    }  # fmt: skip


def log_to_mlflow(settings: Settings, summary: dict, table: pd.DataFrame) -> str | None:
    """One MLflow run per measurement: each observed campaign's saved churn as metrics.

    The results table has no numbers in it (groups and levels only), so it is logged
    whole as an artifact. Returns the run id, or None when nothing was observed yet.
    """
    import mlflow

    from models.registry import setup_tracking

    if table.empty:
        return None
    setup_tracking(settings.tracking_uri(), settings.model.experiment,
                   settings.path("mlflow") / "artifacts")  # fmt: skip
    overall = table[table["by"] == "all"]
    with mlflow.start_run(run_name=f"campaigns {summary['measured_at'][:10]}") as run:
        mlflow.set_tags({"kind": "campaign-measurement", "campaigns": len(overall)})
        for r in overall.itertuples():
            step = int(r.contact_month.replace("-", ""))
            for name in ("difference", "low", "high", "saved", "saved_value"):
                v = getattr(r, name)
                if pd.notna(v):
                    mlflow.log_metric(f"{r.campaign.split('-')[0]}_{name}", float(v), step=step)
        mlflow.log_table(table, artifact_file="campaign_results.json")
        mlflow.log_dict(summary, "campaign_summary.json")
    return run.info.run_id
