"""Each pipeline step as one call taking the typed config: what the CLI and the flows both run.

They hold no data logic of their own; they resolve paths from the config and call the
library. Every step here runs without Prefect.

Every step that writes the data folder holds its lock (:mod:`pipelines.lake.lock`) while it
runs, so two runs never write the lake, features, model store or lists at once; a
second run waits ``orchestration.lock_timeout_seconds`` and then fails with
:class:`~pipelines.lake.lock.LockHeld` naming the holder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from pipelines.config import Settings
from pipelines.ingest.report import IngestReport
from pipelines.ingest.run import ingest_landing
from pipelines.lake.config import check_month
from pipelines.lake.errors import ChurnError, UsageError
from pipelines.lake.lock import data_lock
from pipelines.lake.numbers import mask_text
from pipelines.privacy import protect

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def settings_lock(settings: Settings, step: str):
    """The lock of the settings' data folder, waiting ``orchestration.lock_timeout_seconds``."""
    return data_lock(
        settings.path("data_dir"), step, timeout=settings.orchestration.lock_timeout_seconds
    )


@contextlib.contextmanager
def masked_errors(data_dir: Path) -> Iterator[None]:
    """Re-raise an exception with phone numbers in its message masked (its type unchanged).

    An OS error that names no file (Arrow's "No space left on device") gets the data
    folder as its file, so the one-line message still says where to look.
    """
    try:
        yield
    except OSError as e:
        if e.errno and not e.filename:
            e.filename = str(data_dir)
        raise
    except Exception as e:
        args = tuple(mask_text(a) if isinstance(a, str) else a for a in e.args)
        if args != e.args:
            e.args = args
        raise


def writes_data(step: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the step holding the data folder's lock (re-entrant: a refresh already holds it).

    Files it creates are owner-only (:func:`pipelines.privacy.protect`), and an error it
    raises leaves with any phone number in its message masked, so neither Prefect's
    state messages nor a log line can carry one.
    """

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            settings = kwargs["settings"] if "settings" in kwargs else args[0]
            protect(settings)  # type: ignore[arg-type]
            with masked_errors(settings.path("data_dir")), settings_lock(settings, step):  # type: ignore[arg-type]
                return fn(*args, **kwargs)

        return run

    return wrap


@writes_data("ingest")
def ingest(settings: Settings, *, raise_on_failure: bool = True) -> IngestReport:
    return ingest_landing(
        settings.path("landing"),
        lake=settings.path("lake"),
        quarantine=settings.path("quarantine"),
        reports=settings.path("reports") / "ingest",
        sources=settings.sources,
        numbering=settings.numbering,
        cfg=settings.ingest,
        raise_on_failure=raise_on_failure,
    )


@writes_data("features")
def build_features(settings: Settings, months: list[str] | None = None):
    from features.build import build_features as build

    return build(
        settings.path("lake"),
        settings.path("features"),
        settings.churn,
        settings.features,
        months=months,
        temp_dir=settings.path("data_dir") / "tmp" / "duckdb",
    )


def training_table(settings: Settings):
    """The labelled months of the store as one float32 frame, read in batches: every
    churner, ``model.stayer_share`` of the training months' stayers (weighted back), the
    validation and test months whole."""
    from features import store
    from features.build import model_features
    from features.labels import LABELS

    feats_dir = settings.path("features")
    months = store.labelled_months(feats_dir, settings.model.min_label_coverage)
    if not months:
        return store.read_snapshots(feats_dir)  # nothing labelled: training says so in one line
    extra = [f.name for f in LABELS if f.name != "label_churn"]
    return store.read_sampled(
        feats_dir, months, ["snapshot_month", *model_features(), *extra],
        full=tuple(months[-2:]), stayer_share=settings.model.stayer_share,
        seed=settings.model.seed,
    )  # fmt: skip


@writes_data("train")
def train(settings: Settings, lgbm_overrides: dict | None = None, tune: int = 0):
    """Train on the feature snapshots; register in MLflow; promote only a better model.

    ``tune`` trials of Optuna first (0: ``model.tune_trials``), the best then trained."""
    from features import store
    from features.build import model_features
    from models.tune import trainer

    train_and_register = trainer(tune or settings.model.tune_trials)

    feats_dir = settings.path("features")
    frame = training_table(settings)
    lineage = {
        "snapshot_months": sorted(frame.snapshot_month.unique().tolist()),
        "rows_per_snapshot": frame.groupby("snapshot_month").size().to_dict(),
        "stayer_share": settings.model.stayer_share,  # rows above are the sample read
        "feature_files_fingerprint": store.fingerprint(feats_dir),
    }
    res = train_and_register(
        frame.drop(columns=["msisdn"]),
        settings.model,
        settings.economics,
        tracking_uri=settings.tracking_uri(),
        artifacts=settings.path("mlflow") / "artifacts",
        config_fingerprint=settings.fingerprint(),
        feature_cols=model_features(),
        label_col="label_churn",
        time_col="snapshot_month",
        lineage=lineage,
        catalog=store.catalog_path(feats_dir),
        lgbm_overrides=lgbm_overrides,
    )
    _train_timing(settings, frame, lineage)
    return res


def _train_timing(settings: Settings, frame, lineage: dict) -> dict:
    """The time-to-churn model, trained beside the champion on the same snapshots.

    Labels too thin for it skip it with the reason logged: the churn model is never held
    back by its timing, and the lists then show no expected month of leaving.
    """
    from features.build import model_features
    from models.timing import TimingDataError
    from models.timing import train_timing as run

    if not settings.timing.enabled:
        return {"skipped": "timing.enabled is false"}
    try:
        res = run(
            frame, settings.timing, horizon=settings.churn.horizon_months,
            gap=settings.churn.gap_months, churn_name=settings.model.name,
            min_coverage=settings.model.min_label_coverage, tracking_uri=settings.tracking_uri(),
            experiment=settings.model.experiment, artifacts=settings.path("mlflow") / "artifacts",
            feature_cols=model_features(), lineage=lineage,
        )  # fmt: skip
    except TimingDataError as e:
        log.warning("no timing model trained: %s", e)
        return {"skipped": str(e)}
    return {"version": res.version, "alias": res.alias, "decision": res.decision,
            "td_auc": res.td_auc, "baseline_td_auc": res.baseline_td_auc}  # fmt: skip


@writes_data("train")
def train_table(
    settings: Settings, table: Path, *, id_col: str, label_col: str, time_col: str | None = None,
    prevalence: float | None = None, tune: int = 0,
):  # fmt: skip
    """Bring your own customer-level table: every column but id, label and time is used,
    coerced (numbers stored as text) or a categorical, or dropped for a stated reason."""
    import pandas as pd

    from models.tables import TableError, prepare_table
    from models.train import fingerprint_files
    from models.tune import trainer

    train_and_register = trainer(tune or settings.model.tune_trials)

    try:
        frame = pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise TableError(f"{table}: cannot be read as a table ({e})") from None
    prep = prepare_table(frame, id_col=id_col, label_col=label_col, time_col=time_col)
    return train_and_register(
        prep.frame,
        settings.model,
        settings.economics,
        tracking_uri=settings.tracking_uri(),
        artifacts=settings.path("mlflow") / "artifacts",
        config_fingerprint=settings.fingerprint(),
        feature_cols=prep.features,
        label_col=label_col,
        time_col=time_col,
        categorical_cols=prep.categorical,
        prevalence=prevalence,
        table_columns=[
            r | ({"levels": prep.levels[r["column"]]} if r["column"] in prep.levels else {})
            for r in prep.columns
        ],  # fmt: skip
        lineage={"table": str(table), "table_fingerprint": fingerprint_files([table])},
    )


def given_month(settings: Settings, month: str | None, step: str) -> str | None:
    """A month given to a step (by the CLI, a flow or a deployment) that the step can use.

    A badly written month is a usage error; a month without the step's input is named
    with what to run first. One line either way, and never retried.
    """
    if month is None:
        return None
    try:
        check_month(month)
    except ValueError as e:
        raise UsageError(f"month: {e}") from None
    from features import store
    from models.score import scores_path

    if step == "score" and month not in store.months(settings.path("features")):
        raise ChurnError(f"month {month}: no feature snapshot; run churn features first")
    if step == "publish" and not scores_path(settings.path("scores"), month).exists():
        raise ChurnError(f"month {month}: not scored; run churn score first")
    return month


@writes_data("score")
def score(settings: Settings, month: str | None = None):
    from models.score import score as run

    month = given_month(settings, month, "score")
    return run(
        settings.path("features"),
        settings.path("scores"),
        settings.model,
        settings.reasons,
        tracking_uri=settings.tracking_uri(),
        month=month,
        timing_name=settings.timing.name if settings.timing.enabled else None,
    )


@writes_data("publish")
def publish(settings: Settings, month: str | None = None, published: dt.date | None = None) -> dict:
    from pipelines.publish.run import publish as run

    return run(settings, given_month(settings, month, "publish"), published)


@writes_data("train-uplift")
def train_uplift(settings: Settings) -> dict:
    """Learn the effect of contact from randomised campaigns; champion only if it beats risk."""
    from models import registry
    from models.uplift_train import too_little
    from models.uplift_train import train_uplift as run
    from pipelines.campaigns.uplift import baseline_frame, training_frame

    frame, feats = training_frame(settings)
    months = sorted(frame["contact_month"].unique()) if len(frame) else []
    if why := too_little(frame, settings.uplift):
        return {"skipped": f"{why}: no uplift model, lists are ranked by value at risk"}
    latest = registry.latest_version(settings.tracking_uri(), settings.uplift.name)
    if (latest is not None and latest.params.get("test_month", "").endswith(months[-1])
            and latest.params.get("method") == settings.uplift.method):  # fmt: skip
        return {"skipped": f"v{latest.version} already tested on {months[-1]}, the latest "
                           "contact month with observed outcomes"}  # fmt: skip
    res = run(
        frame, feats, settings.uplift, tracking_uri=settings.tracking_uri(),
        experiment=settings.model.experiment, artifacts=settings.path("mlflow") / "artifacts",
        lineage={"contact_months": months, "rows": len(frame),
                 "arms": frame["treatment"].value_counts().to_dict()},
        baseline=baseline_frame(settings, frame, feats)
        if settings.uplift.method == "risk" else None,
    )  # fmt: skip
    return res.summary()


@writes_data("campaigns")
def measure_campaigns(settings: Settings) -> dict:
    """Treated against control for every campaign whose horizon is observed."""
    from pipelines.campaigns.run import measure_all

    return measure_all(settings)


DERIVED = ("lake", "quarantine", "features", "scores", "outputs", "reports", "campaigns",
           "mlflow")  # fmt: skip
"""Everything the system derives from the extracts: rebuilt when a new world replaces them."""


def clear_derived(settings: Settings) -> None:
    """Remove the derived state (and the CRM extract of a generated world) before a new world."""
    import shutil

    for name in DERIVED:
        shutil.rmtree(settings.path(name), ignore_errors=True)
    shutil.rmtree(settings.path("data_dir") / "crm", ignore_errors=True)


class InjectedFault(RuntimeError):
    """Raised on purpose by the fault drill (orchestration.fail_once) to prove retries work."""


def fault_drill(settings: Settings, step: str) -> None:
    """First attempt of a drilled step fails; the retry finds the marker and goes on."""
    if step not in settings.orchestration.fail_once:
        return
    marker = settings.path("prefect_home") / f"fault-drill-{step}"
    if marker.exists():
        marker.unlink()
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    raise InjectedFault(f"fault drill: {step} fails on its first attempt")


@writes_data("monitor")
def monitor(settings: Settings, month: str | None = None) -> dict:
    """Drift and estimated performance of a month for the champion: written, logged, judged.

    Skipped (with the reason) when there is no champion of this feature store yet.
    """
    from models import monitor as mon
    from models.registry import NoChampion

    month = given_month(settings, month, "score")
    try:
        rep = mon.monitor(
            settings.path("features"), settings.model, settings.monitor,
            tracking_uri=settings.tracking_uri(), lake=settings.path("lake"),
            sources=list(type(settings.sources).model_fields),
            month=month,
        )  # fmt: skip
    except NoChampion as e:
        return {"skipped": str(e)}
    path = mon.write(rep, settings.path("reports"))
    run_id = mon.log_run(rep, tracking_uri=settings.tracking_uri(),
                         experiment=settings.model.experiment,
                         artifacts=settings.path("mlflow") / "artifacts")  # fmt: skip
    retrain, why = rep.retrain_evidence(settings.monitor)
    return rep.summary() | {"retrain": retrain, "why": why, "path": str(path), "run_id": run_id,
                            "markdown": mon.markdown(rep, why)}  # fmt: skip


def retrain_due(settings: Settings, monitored: dict | None = None) -> tuple[bool, str]:
    """Retrain by calendar (the champion's test month ``retrain_every_months`` behind the
    labels), or on the monitor's evidence of drift or decay once a newer month is labelled:
    without one a new model would learn exactly what the champion learned."""
    from models import registry

    args = (settings.tracking_uri(), settings.model, settings.path("features"))
    got = registry.months_since_test(*args)
    due, why = registry.retrain_due(*args, got=got)
    if due or not (monitored or {}).get("retrain") or not settings.monitor.retrain_on_evidence:
        return due, why
    _, tested, _, gap = got
    if gap < 1:
        return False, (f"evidence ({monitored['why']}), but no month after the test month "
                       f"{tested} is labelled yet: a new model would learn the same data")  # fmt: skip
    return True, f"evidence: {monitored['why']}; {why}"
