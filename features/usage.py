"""Usage from billing: voice minutes and data, their level and trend (fading usage precedes leaving)."""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import MONTH_IDX, SnapshotContext
from features.exact import MB_UNITS, mean, slope, units

F = "usage"
FEATURES = [
    Feature("voice_minutes_1m", F, "1m", "billed voice minutes in T", "minutes"),
    Feature("voice_minutes_3m", F, "3m", "mean monthly billed voice minutes over T-2..T", "minutes"),
    Feature("voice_minutes_change_vs_prev3m", F, "1m vs 3m", "voice minutes of T / mean of T-3..T-1 minus 1", "ratio"),
    Feature("voice_minutes_trend_6m", F, "6m", "least-squares slope of monthly voice minutes over T-5..T", "minutes/month"),
    Feature("data_mb_1m", F, "1m", "mobile data used in T", "MB"),
    Feature("data_mb_3m", F, "3m", "mean monthly mobile data over T-2..T", "MB"),
    Feature("data_mb_change_vs_prev3m", F, "1m vs 3m", "data of T / mean of T-3..T-1 minus 1", "ratio"),
    Feature("data_mb_trend_6m", F, "6m", "least-squares slope of monthly data over T-5..T", "MB/month"),
    Feature("sms_count_1m", F, "1m", "billed SMS in T", "messages"),
]  # fmt: skip


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    # sums in integer units (minutes, millionths of a MB), exact (features/exact.py)
    def change(col: str) -> str:
        prev = mean(col, 1, "ago BETWEEN 1 AND 3")  # in col's units, like the month of T
        return (
            f"CASE WHEN count(*) FILTER (WHERE ago BETWEEN 1 AND 3) = 3 AND {prev} > 0 "
            f"THEN max({col}) FILTER (WHERE ago = 0) / {prev} - 1 END"
        )

    return f"""
    WITH b AS (
        SELECT *, {ctx.idx} - {MONTH_IDX} AS ago, {units("data_mb", MB_UNITS)} AS data_units
        FROM billing_t WHERE bill_month <= '{ctx.ym}'
    )
    SELECT
        msisdn,
        CAST(max(voice_minutes) FILTER (WHERE ago = 0) AS DOUBLE) AS voice_minutes_1m,
        {mean("voice_minutes", 1, "ago <= 2")} AS voice_minutes_3m,
        {change("voice_minutes")} AS voice_minutes_change_vs_prev3m,
        CASE WHEN count(*) >= 3 THEN {slope("voice_minutes", "(-ago)")} END AS voice_minutes_trend_6m,
        max(data_mb) FILTER (WHERE ago = 0) AS data_mb_1m,
        {mean("data_units", MB_UNITS, "ago <= 2")} AS data_mb_3m,
        {change("data_units")} AS data_mb_change_vs_prev3m,
        CASE WHEN count(*) >= 3 THEN {slope("data_units", "(-ago)", MB_UNITS)} END AS data_mb_trend_6m,
        CAST(max(sms_count) FILTER (WHERE ago = 0) AS DOUBLE) AS sms_count_1m
    FROM b WHERE ago BETWEEN 0 AND 5
    GROUP BY msisdn
    """


FAMILY = Family(F, FEATURES, sql)
