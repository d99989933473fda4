"""Churn events (docs/extracts.md definition) and the label of a snapshot.

A subscriber churns in month m when billing shows ``cancelled``/``ported_out`` for m
(first time), or, for prepaid, at the first of k consecutive silent months (no usage,
no payment). A subscriber churns once: the earliest event counts.
"""

from __future__ import annotations

from features.catalog import Feature
from features.context import MONTH_IDX

LABEL = Feature(
    "label_churn", "label", "T+1+gap..T+H+gap",
    "1 if the subscriber churns in the label window (or is already silent at T and that silence proves to be churn); "
    "null while the window is not fully observed",
    "flag", "int", False,
)  # fmt: skip
OFFSET = Feature(
    "label_churn_offset", "label", "T+1+gap..T+H+gap",
    "month of the label window in which the subscriber churns: k = 1..H for churn in month T+gap+k; "
    "0 when already silent at T and that silence proves to be churn (the leaving month is past); "
    "null when label_churn is 0 or null (the same point-in-time rule)",
    "month", "int", False,
)  # fmt: skip
LABELS = (LABEL, OFFSET)  # every column of a snapshot that looks past T


def churn_events_sql(billing_view: str, inactivity_months: int) -> str:
    """One row per churned subscriber: ``churn_idx`` (year*12+month) and how."""
    k = inactivity_months
    return f"""
    WITH b AS (
        SELECT msisdn, {MONTH_IDX} AS idx, status,
            payment_type = 'prepaid' AND voice_minutes = 0 AND data_mb = 0 AND sms_count = 0 AND paid_amount = 0 AS silent
        FROM {billing_view}
    ),
    hard AS (SELECT msisdn, min(idx) AS idx, 'hard' AS kind FROM b WHERE status IN ('cancelled', 'ported_out') GROUP BY msisdn),
    s AS (SELECT msisdn, idx, idx - row_number() OVER (PARTITION BY msisdn ORDER BY idx) AS grp FROM b WHERE silent),
    runs AS (SELECT msisdn, min(idx) AS start_idx, count(*) AS len FROM s GROUP BY msisdn, grp),
    quiet AS (SELECT msisdn, min(start_idx) AS idx, 'silent' AS kind FROM runs WHERE len >= {k} GROUP BY msisdn),
    ev AS (SELECT * FROM hard UNION ALL SELECT * FROM quiet)
    SELECT msisdn, min(idx) AS churn_idx, arg_min(kind, idx) AS churn_kind FROM ev GROUP BY msisdn
    """


def label_sql(
    obs: str, churn: str, t_idx: int, last_idx: int, horizon: int, gap: int, inactivity_months: int
) -> str:
    """Labels for every row of ``obs`` (msisdn, is_postpaid) from the full-history churn table.

    ``label_churn`` says whether, ``label_churn_offset`` in which month of the window; both
    are null until the window is observed, so the month of leaving leaks no sooner than
    the fact.
    """
    lo, hi = t_idx + 1 + gap, t_idx + horizon + gap
    # observable only once the whole window (and, for prepaid, the silence that proves churn) is in the lake;
    # positives are not let through early, or late months would look like 100% churn
    unseen = (
        f"{hi} + CASE WHEN o.is_postpaid = 1 THEN 0 ELSE {inactivity_months - 1} END > {last_idx}"
    )
    return f"""
    SELECT o.msisdn,
        CASE
            WHEN {unseen} THEN NULL
            WHEN c.churn_idx BETWEEN {lo} AND {hi} OR c.churn_idx <= {t_idx} THEN 1
            ELSE 0
        END AS {LABEL.name},
        CASE
            WHEN {unseen} THEN NULL
            WHEN c.churn_idx BETWEEN {lo} AND {hi} THEN c.churn_idx - {t_idx + gap}
            WHEN c.churn_idx <= {t_idx} THEN 0
        END AS {OFFSET.name}
    FROM {obs} o LEFT JOIN {churn} c USING (msisdn)
    """
