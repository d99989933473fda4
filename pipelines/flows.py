"""Prefect flows: thin wiring of :mod:`pipelines.steps` into tasks, with artifacts for people.

Every step is a flow of its own (run on demand) and a subflow of ``monthly_refresh``.
Import this module only after :func:`pipelines.runtime.prepare_environment`.
"""

from __future__ import annotations

import errno
import hashlib
import json
from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from features import store
from pipelines import steps
from pipelines.config import Settings, load_config
from pipelines.ingest.report import IngestFailed
from pipelines.lake.errors import ChurnError
from pipelines.steps import settings_lock


def _settings(settings: Settings | None) -> Settings:
    """The settings a run was given; a deployment started without them loads the defaults then."""
    return settings if settings is not None else load_config()


def _configured(t, s: Settings, **extra):
    """The task with the retry policy (and anything else) of *these* settings, not import-time ones."""
    o = s.orchestration
    return t.with_options(
        retries=o.task_retries,
        retry_delay_seconds=o.retry_delay_seconds,
        retry_condition_fn=_retry_transient,
        **extra,
    )


def _features_cache_key(context, parameters) -> str:
    """Features are reusable while the lake, the config and the written snapshots are unchanged."""
    s: Settings = parameters["settings"]
    h = hashlib.sha256(s.fingerprint().encode())
    h.update(json.dumps(parameters.get("months")).encode())
    for src in ("billing", "cdr", "complaints"):
        m = s.path("lake") / src / "_manifest.json"
        h.update(m.read_bytes() if m.exists() else b"-")
    h.update(store.cache_token(s.path("features")).encode())
    return "features-" + h.hexdigest()[:24]


# OS errors that stay the same however often the step is run again
_PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


def is_transient(exc: BaseException) -> bool:
    """Whether running the step again can help: only the fault drill and passing OS trouble.

    Bad input, a missing file or champion, a config error, a held lock or a failed ingest
    fail the same way on every attempt; retrying them only delays the message.
    """
    if isinstance(exc, (ChurnError, IngestFailed)):
        return False
    if isinstance(exc, steps.InjectedFault):
        return True
    if isinstance(exc, OSError):
        return not isinstance(exc, _PERMANENT_OS_ERRORS) and exc.errno not in _PERMANENT_ERRNOS
    return False


def _retry_transient(task, task_run, state) -> bool:
    """Prefect's ``retry_condition_fn(task, task_run, state)``: retry transient errors only."""
    exc = state.data
    return isinstance(exc, BaseException) and is_transient(exc)


def _run_name(prefix: str):
    """A flow-run name like ``publish 2025-12`` (``latest`` when no month is given), for the UI."""

    def name() -> str:
        from prefect.runtime import flow_run

        month = (flow_run.parameters or {}).get("month")
        return f"{prefix} {month or 'latest'}"

    name.__name__ = f"{prefix.replace('-', '_')}_run_name"
    return name


def _features_run_name() -> str:
    """``build-features 2025-01..2025-12`` or ``build-features all``."""
    from prefect.runtime import flow_run

    months = sorted((flow_run.parameters or {}).get("months") or [])
    span = "all" if not months else months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"
    return f"build-features {span}"


def mlflow_run_link(settings: Settings, run_id: str) -> str:
    """The run's page in the configured MLflow UI, under the experiment it really belongs to."""
    from models import registry

    exp = registry.connect(settings.tracking_uri()).get_run(run_id).info.experiment_id
    ui = settings.orchestration.mlflow_ui_url.rstrip("/")
    return f"{ui}/#/experiments/{exp}/runs/{run_id}"


@task(name="ingest-landing")
def ingest_task(settings: Settings) -> dict:
    steps.fault_drill(settings, "ingest")
    try:
        report = steps.ingest(settings)
    except IngestFailed as e:
        create_table_artifact(
            key="ingest-reconciliation", table=e.report.table(), description=str(e)[:2000]
        )
        raise
    t = report.totals()
    create_table_artifact(
        key="ingest-reconciliation",
        table=report.table(),
        description=f"read {t['read']} = accepted {t['accepted']} + quarantined {t['quarantined']} + duplicates {t['duplicates']}",
    )
    get_run_logger().info("ingest totals: %s", t)
    return t


@task(name="build-features", cache_key_fn=_features_cache_key, persist_result=True)
def features_task(settings: Settings, months: list[str] | None = None) -> dict:
    steps.fault_drill(settings, "features")
    rep = steps.build_features(settings, months)
    rows = [
        {
            "snapshot": m,
            "subscribers": rep.rows[m],
            "labelled": rep.labelled[m],
            "churn_rate": rep.churn_rate[m],
        }
        for m in rep.months
    ]
    create_table_artifact(
        key="feature-snapshots",
        table=rows,
        description=f"{len(rep.months)} snapshots; catalog {rep.catalog}",
    )
    return rep.summary()


@task(name="train-model")
def train_task(settings: Settings) -> dict:
    steps.fault_drill(settings, "train")
    res = steps.train(settings)
    link = mlflow_run_link(settings, res.run_id)
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in res.metrics.items())
    base = "\n".join(
        f"| {n} | {b['roc_auc']:.4f} | {b['top_decile_lift']:.2f} |"
        for n, b in res.baselines.items()
    )
    create_markdown_artifact(
        key="model-metrics",
        markdown=(
            f"## {res.registered_name} v{res.version}: {res.alias}\n\n{res.decision}\n\n"
            f"MLflow run `{res.run_id}` ([open]({link})), tracking URI `{settings.tracking_uri()}`\n\n"
            f"Out-of-time test {res.test_period}\n\n| metric | value |\n|---|---|\n{metrics}\n\n"
            f"| baseline | AUC | top-decile lift |\n|---|---|---|\n{base}\n"
        ),
    )
    return {"version": res.version, "alias": res.alias, "run_id": res.run_id, "test_period": res.test_period,
            "roc_auc": res.metrics["roc_auc"], "decision": res.decision}  # fmt: skip


@task(name="monitor-model")
def monitor_task(settings: Settings, month: str | None = None) -> dict:
    steps.fault_drill(settings, "monitor")
    out = steps.monitor(settings, month)
    if "markdown" in out:
        create_markdown_artifact(key="model-monitoring", markdown=out.pop("markdown"),
                                 description=out["headline"][:2000])  # fmt: skip
    return out


@task(name="score-snapshot")
def score_task(settings: Settings, month: str | None = None) -> dict:
    steps.fault_drill(settings, "score")
    r = steps.score(settings, month)
    return {
        "month": r.month,
        "scored": r.scored,
        "model_version": r.model_version,
        "shap_max_abs_diff": r.shap_max_abs_diff,
    }


@task(name="publish-lists")
def publish_task(settings: Settings, month: str | None = None) -> dict:
    steps.fault_drill(settings, "publish")
    m = steps.publish(settings, month)
    c = m["counts"]
    rows = [{"by": "channel", "group": k, "subscribers": v} for k, v in c["by_channel"].items()]
    rows += [{"by": "tier", "group": k, "subscribers": v} for k, v in c["by_tier"].items()]
    create_table_artifact(
        key="retention-lists",
        table=rows,
        description=(
            f"{m['snapshot_month']}: {c['selected']} on the list ({c['control_group']} control), "
            f"{c['complaint_callbacks']} complaint callbacks; model v{m['model_version']}; "
            f"files in {settings.path('outputs') / 'retention' / m['snapshot_month']}"
        ),
    )
    return {"month": m["snapshot_month"], "counts": c, "ranking": m["ranking"]}


@task(name="train-uplift")
def uplift_task(settings: Settings) -> dict:
    out = steps.train_uplift(settings)
    if "metrics" in out:
        m = out["metrics"]
        create_markdown_artifact(
            key="uplift-model",
            markdown=(
                f"**Uplift model v{out['version']}** ({out['alias']}): {out['decision']}.\n\n"
                f"Out-of-time Qini coefficient on {out['test_month']}: model "
                f"{m.get('qini_arms', float('nan')):.3f}, risk only {m.get('qini_risk_arms', float('nan')):.3f}, "
                f"random 0; AUUC model {m.get('auuc', float('nan')):.3f}."
            ),
        )
    return out


@task(name="measure-campaigns")
def campaigns_task(settings: Settings) -> dict:
    out = steps.measure_campaigns(settings)
    rows = [
        {k: c[k] for k in ("campaign", "contact_month", "n_treated", "n_control", "difference",
                           "low", "high", "saved", "saved_value")}
        for c in out["campaigns"]
    ]  # fmt: skip
    p = out.get("power") or {}
    note = (
        f"; {p['campaign']}: an effect of {p['expected_difference']:+.2%} shows after "
        f"{p['months_to_detect']:.1f} month(s) of lists this size"
        if p else ""
    )  # fmt: skip
    create_table_artifact(
        key="campaign-results",
        table=rows or [{"campaign": "none observed yet", "waiting": len(out["waiting"])}],
        description=f"churn of treated minus control, 95% interval; saved subscribers{note}",
    )
    return {"observed": len(rows), "waiting": len(out["waiting"]), "power": p}


@flow(name="ingest")
def ingest_flow(settings: Settings | None = None) -> dict:
    """Validate new deliveries in the landing folder into the Parquet lake."""
    s = _settings(settings)
    return _configured(ingest_task, s)(s)


@flow(name="build-features", flow_run_name=_features_run_name)
def build_features_flow(settings: Settings | None = None, months: list[str] | None = None) -> dict:
    """Point-in-time feature snapshots and labels from the lake."""
    s = _settings(settings)
    days = timedelta(days=s.orchestration.cache_days)
    return _configured(features_task, s, cache_expiration=days)(s, months)


@flow(name="train")
def train_flow(settings: Settings | None = None) -> dict:
    """Train, evaluate out of time, register; promote only a better model."""
    s = _settings(settings)
    return _configured(train_task, s)(s)


@flow(name="monitor", flow_run_name=_run_name("monitor"))
def monitor_flow(settings: Settings | None = None, month: str | None = None) -> dict:
    """Drift against the champion's training window, and its AUC estimated before labels."""
    s = _settings(settings)
    return _configured(monitor_task, s)(s, month)


@flow(name="score", flow_run_name=_run_name("score"))
def score_flow(settings: Settings | None = None, month: str | None = None) -> dict:
    """Score a snapshot with the champion and explain it."""
    s = _settings(settings)
    return _configured(score_task, s)(s, month)


@flow(name="publish", flow_run_name=_run_name("publish"))
def publish_flow(settings: Settings | None = None, month: str | None = None) -> dict:
    """Ranked retention lists, per channel, with manifest, diff and report."""
    s = _settings(settings)
    return _configured(publish_task, s)(s, month)


@flow(name="train-uplift")
def uplift_flow(settings: Settings | None = None) -> dict:
    """Learn each subscriber's effect of contact from randomised campaigns; gate against risk."""
    s = _settings(settings)
    return _configured(uplift_task, s)(s)


@flow(name="measure-campaigns")
def campaigns_flow(settings: Settings | None = None) -> dict:
    """Treated against control for every campaign whose outcome is observed."""
    s = _settings(settings)
    return _configured(campaigns_task, s)(s)


@flow(name="monthly-refresh", flow_run_name=_run_name("monthly-refresh"))
def monthly_refresh(
    month: str | None = None, settings: Settings | None = None, force_retrain: bool = False
) -> dict:
    """ingest -> features -> monitor -> train (when due or on evidence) -> uplift -> score ->
    measure campaigns -> publish."""
    s = _settings(settings)
    logger = get_run_logger()
    steps.given_month(s, month, "refresh")  # a mistyped month fails now, not after the ingest
    with settings_lock(s, "refresh"):  # once for the whole run; the steps inside re-enter it
        out = {"ingest": ingest_flow(s), "features": build_features_flow(s)}
        out["monitor"] = monitor_flow(s, month)
        due, why = steps.retrain_due(s, out["monitor"])
        if due or force_retrain:
            logger.info("retraining: %s", "forced" if force_retrain else why)
            out["train"] = train_flow(s) | {"why": "forced" if force_retrain else why}
            if out["train"].get("alias") == "champion":  # judged again against the new reference
                out["monitor"] = monitor_flow(s, month)
        else:
            logger.info("no retraining: %s", why)
            out["train"] = {"skipped": why}
        out["uplift"] = uplift_flow(s)
        out["score"] = score_flow(s, month)
        out["campaigns"] = campaigns_flow(s)  # past campaigns first: the report shows them
        out["publish"] = publish_flow(s, out["score"]["month"])
    return out


MONTHLY = "monthly-refresh"
DESCRIPTION = (
    "ingest -> features -> monitor -> train when due or on evidence -> uplift -> score -> "
    "measure campaigns -> publish"
)


def _on_demand() -> tuple:
    return (
        ingest_flow,
        build_features_flow,
        train_flow,
        monitor_flow,
        score_flow,
        publish_flow,
        uplift_flow,
        campaigns_flow,
    )


def deployments(settings: Settings, *, paused: bool = False) -> list:
    """The monthly refresh on its cron schedule and every step on demand, with this config baked in.

    The one list of deployments: ``churn serve`` serves these, and ``prefect.yaml`` (for
    work pools) is generated from the same list by :func:`prefect_yaml`.
    """
    from prefect.schedules import Cron

    o = settings.orchestration
    params = {"settings": settings.model_dump(mode="json")}
    monthly = monthly_refresh.to_deployment(
        name=MONTHLY,
        schedule=Cron(o.monthly_cron, timezone=o.timezone),
        parameters=params,
        paused=paused,
        description=DESCRIPTION,
        tags=["churn", "scheduled"],
    )
    on_demand = [
        f.to_deployment(name=f.name, parameters=params, tags=["churn", "on-demand"])
        for f in _on_demand()
    ]
    return [monthly, *on_demand]


def prefect_yaml(settings: Settings, pool: str = "churn-pool") -> str:
    """``prefect.yaml`` for ``prefect deploy --all`` with workers, from the same list as serve."""
    import yaml

    o = settings.orchestration

    def entry(f, **more) -> dict:
        return {"name": f.name, "entrypoint": f"pipelines/flows.py:{f.fn.__name__}", **more,
                "work_pool": {"name": pool}}  # fmt: skip

    spec = {
        "name": "churn-early-warning",
        "prefect-version": __import__("prefect").__version__,
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $CHURN_PROJECT_DIR }}"
                }
            }
        ],  # fmt: skip
        "deployments": [
            entry(
                monthly_refresh,
                description=DESCRIPTION,
                tags=["churn", "scheduled"],
                schedules=[{"cron": o.monthly_cron, "timezone": o.timezone}],
            ),  # fmt: skip
            *(entry(f, tags=["churn", "on-demand"]) for f in _on_demand()),
        ],
    }
    head = (
        "# Generated by `churn prefect-yaml` from pipelines/flows.py (the one list of deployments);\n"
        "# edit the settings (orchestration.monthly_cron, .timezone) and regenerate, not this file.\n"
        "# `prefect deploy --all` registers them; a process worker runs them:\n"
        "#   prefect work-pool create churn-pool --type process\n"
        "#   CHURN_PROJECT_DIR=$PWD prefect worker start --pool churn-pool\n"
        "# On one machine without workers, `churn serve` serves the same deployments.\n"
    )
    return head + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
