"""Complaints, each ticket taken in the state it had at the end of T (later updates are ignored)."""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import SnapshotContext
from features.exact import mean

F = "complaints"
CATEGORIES = ("network", "billing", "service", "product", "handset", "other")


def _f(name, window, definition, unit, dtype="double", zero=False):
    return Feature(name, F, window, definition, unit, dtype, True, zero)


FEATURES = [
    _f("complaints_30d", "30d", "tickets opened in the 30 days up to the end of T", "tickets", "int", True),
    _f("complaints_90d", "90d", "tickets opened in the 90 days up to the end of T", "tickets", "int", True),
    _f("complaints_180d", "180d", "tickets opened in the 180 days up to the end of T", "tickets", "int", True),
    _f("open_complaints", "T", "tickets open or reopened at the end of T (any age)", "tickets", "int", True),
    _f("reopened_complaints_180d", "180d", "tickets of the last 180 days that were reopened by the end of T", "tickets", "int", True),
    _f("regulator_complaints_180d", "180d", "tickets of the last 180 days escalated to the regulator", "tickets", "int", True),
    _f("urgent_complaints_180d", "180d", "urgent tickets of the last 180 days", "tickets", "int", True),
    _f("mean_resolution_days_180d", "180d", "mean days from opening to resolution of tickets resolved by T; null without one", "days"),
    _f("days_since_last_complaint", "all", "days from the latest ticket opening to the end of T; null without a ticket", "days"),
    _f("days_since_complaint_resolved", "all", "days from the latest resolution to the end of T; null without one", "days"),
    _f("low_satisfaction_180d", "180d", "resolved tickets of the last 180 days rated 1 or 2", "tickets", "int", True),
] + [
    _f(f"complaints_{c}_180d", "180d", f"tickets of category '{c}' opened in the last 180 days", "tickets", "int", True)
    for c in CATEGORIES
]  # fmt: skip


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    nxt = f"TIMESTAMP '{ctx.next_start}'"
    cats = ",\n        ".join(
        f"count(*) FILTER (WHERE category = '{c}' AND age_days <= 180) AS complaints_{c}_180d"
        for c in CATEGORIES
    )
    return f"""
    WITH known AS (SELECT * FROM complaints_t WHERE updated_at < {nxt}),
    st AS (
        SELECT * FROM known
        QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY updated_at DESC, _delivered_at DESC) = 1
    ),
    hist AS (SELECT ticket_id, bool_or(status = 'reopened') AS was_reopened FROM known GROUP BY ticket_id),
    t AS (
        SELECT st.*, hist.was_reopened, date_diff('second', opened_at, {nxt}) / 86400.0 AS age_days
        FROM st JOIN hist USING (ticket_id)
    )
    SELECT
        msisdn,
        count(*) FILTER (WHERE age_days <= 30) AS complaints_30d,
        count(*) FILTER (WHERE age_days <= 90) AS complaints_90d,
        count(*) FILTER (WHERE age_days <= 180) AS complaints_180d,
        count(*) FILTER (WHERE status IN ('open', 'reopened')) AS open_complaints,
        count(*) FILTER (WHERE was_reopened AND age_days <= 180) AS reopened_complaints_180d,
        count(*) FILTER (WHERE channel = 'regulator' AND age_days <= 180) AS regulator_complaints_180d,
        count(*) FILTER (WHERE severity = 'urgent' AND age_days <= 180) AS urgent_complaints_180d,
        {mean("date_diff('second', opened_at, closed_at)", 86400, "status = 'resolved' AND age_days <= 180")} AS mean_resolution_days_180d,
        min(age_days) AS days_since_last_complaint,
        min(date_diff('second', closed_at, {nxt}) / 86400.0) FILTER (WHERE status = 'resolved') AS days_since_complaint_resolved,
        count(*) FILTER (WHERE status = 'resolved' AND satisfaction <= 2 AND age_days <= 180) AS low_satisfaction_180d,
        {cats}
    FROM t GROUP BY msisdn
    """


FAMILY = Family(F, FEATURES, sql)
