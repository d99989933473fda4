"""Risk-based uplift: the effect of contact as a few terms around a well-estimated risk.

Randomised retention pilots are small and their effects are a few points, so a learner
that fits the effect as a free function of a hundred features (T/X/DR on trees) mostly
fits noise. Medicine meets the same problem with small trials and settled on risk-based
heterogeneity analysis (the PATH statement, Kent et al. 2020): estimate each person's
baseline risk with a model that can use every row, then estimate how the treatment
shifts that risk with a few terms, the risk itself and a handful of effect modifiers.

Here, per arm (channel), on the log-odds scale::

    logit P(churn | arm, x) = a0 + a1 * l(x) + b0 + b1 * l(x) + g . m(x)
    logit P(churn | control, x) = a0 + a1 * l(x)

``l`` is the log-odds of a LightGBM risk model blind to the contacts: fitted on the
base's rows outside any campaign (``baseline_X``, many more rows than the campaigns
hold) or, without them, out of fold on the campaign rows themselves. ``m`` are the
``n_modifiers`` features the risk model leans on most, as centred ranks. The terms of
every arm are fitted jointly with the shared control part by L2-penalised maximum
likelihood (the arm terms are shrunk towards "no effect"). The effect of an arm is the
difference of the two probabilities: it grows with risk, may turn positive where a
modifier says so (a sleeping dog), and is exactly 0 when the data show nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold

from models.config import UpliftLGBMParams
from models.estimator import _as_float, make_lgbm
from models.uplift import checked_inputs, split_arms

log = logging.getLogger(__name__)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class RiskScaledUplift(BaseEstimator):
    """Multi-arm uplift from a risk model and a penalised arm-by-risk logistic model.

    Same interface as :class:`models.uplift.UpliftLearner`: ``fit(X, treatment, y)``,
    ``predict_effect(X)`` (one column per arm, negative = the contact helps),
    ``control_model_`` (the risk model), ``arms_``, ``dropped_arms_``.
    """

    def __init__(
        self,
        control: str = "control",
        min_treated: int = 200,
        min_control: int = 200,
        n_folds: int = 2,
        n_modifiers: int = 6,
        penalty: float = 30.0,
        lgbm_params: dict | None = None,
        seed: int = 42,
    ):
        self.control = control
        self.min_treated = min_treated
        self.min_control = min_control
        self.n_folds = n_folds
        self.n_modifiers = n_modifiers
        self.penalty = penalty
        self.lgbm_params = lgbm_params
        self.seed = seed

    def fit(
        self,
        X: pd.DataFrame,
        treatment,
        y,
        sample_weight=None,
        propensity=None,
        baseline_X: pd.DataFrame | None = None,
        baseline_y=None,
    ):
        """``baseline_X``/``baseline_y``: uncontacted rows for the risk model (optional).

        ``propensity`` is accepted for the common interface; randomisation makes it moot.
        """
        X, t, y, w = checked_inputs(X, treatment, y, sample_weight)
        y = y.astype(float)
        self.arms_, self.dropped_arms_ = split_arms(
            t, self.control, self.min_treated, self.min_control
        )
        keep = np.isin(t, [self.control, *self.arms_])
        X, t, y, w = X[keep], t[keep], y[keep], w[keep]
        params = dict(self.lgbm_params or UpliftLGBMParams().model_dump())
        if baseline_X is not None and len(baseline_X):
            Xb = _as_float(baseline_X[list(X.columns)])
            yb = np.asarray(baseline_y).astype(int)
            self.control_model_ = make_lgbm(params, self.seed).fit(Xb, yb)
            oof = self.control_model_.predict_proba(X)[:, 1]  # X is not among its rows
            self.baseline_rows_ = len(Xb)
        else:
            self.control_model_ = make_lgbm(params, self.seed).fit(
                X, y.astype(int), sample_weight=w
            )
            oof = np.empty(len(y))
            folds = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.seed)
            for a, b in folds.split(X, y.astype(int) * 2 + (t == self.control)):
                est = make_lgbm(params, self.seed).fit(X.iloc[a], y[a].astype(int),
                                                       sample_weight=w[a])  # fmt: skip
                oof[b] = est.predict_proba(X.iloc[b])[:, 1]
            self.baseline_rows_ = 0
        gain = self.control_model_.booster_.feature_importance("gain")
        order = np.argsort(-gain, kind="stable")
        self.modifiers_ = [X.columns[i] for i in order[: self.n_modifiers] if gain[i] > 0]
        grid = np.linspace(0, 1, 101)
        self.modifiers_ = [c for c in self.modifiers_ if X[c].notna().any()]
        self.quantiles_ = {c: np.nanquantile(X[c].to_numpy(float), grid) for c in self.modifiers_}
        self.coef_ = self._fit_glm(_logit(oof), self._modifiers(X), t, y, w)
        self.feature_names_in_ = np.array(X.columns)
        self.n_features_in_ = X.shape[1]
        log.info("risk-based uplift: modifiers %s; arm terms %s", self.modifiers_,
                 {a: np.round(c, 3).tolist() for a, c in self.coef_["arms"].items()})  # fmt: skip
        return self

    def _modifiers(self, X: pd.DataFrame) -> np.ndarray:
        """Each modifier as its rank among the training rows, centred on 0 (-0.5..0.5)."""
        cols = []
        for c in self.modifiers_:
            v = np.nan_to_num(X[c].to_numpy(float), nan=self.quantiles_[c][50])
            cols.append(np.interp(v, self.quantiles_[c], np.linspace(0, 1, 101)) - 0.5)
        return np.column_stack(cols) if cols else np.zeros((len(X), 0))

    def _fit_glm(self, lo, M, t, y, w) -> dict[str, Any]:
        """Joint penalised likelihood of the control part and every arm's terms."""
        k, n_arm = M.shape[1], 2 + M.shape[1]
        arm_of = {a: i for i, a in enumerate(self.arms_)}
        idx = np.array([arm_of.get(v, -1) for v in t])
        Z = np.column_stack([np.ones(len(lo)), lo, M])  # an arm's design: 1, l, m
        n_par = 2 + n_arm * len(self.arms_)
        lam = np.r_[0.0, 0.0, np.tile(np.r_[1.0, 1.0, np.ones(k)], len(self.arms_))] * self.penalty
        sw = w / w.mean()

        def loss(theta):
            eta = theta[0] + theta[1] * lo
            arm_terms = theta[2:].reshape(len(self.arms_), n_arm)
            treated = idx >= 0
            eta = eta + np.where(treated, (Z * arm_terms[np.maximum(idx, 0)]).sum(axis=1), 0.0)
            p = expit(eta)
            nll = -(sw * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum()
            r = sw * (p - y)
            g = np.zeros(n_par)
            g[0], g[1] = r.sum(), (r * lo).sum()
            for j in range(len(self.arms_)):
                on = idx == j
                g[2 + j * n_arm : 2 + (j + 1) * n_arm] = Z[on].T @ r[on]
            return nll + 0.5 * (lam * theta**2).sum(), g + lam * theta

        theta0 = np.zeros(n_par)
        theta0[1] = 1.0
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B")
        if not res.success:
            log.warning("risk-based uplift: the fit did not converge (%s)", res.message)
        th = res.x
        return {"control": th[:2],
                "arms": {a: th[2 + j * n_arm : 2 + (j + 1) * n_arm] for a, j in arm_of.items()}}  # fmt: skip

    def predict_effect(self, X: pd.DataFrame) -> pd.DataFrame:
        """Estimated change in P(churn) if contacted through each arm (negative = helps)."""
        Xf = _as_float(X[list(self.feature_names_in_)])
        lo = _logit(self.control_model_.predict_proba(Xf)[:, 1])
        Z = np.column_stack([np.ones(len(lo)), lo, self._modifiers(Xf)])
        a0, a1 = self.coef_["control"]
        base = a0 + a1 * lo
        out = {arm: expit(base + Z @ c) - expit(base) for arm, c in self.coef_["arms"].items()}
        return pd.DataFrame(out, index=X.index, columns=self.arms_)
