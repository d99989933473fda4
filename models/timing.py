"""Time to churn: in which month of the label window a leaver leaves, for revisit planning.

A discrete-time hazard over the window's months, fitted on the snapshot rows that churn
in the window, in person-period form (one row per window month k = 1..H-1 while the
leaver is still there, target "leaves in month k", k a feature). It gives
P(leaves in month k | leaves within the window); times the champion's calibrated
``p_churn`` that is the probability of leaving in each month, and the median month is
``expected_leave_month``. Conditioning on leaving keeps this model off the churn model's
job: who is at risk stays the champion's answer, this one only says when.

Evaluated out of time (train / validation / test by snapshot month, as the churn model)
with the cumulative/dynamic time-dependent AUC, against the naive timing: the training
months' share of leavers per window month, the same for everyone (any timing that is the
same for everyone ranks exactly as ``p_churn``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from features.labels import LABEL, OFFSET
from models import registry
from models.config import TimingConfig
from models.estimator import make_lgbm, make_logistic
from models.train import TrainingDataError, log_registered, time_split

log = logging.getLogger(__name__)

WINDOW_MONTH = "window_month"  # the person-period's month k: a feature of the hazard
TIME_COL = "snapshot_month"
COLUMNS = ("expected_leave_month", "p_leave_next_month", "timing_model_version")


class TimingDataError(TrainingDataError):
    """Too few leavers with a known month to learn or test the timing: the run is skipped."""


def event_months(label, offset, horizon: int) -> np.ndarray:
    """Per row: 0 stays through the window, k leaves in window month k, NaN unknown.

    Already silent at T (offset 0) is gone by the end of month 1. A churner whose month is
    missing (a snapshot built before the offset label existed) is unknown, not a stayer.
    """
    lab = pd.to_numeric(pd.Series(label), errors="coerce").to_numpy(float)
    off = pd.to_numeric(pd.Series(offset), errors="coerce").to_numpy(float)
    return np.where(lab == 0, 0.0, np.where(lab == 1, np.clip(off, 1, horizon), np.nan))


def person_period(
    X: pd.DataFrame, event, horizon: int
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per subscriber and window month at risk: months 1..min(event, horizon).

    ``event`` 0 (or beyond ``horizon``) is at risk through ``horizon`` without leaving.
    Returns the rows (X's columns and ``window_month``), the target (leaves in that
    month) and each row's position in X. X itself is not changed.
    """
    ev = np.asarray(event, dtype=int)
    last = np.where((ev >= 1) & (ev <= horizon), ev, horizon)
    rows = np.repeat(np.arange(len(X)), last)
    k = np.arange(len(rows)) - np.repeat(np.cumsum(last) - last, last) + 1
    out = X.iloc[rows].reset_index(drop=True).assign(**{WINDOW_MONTH: k})
    return out, (k == ev[rows]).astype(int), rows


def auc(score, positive) -> float:
    """P(a positive scores above a negative), a tie counting half (Mann-Whitney U).

    NaN when either side is empty. Plain numpy, so the time-dependent AUC below has no
    hidden convention.
    """
    s = np.asarray(score, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    n1 = int(pos.sum())
    n0 = len(s) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank (0-based) of each distinct value's first row
    ranks = (first + (counts + 1) / 2)[inv]  # 1-based average rank of ties
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def time_dependent_auc(cumulative, event) -> dict[int, float]:
    """Cumulative/dynamic AUC per window month k: those gone by k against those there after k.

    ``cumulative[:, k-1]`` is the predicted probability of having left by the end of month
    k; ``event`` as :func:`event_months` (0 stays through the window; NaN rows skipped).
    """
    F = np.asarray(cumulative, dtype=float)
    ev = np.asarray(event, dtype=float)
    known = ~np.isnan(ev)
    F, ev = F[known], ev[known]
    out = {}
    for k in range(1, F.shape[1] + 1):
        gone = (ev >= 1) & (ev <= k)  # every other known row is still there after k
        out[k] = auc(F[:, k - 1], gone)
    return out


def median_month(q) -> np.ndarray:
    """The first window month (1..H) by which at least half of the leaving is done."""
    q = np.asarray(q, dtype=float)
    return np.minimum((np.cumsum(q, axis=1) < 0.5).sum(axis=1) + 1, q.shape[1])


def window_months(month: str, gap: int, horizon: int) -> list[str]:
    """Calendar months (YYYY-MM) of snapshot ``month``'s window: T+gap+1 .. T+gap+H."""
    p = pd.Period(month, freq="M")
    return [str(p + gap + k) for k in range(1, horizon + 1)]


class HazardModel(ClassifierMixin, BaseEstimator):
    """P(leaves in window month k | leaves within the window), k = 1..horizon.

    Discrete-time hazard h_k = P(leaves in k | still there at k, gone by the end of the
    window), learned on person-period rows with ``window_month`` as a feature; h_H = 1.
    ``gap`` (months skipped before the window) only names the calendar months.
    """

    def __init__(self, horizon: int = 2, gap: int = 0, learner: str = "lgbm",
                 lgbm_params: dict | None = None, seed: int = 42,
                 early_stopping_rounds: int = 30):  # fmt: skip
        self.horizon = horizon
        self.gap = gap
        self.learner = learner
        self.lgbm_params = lgbm_params
        self.seed = seed
        self.early_stopping_rounds = early_stopping_rounds

    def fit(self, X: pd.DataFrame, y, X_val: pd.DataFrame | None = None, y_val=None):
        """``y``: each leaver's window month 1..horizon (stayers carry no timing)."""
        y = np.asarray(y, dtype=int)
        H = self.horizon
        if len(y) == 0 or y.min() < 1 or y.max() > H:
            raise ValueError(f"window months must be 1..{H}, got {sorted(set(y.tolist()))}")
        self.feature_names_in_ = np.array(X.columns)
        self.n_features_in_ = X.shape[1]
        self.classes_ = np.arange(1, H + 1)
        self.estimator_, self.best_iteration_ = None, 0
        if H == 1:
            return self
        pp, target, _ = person_period(X.astype("float64"), y, H - 1)
        if target.min() == target.max():
            raise ValueError("every leaver leaves in the same window month: nothing to learn")
        self.estimator_ = self._fit(pp, target, X_val, y_val)
        return self

    def _fit(self, pp: pd.DataFrame, target: np.ndarray, X_val, y_val):
        if self.learner == "logistic":
            return make_logistic(self.seed).fit(pp, target)
        est = make_lgbm(self.lgbm_params or {}, self.seed)
        vp = vt = None
        if X_val is not None and len(X_val):
            Xv = X_val[list(self.feature_names_in_)].astype("float64")
            vp, vt, _ = person_period(Xv, np.asarray(y_val, dtype=int), self.horizon - 1)
        if vt is None or len(np.unique(vt)) < 2:
            est.fit(pp, target)
        else:  # early stopping on the validation month's leavers
            est.fit(pp, target, eval_X=(vp,), eval_y=(vt,), eval_metric="binary_logloss",
                    callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])  # fmt: skip
        self.best_iteration_ = int(est.best_iteration_ or est.n_estimators)
        return est

    def hazard(self, X: pd.DataFrame) -> np.ndarray:
        """(n, horizon) hazards per window month; the last month's is 1."""
        Xf = X[list(self.feature_names_in_)].astype("float64")
        h = np.ones((len(Xf), self.horizon))
        for k in range(1, self.horizon):
            h[:, k - 1] = self.estimator_.predict_proba(Xf.assign(**{WINDOW_MONTH: k}))[:, 1]
        return h

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, horizon) P(leaves in month k | leaves within the window); rows sum to 1."""
        h = self.hazard(X)
        still = np.cumprod(1 - h, axis=1)
        return h * np.hstack([np.ones((len(h), 1)), still[:, :-1]])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The median window month of leaving, given the subscriber leaves."""
        return median_month(self.predict_proba(X))


@dataclass
class TimingResult:
    run_id: str
    version: str
    alias: str  # champion | challenger
    decision: str
    test_period: str
    td_auc: dict[int, float]
    baseline_td_auc: dict[int, float]
    month_hit: float  # share of test leavers whose median month is their month
    baseline_month_hit: float
    leavers: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        per_k = "  ".join(
            f"k={k}: {v:.3f} (baseline {self.baseline_td_auc[k]:.3f})"
            for k, v in self.td_auc.items()
        )
        return (
            f"timing model v{self.version} -> {self.alias} ({self.decision}); out-of-time "
            f"{self.test_period}: time-dependent AUC {per_k}; month right for "
            f"{self.month_hit:.1%} of leavers (baseline {self.baseline_month_hit:.1%})"
        )


def _leavers(d: pd.DataFrame, ev: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    at = ev >= 1
    return d[at], ev[at].astype(int)


def train_timing(
    frame: pd.DataFrame,
    cfg: TimingConfig,
    *,
    horizon: int,
    gap: int,
    churn_name: str,
    min_coverage: float,
    tracking_uri: str,
    experiment: str,
    artifacts: Path,
    feature_cols: list[str],
    lineage: dict | None = None,
) -> TimingResult:
    """Fit on the training months' leavers, test out of time with the champion's ``p_churn``,
    log and register; champion only when it beats the naive timing.

    :class:`TimingDataError` when the labels cannot carry it (too few leavers, no month
    label): the caller logs the reason and the lists go without the column.
    """
    if horizon < 2:
        raise TimingDataError(f"horizon {horizon}: the window has one month, nothing to time")
    if OFFSET.name not in frame:
        raise TimingDataError(f"the snapshots carry no {OFFSET.name} (built before it existed)")
    churn_version = registry.champion(tracking_uri, churn_name)
    churn_model = registry.load(churn_version)
    churn_feats = list(churn_model.feature_names_in_)
    # only features, labels and the month: the phone number never comes along
    cols = list(dict.fromkeys([*feature_cols, *churn_feats, LABEL.name, OFFSET.name, TIME_COL]))
    try:
        split = time_split(frame[cols], TIME_COL, LABEL.name, min_coverage, cfg.seed)
    except TrainingDataError as e:
        raise TimingDataError(str(e)) from None
    ev = {n: event_months(d[LABEL.name], d[OFFSET.name], horizon)
          for n, d in (("train", split.train), ("valid", split.valid), ("test", split.test))}  # fmt: skip
    Xtr, ytr = _leavers(split.train, ev["train"])
    Xva, yva = _leavers(split.valid, ev["valid"])
    per_month = np.bincount(ytr, minlength=horizon + 1)[1:]
    if len(ytr) < cfg.min_leavers or per_month.min() == 0:
        raise TimingDataError(
            f"{len(ytr)} leavers with a known month in {split.train_periods} "
            f"(by month {per_month.tolist()}); {cfg.min_leavers} needed, each month seen"
        )
    known = ~np.isnan(ev["test"])
    test, ev_te = split.test[known], ev["test"][known]
    if not ((ev_te == 1).any() and (ev_te != 1).any()):
        raise TimingDataError(f"test month {split.test_period}: no leaver in month 1 to rank")
    model = HazardModel(
        horizon, gap, cfg.learner, cfg.lgbm_params(), cfg.seed, cfg.early_stopping_rounds
    ).fit(Xtr[feature_cols], ytr, Xva[feature_cols], yva)

    p = churn_model.predict_proba(test[churn_feats])[:, 1]
    q = model.predict_proba(test[feature_cols])
    share = per_month / per_month.sum()  # the naive timing: the training months' shares
    td = time_dependent_auc(p[:, None] * np.cumsum(q, axis=1), ev_te)
    base = time_dependent_auc(p[:, None] * np.cumsum(share)[None, :], ev_te)
    gone = ev_te >= 1
    hit = float(np.mean(median_month(q[gone]) == ev_te[gone]))
    base_hit = float(np.mean(median_month(share[None, :])[0] == ev_te[gone]))
    early = [k for k in td if k < horizon]  # at k = H both are p_churn: the same ranking
    gain = float(np.mean([td[k] - base[k] for k in early]))
    metrics = {f"test_td_auc_k{k}": v for k, v in td.items()}
    metrics |= {f"baseline_td_auc_k{k}": v for k, v in base.items()}
    metrics |= {
        "test_month_hit_rate": hit,
        "baseline_month_hit_rate": base_hit,
        "test_leaver_auc_k1": auc(q[gone, 0], ev_te[gone] == 1),  # among leavers only
        "test_mean_td_auc_gain": gain,
    }
    leavers = {"train": len(ytr), "valid": len(yva), "test": int(gone.sum()),
               "test_rows": len(ev_te)}  # fmt: skip
    if gain > 0:
        alias, decision = registry.CHAMPION, f"beats the naive timing by {gain:+.4f} AUC"
    else:
        alias, decision = registry.CHALLENGER, f"does not beat the naive timing ({gain:+.4f} AUC)"
    info = {
        "split": split, "metrics": metrics, "share": share, "leavers": leavers,
        "churn_version": churn_version.version, "lineage": lineage or {},
    }  # fmt: skip
    run_id, version = _log_and_register(
        model, test[feature_cols], cfg, info, alias, decision,
        tracking_uri=tracking_uri, experiment=experiment, artifacts=artifacts,
    )  # fmt: skip
    res = TimingResult(run_id, version, alias, decision, split.test_period, td, base, hit,
                       base_hit, leavers)  # fmt: skip
    log.info("%s", res.summary())
    return res


def _log_and_register(
    model: HazardModel, X_test: pd.DataFrame, cfg: TimingConfig, info: dict, alias: str,
    decision: str, *, tracking_uri: str, experiment: str, artifacts: Path,
) -> tuple[str, str]:  # fmt: skip
    """One MLflow run (parameters, time-dependent AUC per month and the baseline's), the
    model registered as ``cfg.name`` under ``alias``."""
    split, metrics = info["split"], info["metrics"]
    client = registry.setup_tracking(tracking_uri, experiment, artifacts)
    with mlflow.start_run(run_name=f"timing-{split.test_period}") as run:
        mlflow.log_params(
            {f"lgbm_{k}": v for k, v in cfg.lgbm_params().items()}
            | {
                "learner": cfg.learner,
                "horizon": model.horizon,
                "gap": model.gap,
                "best_iteration": model.best_iteration_,
                "train_periods": ",".join(split.train_periods),
                "valid_period": split.valid_period,
                "test_period": split.test_period,
                "churn_model_version": info["churn_version"],
                "baseline": "training months' share of leavers per window month: "
                + ",".join(f"{s:.3f}" for s in info["share"]),
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"leavers_{k}": float(v) for k, v in info["leavers"].items()})
        with tempfile.TemporaryDirectory() as tmp:
            body = {"metrics": metrics, "leavers": info["leavers"], "lineage": info["lineage"],
                    "baseline_share": info["share"].tolist(), "decision": decision}  # fmt: skip
            Path(tmp, "timing.json").write_text(json.dumps(body, indent=1, default=str))
            mlflow.log_artifacts(tmp, artifact_path="evaluation")
        logged = log_registered(model, X_test, cfg.name)
        version = str(logged.registered_model_version)
        client.set_registered_model_alias(cfg.name, alias, version)
        k1 = metrics["test_td_auc_k1"], metrics["baseline_td_auc_k1"]
        client.update_model_version(cfg.name, version, description=(
            f"Month of leaving within the window (discrete-time hazard, {cfg.learner}), trained "
            f"on {split.train_periods[0]}..{split.train_periods[-1]}; out-of-time test on "
            f"{split.test_period}: time-dependent AUC at month 1 {k1[0]:.3f} against "
            f"{k1[1]:.3f} for the naive timing. {decision}."))  # fmt: skip
        mlflow.set_tags({"promotion": alias, "promotion_decision": decision,
                         "model_version": version, "model_kind": "timing"})  # fmt: skip
    return run.info.run_id, version


def leave_months(
    tracking_uri: str, name: str, snap: pd.DataFrame, p_churn, month: str
) -> pd.DataFrame | None:
    """``expected_leave_month``, ``p_leave_next_month`` and the timing model's version for
    each row of ``snap`` (snapshot ``month``), ``p_churn`` being the champion's.

    ``p_leave_next_month`` is the probability of leaving in the window's first month (next
    month with the default gap of 0). None when no timing model is champion, or it needs
    columns the snapshot lacks: the lists then show the column empty.
    """
    found = registry.find(tracking_uri, name)
    if found is None:
        log.info("no %s champion: the lists carry no expected month of leaving", name)
        return None
    model = registry.load(found)
    missing = [c for c in model.feature_names_in_ if c not in snap.columns]
    if missing:
        log.warning("timing model %s v%s needs %d columns the snapshot of %s lacks (%s...): "
                    "no expected month of leaving", name, found.version, len(missing), month,
                    missing[0])  # fmt: skip
        return None
    q = model.predict_proba(snap)
    months = np.array(window_months(month, model.gap, model.horizon), dtype=object)
    return pd.DataFrame(
        {
            "expected_leave_month": months[median_month(q) - 1],
            "p_leave_next_month": np.asarray(p_churn, dtype=float) * q[:, 0],
            "timing_model_version": found.version,
        }
    )
