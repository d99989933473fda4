"""MLflow tracking and the model registry: the one place that knows which model is champion.

Training, scoring, the report, the monthly refresh and the notebooks all ask here, with
an explicit tracking URI, so they cannot disagree about the store or the alias.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features import store
from models.config import ModelConfig
from pipelines.lake.errors import ChurnError

CHAMPION = "champion"
CHALLENGER = "challenger"


class NoChampion(ChurnError, RuntimeError):
    """Nothing can be scored before a model is trained and made champion.

    Also a RuntimeError: what callers caught before the registry had its own error.
    """


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version under an alias, with what its training run logged."""

    name: str
    version: str
    run_id: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """Pinned to the version, so the model loaded is the one this record names."""
        return f"models:/{self.name}/{self.version}"


def connect(tracking_uri: str) -> MlflowClient:
    """A client on the store, which MLflow's module-level calls use too (never ./mlflow.db)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def setup_tracking(tracking_uri: str, experiment: str, artifacts: Path) -> MlflowClient:
    """Connect and make ``experiment`` the active one, created with its artifact folder on first use."""
    client = connect(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts.mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(experiment)
    return client


def find(tracking_uri: str, name: str, alias: str = CHAMPION) -> RegisteredVersion | None:
    """The version of ``name`` holding ``alias``, or None when no version holds it."""
    client = connect(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    run = client.get_run(mv.run_id).data if mv.run_id else None
    return RegisteredVersion(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id,
        params=dict(run.params) if run else {},
        metrics=dict(run.metrics) if run else {},
    )


def champion(tracking_uri: str, name: str) -> RegisteredVersion:
    """The champion of ``name``; :class:`NoChampion` when none has been registered."""
    found = find(tracking_uri, name)
    if found is None:
        raise NoChampion(f"no champion registered for model '{name}': train first (churn train)")
    return found


def latest_version(tracking_uri: str, name: str) -> RegisteredVersion | None:
    """The newest registered version of ``name`` under any alias (or none), with its run's params."""
    client = connect(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    if not versions:
        return None
    mv = max(versions, key=lambda v: int(v.version))
    run = client.get_run(mv.run_id)
    return RegisteredVersion(name, str(mv.version), mv.run_id, dict(run.data.params),
                             dict(run.data.metrics), dict(run.data.tags))  # fmt: skip


def load(version: RegisteredVersion):
    """The fitted model of a registered version (the scikit-learn flavour: predict_proba, SHAP)."""
    return mlflow.sklearn.load_model(version.model_uri)


def months_since_test(tracking_uri: str, model: ModelConfig, features: Path):
    """The champion, its test month, the latest labelled month and the months between them.

    None when there is no champion; the gap is 0 when nothing newer is labelled.
    """
    champ = find(tracking_uri, model.name)
    if champ is None:
        return None
    tested = champ.params.get("test_period", "")
    covered = store.labelled_months(features, model.min_label_coverage)
    if not covered or not tested:
        return champ, tested, "", 0
    return (
        champ,
        tested,
        covered[-1],
        (pd.Period(covered[-1], freq="M") - pd.Period(tested, freq="M")).n,
    )


def retrain_due(
    tracking_uri: str, model: ModelConfig, features: Path, got: tuple | None = None
) -> tuple[bool, str]:
    """Retrain when there is no champion, or its test month is retrain_every_months behind the data.

    ``got``: what :func:`months_since_test` already returned, so the store is asked once.
    """
    got = got or months_since_test(tracking_uri, model, features)
    if got is None:
        return True, "no champion yet"
    champ, tested, latest, gap = got
    if not latest:
        return False, "no newer labelled month"
    return (
        gap >= model.retrain_every_months,
        f"champion v{champ.version} tested on {tested}; latest labelled month {latest} ({gap} months later)",
    )
