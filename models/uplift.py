"""Uplift: the effect of a retention contact on each subscriber's churn, per channel.

Learned from randomised campaigns with meta-learners on LightGBM, so a list can be ranked
by what a contact changes rather than by who is at risk (a sure leaver and a sure stayer
are both wasted contacts). Every arm is compared with the control arm alone:

- ``t``: one classifier per arm, effect = P(churn | arm, x) - P(churn | control, x).
- ``x``: the X-learner (Künzel et al. 2019): imputed effects of each side regressed on x,
  combined with the propensity; better when an arm is much smaller than the control.
- ``dr``: the DR-learner (Kennedy 2023): doubly robust pseudo-outcomes from cross-fitted
  outcome and propensity models, regressed on x; unbiased if either nuisance is right.

Effects are changes in P(churn = 1): a useful contact has a NEGATIVE effect, a positive one
is a sleeping dog (the contact itself prompts leaving).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold

from models.config import UpliftConfig, UpliftLGBMParams
from models.estimator import _as_float, lgbm_fixed, make_lgbm, make_logistic

log = logging.getLogger(__name__)

METHODS = ("t", "x", "dr")
RISK_COLUMN = "__control_risk__"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def make_lgbm_regressor(params: dict[str, Any], seed: int) -> lgb.LGBMRegressor:
    """Unfitted LightGBM regressor (the second stage of the X- and DR-learners)."""
    return lgb.LGBMRegressor(objective="regression", **lgbm_fixed(seed), **params)


def checked_inputs(X, treatment, y, sample_weight=None):
    """(float X, treatment labels, 0/1 y, weights), or a ValueError that says what is wrong."""
    X = _as_float(X)
    t = np.asarray(treatment).astype(str)
    y = np.asarray(y)
    if not (len(X) == len(t) == len(y)):
        raise ValueError(f"X, treatment and y differ in length: {len(X)}, {len(t)}, {len(y)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be 0/1 (1 = churned)")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    return X, t, y.astype(int), w


def split_arms(
    t: np.ndarray, control: str, min_treated: int, min_control: int
) -> tuple[list[str], list[str]]:
    """(arms kept, arms dropped with a warning for having fewer than ``min_treated`` rows)."""
    labels, counts = np.unique(t, return_counts=True)
    n = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    if n.get(control, 0) < min_control:
        raise ValueError(
            f"{n.get(control, 0)} rows in control arm {control!r}; "
            f"at least {min_control} are needed"
        )
    arms, dropped = [], []
    for arm in sorted(a for a in n if a != control):
        (arms if n[arm] >= min_treated else dropped).append(arm)
    for arm in dropped:
        log.warning(
            "uplift: arm %r dropped: %d rows < min_treated %d (not predicted)",
            arm, n[arm], min_treated,
        )  # fmt: skip
    if not arms:
        raise ValueError(f"no arm has {min_treated} rows: nothing to learn")
    return arms, dropped


class _Constant:
    """A propensity 'model' for known shares: the same probability for every row."""

    def __init__(self, p: float):
        self.p = float(p)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.p)


class UpliftLearner(BaseEstimator):
    """Multi-arm meta-learner of the effect of a contact on P(y = 1), one column per arm.

    ``fit(X, treatment, y)``: ``treatment`` holds arm labels (``control`` is the control
    arm), ``y`` is 0/1 (1 = churned). ``propensity`` (optional) gives the campaign's known
    assignment shares: a mapping label -> share, or a DataFrame with a column per label
    (row-wise shares); the control's share may be left out (it is 1 - the others). Without
    it, P(arm | x) is estimated by ``propensity_model``. Arms with fewer than ``min_treated``
    rows are dropped with a warning (``dropped_arms_``) and are not predicted.
    """

    def __init__(
        self,
        method: str = "x",
        control: str = "control",
        min_treated: int = 200,
        min_control: int = 200,
        n_folds: int = 2,
        propensity_model: str = "logistic",
        propensity_clip: float = 0.02,
        lgbm_params: dict | None = None,
        risk_feature: bool = True,
        seed: int = 42,
    ):
        self.method = method
        self.control = control
        self.min_treated = min_treated
        self.min_control = min_control
        self.n_folds = n_folds
        self.propensity_model = propensity_model
        self.propensity_clip = propensity_clip
        self.lgbm_params = lgbm_params
        self.risk_feature = risk_feature
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        X: pd.DataFrame,
        treatment,
        y,
        sample_weight=None,
        propensity: Mapping[str, float] | pd.DataFrame | None = None,
    ) -> UpliftLearner:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.propensity_model not in ("logistic", "lgbm"):
            raise ValueError(
                f"propensity_model must be logistic or lgbm, not {self.propensity_model!r}"
            )
        if self.method == "dr" and self.n_folds < 2:
            raise ValueError("the DR-learner cross-fits: n_folds must be 2 or more")
        X, t, y, w = checked_inputs(X, treatment, y, sample_weight)
        self.arms_, self.dropped_arms_ = self._arms(t)
        given = self._given_propensity(propensity, t, X.index)
        ctl = t == self.control
        self.control_model_ = None
        risk = None
        if self.method in ("t", "x") or self.risk_feature:  # one control model serves every arm
            self.control_model_ = self._classifier().fit(X[ctl], y[ctl], sample_weight=w[ctl])
        if self.risk_feature and self.method != "t":
            risk = self._fit_risk(X, ctl, y, w)
        self.models_: dict[str, dict[str, Any]] = {}
        for arm in self.arms_:
            m = ctl | (t == arm)
            e = None if given is None else given[arm][m]
            fit = getattr(self, f"_fit_{self.method}")
            r = None if risk is None else risk[m]
            self.models_[arm] = fit(X[m], (t[m] == arm).astype(int), y[m], w[m], e, r)
        self.feature_names_in_ = np.array(X.columns)
        self.n_features_in_ = X.shape[1]
        return self

    def _arms(self, t: np.ndarray) -> tuple[list[str], list[str]]:
        return split_arms(t, self.control, self.min_treated, self.min_control)

    def _given_propensity(self, propensity, t, index) -> dict[str, np.ndarray] | None:
        """Known shares -> P(arm | x, arm or control) per kept arm, clipped."""
        if propensity is None:
            return None
        if isinstance(propensity, pd.DataFrame):
            p = {c: propensity[c].to_numpy(float) for c in propensity.columns}
            if len(propensity) != len(t):
                raise ValueError("propensity has a row count different from X")
        else:
            p = {k: np.full(len(t), float(v)) for k, v in propensity.items()}
        labels = set(np.unique(t)) - {self.control}
        if missing := sorted(labels - set(p)):
            raise ValueError(f"propensity lacks arms {missing}")
        if self.control not in p:
            p[self.control] = 1.0 - sum(p[a] for a in p)
        out = {}
        for arm in self.arms_:
            with np.errstate(divide="ignore", invalid="ignore"):
                e = p[arm] / (p[arm] + p[self.control])
            if not np.isfinite(e).all() or (e <= 0).any() or (e >= 1).any():
                raise ValueError(f"propensity of arm {arm!r} vs control is not in (0, 1)")
            out[arm] = self._clip(e)
        return out

    def _clip(self, e: np.ndarray) -> np.ndarray:
        return np.clip(e, self.propensity_clip, 1 - self.propensity_clip)

    def _params(self) -> dict[str, Any]:
        if self.lgbm_params is None:  # the settings' defaults, not LightGBM's (too loose)
            return UpliftLGBMParams().model_dump()
        return dict(self.lgbm_params)

    def _classifier(self) -> lgb.LGBMClassifier:
        return make_lgbm(self._params(), self.seed)

    def _regressor(self) -> lgb.LGBMRegressor:
        return make_lgbm_regressor(self._params(), self.seed)

    def _fit_propensity(self, X, d, w, e):
        """P(arm | x) within arm + control: known shares if given, else a fitted model."""
        if e is not None:
            return _Constant(np.average(e, weights=w))
        if self.propensity_model == "logistic":
            return make_logistic(self.seed).fit(X, d, logisticregression__sample_weight=w)
        return self._classifier().fit(X, d, sample_weight=w)

    def _propensity(self, model, X: pd.DataFrame) -> np.ndarray:
        if isinstance(model, _Constant):
            return model.predict(X)
        return self._clip(model.predict_proba(X)[:, 1])

    def _fit_risk(self, X, ctl, y, w) -> np.ndarray:
        """Log-odds of churn without contact, out of fold on control rows (no leak of y)."""
        risk = self.control_model_.predict_proba(X)[:, 1]
        Xc, yc, wc, oof = X[ctl], y[ctl], w[ctl], np.empty(int(ctl.sum()))
        for a, b in StratifiedKFold(self.n_folds, shuffle=True, random_state=self.seed).split(
            Xc, yc
        ):
            est = self._classifier().fit(Xc.iloc[a], yc[a], sample_weight=wc[a])
            oof[b] = est.predict_proba(Xc.iloc[b])[:, 1]
        risk[ctl] = oof
        return _logit(risk)

    def _stage2(self, X: pd.DataFrame, r: np.ndarray | None) -> pd.DataFrame:
        """Stage-2 input: the features, plus the control risk when ``risk_feature`` is on.

        Effects often scale with risk (only a leaver can be kept); one column that says it
        spares the trees rebuilding the risk from many features out of noisy targets.
        """
        if r is None:
            return X
        return X.assign(**{RISK_COLUMN: r})

    def _fit_t(self, X, d, y, w, e, r) -> dict[str, Any]:
        tr = d == 1
        return {"mu1": self._classifier().fit(X[tr], y[tr], sample_weight=w[tr])}

    def _fit_x(self, X, d, y, w, e, r) -> dict[str, Any]:
        tr, ct = d == 1, d == 0
        mu1 = self._classifier().fit(X[tr], y[tr], sample_weight=w[tr])
        # each side's outcome model predicts the other side, never its own training rows
        d1 = y[tr] - self.control_model_.predict_proba(X[tr])[:, 1]
        d0 = mu1.predict_proba(X[ct])[:, 1] - y[ct]
        Z = self._stage2(X, r)
        tau1 = self._regressor().fit(Z[tr], d1, sample_weight=w[tr])
        tau0 = self._regressor().fit(Z[ct], d0, sample_weight=w[ct])
        return {"mu1": mu1, "tau0": tau0, "tau1": tau1, "e": self._fit_propensity(X, d, w, e)}

    def _fit_dr(self, X, d, y, w, e, r) -> dict[str, Any]:
        pseudo = np.empty(len(y))
        folds = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.seed)
        for a, b in folds.split(X, d * 2 + y):
            Xa, da, ya, wa = X.iloc[a], d[a], y[a], w[a]
            t1, t0 = da == 1, da == 0
            mu1 = self._classifier().fit(Xa[t1], ya[t1], sample_weight=wa[t1])
            mu0 = self._classifier().fit(Xa[t0], ya[t0], sample_weight=wa[t0])
            Xb = X.iloc[b]
            prop = None if e is not None else self._fit_propensity(Xa, da, wa, None)
            eb = e[b] if prop is None else self._propensity(prop, Xb)
            m1, m0 = mu1.predict_proba(Xb)[:, 1], mu0.predict_proba(Xb)[:, 1]
            db, yb = d[b], y[b]
            pseudo[b] = m1 - m0 + db / eb * (yb - m1) - (1 - db) / (1 - eb) * (yb - m0)
        self.pseudo_outcome_sd_ = float(np.std(pseudo))
        return {"tau": self._regressor().fit(self._stage2(X, r), pseudo, sample_weight=w)}

    # -- prediction ------------------------------------------------------------------------

    def predict_effect(self, X: pd.DataFrame) -> pd.DataFrame:
        """Estimated change in P(churn) if contacted through each arm (negative = helps)."""
        Xf = _as_float(X[list(self.feature_names_in_)])
        r = None
        if self.risk_feature and self.method != "t":
            r = _logit(self._control_risk(Xf))
        Z = self._stage2(Xf, r)
        out = {}
        for arm, m in self.models_.items():
            if self.method == "t":
                tau = m["mu1"].predict_proba(Xf)[:, 1] - self._control_risk(Xf)
            elif self.method == "x":
                g = self._propensity(m["e"], Xf)
                tau = g * m["tau0"].predict(Z) + (1 - g) * m["tau1"].predict(Z)
            else:
                tau = m["tau"].predict(Z)
            out[arm] = np.clip(tau, -1.0, 1.0)
        return pd.DataFrame(out, index=X.index, columns=self.arms_)

    def _control_risk(self, Xf: pd.DataFrame) -> np.ndarray:
        return self.control_model_.predict_proba(Xf)[:, 1]


def uplift_learner(cfg: UpliftConfig, **overrides: Any):
    """The learner the settings describe (keyword overrides win, e.g. in experiments)."""
    method = overrides.pop("method", cfg.method)
    if method == "risk":
        from models.uplift_risk import RiskScaledUplift

        common = dict(control=cfg.control, min_treated=cfg.min_treated,
                      min_control=cfg.min_control, n_folds=cfg.n_folds,
                      n_modifiers=cfg.n_modifiers, penalty=cfg.penalty,
                      lgbm_params=cfg.lgbm.model_dump(), seed=cfg.seed)  # fmt: skip
        return RiskScaledUplift(**(common | overrides))
    params = dict(
        method=method,
        control=cfg.control,
        min_treated=cfg.min_treated,
        min_control=cfg.min_control,
        n_folds=cfg.n_folds,
        propensity_model=cfg.propensity_model,
        propensity_clip=cfg.propensity_clip,
        lgbm_params=cfg.lgbm.model_dump(),
        seed=cfg.seed,
    )
    return UpliftLearner(**(params | overrides))


def incremental_value(
    effects: pd.DataFrame,
    value: pd.Series,
    cost_per_arm: Mapping[str, float],
    require_profit: bool = True,
) -> pd.DataFrame:
    """Per row, the arm with the largest expected gain = -effect x value - cost, and that gain.

    An arm whose effect is >= 0 (useless, or a sleeping dog) is never chosen; with
    ``require_profit`` neither is one whose gain is <= 0 (the contact costs more than it
    saves). Rows with no arm chosen get ``arm`` None and effect and gain 0. Ties go to the
    arm listed first in ``effects``.
    """
    if missing := [a for a in effects.columns if a not in cost_per_arm]:
        raise KeyError(f"no contact cost for arms {missing}")
    v = value.reindex(effects.index).astype(float)
    if v.isna().any():
        raise ValueError(f"{int(v.isna().sum())} rows of effects have no value")
    eff = effects.astype(float).to_numpy()
    cost = np.array([float(cost_per_arm[a]) for a in effects.columns])
    gain = -eff * v.to_numpy()[:, None] - cost[None, :]
    allowed = np.isfinite(eff) & (eff < 0)
    if require_profit:
        allowed &= gain > 0
    gain = np.where(allowed, gain, -np.inf)
    best = np.argmax(gain, axis=1)
    rows = np.arange(len(eff))
    chosen = allowed[rows, best]
    arms = np.asarray(effects.columns, dtype=object)[best]
    return pd.DataFrame(
        {
            "arm": pd.Series(np.where(chosen, arms, None), index=effects.index, dtype=object),
            "effect": np.where(chosen, eff[rows, best], 0.0),
            "gain": np.where(chosen, gain[rows, best], 0.0),
        },
        index=effects.index,
    )
