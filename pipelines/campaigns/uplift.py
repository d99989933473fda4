"""From randomised campaigns to the effect of contacting each subscriber, and back to a list.

The training rows are every treated or held-out row of every campaign (the system's
lists and the CRM's own pilots and targeted campaigns) whose horizon is observed, with
the features of the snapshot before the contact month: what was known when the contact
was decided. Complaint callbacks are never held out, so they teach nothing and are left out.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features import store
from features.build import model_features
from models import registry
from pipelines.campaigns import measure
from pipelines.campaigns.run import experiment_rows
from pipelines.config import Settings

log = logging.getLogger(__name__)

PREFIX = "uplift_"  # effect columns of a scored month: uplift_<channel>
BALANCED = (0.3, 0.7)  # treated share of a campaign whose rows the out-of-time test reads


def training_frame(settings: Settings) -> tuple[pd.DataFrame, list[str]]:
    """Rows (features, ``treatment``, ``churned``, ``contact_month``) and the feature names."""
    cfg = settings.uplift
    rows = measure.with_outcomes(experiment_rows(settings), settings.path("features"))
    rows = rows[rows["churned"].notna() & ~rows["complaint_callback"].fillna(False).astype(bool)]
    feats = model_features()
    parts = []
    for month, part in rows.groupby("snapshot_month"):
        snap = store.read_snapshots(settings.path("features"), [month])
        keep = ["msisdn", *[f for f in feats if f in snap.columns]]
        parts.append(part[["msisdn", "campaign", "group", "channel", "contact_month", "churned"]]
                     .merge(snap[keep], on="msisdn", how="inner"))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=["treatment", "churned", "contact_month"]), []
    frame = pd.concat(parts, ignore_index=True)
    frame["treatment"] = np.where(frame["group"] == "treated", frame["channel"], cfg.control)
    frame = frame.drop_duplicates(["msisdn", "contact_month"], keep="first")
    # a campaign that treats about as many as it holds out is randomised over those it drew
    # with one propensity: the out-of-time test reads Qini curves on those campaigns only
    share = frame.groupby("campaign")["group"].transform(lambda g: (g == "treated").mean())
    frame["balanced"] = share.between(*BALANCED)
    used = [f for f in feats if f in frame.columns]
    cols = [*used, "treatment", "churned", "contact_month", "balanced"]
    return frame[cols].reset_index(drop=True), used


def baseline_frame(settings: Settings, frame: pd.DataFrame, features: list[str],
                   ) -> pd.DataFrame:  # fmt: skip
    """The base outside every campaign in the campaigns' snapshot months, for the risk model
    of the risk-based learner: features, ``churned`` (the snapshot label), ``contact_month``.

    Rows already in ``frame`` (treated or held out) are left out, so the risk the arm terms
    are fitted on is never an in-sample prediction. At most ``uplift.baseline_rows`` rows,
    a seeded sample spread over the months.
    """
    cfg = settings.uplift
    contacted = experiment_rows(settings)[["msisdn", "snapshot_month"]]
    parts = []
    for month in sorted(contacted["snapshot_month"].unique()):
        if month not in set(store.months(settings.path("features"))):
            continue
        snap = store.read_snapshots(settings.path("features"), [month],
                                    columns=["msisdn", "label_churn", *features])  # fmt: skip
        taken = contacted.loc[contacted["snapshot_month"] == month, "msisdn"]
        snap = snap[snap["label_churn"].notna() & ~snap["msisdn"].isin(taken)]
        contact = str(pd.Period(month, freq="M") + 1)
        parts.append(snap.drop(columns="msisdn").rename(columns={"label_churn": "churned"})
                     .assign(contact_month=contact))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=[*features, "churned", "contact_month"])
    base = pd.concat(parts, ignore_index=True)
    base = base[base["contact_month"].isin(frame["contact_month"].unique())]
    if len(base) > cfg.baseline_rows:
        base = base.sample(cfg.baseline_rows, random_state=cfg.seed)
    base["churned"] = base["churned"].astype(int)
    return base.reset_index(drop=True)


def effects(
    settings: Settings, month: str, scored: pd.DataFrame,
    version: registry.RegisteredVersion | None = None,
) -> tuple[pd.DataFrame | None, str]:  # fmt: skip
    """Each scored subscriber's estimated effect of contact per channel, and why (or why not).

    From the champion, or from ``version`` when given (to compare a challenger's list).
    None when no uplift model is champion: the lists then keep the risk ranking.
    """
    name = settings.uplift.name
    champ = version or registry.find(settings.tracking_uri(), name)
    if champ is None:
        latest = registry.latest_version(settings.tracking_uri(), name)
        why = (f"v{latest.version}: {latest.tags['promotion_decision']}"
               if latest is not None and latest.tags.get("promotion_decision")
               else "too little randomised campaign history")  # fmt: skip
        return None, f"no uplift model is champion ('{name}', {why}): ranked by value at risk"
    model = registry.load(champ)
    snap = store.read_snapshots(settings.path("features"), [month])
    snap = snap[snap["msisdn"].isin(scored["msisdn"])]
    eff = model.predict_effect(snap[list(model.feature_names_in_)])
    eff.columns = [f"{PREFIX}{c}" for c in eff.columns]
    eff.insert(0, "msisdn", snap["msisdn"].to_numpy())
    why = (f"ranked by expected incremental value from uplift model {name} v{champ.version} "
           f"(arms {', '.join(model.arms_)})")  # fmt: skip
    return eff.reset_index(drop=True), why
