"""Train the uplift model out of time, judge it against a risk-only ranking, register it.

The latest randomised contact months (``uplift.test_months``, pooled: one month's
outcomes are too few) are the test: the learner never sees them. On those months
the mean over channels of each channel's Qini coefficient against control is compared
with the same for the ranking a risk score alone would give; it becomes champion only when it beats both that and random, so where there
is nothing to learn the lists keep their risk ranking.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from models import registry
from models.config import UpliftConfig
from models.train import _own_types  # the classes a skops load may trust
from models.uplift import UpliftLearner, uplift_learner
from models.uplift_metrics import auuc, qini_auc, qini_curve

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = ["lightgbm==4.7.0", "scikit-learn==1.9.1", "pandas==3.1.1", "numpy==2.4.6"]


@dataclass
class UpliftResult:
    run_id: str
    version: str
    alias: str
    decision: str
    test_month: str
    arms: list[str]
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"run_id": self.run_id, "version": self.version, "alias": self.alias,
                "decision": self.decision,
                "test_month": self.test_month, "arms": self.arms,
                "metrics": {k: round(v, 4) for k, v in self.metrics.items()}}  # fmt: skip


def evaluate(
    y: np.ndarray, treatment: np.ndarray, effects: pd.DataFrame, risk: np.ndarray, control: str
) -> dict[str, float]:
    """Qini coefficients (normalised) and AUUC per arm and pooled, for the model and for risk.

    Pooled, a row's score is its best arm's effect; risk-only contacts the likeliest
    leavers first. Churn is to be reduced, so the effect is negated and ``y`` too.
    """
    out: dict[str, float] = {}
    best = -effects.min(axis=1).to_numpy()
    pools = {"all": np.ones(len(y), bool)} | {a: np.isin(treatment, [a, control]) for a in effects}
    for name, rows in pools.items():
        treated = treatment[rows] != control
        if treated.all() or not treated.any():
            continue
        score = best[rows] if name == "all" else -effects[name].to_numpy()[rows]
        sfx = "" if name == "all" else f"_{name}"
        kw = dict(higher_is_better=False, normalize=True)
        out[f"qini{sfx}"] = qini_auc(y[rows], treated, score, **kw)
        out[f"qini_risk{sfx}"] = qini_auc(y[rows], treated, risk[rows], **kw)
        out[f"auuc{sfx}"] = auuc(y[rows], treated, score, **kw)
        out[f"auuc_risk{sfx}"] = auuc(y[rows], treated, risk[rows], **kw)
    # the policy picks an arm per subscriber, so what matters is each arm's own ranking
    arms = [a for a in effects if f"qini_{a}" in out]
    if arms:
        out["qini_arms"] = float(np.mean([out[f"qini_{a}"] for a in arms]))
        out["qini_risk_arms"] = float(np.mean([out[f"qini_risk_{a}"] for a in arms]))
    return out


def qini_edge(
    y: np.ndarray, treatment: np.ndarray, effects: pd.DataFrame, risk: np.ndarray,
    control: str, *, resamples: int = 200, confidence: float = 0.9, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """Bootstrap interval of the per-arm mean Qini of ``effects`` minus that of the risk.

    A few hundred test rows per arm give Qini coefficients that move by tenths between
    resamples; a model is only worth ranking by when its edge over the risk ranking holds
    across them. Rows are resampled within each arm (and the control), seeded.
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(treatment == g) for g in np.unique(treatment)]
    gaps = []
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(g, g.size) for g in groups])
        m = evaluate(y[rows], treatment[rows], effects.iloc[rows], risk[rows], control)
        gap = m.get("qini_arms", np.nan) - m.get("qini_risk_arms", np.nan)
        if np.isfinite(gap):  # a resample without a churner in an arm has no Qini
            gaps.append(gap)
    if not gaps:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    return float(np.quantile(gaps, a)), float(np.quantile(gaps, 1 - a))


def _qini_plot(y, treatment, effects, risk, control) -> plt.Figure:
    treated = treatment != control
    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    for label, score in (("uplift model", -effects.min(axis=1).to_numpy()), ("risk only", risk),
                         ("random", rng.random(len(y)))):  # fmt: skip
        k, q = qini_curve(y, treated, score, higher_is_better=False)
        ax.plot(k / k[-1], q, label=label)
    ax.set_xlabel("share of subscribers contacted, best first")
    ax.set_ylabel("churners saved (Qini)")
    ax.legend()
    ax.set_title("Out-of-time Qini curve")
    return fig


LEARNER_NAMES = {
    "risk": "risk-based uplift (LightGBM risk model, penalised arm terms)",
    "t": "T-learner on LightGBM", "x": "X-learner on LightGBM", "dr": "DR-learner on LightGBM",
}  # fmt: skip


def test_split(frame: pd.DataFrame, cfg: UpliftConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, test, the test months' name): the last ``cfg.test_months`` contact months test."""
    months = sorted(frame["contact_month"].unique())
    tested = months[-cfg.test_months :] if len(months) > cfg.test_months else months[-1:]
    name = tested[0] if len(tested) == 1 else f"{tested[0]}..{tested[-1]}"
    return (
        frame[frame["contact_month"] < tested[0]],
        frame[frame["contact_month"] >= tested[0]],
        name,
    )


def judged_rows(test: pd.DataFrame) -> pd.DataFrame:
    """The test rows a Qini curve can be read on: those of balanced randomised campaigns.

    A Qini curve compares treated and control rows among the top k. When campaigns with
    different hold-out shares are mixed (a 50/50 pilot, a targeted campaign holding out
    10%), the high-risk top k holds the targeted campaign's few controls, and the curve
    mixes populations. Without a ``balanced`` column, or with no balanced rows, every row
    is used.
    """
    if "balanced" not in test or not test["balanced"].any():
        return test
    return test[test["balanced"].astype(bool)]


def too_little(frame: pd.DataFrame, cfg: UpliftConfig) -> str | None:
    """Why there is not enough randomised history to learn and test on, or None when there is."""
    months = sorted(frame["contact_month"].unique()) if len(frame) else []
    if len(months) < cfg.min_campaign_months:
        return (f"{len(months)} randomised contact month(s) with known outcomes, "
                f"{cfg.min_campaign_months} needed")  # fmt: skip
    train, test, name = test_split(frame, cfg)
    for part, what in ((train, "training months"), (test, f"test months {name}")):
        n_c = int((part["treatment"] == cfg.control).sum())
        arms = part.loc[part["treatment"] != cfg.control, "treatment"].value_counts()
        if n_c < cfg.min_control or not (arms >= cfg.min_treated).any():
            return (f"the {what} hold {n_c} control rows and at most {int(arms.max() if len(arms) else 0)} "
                    f"treated rows of one channel; {cfg.min_control} and {cfg.min_treated} needed")  # fmt: skip
    return None


def _fit(cfg: UpliftConfig, frame: pd.DataFrame, features: list[str],
         baseline: pd.DataFrame | None = None) -> UpliftLearner:  # fmt: skip
    """The configured learner on ``frame``; the risk-based one also reads ``baseline``."""
    extra = {}
    if cfg.method == "risk" and baseline is not None and len(baseline):
        extra = {"baseline_X": baseline[features], "baseline_y": baseline["churned"].to_numpy()}
    return uplift_learner(cfg).fit(
        frame[features], frame["treatment"].to_numpy(), frame["churned"].to_numpy(), **extra
    )


def train_uplift(
    frame: pd.DataFrame,
    features: list[str],
    cfg: UpliftConfig,
    *,
    tracking_uri: str,
    experiment: str,
    artifacts: Path,
    lineage: dict | None = None,
    baseline: pd.DataFrame | None = None,
) -> UpliftResult:
    """Fit on all but the last ``cfg.test_months`` contact months, test on those, refit, register.

    ``frame`` has the feature columns, ``treatment`` (an arm or ``cfg.control``),
    ``churned`` (0/1) and ``contact_month``; no numbers. ``baseline``: uncontacted rows
    (features, ``churned``, ``contact_month``) for the risk-based learner's risk model; the
    out-of-time fit reads only those before the test months.
    """
    months = sorted(frame["contact_month"].unique())
    train, test, test_month = test_split(frame, cfg)
    early = None if baseline is None else baseline[baseline["contact_month"] < test_month[:7]]
    learner = _fit(cfg, train, features, early)
    test = judged_rows(test)
    effects = learner.predict_effect(test[features])
    risk = learner.control_model_.predict_proba(test[features].astype(float))[:, 1]
    y, t = test["churned"].to_numpy(float), test["treatment"].to_numpy()
    metrics = evaluate(y, t, effects, risk, cfg.control)
    final = _fit(cfg, frame, features, baseline)
    client = registry.setup_tracking(tracking_uri, experiment, artifacts)
    with mlflow.start_run(run_name=f"uplift-{test_month}") as run:
        mlflow.set_tags({"kind": "uplift", "test_month": test_month})
        mlflow.log_params({"method": cfg.method,
                           "train_months": ",".join(sorted(train["contact_month"].unique())),
                           "test_month": test_month, "rows": len(frame),
                           "arms": ",".join(final.arms_), "n_features": len(features),
                           "baseline_rows": 0 if baseline is None else len(baseline)})  # fmt: skip
        mlflow.log_params({f"lgbm_{k}": v for k, v in cfg.lgbm.model_dump().items()})
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        cols = [*features, "treatment", "churned", "contact_month"]
        for ctx, d in (("train", train), ("test", test)):
            logged = d[cols].astype({c: float for c in features})  # ints warn in MLflow
            mlflow.log_input(mlflow.data.from_pandas(logged, targets="churned",
                                                     name=f"uplift-{ctx}"), context=ctx)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            fig = _qini_plot(y, t, effects, risk, cfg.control)
            fig.savefig(Path(tmp) / "qini.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            (Path(tmp) / "lineage.json").write_text(json.dumps(lineage or {}, default=str))
            (Path(tmp) / "feature_columns.json").write_text(json.dumps(features))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        info = mlflow.sklearn.log_model(
            final, name="model", pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=cfg.name, serialization_format="skops",
            skops_trusted_types=_own_types(final),
        )  # fmt: skip
        version = str(info.registered_model_version)
        q, qr = metrics.get("qini_arms", np.nan), metrics.get("qini_risk_arms", np.nan)
        edge = _edge(cfg, y, t, effects, risk)
        mlflow.log_metrics(
            {
                k: v
                for k, v in zip(("test_qini_edge_low", "test_qini_edge_high"), edge, strict=True)
                if np.isfinite(v)
            }
        )
        current = _current_qini(tracking_uri, cfg, test, y, t, risk)
        alias, decision = _promote(client, cfg.name, version, q, qr, edge, current, test_month)
        if current is not None and np.isfinite(current[1]):
            mlflow.log_metric("champion_test_qini", current[1])
        client.update_model_version(
            cfg.name, version,
            description=f"{LEARNER_NAMES[cfg.method]}, arms {', '.join(final.arms_)}; "
            f"trained on contact months {months[0]}..{months[-1]}; out of time: {decision}.",
        )  # fmt: skip
        mlflow.set_tags({"promotion": alias, "promotion_decision": decision})
    res = UpliftResult(run.info.run_id, version, alias, decision, test_month, list(final.arms_),
                       metrics)  # fmt: skip
    log.info("uplift model v%s: %s", version, decision)
    return res


def _current_qini(tracking_uri, cfg, test, y, t, risk) -> tuple[str, float, tuple] | None:
    """The champion's Qini on the new test months and its edge, or None.

    A champion refitted on months that are now test months is not judged on them (-inf):
    its in-sample Qini would keep it in place on what it memorised.
    """
    champ = registry.find(tracking_uri, cfg.name)
    if champ is None:
        return None
    seen = champ.params.get("test_month", "")[-7:]  # its final fit read every month to here
    if seen and str(test["contact_month"].min()) <= seen:
        nan = float("nan")  # it learned from these test months: no fair comparison, replace it
        return champ.version, float("-inf"), (nan, nan)
    model = registry.load(champ)
    if not set(model.feature_names_in_) <= set(test.columns):
        nan = float("nan")  # other features: it cannot be compared, replace it
        return champ.version, float("-inf"), (nan, nan)
    eff = model.predict_effect(test[list(model.feature_names_in_)])
    q = evaluate(y, t, eff, risk, cfg.control).get("qini_arms", float("-inf"))
    return champ.version, q, _edge(cfg, y, t, eff, risk)


def _edge(cfg: UpliftConfig, y, t, eff, risk) -> tuple[float, float]:
    return qini_edge(y, t, eff, risk, cfg.control, resamples=cfg.gate_resamples,
                     confidence=cfg.gate_confidence, seed=cfg.seed)  # fmt: skip


def _promote(client, name, version, q, q_risk, edge, current, month) -> tuple[str, str]:
    """Champion: the better of the new model and the champion, if it beats risk-only beyond
    noise (``edge``: the bootstrap interval of its Qini minus the risk's) and random.

    When neither does, nobody is champion and the lists fall back to the risk ranking.
    """
    best_v, best_q, best_edge = version, q, edge
    if current is not None and current[1] >= q:
        best_v, best_q, best_edge = current
    beats = np.isfinite(best_q) and best_q > 0 and best_edge[0] > 0
    gap = f"edge over risk {best_edge[0]:+.3f}..{best_edge[1]:+.3f}"
    if beats and best_v == version:
        client.set_registered_model_alias(name, registry.CHAMPION, version)
        return registry.CHAMPION, (f"Qini {q:.3f} on {month} beats risk-only {q_risk:.3f} "
                                   f"({gap}) and random 0"
                                   + (f", and champion v{current[0]} ({current[1]:.3f})"
                                      if current else ""))  # fmt: skip
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    if beats:
        return registry.CHALLENGER, (f"Qini {q:.3f} on {month}: champion v{best_v} stays "
                                     f"({best_q:.3f}, risk-only {q_risk:.3f}, {gap})")  # fmt: skip
    if current is not None:
        client.delete_registered_model_alias(name, registry.CHAMPION)
    return registry.CHALLENGER, (
        f"Qini {q:.3f} on {month} (champion: "
        f"{'none' if current is None else f'v{current[0]} {current[1]:.3f}'}) does not beat "
        f"risk-only {q_risk:.3f} beyond noise ({gap}): no "
        "champion, lists keep the risk ranking"
    )
