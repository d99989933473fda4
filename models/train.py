"""Train, evaluate out of time, track in MLflow, register, and promote only a better model.

The split is by month: the latest fully labelled snapshot is the test, the one before
it validates (early stopping, calibration), older ones train. The phone number is
dropped before anything reaches MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import mlflow.data
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from models import plots, registry
from models.config import Economics, ModelConfig
from models.estimator import ChurnModel, OperatorRules, make_logistic
from models.evaluate import evaluate

WEIGHT = "sample_weight"  # a training row's weight when the table is sampled (features.store)

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = [
    "lightgbm==4.7.0",
    "scikit-learn==1.9.1",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "mlflow==3.17.2",
]
RULE_COLUMNS = {
    "alert_bill",
    "open_complaints",
    "tenure_months",
    "balance",
    "arrears",
    "dropped_call_rate_3m",
}


class TrainingDataError(ValueError):
    pass


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    train_periods: list[str] = field(default_factory=list)
    valid_period: str = ""
    test_period: str = ""


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    registered_name: str
    version: str
    alias: str  # champion | challenger
    decision: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    test_period: str
    feature_columns: list[str]
    tuning: str = ""  # one line on the tuning that chose the parameters, if any

    def summary(self) -> str:
        m = self.metrics
        lines = [
            *([self.tuning] if self.tuning else []),
            f"model {self.registered_name} v{self.version} -> {self.alias} ({self.decision})",
            f"out-of-time test {self.test_period}: AUC {m['roc_auc']:.3f}  PR-AUC {m['pr_auc']:.3f}  "
            f"top-decile lift {m['top_decile_lift']:.2f}  ECE {m['ece']:.4f}  Brier {m['brier']:.4f}  "
            f"EMP {m['emp']:.3f} at {m['emp_contact_fraction']:.1%} contacted",
        ]
        for name, b in self.baselines.items():
            lines.append(
                f"  baseline {name:<9} AUC {b['roc_auc']:.3f}  top-decile lift {b['top_decile_lift']:.2f}"
            )
        return "\n".join(lines)


def labelled_periods(
    df: pd.DataFrame, time_col: str, label_col: str, min_coverage: float
) -> list[str]:
    cover = df.groupby(time_col)[label_col].apply(lambda s: s.notna().mean())
    return sorted(cover.index[cover >= min_coverage].astype(str))


def time_split(
    df: pd.DataFrame, time_col: str | None, label_col: str, min_coverage: float, seed: int
) -> Split:
    """Out-of-time split; without a time column a stratified 60/20/20 split (one period only)."""
    if time_col:
        # coverage is judged before unlabelled rows are dropped: a month labelled only for
        # postpaid subscribers would be a biased test
        periods = labelled_periods(
            df.assign(**{time_col: df[time_col].astype(str)}), time_col, label_col, min_coverage
        )
    df = df[df[label_col].notna()].copy()
    df[label_col] = df[label_col].astype(int)
    if time_col:
        if len(periods) < 3:
            raise TrainingDataError(
                f"need at least 3 fully labelled periods in '{time_col}' (train, validation, test), found {periods}"
            )
        t = df[time_col].astype(str)
        return Split(
            df[t.isin(periods[:-2])],
            df[t == periods[-2]],
            df[t == periods[-1]],
            periods[:-2],
            periods[-2],
            periods[-1],
        )
    rng = np.random.default_rng(seed)
    u = rng.random(len(df))
    return Split(
        df[u < 0.6],
        df[(u >= 0.6) & (u < 0.8)],
        df[u >= 0.8],
        ["random 60%"],
        "random 20%",
        "random 20%",
    )


def check_classes(split: Split, label_col: str) -> None:
    """Each of train, validation and test holds both classes, or training cannot start."""
    for part, d in (("train", split.train), ("validation", split.valid), ("test", split.test)):
        if d[label_col].nunique() < 2:
            raise TrainingDataError(
                f"the {part} set has a single class; more months or subscribers are needed"
            )


def fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _own_types(model) -> list[str]:
    """The classes our own freshly fitted model is made of: safe to trust when loading it back (skops)."""
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_registered(model, X: pd.DataFrame, name: str):
    """Log a fitted classifier in the active run (skops, signature, a feature-only example)
    and register it as a new version of ``name``."""
    example = X.head(5).astype(float)
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict_proba(example)),
        input_example=example,
        pip_requirements=PIP_REQUIREMENTS,
        pyfunc_predict_fn="predict_proba",
        registered_model_name=name,
        serialization_format="skops",
        skops_trusted_types=_own_types(model),
    )


def _score(model, X: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


def _champion_metric(
    tracking_uri: str,
    model: ModelConfig,
    economics: Economics,
    X: pd.DataFrame,
    y: np.ndarray,
    clv,
    test_period: str,
) -> tuple[str, float] | None:
    """The champion's score on the same test snapshot; -inf when it cannot be compared fairly."""
    champ = registry.find(tracking_uri, model.name)
    if champ is None:
        return None
    seen = champ.params
    learned_from = seen.get("train_periods", "").split(",") + [seen.get("valid_period", "")]
    if test_period in learned_from:
        return champ.version, float("-inf")  # its score on this month would flatter it
    fitted = registry.load(champ)
    if list(getattr(fitted, "feature_names_in_", [])) != list(X.columns):
        return champ.version, float("-inf")  # on other features it cannot be compared: replace it
    m = evaluate(y, _score(fitted, X), economics=economics, clv=clv)
    return champ.version, m[model.promotion_metric]


def _log_datasets(
    split: Split, feature_cols: list[str], label_col: str, time_col: str | None
) -> None:
    """Train, validation and test sets as MLflow inputs, so the UI shows the run's lineage.

    Only the model's columns, the label and the period go in: never an id or a phone
    number (MLflow keeps a dataset's schema, profile and digest, not its rows).
    """
    keep = [*feature_cols, label_col, *([time_col] if time_col else [])]
    parts = (
        ("train", split.train, ",".join(split.train_periods)),
        ("validation", split.valid, split.valid_period),
        ("test", split.test, split.test_period),
    )
    for context, d, periods in parts:
        cols = [c for c in dict.fromkeys(keep) if c in d.columns and c != "msisdn"]
        frame = d[cols].astype({c: float for c in cols if pd.api.types.is_integer_dtype(d[c])})
        ds = mlflow.data.from_pandas(frame, targets=label_col, name=f"churn-{context} {periods}")
        mlflow.log_input(ds, context=context)


def _describe_version(
    client, name: str, version: str, split: Split, metrics: dict[str, float], decision: str
) -> None:
    """The registered version says what it was trained on and how well it did, in the registry UI."""
    window = (
        f"{split.train_periods[0]}..{split.train_periods[-1]}"
        if len(split.train_periods) > 1
        else split.train_periods[0]
    )
    client.update_model_version(
        name,
        version,
        description=(
            f"Calibrated LightGBM churn model trained on {window} (validation {split.valid_period}); "
            f"out-of-time test on {split.test_period}, the latest fully labelled month, never seen "
            f"in training: AUC {metrics['roc_auc']:.3f}, top-decile lift "
            f"{metrics['top_decile_lift']:.2f}. {decision}."
        ),
    )
    tags = {
        "training_window": window,
        "validation_month": split.valid_period,
        "test_month": split.test_period,
        "test_auc": f"{metrics['roc_auc']:.4f}",
        "test_top_decile_lift": f"{metrics['top_decile_lift']:.2f}",
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)


def train_and_register(
    frame: pd.DataFrame,
    model_cfg: ModelConfig,
    economics: Economics,
    *,
    tracking_uri: str,
    artifacts: Path,
    config_fingerprint: str,
    feature_cols: list[str],
    label_col: str,
    time_col: str | None,
    lineage: dict | None = None,
    catalog: Path | None = None,
    lgbm_overrides: dict | None = None,
    categorical_cols: list[str] | None = None,
    table_columns: list[dict] | None = None,
    prevalence: float | None = None,
    run_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Fit, evaluate on the out-of-time month, log and register; champion only if it is better.

    ``artifacts`` is where a new experiment keeps its files; ``config_fingerprint`` names
    the configuration in the run's lineage. ``categorical_cols`` (integer codes) are
    LightGBM categoricals and one-hot in the logistic baseline; ``table_columns`` (what
    was done with each column of a brought table) is logged with the run; ``run_tags``
    are set on it (a tuned model's names its tuning run).
    """
    split = time_split(frame, time_col, label_col, model_cfg.min_label_coverage, model_cfg.seed)
    check_classes(split, label_col)
    Xtr, ytr = split.train[feature_cols], split.train[label_col].to_numpy()
    Xva, yva = split.valid[feature_cols], split.valid[label_col].to_numpy()
    Xte, yte = split.test[feature_cols], split.test[label_col].to_numpy()
    clv = economics.value(split.test["arpu_3m"]).to_numpy() if "arpu_3m" in split.test else None

    params = model_cfg.lgbm.model_dump() | (lgbm_overrides or {})
    model = ChurnModel(
        params,
        seed=model_cfg.seed,
        early_stopping_rounds=model_cfg.early_stopping_rounds,
        calibration=model_cfg.calibration,
        categorical=categorical_cols or None,
        prevalence=prevalence,
    )
    weights = split.train[WEIGHT].to_numpy() if WEIGHT in split.train else None
    if weights is not None and (weights != 1).any():
        log.info("training on %d rows standing for %.0f (every churner, a sample of stayers "
                 "weighted back); validation and test whole", len(weights), weights.sum())  # fmt: skip
    model.fit(Xtr, ytr, Xva, yva, sample_weight=weights)
    rates = {"train": float(ytr.mean()), "validation": float(yva.mean()), "test": float(yte.mean())}
    base = prevalence if prevalence is not None else rates["validation"]
    if max(rates["test"] / base, base / rates["test"]) > 3:
        log.warning("churn rate: test %.1f%% against %.1f%% %s (train %.1f%%): probabilities "
                    "will be off by about that factor; give the true rate with --prevalence",
                    100 * rates["test"], 100 * base, "given" if prevalence else "in validation",
                    100 * rates["train"])  # fmt: skip
    baselines_models = {
        "logistic": make_logistic(model_cfg.seed, categorical_cols).fit(
            Xtr.astype(float).fillna(np.nan), ytr, logisticregression__sample_weight=weights
        )
    }
    if set(feature_cols) >= RULE_COLUMNS:
        baselines_models["rules"] = OperatorRules().fit(Xtr, ytr)
    scores = {"lightgbm": _score(model, Xte)}
    scores |= {n: _score(m, Xte.astype(float)) for n, m in baselines_models.items()}
    kw = dict(economics=economics, clv=clv)
    metrics = evaluate(yte, scores["lightgbm"], **kw)
    valid_metrics = evaluate(yva, _score(model, Xva), **kw | {"clv": None})
    baselines = {n: evaluate(yte, s, **kw) for n, s in scores.items() if n != "lightgbm"}

    client = registry.setup_tracking(tracking_uri, model_cfg.experiment, artifacts)
    lineage = (lineage or {}) | {
        "train_periods": split.train_periods,
        "valid_period": split.valid_period,
        "test_period": split.test_period,
        "rows": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
        "config_fingerprint": config_fingerprint,
    }
    with mlflow.start_run(run_name=f"lightgbm-{split.test_period}", tags=run_tags) as run:
        mlflow.log_params(
            {f"lgbm_{k}": v for k, v in params.items()}
            | {
                "calibration": model.calibration_method_,
                "best_iteration": model.best_iteration_,
                "n_features": len(feature_cols),
                "train_periods": ",".join(split.train_periods),
                "valid_period": split.valid_period,
                "test_period": split.test_period,
                "label_col": label_col,
                "categorical": ",".join(sorted(categorical_cols or [])),
                "prevalence": "" if prevalence is None else prevalence,
            }
        )
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"valid_{k}": v for k, v in valid_metrics.items()})
        for n, b in baselines.items():
            mlflow.log_metrics({f"baseline_{n}_{k}": v for k, v in b.items()})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for fname, fn in plots.ALL.items():
                fig = fn(yte, scores)
                fig.savefig(tmp / fname, dpi=110, bbox_inches="tight")
                plt.close(fig)
            (tmp / "lineage.json").write_text(json.dumps(lineage, indent=1, default=str))
            (tmp / "feature_columns.json").write_text(json.dumps(feature_cols))
            if table_columns is not None:
                (tmp / "table_columns.json").write_text(json.dumps(table_columns, indent=1))
            mlflow.log_artifacts(str(tmp), artifact_path="evaluation")
        if catalog is not None and catalog.exists():
            mlflow.log_artifact(str(catalog), artifact_path="features")
        _log_datasets(split, feature_cols, label_col, time_col)
        info = log_registered(model, Xte, model_cfg.name)
        version = str(info.registered_model_version)
        metric = model_cfg.promotion_metric
        current = _champion_metric(
            tracking_uri, model_cfg, economics, Xte, yte, clv, split.test_period
        )
        if current is None:
            alias = registry.CHAMPION
            decision = f"first model: champion on {metric}={metrics[metric]:.4f}"
        elif not np.isfinite(current[1]):
            alias, decision = (
                registry.CHAMPION,
                f"champion v{current[0]} cannot be compared on {split.test_period} (trained on it or on other features)",
            )
        elif metrics[metric] > current[1]:
            alias, decision = (
                registry.CHAMPION,
                f"beats champion v{current[0]} on {metric}: {metrics[metric]:.4f} > {current[1]:.4f}",
            )
        else:
            alias, decision = (
                registry.CHALLENGER,
                f"does not beat champion v{current[0]} on {metric}: {metrics[metric]:.4f} <= {current[1]:.4f}",
            )
        client.set_registered_model_alias(model_cfg.name, alias, version)
        _describe_version(client, model_cfg.name, version, split, metrics, decision)
        mlflow.set_tags(
            {"promotion": alias, "promotion_decision": decision, "model_version": version}
        )
        mlflow.log_metric("promoted", 1.0 if alias == registry.CHAMPION else 0.0)
        if current is not None and np.isfinite(current[1]):
            mlflow.log_metric(f"champion_test_{metric}", current[1])
    res = TrainResult(
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        registered_name=model_cfg.name,
        version=version,
        alias=alias,
        decision=decision,
        metrics=metrics,
        baselines=baselines,
        test_period=split.test_period,
        feature_columns=feature_cols,
    )
    log.info("%s", res.summary())
    return res
