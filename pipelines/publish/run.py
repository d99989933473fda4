"""Score the latest snapshot with the champion, explain it, and publish the retention lists.

Library functions with explicit paths; the flows and the CLI call them through
:mod:`pipelines.steps`. Files are written to a temporary folder and swapped in.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from jinja2 import Template
from mlflow.tracking import MlflowClient

from features import store
from models import explain
from pipelines.config import Settings
from pipelines.lake import views
from pipelines.lake.numbers import NumberPlan, mask_msisdn, mask_text, normalize_msisdn
from pipelines.privacy import key_id, previous_secret, share, subscriber_keys, subscriber_secret
from pipelines.publish import policy

log = logging.getLogger(__name__)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class ScoreResult:
    month: str
    path: str
    scored: int
    model_version: str
    run_id: str
    shap_max_abs_diff: float
    top_drivers: list[str]


def load_champion(settings: Settings):
    from models.train import setup_mlflow

    setup_mlflow(settings)
    client = MlflowClient()
    name = settings.model.name
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException as e:
        raise RuntimeError(f"no champion registered for model '{name}': train first") from e
    model = mlflow.sklearn.load_model(f"models:/{name}@champion")
    return model, str(mv.version), mv.run_id


def score(settings: Settings, month: str | None = None) -> ScoreResult:
    """Probability, SHAP reasons and value for every subscriber of the snapshot."""
    month = month or store.latest_month(settings.path("features"))
    model, version, run_id = load_champion(settings)
    df = store.read_snapshots(settings.path("features"), [month])
    feats = list(model.feature_names_in_)
    X = df[feats].astype(float)
    p = model.predict_proba(X)[:, 1]
    sv, _ = explain.shap_values(model, X)
    n = min(settings.model.explain_sample, len(X))
    sample = X.sample(n, random_state=0) if n < len(X) else X
    ref = explain.shap_reference(model, sample)
    fast = sv[X.index.get_indexer(sample.index)]
    diff = float(np.max(np.abs(ref - fast))) if n else 0.0
    groups = explain.group_contributions(sv, feats, settings.reasons)
    reasons = explain.reason_texts(groups, df[feats], settings.reasons)
    importance = explain.global_importance(sv, feats)
    out = pd.concat(
        [
            df[
                [
                    "msisdn",
                    "snapshot_month",
                    "payment_type",
                    "value_tier",
                    "arpu_3m",
                    "days_since_complaint_resolved",
                ]
            ].reset_index(drop=True),
            pd.DataFrame({"p_churn": p}),
            groups.add_prefix("shap_group_").reset_index(drop=True),
            reasons.reset_index(drop=True),
        ],
        axis=1,
    )
    out["model_version"] = version
    out["run_id"] = run_id
    target = settings.path("scores") / month / "scores.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".scores.parquet.tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    # global explanation, logged to the champion's run (no phone numbers: features only)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, fig in explain.global_plots(sv, X).items():
            fig.savefig(d / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        importance.to_csv(d / "shap_importance.csv", index=False)
        (d / "shap_check.json").write_text(json.dumps({"rows_checked": n, "max_abs_diff": diff}))
        MlflowClient().log_artifacts(run_id, str(d), artifact_path=f"explanations/{month}")
    log.info(
        "scored %d subscribers of %s with %s v%s; SHAP fast path vs shap: max |diff| %.2e",
        len(out),
        month,
        settings.model.name,
        version,
        diff,
    )
    return ScoreResult(
        month, str(target), len(out), version, run_id, diff, importance.feature.head(10).tolist()
    )


def neutralise(value):
    """A text a spreadsheet would run as a formula is made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_text(value):
    """Free text as it may leave the building: numbers inside it masked, formulas inert."""
    return neutralise(mask_text(value)) if isinstance(value, str) else value


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


def _last_complaint(lake: Path, month: str) -> pd.DataFrame:
    con = duckdb.connect()
    views.register_views(con, lake, max_month=month, suffix="_t")
    nxt = (pd.Period(month, freq="M") + 1).start_time.strftime("%Y-%m-%d")
    return con.sql(
        f"""SELECT msisdn, arg_max(description, updated_at) AS last_complaint
        FROM complaints_t WHERE updated_at < TIMESTAMP '{nxt}' GROUP BY msisdn"""
    ).df()


LIST_COLUMNS = [
    "list_rank", "msisdn", "value_tier", "channel", "p_churn", "value", "value_at_risk", "expected_profit",
    "complaint_callback", "callback_due", "control_group",
    "reason_1", "reason_2", "reason_3",
    "reason_1_zh", "reason_2_zh", "reason_3_zh", "reason_1_en", "reason_2_en", "reason_3_en",
    "last_complaint", "snapshot_month", "model_version", "subscriber_key",
]  # fmt: skip


def _match_keys(settings: Settings, decided: pd.DataFrame, prev_folder: Path, secret: bytes) -> str:
    """The column of ``decided`` that joins with last month's published keys.

    After a key rotation last month's list carries keys under the previous secret; they
    are computed for this month's subscribers too (internally, never published).
    """
    try:
        meta = json.loads((prev_folder / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        meta = {}
    prev_id = (meta.get("subscriber_key") or {}).get("key_id")
    if prev_id in (None, key_id(secret)):
        return "subscriber_key"
    old = previous_secret(settings)
    if old is not None and key_id(old) == prev_id:
        decided["_previous_key"] = subscriber_keys(decided["msisdn"], old)
        return "_previous_key"
    log.warning(
        "the list of %s was published under subscriber key %s, which is no longer here: "
        "this diff cannot match anyone and shows everyone as new",
        prev_folder.name, prev_id,
    )  # fmt: skip
    decided["_previous_key"] = None
    return "_previous_key"


def _write_xlsx(df: pd.DataFrame, path: Path, sheet: str) -> None:
    import xlsxwriter

    wb = xlsxwriter.Workbook(
        str(path),
        {"strings_to_formulas": False, "strings_to_numbers": False, "strings_to_urls": False},
    )
    ws = wb.add_worksheet(sheet[:31])
    head = wb.add_format(
        {
            "bold": True,
            "bg_color": "#1F4E78",
            "font_color": "#FFFFFF",
            "border": 1,
            "text_wrap": True,
        }
    )
    pct = wb.add_format({"num_format": "0.0%"})
    money = wb.add_format({"num_format": "#,##0.00"})
    for j, c in enumerate(df.columns):
        ws.write_string(0, j, str(c), head)
        width = (
            min(60, max(len(str(c)), *(len(str(v)) for v in df[c].head(200))) + 2)
            if len(df)
            else len(str(c)) + 2
        )
        fmt = (
            pct
            if c == "p_churn"
            else money
            if c in ("value", "value_at_risk", "expected_profit")
            else None
        )
        ws.set_column(j, j, width, fmt)
    for i, row in enumerate(df.itertuples(index=False), start=1):
        for j, v in enumerate(row):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            if isinstance(v, bool | np.bool_):
                ws.write_boolean(i, j, bool(v))
            elif isinstance(v, int | float | np.integer | np.floating):
                ws.write_number(i, j, float(v))
            else:
                ws.write_string(i, j, str(v))
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(len(df), 1), len(df.columns) - 1)
    wb.close()


def _write_all_formats(df: pd.DataFrame, folder: Path, stem: str) -> None:
    df.to_csv(folder / f"{stem}.csv", index=False, encoding="utf-8-sig")
    _write_xlsx(df, folder / f"{stem}.xlsx", stem)
    df.to_parquet(folder / f"{stem}.parquet", index=False)


def _diff(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    decided: pd.DataFrame,
    match_key: str = "subscriber_key",
) -> pd.DataFrame:
    """New / still on the list / dropped against last month's list.

    ``match_key`` is the column of ``current`` and ``decided`` holding each subscriber's
    key under the secret last month's list was published with (after a key rotation
    that is the previous secret), so the months still join.
    """
    cur = current[["subscriber_key", "msisdn", "list_rank"]].assign(_match=current[match_key])
    if previous is None:
        return cur.drop(columns="_match").assign(change="new", why="first list")
    prev = previous[["subscriber_key", "msisdn", "list_rank"]].rename(
        columns={"list_rank": "previous_rank", "subscriber_key": "_match"}
    )
    m = cur.merge(prev.drop(columns="msisdn"), on="_match", how="left")
    m["change"] = np.where(m.previous_rank.isna(), "new", "still_on_list")
    m["why"] = np.where(m.previous_rank.isna(), "newly at risk", "still at risk")
    gone = prev[~prev._match.isin(cur._match)].copy()
    gone["subscriber_key"] = gone["_match"]
    why = decided.set_index(match_key)["exclusion"]
    gone["why"] = gone._match.map(why).fillna("left the base (churned or no longer active)")
    gone["why"] = gone["why"].replace(
        {
            "not_profitable": "no longer profitable to contact",
            "over_capacity": "below the capacity cut",
        }
    )
    gone["change"] = "dropped"
    return pd.concat([m, gone], ignore_index=True)[
        ["subscriber_key", "msisdn", "change", "why", "list_rank", "previous_rank"]
    ]


REPORT = Template(
    """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Retention list {{ month }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#1F4E78;color:#fff}
img{max-width:520px;margin:0 1em 1em 0}</style></head><body>
<h1>Retention list {{ month }}</h1>
<p>Model <b>{{ model }}</b> v{{ version }} (MLflow run <code>{{ run_id }}</code>). {{ selected }} subscribers selected out of
{{ scored }} scored; {{ control }} held out as control group; {{ callbacks }} complaint callbacks due.
Expected value at risk on the list: {{ "{:,.0f}".format(var) }} CNY; expected retention profit: {{ "{:,.0f}".format(profit) }} CNY.</p>
<h2>How good is the model (out-of-time test {{ test_period }})</h2>
<p>AUC {{ "%.3f"|format(metrics.roc_auc) }}, top-decile lift {{ "%.2f"|format(metrics.top_decile_lift) }},
calibration error {{ "%.4f"|format(metrics.ece) }}.</p>
{% for img in images %}<img src="data:image/png;base64,{{ img }}">{% endfor %}
<h2>Top drivers (mean |SHAP|)</h2>{{ drivers }}
<h2>List size by tier and channel</h2>{{ by_tier }}{{ by_channel }}
<h2>Main reasons on the list</h2>{{ by_reason }}
<h2>Change against last month</h2>{{ diff }}
</body></html>"""
)


def publish(settings: Settings, month: str | None = None) -> dict:
    """Apply the outreach policy to the scores and write the month's lists, manifest, diff and report."""
    cfg = settings.publish
    month = month or store.latest_month(settings.path("features"))
    scored = pd.read_parquet(settings.path("scores") / month / "scores.parquet")
    as_of = (pd.Period(month, freq="M") + 1).start_time - pd.Timedelta(seconds=1)
    values = policy.expected_values(scored, settings.economics)
    ranked = policy.rank(values)
    decided = policy.apply_policy(
        ranked, cfg, economics=settings.economics, as_of=as_of,
        contact_history=_contact_history(settings.crm_file(cfg.contact_history, "contact_history.csv")),
        do_not_contact=_read_ids(settings.crm_file(cfg.do_not_contact, "do_not_contact.csv"),
                                 NumberPlan.from_config(settings.numbering)),
        seed=settings.model.seed + int(month.replace("-", "")),
    )  # fmt: skip
    secret = subscriber_secret(settings)
    decided["subscriber_key"] = subscriber_keys(decided["msisdn"], secret)
    root = settings.path("outputs") / "retention"
    previous = sorted(
        p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".") and p.name < month
    )
    prev_list, match_key = None, "subscriber_key"
    if previous:
        prev_list = pd.read_parquet(previous[-1] / "all.parquet")
        match_key = _match_keys(settings, decided, previous[-1], secret)
    chosen = decided[decided.selected].copy()
    chosen = chosen.merge(_last_complaint(settings.path("lake"), month), on="msisdn", how="left")
    if not cfg.show_full_msisdn:
        chosen["msisdn"] = mask_msisdn(pa.array(chosen["msisdn"])).to_pylist()
    keep = [*LIST_COLUMNS, *([match_key] if match_key != "subscriber_key" else [])]
    lst = chosen.reindex(columns=keep).sort_values("list_rank").reset_index(drop=True)
    for c in lst.columns:
        if c == "msisdn" and cfg.show_full_msisdn:
            lst[c] = lst[c].map(neutralise)  # asked for on purpose: left whole
        elif lst[c].dtype == object or pd.api.types.is_string_dtype(lst[c]):
            lst[c] = lst[c].map(safe_text)
    lst["callback_due"] = (
        lst["callback_due"].astype(str).replace({"None": "", "NaT": "", "nan": ""})
    )

    final = root / month
    diff = _diff(lst, prev_list, decided, match_key)
    lst = lst[LIST_COLUMNS]
    stage = root / f".{month}.tmp"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    _write_all_formats(lst, stage, "all")
    for ch, part in lst.groupby("channel"):
        _write_all_formats(part.reset_index(drop=True), stage, str(ch))
    diff.to_csv(stage / "diff.csv", index=False, encoding="utf-8-sig")
    version = str(scored["model_version"].iat[0])
    run_id = str(scored["run_id"].iat[0])
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
        "model_version": version,
        "run_id": run_id,
        "tracking_uri": settings.tracking_uri(),
        "config_fingerprint": settings.fingerprint(),
        "published_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "msisdn_masked": not cfg.show_full_msisdn,
        "subscriber_key": {"kind": "HMAC-SHA256", "key_id": key_id(secret)},
        "counts": counts,
        "files": sorted(p.name for p in stage.iterdir()) + ["manifest.json", "report.html"],
    }
    (stage / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False, default=str), encoding="utf-8"
    )
    (stage / "report.html").write_text(
        _report(settings, month, lst, diff, scored, manifest), encoding="utf-8"
    )
    old = root / f".{month}.old"
    if final.exists():
        os.replace(final, old)
    share(settings, stage)
    os.replace(stage, final)
    shutil.rmtree(old, ignore_errors=True)
    log.info("published %s: %s", final, counts)
    return manifest


def _report(
    settings: Settings,
    month: str,
    lst: pd.DataFrame,
    diff: pd.DataFrame,
    scored: pd.DataFrame,
    manifest: dict,
) -> str:
    run_id = manifest["run_id"]
    client = MlflowClient()
    run = client.get_run(run_id)
    metrics = {
        k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")
    }
    images = []
    with tempfile.TemporaryDirectory() as d:
        for name in ("evaluation/gains_lift.png", "evaluation/calibration.png"):
            try:
                p = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=d
                )
                images.append(base64.b64encode(Path(p).read_bytes()).decode())
            except Exception as e:  # a report without a chart is still a report
                log.warning("chart %s not available: %s", name, e)
        try:
            p = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"explanations/{month}/shap_importance.csv", dst_path=d
            )
            drivers = pd.read_csv(p).head(12).to_html(index=False, float_format="%.4f")
        except Exception:
            drivers = "<p>not available</p>"
    reasons = pd.concat([lst[f"reason_{k}"] for k in (1, 2, 3)]).dropna()
    by_reason = reasons.value_counts().rename("subscribers (any of top 3)").to_frame().to_html()
    return REPORT.render(
        month=month, model=manifest["model"], version=manifest["model_version"], run_id=run_id,
        selected=len(lst), scored=len(scored), control=int(lst.control_group.sum()),
        callbacks=int(lst.complaint_callback.sum()), var=float(lst.value_at_risk.sum()),
        profit=float(lst.expected_profit.sum()), test_period=run.data.params.get("test_period", ""),
        metrics=metrics, images=images, drivers=drivers,
        by_tier=lst.value_tier.value_counts().to_frame("subscribers").to_html(),
        by_channel=lst.channel.value_counts().to_frame("subscribers").to_html(),
        by_reason=by_reason, diff=diff.groupby(["change", "why"]).size().rename("subscribers").to_frame().to_html(),
    )  # fmt: skip
