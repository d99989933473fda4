"""Score a feature snapshot with the champion, and explain it (SHAP reasons).

TreeSHAP over the champion's trees costs about 4 ms a subscriber (70 s for the demo's
15,566), while the lists hold a few thousand. By default (``model.explain: listed``) the
global drivers and plots come from a seeded sample (``model.global_sample``) and the
per-subscriber reasons are computed when publishing, for whoever is on a list
(:func:`explain_subscribers`); ``all`` explains everyone here, as does a base no larger
than the sample.

The scores file holds full numbers: it is internal, read by publishing only. Its layout,
``<scores>/<month>/scores.parquet``, is spelled here alone.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from features import store
from models import explain, registry, timing
from models.config import ModelConfig, ReasonConfig

log = logging.getLogger(__name__)

FILE = "scores.parquet"
CARRIED = [
    "msisdn",
    "snapshot_month",
    "payment_type",
    "value_tier",
    "arpu_3m",
    "days_since_complaint_resolved",
]  # snapshot columns the outreach policy needs next to the score


@dataclass
class ScoreResult:
    month: str
    path: str
    scored: int
    model_version: str
    run_id: str
    shap_max_abs_diff: float
    top_drivers: list[str]


def scores_path(root: Path, month: str) -> Path:
    return Path(root) / month / FILE


def score(
    features: Path,
    scores: Path,
    model_cfg: ModelConfig,
    reasons: ReasonConfig,
    *,
    tracking_uri: str,
    month: str | None = None,
    timing_name: str | None = None,
) -> ScoreResult:
    """Probability and value inputs for every subscriber of the snapshot; SHAP reasons too
    with ``model.explain: all``.

    ``month`` defaults to the latest snapshot under ``features``; the global explanation
    (features only, no numbers) is logged to the champion's run. With ``timing_name``, the
    champion of that timing model adds the expected month of leaving
    (:func:`models.timing.leave_months`; none registered: the columns are left out).
    """
    month = month or store.latest_month(features)
    champ = registry.champion(tracking_uri, model_cfg.name)
    model = registry.load(champ)
    df = store.read_snapshots(features, [month])
    feats = list(model.feature_names_in_)
    X = df[feats].astype(float)
    p = model.predict_proba(X)[:, 1]
    everyone = model_cfg.explain == "all" or len(X) <= model_cfg.global_sample
    G = X if everyone else X.sample(model_cfg.global_sample, random_state=0)
    sv, _ = explain.shap_values(model, G)
    n = min(model_cfg.explain_sample, len(G))
    sample = G.sample(n, random_state=0) if n < len(G) else G
    ref = explain.shap_reference(model, sample)
    fast = sv[G.index.get_indexer(sample.index)]
    diff = float(np.max(np.abs(ref - fast))) if n else 0.0
    importance = explain.global_importance(sv, feats)
    parts = [df[CARRIED].reset_index(drop=True), pd.DataFrame({"p_churn": p})]
    timed = timing.leave_months(tracking_uri, timing_name, df, p, month) if timing_name else None
    if timed is not None:
        parts.append(timed)
    if everyone:  # asked for, or the sample is the whole base anyway: the reasons are free
        parts.append(_explained(sv, df, feats, reasons).drop(columns="msisdn"))  # G is X
    out = pd.concat(parts, axis=1)
    out["model_version"] = champ.version
    out["run_id"] = champ.run_id
    target = scores_path(scores, month)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{FILE}.tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, fig in explain.global_plots(sv, G).items():
            fig.savefig(d / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        importance.to_csv(d / "shap_importance.csv", index=False)
        (d / "shap_check.json").write_text(json.dumps({"rows_checked": n, "max_abs_diff": diff}))
        registry.connect(tracking_uri).log_artifacts(
            champ.run_id, str(d), artifact_path=f"explanations/{month}"
        )
    log.info(
        "scored %d subscribers of %s with %s v%s; explained %s (global drivers from %d); "
        "SHAP fast path vs shap: max |diff| %.2e",
        len(out), month, model_cfg.name, champ.version,
        "everyone" if everyone else "at publishing, whoever is listed",
        len(G), diff,
    )  # fmt: skip
    return ScoreResult(
        month,
        str(target),
        len(out),
        champ.version,
        champ.run_id,
        diff,
        importance.feature.head(10).tolist(),
    )


def _explained(sv: np.ndarray, snap: pd.DataFrame, feats: list[str], reasons: ReasonConfig):
    """msisdn, summed SHAP per reason group (``shap_group_<g>``) and the reasons in words."""
    groups = explain.group_contributions(sv, feats, reasons)
    texts = explain.reason_texts(groups, snap, reasons)  # facts may name any snapshot column
    return pd.concat(
        [
            snap[["msisdn"]].reset_index(drop=True),
            groups.add_prefix("shap_group_").reset_index(drop=True),
            texts.reset_index(drop=True),
        ],
        axis=1,
    )


def scored_by(scored: pd.DataFrame, name: str) -> registry.RegisteredVersion:
    """The model version that wrote a scores frame (its ``model_version`` and ``run_id``)."""
    return registry.RegisteredVersion(
        name, str(scored["model_version"].iat[0]), str(scored["run_id"].iat[0])
    )


def explain_subscribers(
    features: Path, reasons: ReasonConfig, model: registry.RegisteredVersion, month: str,
    msisdns,
) -> pd.DataFrame:  # fmt: skip
    """Reasons (as :func:`score` writes them with ``explain: all``) for some of a month's rows.

    ``model`` must be the version that scored the month, so the reasons explain the
    probability on the list.
    """
    est = registry.load(model)
    snap = store.read_snapshots(features, [month])
    snap = snap[snap["msisdn"].isin(set(msisdns))].reset_index(drop=True)
    feats = list(est.feature_names_in_)
    sv, _ = explain.shap_values(est, snap[feats].astype(float))
    return _explained(sv, snap, feats, reasons)
