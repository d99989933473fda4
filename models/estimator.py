"""The churn model and its baselines, as scikit-learn estimators.

:class:`ChurnModel` is LightGBM with early stopping on an out-of-time validation
month, then calibrated on that month (isotonic or sigmoid, whichever has the lower
Brier score in a two-fold check). Classes are not reweighted: the probabilities are
meant to be read as probabilities.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def lgbm_fixed(seed: int) -> dict[str, Any]:
    """What every LightGBM of the project shares: seeded, quiet, bit-for-bit repeatable."""
    return {"random_state": seed, "verbose": -1, "deterministic": True, "force_row_wise": True}


def make_lgbm(params: dict[str, Any], seed: int) -> lgb.LGBMClassifier:
    """Unfitted LightGBM with the configured hyper-parameters."""
    return lgb.LGBMClassifier(objective="binary", **lgbm_fixed(seed), **params)


def _as_float(X: pd.DataFrame) -> pd.DataFrame:
    """Plain floats, NaN for missing (pandas 3 strings and nullable ints are not LightGBM
    input); a frame already all float32 stays float32, so a big training table is not doubled."""
    if len(X.columns) and all(t == np.float32 for t in X.dtypes):
        return X
    return X.astype("float64")


def fit_early_stopped(
    params: dict[str, Any],
    seed: int,
    X: pd.DataFrame,
    y: np.ndarray,
    X_val: pd.DataFrame,
    y_val: np.ndarray,
    *,
    early_stopping_rounds: int,
    categorical: list[str] | None = None,
    sample_weight: np.ndarray | None = None,
) -> lgb.LGBMClassifier:
    """LightGBM stopped early on the validation month (float frames, ``X_val`` in ``X``'s
    columns): what :class:`ChurnModel` calibrates, and what a tuning trial scores."""
    est = make_lgbm(params, seed)
    cats = [c for c in (categorical or []) if c in X.columns]
    est.fit(
        X, y, sample_weight=sample_weight, eval_X=(X_val,), eval_y=(y_val,),
        eval_metric="binary_logloss",
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
        categorical_feature=cats or "auto",  # integer codes read as categories
    )  # fmt: skip
    return est


class ChurnModel(ClassifierMixin, BaseEstimator):
    """Calibrated LightGBM churn classifier."""

    def __init__(
        self,
        lgbm_params: dict | None = None,
        seed: int = 42,
        early_stopping_rounds: int = 50,
        calibration: str = "auto",
        categorical: list[str] | None = None,
        prevalence: float | None = None,
    ):
        self.lgbm_params = lgbm_params
        self.seed = seed
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.categorical = categorical
        self.prevalence = prevalence

    def fit(
        self, X: pd.DataFrame, y, X_val: pd.DataFrame | None = None, y_val=None,
        sample_weight=None,
    ) -> ChurnModel:  # fmt: skip
        """LightGBM on the training rows (``sample_weight``: a sampled table's weights that
        undo the sampling), stopped early on and calibrated to the unsampled validation month."""
        X = _as_float(X)
        y = np.asarray(y, dtype=int)
        if X_val is None:
            raise ValueError("ChurnModel needs an out-of-time validation set (X_val, y_val)")
        X_val = _as_float(X_val[X.columns])
        y_val = np.asarray(y_val, dtype=int)
        est = fit_early_stopped(
            self.lgbm_params or {}, self.seed, X, y, X_val, y_val,
            early_stopping_rounds=self.early_stopping_rounds, categorical=self.categorical,
            sample_weight=None if sample_weight is None else np.asarray(sample_weight, float),
        )  # fmt: skip
        self.estimator_ = est
        self.best_iteration_ = int(est.best_iteration_ or est.n_estimators)
        self.calibration_method_ = self._choose_method(est, X_val, y_val)
        self.calibrator_ = CalibratedClassifierCV(
            FrozenEstimator(est), method=self.calibration_method_
        ).fit(X_val, y_val)
        self.validation_prevalence_ = float(np.mean(y_val))
        if self.prevalence is not None and not 0 < self.prevalence < 1:
            raise ValueError(f"prevalence must be in (0, 1), got {self.prevalence}")
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(X.columns)
        self.n_features_in_ = X.shape[1]
        return self

    def _choose_method(self, est, X_val, y_val) -> str:
        if self.calibration != "auto":
            return self.calibration
        scores = {}
        folds = StratifiedKFold(2, shuffle=True, random_state=self.seed)
        for method in ("isotonic", "sigmoid"):
            s = []
            for a, b in folds.split(X_val, y_val):
                cal = CalibratedClassifierCV(FrozenEstimator(est), method=method).fit(
                    X_val.iloc[a], y_val[a]
                )
                s.append(brier_score_loss(y_val[b], cal.predict_proba(X_val.iloc[b])[:, 1]))
            scores[method] = float(np.mean(s))
        self.calibration_scores_ = scores
        return min(scores, key=scores.get)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated on the validation month; with ``prevalence``, moved to that base rate.

        A table whose training and validation periods were oversampled (say 50% churners)
        calibrates to their rate. Bayes' rule moves each probability's odds by the ratio
        of the given prevalence's odds to the validation month's (prior shift: the churners
        and stayers themselves look the same, only their shares differ).
        """
        p = self.calibrator_.predict_proba(_as_float(X[list(self.feature_names_in_)]))
        if self.prevalence is None:
            return p
        pv, pt = self.validation_prevalence_, self.prevalence
        a, b = pt / pv, (1 - pt) / (1 - pv)
        p1 = p[:, 1] * a / (p[:, 1] * a + p[:, 0] * b)
        return np.column_stack([1 - p1, p1])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def raw_margin(self, X: pd.DataFrame) -> np.ndarray:
        """LightGBM log-odds before calibration (what SHAP values add up to)."""
        return self.estimator_.predict(_as_float(X[list(self.feature_names_in_)]), raw_score=True)

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """Per-feature SHAP values in log-odds, last column the expected value (LightGBM pred_contrib)."""
        return self.estimator_.predict(
            _as_float(X[list(self.feature_names_in_)]), pred_contrib=True
        )


def make_logistic(seed: int, categorical: list[str] | None = None):
    """Baseline: standardised logistic regression with median imputation; categorical
    columns (integer codes) one-hot encoded, a missing level a level of its own."""
    model = LogisticRegression(max_iter=2000, C=0.5, random_state=seed)
    if not categorical:
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), model)
    cats = list(categorical)
    prep = ColumnTransformer(
        [("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1),
                               OneHotEncoder(handle_unknown="ignore")), cats)],
        remainder=make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
    )  # fmt: skip
    return make_pipeline(prep, model)


class OperatorRules(ClassifierMixin, BaseEstimator):
    """Baseline: the operators' own rules from docs/domain.md turned into a score.

    One point each for an alert bill, an unresolved complaint, and short tenure with a
    low balance (or arrears); ties broken by dropped calls. No learning: ``fit`` only
    records the base rate used to turn points into a probability-like score.
    """

    def __init__(self, short_tenure_months: int = 12, low_balance: float = 20.0):
        self.short_tenure_months = short_tenure_months
        self.low_balance = low_balance

    def fit(self, X: pd.DataFrame, y) -> OperatorRules:
        pts = self._points(X)
        y = np.asarray(y, dtype=int)
        self.rate_by_points_ = {int(p): float(y[pts == p].mean()) for p in np.unique(pts)}
        self.classes_ = np.array([0, 1])
        return self

    def _points(self, X: pd.DataFrame) -> np.ndarray:
        alert = X["alert_bill"].fillna(0).to_numpy() > 0
        complaint = X["open_complaints"].fillna(0).to_numpy() > 0
        short = (X["tenure_months"].fillna(999).to_numpy() < self.short_tenure_months) & (
            (X["balance"].fillna(0).to_numpy() < self.low_balance)
            | (X["arrears"].fillna(0).to_numpy() > 0)
        )
        return alert.astype(int) + complaint.astype(int) + short.astype(int)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        pts = self._points(X)
        base = np.array([self.rate_by_points_.get(int(p), np.nan) for p in pts])
        base = np.where(np.isnan(base), pts / 3.0, base)
        tie = 1e-3 * X["dropped_call_rate_3m"].fillna(0).to_numpy()
        p = np.clip(base + tie, 0, 1)
        return np.column_stack([1 - p, p])
