"""SHAP explanations: LightGBM's own tree contributions (fast path), global plots, reason texts.

Contributions are in log-odds of the uncalibrated model; calibration is monotone, so
the features that push the margin up are the ones that raise the risk.
"""

from __future__ import annotations

import math
import string

import matplotlib.pyplot as plt  # no backend forced: inline in notebooks, Agg when headless
import numpy as np
import pandas as pd

from models.config import ReasonConfig


def shap_values(model, X: pd.DataFrame) -> tuple[np.ndarray, float]:
    """(n x features) SHAP values and the expected value, from LightGBM's pred_contrib."""
    contrib = model.contributions(X)
    return contrib[:, :-1], float(contrib[0, -1]) if len(contrib) else 0.0


def shap_reference(model, X: pd.DataFrame) -> np.ndarray:
    """The same values from shap.TreeExplainer, to check the fast path against."""
    import shap

    explainer = shap.TreeExplainer(model.estimator_)
    vals = explainer.shap_values(X[list(model.feature_names_in_)].astype(float))
    vals = vals[1] if isinstance(vals, list) else vals
    return vals[:, :, 1] if vals.ndim == 3 else vals


def group_contributions(
    shap: np.ndarray, features: list[str], reasons: ReasonConfig
) -> pd.DataFrame:
    """Summed SHAP per reason group (columns = groups)."""
    col = {f: i for i, f in enumerate(features)}
    out = {}
    for g, rg in reasons.groups.items():
        idx = [col[f] for f in rg.features if f in col]
        out[g] = shap[:, idx].sum(axis=1) if idx else np.zeros(len(shap))
    return pd.DataFrame(out)


class _Safe(string.Formatter):
    """Formats a template with the subscriber's values; a missing value reads 'n/a' instead of failing."""

    def format_field(self, value, format_spec):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


_FMT = _Safe()


def reason_texts(
    groups: pd.DataFrame,
    values: pd.DataFrame,
    reasons: ReasonConfig,
    top: int = 3,
    min_shap: float = 0.05,
) -> pd.DataFrame:
    """Top `top` groups that raise risk (summed SHAP above `min_shap` log-odds), as codes and en/zh texts."""
    g = groups.to_numpy()
    names = np.array(groups.columns)
    order = np.argsort(-g, axis=1, kind="stable")[:, :top]
    rows = []
    recs = values.to_dict("records")
    for i, rec in enumerate(recs):
        row = {}
        for k, j in enumerate(order[i], start=1):
            if g[i, j] <= min_shap:
                break
            rg = reasons.groups[names[j]]
            row[f"reason_{k}"] = names[j]
            row[f"reason_{k}_en"] = _FMT.format(rg.en, **rec)
            row[f"reason_{k}_zh"] = _FMT.format(rg.zh, **rec)
            row[f"reason_{k}_shap"] = float(g[i, j])
        rows.append(row)
    cols = [f"reason_{k}{s}" for k in range(1, top + 1) for s in ("", "_en", "_zh", "_shap")]
    return pd.DataFrame(rows, columns=cols, index=values.index)


def global_plots(shap: np.ndarray, X: pd.DataFrame, top: int = 3) -> dict[str, plt.Figure]:
    """Summary (beeswarm) and dependence plots of the top drivers, as matplotlib figures."""
    import shap as shap_lib

    figs = {}
    shap_lib.summary_plot(shap, X.astype(float), show=False, max_display=20)
    figs["shap_summary.png"] = plt.gcf()
    mean_abs = np.abs(shap).mean(axis=0)
    for i in np.argsort(-mean_abs)[:top]:
        name = X.columns[i]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(X.iloc[:, i], shap[:, i], s=4, alpha=0.4)
        ax.axhline(0, c="grey", lw=0.8)
        ax.set(xlabel=name, ylabel="SHAP value (log-odds)", title=f"dependence: {name}")
        figs[f"shap_dependence_{name}.png"] = fig
    return figs


def global_importance(shap: np.ndarray, features: list[str]) -> pd.DataFrame:
    imp = pd.DataFrame(
        {
            "feature": features,
            "mean_abs_shap": np.abs(shap).mean(axis=0),
            "mean_shap": shap.mean(axis=0),
        }
    )
    return imp.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)
