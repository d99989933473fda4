"""Tenure and contract: how long the subscriber has been with us and what binds them."""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import MONTH_IDX, SnapshotContext

F = "tenure"
FEATURES = [
    Feature("tenure_months", F, "T", "whole months from activation to the end of T", "months", "int"),
    Feature("is_postpaid", F, "T", "1 if the payment type at T is postpaid", "flag", "int"),
    Feature("network_generation_num", F, "T", "network generation of the plan at T (3, 4 or 5)", "generation", "int"),
    Feature("has_contract", F, "T", "1 if a contract end date is on file at T", "flag", "int"),
    Feature("months_to_contract_end", F, "T", "months from the end of T to the contract end; null without a contract", "months"),
    Feature("contract_lapsed_3m", F, "3m", "1 if a contract was on file in T-3..T-1 and none is at T (expired, not renewed)", "flag", "int"),
    Feature("plan_fee", F, "T", "monthly fee of the plan at T", "CNY"),
]  # fmt: skip


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    return f"""
    WITH b AS (SELECT *, {ctx.idx} - {MONTH_IDX} AS ago FROM billing_t WHERE bill_month <= '{ctx.ym}')
    SELECT
        msisdn,
        CAST(date_diff('month', max(activation_date) FILTER (WHERE ago = 0), DATE '{ctx.next_start}') AS INTEGER) AS tenure_months,
        CAST(max(payment_type = 'postpaid') FILTER (WHERE ago = 0) AS INTEGER) AS is_postpaid,
        CAST(max(substr(network_generation, 1, 1)) FILTER (WHERE ago = 0) AS INTEGER) AS network_generation_num,
        CAST(max(contract_end_date IS NOT NULL) FILTER (WHERE ago = 0) AS INTEGER) AS has_contract,
        date_diff('day', DATE '{ctx.next_start}', max(contract_end_date) FILTER (WHERE ago = 0)) / 30.4375 AS months_to_contract_end,
        CAST(coalesce(bool_or(contract_end_date IS NOT NULL) FILTER (WHERE ago BETWEEN 1 AND 3), false)
             AND NOT coalesce(bool_or(contract_end_date IS NOT NULL) FILTER (WHERE ago = 0), false) AS INTEGER) AS contract_lapsed_3m,
        max(plan_fee) FILTER (WHERE ago = 0) AS plan_fee
    FROM b WHERE ago BETWEEN 0 AND 3
    GROUP BY msisdn
    """


FAMILY = Family(F, FEATURES, sql)
