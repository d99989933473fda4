"""Hyper-parameter tuning: Optuna's TPE on the out-of-time validation month, then the usual training.

Each trial fits LightGBM on the training months, stopped early on the validation month
exactly as :class:`~models.estimator.ChurnModel` is, and is scored on that month by the
ranking of its margin: the calibrator learns from the validation month too, and a
ranking metric does not need it (AUC is the same before and after a monotone
calibration). Trial 0 is the configured parameters, so the best is never worse than
them on this objective. The search is never handed the test month: that month stays the
promotion gate's.

Every trial is an MLflow child run under a parent ``tune-<test month>`` run; the best
parameters are then trained, registered and gated by :func:`~models.train.train_and_register`
like any model, in a run of its own tagged with the tuning run's id.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from models import registry
from models.config import Economics, ModelConfig
from models.estimator import _as_float, fit_early_stopped
from models.evaluate import lift_at
from models.train import (
    WEIGHT,
    Split,
    TrainResult,
    check_classes,
    time_split,
    train_and_register,
)
from pipelines.lake.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Range:
    """Where one LightGBM parameter is searched (``log``: on a log scale)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


SPACE: dict[str, Range] = {
    "learning_rate": Range(0.01, 0.2, log=True),
    "num_leaves": Range(7, 127, integer=True),
    "min_child_samples": Range(10, 400, log=True, integer=True),
    "subsample": Range(0.5, 1.0),
    "colsample_bytree": Range(0.4, 1.0),
    "reg_lambda": Range(1e-3, 30.0, log=True),
}
DEPTH = Range(3, 12, integer=True)
"""``max_depth``: -1 (no limit beyond ``num_leaves``) or a limit in this range."""

RANKING: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "top_decile_lift": lambda y, s: lift_at(y, s, 0.10),
}


def objective_metric(promotion_metric: str) -> str:
    """The promotion metric when a ranking of the validation month gives it, else roc_auc
    (EMP needs calibrated probabilities, and the calibrator is fitted on that same month)."""
    return promotion_metric if promotion_metric in RANKING else "roc_auc"


def _widened(name: str, r: Range, base: dict[str, Any]) -> Range:
    """The range stretched to hold the configured value, so that trial 0 lies in the space."""
    v = base.get(name)
    if v is None or (r.log and v <= 0) or (name == "max_depth" and v <= 0):
        return r
    return Range(min(r.low, v), max(r.high, v), r.log, r.integer)


def _suggest(trial: optuna.Trial, name: str, r: Range) -> float | int:
    if r.integer:
        return trial.suggest_int(name, int(r.low), int(r.high), log=r.log)
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def as_params(point: dict[str, Any]) -> dict[str, Any]:
    """A point of the search space (a trial's ``params``) as LightGBM parameters."""
    out = {n: point[n] for n in SPACE}
    out["max_depth"] = point["max_depth"] if point["depth_limited"] else -1
    return out


def suggest(trial: optuna.Trial, base: dict[str, Any]) -> dict[str, Any]:
    """The trial's LightGBM parameters; ``base`` (the configured ones) widens the ranges."""
    point = {n: _suggest(trial, n, _widened(n, r, base)) for n, r in SPACE.items()}
    point["depth_limited"] = trial.suggest_categorical("depth_limited", [True, False])
    if point["depth_limited"]:
        point["max_depth"] = _suggest(trial, "max_depth", _widened("max_depth", DEPTH, base))
    return as_params(point)


def default_point(base: dict[str, Any]) -> dict[str, Any]:
    """The configured parameters as a point of the search space: what trial 0 evaluates."""
    point: dict[str, Any] = {n: base[n] for n in SPACE}
    point["depth_limited"] = base["max_depth"] > 0
    if point["depth_limited"]:
        point["max_depth"] = base["max_depth"]
    return point


def search(
    split: Split,
    feature_cols: list[str],
    label_col: str,
    model_cfg: ModelConfig,
    *,
    trials: int,
    base: dict[str, Any],
    categorical_cols: list[str] | None = None,
    timeout: float | None = None,
    record: Callable[[optuna.Trial, dict[str, Any], float], None] | None = None,
) -> optuna.Study:
    """TPE (seeded with ``model_cfg.seed``) over :data:`SPACE`, trial 0 ``base``, each trial
    scored on ``split.valid``; ``split.test`` is never read. ``record`` sees every trial."""
    metric = objective_metric(model_cfg.promotion_metric)
    score = RANKING[metric]
    # the floats ChurnModel fits on (float32 tables stay float32: a big one is not doubled)
    X = _as_float(split.train[feature_cols])
    Xv = _as_float(split.valid[feature_cols])
    y, yv = split.train[label_col].to_numpy(int), split.valid[label_col].to_numpy(int)
    w = split.train[WEIGHT].to_numpy(float) if WEIGHT in split.train else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=model_cfg.seed),
        study_name=f"tune-{split.test_period}",
    )
    study.enqueue_trial(default_point(base))

    def objective(trial: optuna.Trial) -> float:
        params = base | suggest(trial, base)
        t0 = time.monotonic()
        est = fit_early_stopped(params, model_cfg.seed, X, y, Xv, yv,
                                early_stopping_rounds=model_cfg.early_stopping_rounds,
                                categorical=categorical_cols, sample_weight=w)  # fmt: skip
        value = float(score(yv, est.predict(Xv, raw_score=True)))
        trial.set_user_attr("best_iteration", int(est.best_iteration_ or est.n_estimators))
        trial.set_user_attr("fit_seconds", round(time.monotonic() - t0, 3))
        if record is not None:
            record(trial, params, value)
        return value

    def progress(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        best = study.best_trial
        log.info("tuning trial %d/%d: validation %s %.4f, %d trees, %.1f s (best %.4f, trial %d)",
                 t.number + 1, trials, metric, t.value, t.user_attrs["best_iteration"],
                 t.user_attrs["fit_seconds"], best.value, best.number)  # fmt: skip

    study.optimize(objective, n_trials=trials, timeout=timeout or None, callbacks=[progress])
    return study


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: its value, trees, LightGBM parameters and MLflow run."""
    rows = [
        {"trial": t.number, "state": t.state.name, "value": t.value,
         "best_iteration": t.user_attrs.get("best_iteration"),
         "fit_seconds": t.user_attrs.get("fit_seconds"), **as_params(t.params),
         "run_id": t.user_attrs.get("run_id")}
        for t in study.trials if t.params
    ]  # fmt: skip
    return pd.DataFrame(rows)


def tune_and_register(
    frame: pd.DataFrame,
    model_cfg: ModelConfig,
    economics: Economics,
    *,
    trials: int,
    tracking_uri: str,
    artifacts: Path,
    config_fingerprint: str,
    feature_cols: list[str],
    label_col: str,
    time_col: str | None,
    lineage: dict | None = None,
    lgbm_overrides: dict | None = None,
    categorical_cols: list[str] | None = None,
    **train_kw: Any,
) -> TrainResult:
    """Tune on the validation month, then train, register and gate the best as any model.

    Takes what :func:`~models.train.train_and_register` takes (the same frame, without
    phone numbers; only ``feature_cols`` and the label reach a trial), and ``trials``.
    """
    if trials < 1:
        raise UsageError(f"tuning needs 1 trial or more, got {trials}")
    split = time_split(frame, time_col, label_col, model_cfg.min_label_coverage, model_cfg.seed)
    check_classes(split, label_col)
    base = model_cfg.lgbm.model_dump() | (lgbm_overrides or {})
    metric = objective_metric(model_cfg.promotion_metric)
    if metric != model_cfg.promotion_metric:
        log.info("tuning on validation %s: %s needs the calibrated probabilities",
                 metric, model_cfg.promotion_metric)  # fmt: skip
    timeout = model_cfg.tune_timeout_seconds or None
    registry.setup_tracking(tracking_uri, model_cfg.experiment, artifacts)
    started = time.monotonic()
    tags = {"tuning": "optuna-tpe"}
    with mlflow.start_run(run_name=f"tune-{split.test_period}", tags=tags) as parent:
        mlflow.log_params({
            "n_trials_requested": trials, "timeout_seconds": timeout or "",
            "sampler": "TPESampler", "seed": model_cfg.seed, "objective": f"valid_{metric}",
            "objective_period": split.valid_period,
            "train_periods": ",".join(split.train_periods),
            "test_period": split.test_period,  # held out for the gate, never seen here
            "config_fingerprint": config_fingerprint,
        })  # fmt: skip

        def record(trial: optuna.Trial, params: dict[str, Any], value: float) -> None:
            with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}") as child:
                mlflow.set_tag("trial", str(trial.number))
                mlflow.log_params({f"lgbm_{k}": v for k, v in params.items()}
                                  | {"trial": trial.number, "objective": f"valid_{metric}",
                                     "objective_period": split.valid_period})  # fmt: skip
                mlflow.log_metrics({f"valid_{metric}": value,
                                    "best_iteration": trial.user_attrs["best_iteration"],
                                    "fit_seconds": trial.user_attrs["fit_seconds"]})  # fmt: skip
            trial.set_user_attr("run_id", child.info.run_id)

        study = search(split, feature_cols, label_col, model_cfg, trials=trials, base=base,
                       categorical_cols=categorical_cols, timeout=timeout, record=record)  # fmt: skip
        done = [t for t in study.trials if t.value is not None]
        best, default = study.best_trial, done[0]
        best_params = base | as_params(best.params)
        mlflow.log_params({"n_trials": len(done)}
                          | {f"best_lgbm_{k}": v for k, v in best_params.items()})  # fmt: skip
        mlflow.log_metrics({f"best_valid_{metric}": best.value,
                            f"default_valid_{metric}": default.value,
                            "best_trial": best.number})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            trials_frame(study).to_csv(Path(tmp) / "trials.csv", index=False)
            (Path(tmp) / "best_params.json").write_text(json.dumps(best_params, indent=1))
            space = {
                n: asdict(_widened(n, r, base)) for n, r in [*SPACE.items(), ("max_depth", DEPTH)]
            }
            space["max_depth"]["or"] = -1  # no limit beyond num_leaves
            (Path(tmp) / "search_space.json").write_text(json.dumps(space, indent=1))
            mlflow.log_artifacts(tmp, artifact_path="tuning")
    seconds = time.monotonic() - started
    tuned = (f"tuned {len(done)} trials on {split.valid_period} in {seconds:.0f} s "
             f"(tuning run {parent.info.run_id}): validation {metric} {default.value:.4f} with "
             "the configured parameters, " + (f"{best.value:.4f} with trial {best.number}'s"
             if best.number else "not beaten: they are kept"))  # fmt: skip
    log.info("%s; refitting it", tuned)
    res = train_and_register(
        frame, model_cfg, economics, tracking_uri=tracking_uri, artifacts=artifacts,
        config_fingerprint=config_fingerprint, feature_cols=feature_cols, label_col=label_col,
        time_col=time_col, categorical_cols=categorical_cols, lgbm_overrides=best_params,
        lineage=(lineage or {}) | {"tuning_run_id": parent.info.run_id,
                                   "tuning_best_trial": best.number},
        run_tags={"tuning_run_id": parent.info.run_id}, **train_kw,
    )  # fmt: skip
    client = registry.connect(tracking_uri)
    for k, v in {"refit_run_id": res.run_id, "model_version": res.version,
                 "promotion": res.alias}.items():  # fmt: skip
        client.set_tag(parent.info.run_id, k, v)
    res.tuning = tuned
    return res


def trainer(trials: int) -> Callable[..., TrainResult]:
    """What trains: train_and_register, or with ``trials`` above 0 tune_and_register."""
    if trials < 0:
        raise UsageError(f"--tune {trials}: the number of tuning trials is 0 or more")
    return functools.partial(tune_and_register, trials=trials) if trials else train_and_register
