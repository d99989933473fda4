"""SHAP explanations: LightGBM's own tree contributions (fast path), global plots, reason texts.

Contributions are in log-odds of the uncalibrated model; calibration is monotone, so
the features that push the margin up are the ones that raise the risk.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import string

import matplotlib.pyplot as plt  # no backend forced: inline in notebooks, Agg when headless
import numpy as np
import pandas as pd

from models.config import Bound, ReasonConfig, ReasonFact, ReasonGroup

log = logging.getLogger(__name__)

ACTION_COLUMNS = ("say_zh", "say_en", "offer_zh", "offer_en", "offer_code")


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


_PARSER = string.Formatter()
_NOTHING = re.compile(r"n/a|\bnan\b|\binf\b|-0(?:[.,]0+)?(?![.,\d])|(?:^|[;；,，]\s*)0 ", re.I)


def says_nothing(text: str) -> bool:
    """True for a text that reads 'n/a', 'nan', '-0' or starts a clause with a zero count."""
    return bool(_NOTHING.search(text))


def _missing(v: object) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError):
        return True


def _in(bound: Bound, v: float) -> bool:
    return (bound.min is None or v >= bound.min) and (bound.max is None or v <= bound.max)


@functools.lru_cache(maxsize=512)
def _parsed(template: str) -> tuple[tuple[str, str | None, str, str | None], ...]:
    return tuple(_PARSER.parse(template))


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in _parsed(template) if f and "|" not in f}


def _number(v: float, spec: str, conversion: str | None) -> str:
    """One value as text; ``!a`` is the absolute value, and a negative zero loses its sign."""
    v = abs(v) if conversion == "a" else v
    out = format(v, spec)
    if out.startswith("-") and not re.search(r"[1-9]", out):
        out = format(abs(v), spec)
    return out


def _render(template: str, rec: dict, sign: float) -> tuple[str, dict[str, str]]:
    """The template filled from ``rec``; ``{a|b}`` is a when ``sign`` > 0, b when < 0."""
    parts: list[str] = []
    shown: dict[str, str] = {}
    for literal, field, spec, conversion in _parsed(template):
        parts.append(literal)
        if field is None:
            continue
        if "|" in field:
            up, down = field.split("|", 1)
            parts.append(up if sign > 0 else down)
            continue
        shown[field] = _number(float(rec[field]), spec or "", conversion)
        parts.append(shown[field])
    return "".join(parts), shown


def fact_text(fact: ReasonFact, rec: dict) -> tuple[str, str] | None:
    """(en, zh) of one fact for one subscriber, or None when its values say nothing."""
    needed = _fields(fact.en) | _fields(fact.zh) | set(fact.when) | set(fact.change)
    if any(_missing(rec.get(f)) for f in needed):
        return None
    if not all(_in(b, float(rec[f])) for f, b in fact.when.items()):
        return None
    sign = 0.0
    if fact.change:
        vals = [float(rec[f]) for f in fact.change]
        sign = vals[0] - vals[1] if len(vals) == 2 else vals[0]
        if sign == 0:
            return None
    try:
        en, shown = _render(fact.en, rec, sign)
        zh, _ = _render(fact.zh, rec, sign)
    except (ValueError, TypeError) as e:  # a format that does not fit the value
        log.debug("fact %r not said: %s", fact.en, e)
        return None
    if len(fact.change) == 2 and fact.change[0] in shown and fact.change[1] in shown:
        if shown[fact.change[0]] == shown[fact.change[1]]:  # the change rounds away
            return None
    elif (
        len(fact.change) == 1
        and fact.change[0] in shown
        and not re.search(r"[1-9]", shown[fact.change[0]])
    ):
        return None
    if any(f in shown and not re.search(r"[1-9]", shown[f]) for f in fact.when):
        return None  # a bounded value that still reads as zero (0.4 complaints, 0.5 months)
    if says_nothing(en) or says_nothing(zh):
        return None
    return en, zh


def group_text(group: ReasonGroup, rec: dict, most: int) -> tuple[str, str] | None:
    """The group's facts that say something (at most ``most``), joined; None when none does."""
    said: list[tuple[str, str]] = []
    for f in group.facts:
        if len(said) == most or (f.fallback and said):
            continue
        t = fact_text(f, rec)
        if t is not None:
            said.append(t)
    if not said:
        return None
    return "; ".join(en for en, _ in said), "；".join(zh for _, zh in said)


def segment_of(values: pd.DataFrame, reasons: ReasonConfig) -> pd.Series:
    """Each subscriber's first segment (config order) whose condition holds; '' for none."""
    out = pd.Series("", index=values.index, dtype=object)
    for name, seg in reversed(list(reasons.segments.items())):  # earlier segments overwrite
        hit = pd.Series(False, index=values.index)
        for f, b in seg.any_of.items():
            if f in values:
                hit |= b.holds(values[f])
        out[hit] = name
    return out


def reason_texts(
    groups: pd.DataFrame,
    values: pd.DataFrame,
    reasons: ReasonConfig,
    top: int = 3,
    min_shap: float = 0.05,
) -> pd.DataFrame:
    """Top `top` risk-raising groups that have something true to say, and the action to take.

    Groups are tried in order of summed SHAP (only those above `min_shap` log-odds); one
    whose facts all say nothing gives its place to the next. The offer comes from the
    subscriber's segment when one holds (more specific), else from the first reason said.
    """
    g = groups.to_numpy()
    names = np.array(groups.columns)
    order = np.argsort(-g, axis=1, kind="stable")
    segments = segment_of(values, reasons)
    recs = values.to_dict("records")
    rows = []
    skipped = 0
    for i, rec in enumerate(recs):
        row: dict[str, object] = {}
        k = 0
        first_offer = ""
        for j in order[i]:
            if k == top or g[i, j] <= min_shap:
                break
            rg = reasons.groups[names[j]]
            text = group_text(rg, rec, reasons.facts_per_group)
            if text is None:
                skipped += 1
                continue
            k += 1
            row[f"reason_{k}"] = names[j]
            row[f"reason_{k}_en"], row[f"reason_{k}_zh"] = text
            row[f"reason_{k}_shap"] = float(g[i, j])
            first_offer = first_offer or rg.offer
        seg = segments.iat[i]
        code = reasons.segments[seg].offer if seg else first_offer
        row["offer_code"] = code
        if code:
            a = reasons.offers[code]
            say_en, say_zh = a.say_en, a.say_zh
            for fact in a.detail:  # the subscriber's own numbers make the opening concrete
                said = fact_text(fact, rec)
                if said is not None:
                    say_en, say_zh = f"{said[0]} {say_en}", f"{said[1]}{say_zh}"
                    break
            row.update(say_zh=say_zh, say_en=say_en, offer_zh=a.offer_zh, offer_en=a.offer_en)
        rows.append(row)
    log.info("reasons: %d groups had nothing true to say and gave way to the next", skipped)
    cols = [f"reason_{k}{s}" for k in range(1, top + 1) for s in ("", "_en", "_zh", "_shap")]
    cols += list(ACTION_COLUMNS)
    out = pd.DataFrame(rows, columns=cols, index=values.index)
    text_cols = [c for c in cols if c.endswith(("_en", "_zh")) or c in ACTION_COLUMNS]
    out[text_cols] = out[text_cols].fillna("").astype(object)
    return out


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
