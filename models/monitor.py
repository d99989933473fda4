"""Monitoring of the champion: drift against its training window, performance before labels.

Every scoring month gets a :class:`MonitorReport`: PSI and KS per feature and for the
score against a seeded sample of the champion's training months, each feature's
missing share, the quarantine rate per source against its history, the AUC and Brier
score expected from the calibrated probabilities (CBPE), and a backtest of every
snapshot month (estimated against realised where labels have landed). The report says
whether the evidence calls for retraining; the calendar is the refresh's other reason.

Reports are written as ``<reports>/monitor/<month>.json`` (with the feature table as
``<month>.drift.csv``) and logged to MLflow as run ``monitor-<month>``; this module is
the one that knows that layout.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from features import store
from models import drift, registry
from models.config import ModelConfig, MonitorConfig

log = logging.getLogger(__name__)


@dataclass
class MonitorReport:
    month: str
    model_name: str
    model_version: str
    run_id: str
    reference_months: list[str]
    test_period: str
    test_auc: float
    test_auc_se: float
    test_estimated_auc: float
    rows: int
    reference_rows: int
    score: dict[str, float]
    estimated: dict[str, float]
    features: pd.DataFrame = field(repr=False)
    backtest: pd.DataFrame = field(repr=False)
    quarantine: pd.DataFrame = field(repr=False)

    def alarmed(self, level: str = "alarm") -> list[str]:
        return self.features.loc[self.features["status"] == level, "feature"].tolist()

    def quarantine_alarms(self) -> list[str]:
        q = self.quarantine
        hit = q[(q["status"] == "alarm") & (q["month"] == self.month)]
        return [f"{r.source} {r.rate:.1%} (median {r.median_before:.1%})" for r in hit.itertuples()]

    def realised(self) -> dict | None:
        """The latest month after the champion's test month whose labels have landed."""
        bt = self.backtest
        after = bt[(bt["role"] == "after") & bt["realised_auc"].notna()]
        return None if after.empty else after.iloc[-1].to_dict()

    def retrain_evidence(self, cfg: MonitorConfig) -> tuple[bool, str]:
        """Whether drift or decay calls for a new model, and the figures that say so.

        An AUC counts as fallen only below the champion's test AUC by ``retrain_auc_drop``
        and by two standard errors (Hanley-McNeil), so one unlucky month of a small base
        does not retrain. The estimate is held against the same estimate of the test
        month: CBPE's own bias (the calibration month is never quite the test month) cancels.
        """
        why = []
        alarmed = self.alarmed()
        if len(alarmed) >= cfg.retrain_features_alarmed:
            why.append(f"{len(alarmed)} features in alarm ({', '.join(alarmed[:3])}, ...)")
        if self.score["psi"] >= cfg.retrain_score_psi:
            why.append(f"score PSI {self.score['psi']:.2f} >= {cfg.retrain_score_psi}")
        if np.isfinite(self.test_auc):
            drop = max(cfg.retrain_auc_drop, 2 * _or0(self.test_auc_se))
            est, was = self.estimated["auc"], self.test_estimated_auc
            if np.isfinite(was) and est < was - drop:
                why.append(f"estimated AUC {est:.3f} < {was - drop:.3f} (estimated {was:.3f} "
                           f"on the test month {self.test_period})")  # fmt: skip
            if (r := self.realised()) is not None:
                se = math.hypot(_or0(self.test_auc_se), _or0(r["realised_auc_se"]))
                floor_r = self.test_auc - max(cfg.retrain_auc_drop, 2 * se)
                if r["realised_auc"] < floor_r:
                    why.append(f"realised AUC {r['realised_auc']:.3f} on {r['month']} < "
                               f"{floor_r:.3f} (test {self.test_auc:.3f})")  # fmt: skip
        if why:
            return True, "; ".join(why)
        return False, (
            f"no drift or decay: {len(alarmed)} features in alarm, score PSI "
            f"{self.score['psi']:.2f}, estimated AUC {self.estimated['auc']:.3f} "
            f"(test {self.test_auc:.3f})"
        )

    def headline(self) -> str:
        """One line: ``stable``, or what moved."""
        moved = [f"{r.feature} (PSI {r.psi:.2f})" if np.isfinite(r.psi) else r.feature
                 for r in self.features[self.features["status"] == "alarm"].head(3).itertuples()]  # fmt: skip
        parts = []
        if n := len(self.alarmed()):
            parts.append(f"{n} feature(s) moved: " + ", ".join(moved) + (", ..." if n > 3 else ""))
        if self.score["psi"] >= 0.1:
            parts.append(f"score PSI {self.score['psi']:.2f}")
        if q := self.quarantine_alarms():
            parts.append("quarantine up: " + ", ".join(q))
        est = f"estimated AUC {self.estimated['auc']:.3f} (test {self.test_auc:.3f})"
        return f"{self.month}: " + ("; ".join(parts) if parts else "stable") + f"; {est}"

    def summary(self) -> dict:
        """Figures for the CLI, the flow and the refresh's decision (JSON-safe)."""
        return {
            "month": self.month,
            "model_version": self.model_version,
            "headline": self.headline(),
            "features_alarm": len(self.alarmed()),
            "features_watch": len(self.alarmed("watch")),
            "score_psi": self.score["psi"],
            "estimated_auc": self.estimated["auc"],
            "test_auc": self.test_auc,
            "quarantine_alarms": self.quarantine_alarms(),
        }

    def to_json(self) -> dict:
        d = {
            k: v for k, v in asdict(self).items() if k not in ("features", "backtest", "quarantine")
        }
        d |= {"headline": self.headline(), "features": self.features.to_dict("records"),
              "backtest": self.backtest.to_dict("records"),
              "quarantine": self.quarantine.to_dict("records")}  # fmt: skip
        return _finite(d)


def _or0(x: float) -> float:
    return float(x) if x is not None and np.isfinite(x) else 0.0


def _finite(x):
    """NaN and infinities as null: the report is strict JSON that any reader accepts."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _roles(params: dict[str, str]) -> dict[str, str]:
    roles = {m: "train" for m in params.get("train_periods", "").split(",") if m}
    roles[params.get("valid_period", "")] = "valid"
    roles[params.get("test_period", "")] = "test"
    return roles


def backtest(snapshots: pd.DataFrame, p: np.ndarray, params: dict[str, str], min_coverage: float):
    """Every snapshot month: the estimated figures and, once labels land, the realised ones.

    ``role`` says what the month was to the champion (train, valid, test, or after its
    test month); only test and after are out of sample.
    """
    roles, test = _roles(params), params.get("test_period", "")
    rows = []
    labels = snapshots["label_churn"].astype("float64").to_numpy()
    for month, idx in snapshots.groupby("snapshot_month").indices.items():
        pm, y = p[idx], labels[idx]
        known = np.isfinite(y)
        row = {"month": month, "role": roles.get(month, "after" if month > test else "before"),
               "rows": len(idx), "labelled": float(known.mean()),
               "estimated_auc": drift.estimated_auc(pm), "expected_churn": float(pm.mean()),
               "expected_brier": drift.expected_brier(pm), "realised_auc": np.nan,
               "realised_auc_se": np.nan, "realised_churn": np.nan, "realised_brier": np.nan,
               "churners": np.nan}  # fmt: skip
        yk = y[known].astype(int)
        if known.mean() >= min_coverage and 0 < yk.sum() < len(yk):
            auc = roc_auc_score(yk, pm[known])
            row |= {"realised_auc": auc, "realised_churn": float(yk.mean()),
                    "realised_brier": brier_score_loss(yk, pm[known]), "churners": int(yk.sum()),
                    "realised_auc_se": drift.auc_standard_error(auc, yk.sum(), len(yk) - yk.sum())}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows).sort_values("month").reset_index(drop=True)


def monitor(
    features: Path, model_cfg: ModelConfig, cfg: MonitorConfig, *, tracking_uri: str,
    lake: Path, sources: list[str], month: str | None = None,
) -> MonitorReport:  # fmt: skip
    """Drift and estimated performance of ``month`` (default: the latest snapshot) for the champion."""
    champ = registry.champion(tracking_uri, model_cfg.name)
    have = store.months(features)
    month = month or have[-1]
    ref_months = [m for m in champ.params.get("train_periods", "").split(",") if m in have]
    if not ref_months:
        raise registry.NoChampion(
            f"champion v{champ.version} was not trained on this feature store "
            "(a brought table?): nothing to compare the month with"
        )
    model = registry.load(champ)
    feats = list(model.feature_names_in_)
    snaps = store.read_snapshots(features, columns=["snapshot_month", "label_churn", *feats])
    p_all = model.predict_proba(snaps[feats].astype(float))[:, 1]
    ref_mask = snaps["snapshot_month"].isin(ref_months).to_numpy()
    ref_idx = np.flatnonzero(ref_mask)
    if len(ref_idx) > cfg.reference_rows:
        ref_idx = np.sort(
            np.random.default_rng(0).choice(ref_idx, cfg.reference_rows, replace=False)
        )
    cur_idx = np.flatnonzero((snaps["snapshot_month"] == month).to_numpy())
    ref, cur = snaps.iloc[ref_idx], snaps.iloc[cur_idx]
    bt = backtest(snaps, p_all, champ.params, model_cfg.min_label_coverage)
    test = bt[bt["month"] == champ.params.get("test_period")]
    test_auc = float(champ.metrics.get("test_roc_auc", np.nan))
    test_se = float(test["realised_auc_se"].iat[0]) if len(test) else np.nan
    p_ref, p_cur = p_all[ref_idx], p_all[cur_idx]
    rep = MonitorReport(
        month=month, model_name=champ.name, model_version=champ.version, run_id=champ.run_id,
        reference_months=ref_months, test_period=champ.params.get("test_period", ""),
        test_auc=test_auc, test_auc_se=test_se, rows=len(cur),
        test_estimated_auc=float(test["estimated_auc"].iat[0]) if len(test) else np.nan, reference_rows=len(ref),
        score={"psi": drift.psi(p_ref, p_cur, cfg.bins), "ks": drift.ks(p_ref, p_cur),
               "mean_reference": float(p_ref.mean()), "mean_current": float(p_cur.mean())},
        estimated={"auc": drift.estimated_auc(p_cur), "brier": drift.expected_brier(p_cur),
                   "churn_rate": float(p_cur.mean())},
        features=drift.feature_drift(ref, cur, feats, cfg),
        backtest=bt,
        quarantine=drift.quarantine_rates(lake, sources, cfg),
    )  # fmt: skip
    log.info("monitor %s", rep.headline())
    return rep


def report_path(reports: Path, month: str) -> Path:
    return Path(reports) / "monitor" / f"{month}.json"


def write(rep: MonitorReport, reports: Path) -> Path:
    """The report as strict JSON, and the feature table as CSV, each replaced atomically."""
    target = report_path(reports, rep.month)
    target.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((target, json.dumps(rep.to_json(), indent=1, allow_nan=False)),
                       (target.with_suffix(".drift.csv"), rep.features.to_csv(index=False))):  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    return target


def read_report(reports: Path, month: str) -> dict | None:
    """A month's written report, or None when the month was not monitored."""
    p = report_path(reports, month)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


def log_run(rep: MonitorReport, *, tracking_uri: str, experiment: str, artifacts: Path) -> str:
    """MLflow run ``monitor-<month>``; an earlier run for the same month and model is replaced."""
    client = registry.setup_tracking(tracking_uri, experiment, artifacts)
    exp = mlflow.get_experiment_by_name(experiment)
    old = client.search_runs(
        [exp.experiment_id],
        f"tags.monitor_month = '{rep.month}' AND tags.model_version = '{rep.model_version}'",
    )
    for r in old:
        client.delete_run(r.info.run_id)
    s = rep.summary()
    metrics = {"score_psi": rep.score["psi"], "score_ks": rep.score["ks"],
               "estimated_auc": rep.estimated["auc"], "expected_brier": rep.estimated["brier"],
               "expected_churn_rate": rep.estimated["churn_rate"],
               "features_alarm": s["features_alarm"], "features_watch": s["features_watch"],
               "quarantine_alarms": len(s["quarantine_alarms"])}  # fmt: skip
    metrics |= {f"psi_{r.feature}": r.psi for r in rep.features.itertuples()}
    if (r := rep.realised()) is not None:
        metrics |= {
            "realised_auc": r["realised_auc"],
            "realised_month_lag": _lag(r["month"], rep.month),
        }
    with mlflow.start_run(run_name=f"monitor-{rep.month}") as run:
        mlflow.set_tags({"monitor_month": rep.month, "model_version": rep.model_version,
                         "model_name": rep.model_name, "headline": rep.headline()[:5000]})  # fmt: skip
        mlflow.log_metrics(
            {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        )
        mlflow.log_table(rep.features, "monitor/features.json")
        mlflow.log_table(rep.backtest, "monitor/backtest.json")
        if len(rep.quarantine):
            mlflow.log_table(rep.quarantine, "monitor/quarantine.json")
    return run.info.run_id


def _lag(a: str, b: str) -> int:
    return (pd.Period(b, freq="M") - pd.Period(a, freq="M")).n


def markdown(rep: MonitorReport, decision: str) -> str:
    """The Prefect artifact: the headline, the decision, and the features that moved."""
    top = rep.features[rep.features["status"] != "stable"].head(15)
    rows = "\n".join(f"| {r.feature} | {r.status} | {r.psi:.3f} | {r.ks:.3f} | "
                     f"{r.missing_reference:.1%} → {r.missing_current:.1%} |" for r in top.itertuples())  # fmt: skip
    bt = "\n".join(
        f"| {r.month} | {r.role} | {r.estimated_auc:.3f} | "
        + (f"{r.realised_auc:.3f} |" if np.isfinite(r.realised_auc) else "– |")
        for r in rep.backtest.itertuples()
    )
    return (
        f"## Monitoring {rep.month}: {rep.model_name} v{rep.model_version}\n\n{rep.headline()}\n\n"
        f"**Retraining:** {decision}\n\n"
        f"Reference: {len(rep.reference_months)} training months, {rep.reference_rows} rows; "
        f"score PSI {rep.score['psi']:.3f}, KS {rep.score['ks']:.3f}\n\n"
        "| feature | status | PSI | KS | missing |\n|---|---|---|---|---|\n"
        + (rows or "| (all stable) | | | | |")
        + "\n\n| month | role | estimated AUC | realised AUC |\n|---|---|---|---|\n"
        + bt
        + "\n"
    )
