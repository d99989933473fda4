"""Score a feature snapshot with the champion and explain every subscriber (SHAP reasons).

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
from models import explain, registry
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
) -> ScoreResult:
    """Probability, SHAP reasons and value inputs for every subscriber of the snapshot.

    ``month`` defaults to the latest snapshot under ``features``; the global explanation
    (features only, no numbers) is logged to the champion's run.
    """
    month = month or store.latest_month(features)
    champ = registry.champion(tracking_uri, model_cfg.name)
    model = registry.load(champ)
    df = store.read_snapshots(features, [month])
    feats = list(model.feature_names_in_)
    X = df[feats].astype(float)
    p = model.predict_proba(X)[:, 1]
    sv, _ = explain.shap_values(model, X)
    n = min(model_cfg.explain_sample, len(X))
    sample = X.sample(n, random_state=0) if n < len(X) else X
    ref = explain.shap_reference(model, sample)
    fast = sv[X.index.get_indexer(sample.index)]
    diff = float(np.max(np.abs(ref - fast))) if n else 0.0
    groups = explain.group_contributions(sv, feats, reasons)
    texts = explain.reason_texts(groups, df, reasons)  # facts may name any snapshot column
    importance = explain.global_importance(sv, feats)
    out = pd.concat(
        [
            df[CARRIED].reset_index(drop=True),
            pd.DataFrame({"p_churn": p}),
            groups.add_prefix("shap_group_").reset_index(drop=True),
            texts.reset_index(drop=True),
        ],
        axis=1,
    )
    out["model_version"] = champ.version
    out["run_id"] = champ.run_id
    target = scores_path(scores, month)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{FILE}.tmp")
    out.to_parquet(tmp, index=False)
    os.replace(tmp, target)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name, fig in explain.global_plots(sv, X).items():
            fig.savefig(d / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        importance.to_csv(d / "shap_importance.csv", index=False)
        (d / "shap_check.json").write_text(json.dumps({"rows_checked": n, "max_abs_diff": diff}))
        registry.connect(tracking_uri).log_artifacts(
            champ.run_id, str(d), artifact_path=f"explanations/{month}"
        )
    log.info(
        "scored %d subscribers of %s with %s v%s; SHAP fast path vs shap: max |diff| %.2e",
        len(out),
        month,
        model_cfg.name,
        champ.version,
        diff,
    )
    return ScoreResult(
        month,
        str(target),
        len(out),
        champ.version,
        champ.run_id,
        diff,
        importance.feature.head(10).tolist(),
    )
