"""Settings of the model library: training, registry, reasons, and the economics of a contact.

:class:`Economics` is the one definition of what a retention contact costs and brings;
EMP in the evaluation and the outreach policy both read it, so they cannot disagree.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipelines.lake.config import Strict


class LGBMParams(Strict):
    n_estimators: int = Field(800, ge=10)
    learning_rate: float = Field(0.03, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    max_depth: int = Field(8, ge=-1)
    min_child_samples: int = Field(40, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    n_jobs: int = Field(2, ge=1)


class Economics(Strict):
    """What a contact costs and brings (Verbraken's expected maximum profit, and the list's ranking)."""

    incentive: float = Field(10.0, ge=0, description="CNY offered per contact")
    contact_cost: float = Field(1.0, ge=0, description="CNY per contact")
    contact_cost_by_channel: dict[str, float] = Field(
        default_factory=lambda: {"account_manager": 20.0, "call_centre": 5.0, "sms_app": 0.5},
        description="CNY per contact by channel, for uplift targeting (else contact_cost)",
    )
    acceptance_alpha: float = Field(
        6.0, gt=0, description="share of contacted churners who stay ~ Beta(alpha, beta)"
    )
    acceptance_beta: float = Field(14.0, gt=0, description="see acceptance_alpha (mean 0.3)")
    clv: float = Field(200.0, gt=0, description="customer value for the EMP metric (CNY)")
    value_horizon_months: int = Field(
        12, ge=1, description="months of ARPU that make a subscriber's own value"
    )
    capacity_share: float = Field(
        0.05, gt=0, le=1, description="retention capacity as a share of the scored base"
    )

    @property
    def acceptance_rate(self) -> float:
        """Expected share of contacted would-be leavers who stay: the mean of the Beta."""
        return self.acceptance_alpha / (self.acceptance_alpha + self.acceptance_beta)

    def value(self, arpu_3m: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
        """A subscriber's value: ``value_horizon_months`` of their 3-month ARPU (never negative)."""
        if isinstance(arpu_3m, pd.Series):
            return arpu_3m.clip(lower=0).fillna(0) * self.value_horizon_months
        return np.nan_to_num(np.clip(np.asarray(arpu_3m, float), 0, None)) * (
            self.value_horizon_months
        )


class ModelConfig(Strict):
    name: str = Field("churn-model", description="registered model name in MLflow")
    experiment: str = "churn-early-warning"
    tracking_uri: str = Field(
        "", description="empty: sqlite:///<data_dir>/mlflow/mlflow.db; any MLflow URI works"
    )
    promotion_metric: Literal["roc_auc", "pr_auc", "top_decile_lift", "emp"] = "roc_auc"
    retrain_every_months: int = Field(
        3, ge=1, description="the monthly refresh retrains when the champion is this old"
    )
    seed: int = 42
    early_stopping_rounds: int = Field(50, ge=5)
    calibration: Literal["auto", "isotonic", "sigmoid"] = Field(
        "auto", description="auto: chosen on the validation month by Brier score"
    )
    stayer_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="share of the training months' stayers read for training (every churner "
        "is; the sampled weigh 1/share); validation and test months are read whole, so the "
        "calibration sees the true rate. Below 1 for bases too big for memory",
    )
    min_label_coverage: float = Field(
        0.99, gt=0, le=1, description="a snapshot trains once this share of it is labelled"
    )
    explain_sample: int = Field(
        200, ge=10, description="rows where the fast SHAP path is checked against shap itself"
    )
    explain: Literal["listed", "all"] = Field(
        "listed",
        description="listed: reasons for whoever the month's lists hold (computed when "
        "publishing) and a seeded sample for the global drivers (a base no larger than the "
        "sample is explained at scoring); all: every subscriber at scoring",
    )
    global_sample: int = Field(
        3000, ge=100, description="rows whose SHAP values make the global drivers and plots"
    )
    tune_trials: int = Field(
        0,
        ge=0,
        description="Optuna (TPE) trials on the validation month before training, the first "
        "one the lgbm settings; the best is refitted and gated (0: no tuning; churn train --tune)",
    )
    tune_timeout_seconds: float = Field(
        0, ge=0, description="no tuning trial starts after this many seconds (0: no limit)"
    )
    lgbm: LGBMParams = Field(default_factory=LGBMParams)


class Bound(Strict):
    """An inclusive range a feature's value must fall in; a missing value is never in range."""

    min: float | None = None
    max: float | None = None

    def holds(self, v: pd.Series) -> pd.Series:
        """Vectorised test (NaN is out of range, so a missing value never triggers anything)."""
        v = pd.to_numeric(v, errors="coerce").astype(float)
        ok = v.notna() & np.isfinite(v)
        if self.min is not None:
            ok &= v >= self.min
        if self.max is not None:
            ok &= v <= self.max
        return ok


class ReasonFact(Strict):
    """One small statement about a subscriber; said only when its values say something.

    Placeholders name features (``{arpu_1m:.0f}``; ``!a`` formats the absolute value) and
    ``{up|down}`` picks the first word when ``change`` is positive and the second when it
    is negative. ``change`` is one signed feature, or ``[now, before]`` (now - before). The
    fact is skipped when a feature it names is missing, a ``when`` bound fails, a bounded
    value still reads as zero, or the change rounds to nothing in the text.
    """

    en: str
    zh: str
    when: dict[str, Bound] = Field(default_factory=dict)
    change: list[str] = Field(default_factory=list, max_length=2)
    fallback: bool = Field(False, description="said only when no earlier fact of the group was")

    @model_validator(mode="after")
    def _direction_needs_change(self) -> ReasonFact:
        if not self.change and any("|" in t.split("}")[0] for t in (self.en + self.zh).split("{")):
            raise ValueError(f"fact {self.en!r} has an {{up|down}} word but no `change` to sign it")
        return self


class ReasonGroup(Strict):
    """Features whose summed SHAP makes one reason; its facts say it with the subscriber's values."""

    features: list[str]
    en: str = Field(description="the group's name, as a heading")
    zh: str
    facts: list[ReasonFact] = Field(default_factory=list)
    offer: str = Field(
        "", description="offer code for this reason when no segment is more specific"
    )


class Action(Strict):
    """What an agent says, and what they offer (Chinese first: the agents read zh)."""

    say_zh: str
    say_en: str
    offer_zh: str
    offer_en: str
    detail: list[ReasonFact] = Field(
        default_factory=list,
        description="facts with the subscriber's own numbers added to what to say; "
        "the first that says something is used, none when none does",
    )


class Segment(Strict):
    """A behavioural segment: when any bound holds, its offer wins over the reason group's."""

    any_of: dict[str, Bound]
    offer: str


class ReasonConfig(Strict):
    """Feature -> reason group and its facts; offers; segments in priority order (first wins)."""

    groups: dict[str, ReasonGroup]
    offers: dict[str, Action] = Field(default_factory=dict)
    segments: dict[str, Segment] = Field(default_factory=dict)
    facts_per_group: int = Field(2, ge=1, description="most facts said for one reason group")

    @model_validator(mode="after")
    def _unique(self) -> ReasonConfig:
        seen: dict[str, str] = {}
        for g, rg in self.groups.items():
            for f in rg.features:
                if f in seen:
                    raise ValueError(f"feature {f} is in reason groups {seen[f]} and {g}")
                seen[f] = g
        named = [(f"group {g}", rg.offer) for g, rg in self.groups.items() if rg.offer]
        named += [(f"segment {n}", sg.offer) for n, sg in self.segments.items()]
        for who, code in named:
            if code not in self.offers:
                raise ValueError(f"{who} names offer {code!r}, which is not in reasons.offers")
        return self


class UpliftLGBMParams(Strict):
    """LightGBM for the uplift meta-learners: small and regularised, since effects are faint."""

    n_estimators: int = Field(100, ge=10)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(7, ge=2)
    max_depth: int = Field(-1, ge=-1, description="-1: no limit beyond num_leaves")
    min_child_samples: int = Field(200, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(5.0, ge=0)
    n_jobs: int = Field(2, ge=1)


class UpliftConfig(Strict):
    """How the effect of a contact is learned from randomised retention campaigns.

    Contact costs are not here: they are the economics' (:class:`Economics`).
    """

    name: str = Field("churn-uplift", description="registered model name in MLflow")
    min_campaign_months: int = Field(
        3, ge=2, description="randomised contact months needed: at least one to learn from"
    )
    test_months: int = Field(
        2, ge=1, description="the latest contact months, pooled, are the out-of-time test"
    )
    method: Literal["risk", "t", "x", "dr"] = Field(
        "risk",
        description="risk (risk-based: a few arm terms around a risk model fitted on the "
        "whole base), or a meta-learner: t (one model per arm), x (X-learner), dr (doubly "
        "robust)",
    )
    gate_confidence: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="promotion needs the lower end of this bootstrap interval of Qini(model) "
        "- Qini(risk ranking) on the test months above 0: an edge, not noise",
    )
    gate_resamples: int = Field(200, ge=20, description="bootstrap resamples of the gate")
    baseline_rows: int = Field(
        200_000, ge=1000, description="at most this many uncontacted rows for the risk model"
    )
    n_modifiers: int = Field(
        6, ge=0, le=30, description="risk-based: features allowed to shift an arm's effect"
    )
    penalty: float = Field(
        30.0, ge=0, description="risk-based: L2 penalty shrinking the arm terms towards none"
    )
    control: str = Field("control", description="treatment label of the uncontacted arm")
    min_treated: int = Field(200, ge=1, description="an arm with fewer rows is dropped (warned)")
    min_control: int = Field(200, ge=1, description="fewer control rows than this is an error")
    n_folds: int = Field(2, ge=2, description="cross-fitting folds of the DR-learner")
    propensity_model: Literal["logistic", "lgbm"] = Field(
        "logistic", description="estimates P(arm | x) when the campaign's shares are not given"
    )
    propensity_clip: float = Field(
        0.02, gt=0, lt=0.5, description="propensities are clipped to [clip, 1 - clip]"
    )
    seed: int = 42
    lgbm: UpliftLGBMParams = Field(default_factory=UpliftLGBMParams)


class TimingConfig(Strict):
    """The time-to-churn model: in which month of the label window a leaver leaves.

    A discrete-time hazard on the training months' leavers (models/timing.py); small
    trees, since a few thousand leavers are all it learns from.
    """

    enabled: bool = Field(
        True, description="train it with the churn model and put the month on the lists"
    )
    name: str = Field("churn-timing", description="registered model name in MLflow")
    learner: Literal["lgbm", "logistic"] = Field(
        "lgbm", description="the hazard's learner (window month k is one of its features)"
    )
    min_leavers: int = Field(
        100, ge=10, description="leavers with a known month needed in the training months"
    )
    n_estimators: int = Field(300, ge=10)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(7, ge=2)
    min_child_samples: int = Field(40, ge=1)
    reg_lambda: float = Field(5.0, ge=0)
    early_stopping_rounds: int = Field(30, ge=5)
    seed: int = 42

    def lgbm_params(self) -> dict:
        """LightGBM settings of the hazard (the project's fixed ones are added by make_lgbm).

        One thread: on a few thousand rows a second one only waits for the first (0.2 s
        against 3-10 s on the demo's leavers while other jobs hold the cores).
        """
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                "reg_lambda": self.reg_lambda, "subsample": 0.8, "subsample_freq": 1,
                "colsample_bytree": 0.8, "n_jobs": 1}  # fmt: skip


class MonitorConfig(Strict):
    """When the scoring month has moved away from the champion's training window.

    PSI thresholds are the usual credit-scoring ones (0.1 watch, 0.25 alarm); the
    retraining triggers are what the monthly refresh reads besides the calendar.
    """

    bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference for PSI")
    psi_watch: float = Field(0.1, gt=0, description="PSI from which a feature is watched")
    psi_alarm: float = Field(0.25, gt=0, description="PSI from which a feature is in alarm")
    missing_alarm: float = Field(
        0.1, gt=0, le=1, description="alarm when a feature's missing share grows by this much"
    )
    reference_rows: int = Field(
        50_000, ge=1000, description="seeded sample of the training window used as reference"
    )
    quarantine_factor: float = Field(
        3.0, gt=1, description="a source's quarantine rate alarms above this times its median"
    )
    quarantine_min_increase: float = Field(
        0.005, ge=0, description="... and at least this much above it (a share of rows)"
    )
    retrain_on_evidence: bool = Field(
        True, description="the refresh retrains on drift or decay, not only by calendar"
    )
    retrain_features_alarmed: int = Field(
        5, ge=1, description="retrain when at least this many features are in alarm"
    )
    retrain_score_psi: float = Field(
        0.25, gt=0, description="retrain when the score's PSI reaches this"
    )
    retrain_auc_drop: float = Field(
        0.03,
        ge=0,
        description="retrain when the estimated AUC falls below its estimate on the champion's "
        "test month, or a realised AUC below the test AUC, by this much and by two standard errors",
    )
