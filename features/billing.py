"""ARPU and billing: level, trend, shocks (DOMAIN alert bill), value tier, payment behaviour."""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import MONTH_IDX, SnapshotContext
from features.exact import FEN, cv, mean, ratio, slope, units

F = "billing"
FEATURES = [
    Feature("arpu_1m", F, "1m", "total charge (bill after discounts) of T", "CNY"),
    Feature("arpu_3m", F, "3m", "mean monthly total charge over T-2..T", "CNY"),
    Feature("arpu_6m", F, "6m", "mean monthly total charge over T-5..T", "CNY"),
    Feature("arpu_trend_6m", F, "6m", "least-squares slope of the monthly total charge over T-5..T", "CNY/month"),
    Feature("arpu_change_vs_prev3m", F, "1m vs 3m", "arpu_1m / mean of T-3..T-1 minus 1; null without 3 previous bills", "ratio"),
    Feature("arpu_volatility_6m", F, "6m", "standard deviation / mean of monthly total charge over T-5..T", "ratio"),
    Feature("alert_bill", F, "1m vs 3m", "DOMAIN alert bill: bill of T above ratio x or below 1/ratio of the mean of T-3..T-1", "flag", "int"),
    Feature("value_tier", F, "3m", "member: all 3 bills of T-2..T above the member threshold; vip: all at least the VIP threshold; else ordinary", "tier", "str", False),
    Feature("value_tier_code", F, "3m", "value_tier as 2 member, 1 vip, 0 ordinary", "code", "int"),
    Feature("voice_overage_charge_1m", F, "1m", "voice charge above the bundle in T", "CNY"),
    Feature("data_overage_charge_1m", F, "1m", "data charge above the bundle in T", "CNY"),
    Feature("voice_overage_charge_3m", F, "3m", "mean monthly voice overage over T-2..T", "CNY"),
    Feature("data_overage_charge_3m", F, "3m", "mean monthly data overage over T-2..T", "CNY"),
    Feature("discount_share_3m", F, "3m", "discounts / (charges before discount) over T-2..T", "share"),
    Feature("balance", F, "T", "account balance at the end of T", "CNY"),
    Feature("arrears", F, "T", "amount owed at the end of T", "CNY"),
    Feature("months_in_arrears_6m", F, "6m", "months of T-5..T that ended with arrears", "months", "int"),
    Feature("paid_to_bill_ratio_3m", F, "3m", "paid / billed over T-2..T; null when nothing was billed", "ratio"),
    Feature("points_balance", F, "T", "loyalty points held at the end of T", "points"),
    Feature("points_redeemed_6m", F, "6m", "loyalty points spent over T-5..T", "points"),
    Feature("family_bundle", F, "T", "1 if member of a family bundle at T", "flag", "int"),
    Feature("group_bundle", F, "T", "1 if member of a corporate (group) bundle at T", "flag", "int"),
    Feature("any_bundle", F, "T", "1 if member of a family or group bundle at T", "flag", "int"),
    Feature("status_suspended", F, "T", "1 if the status at T is suspended (arrears or on request) or pre-cancel", "flag", "int"),
]  # fmt: skip


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    r = rules
    fen = ", ".join(
        f"{units(c, FEN)} AS {c}_fen"
        for c in (
            "total_charge",
            "voice_overage_charge",
            "data_overage_charge",
            "discount",
            "paid_amount",
        )
    )
    # sums, means, slopes and spreads in fen, exact (features/exact.py)
    return f"""
    WITH b AS (
        SELECT *, {ctx.idx} - {MONTH_IDX} AS ago, {fen}
        FROM billing_t WHERE bill_month <= '{ctx.ym}'
    ),
    a AS (
        SELECT
            msisdn,
            max(total_charge) FILTER (WHERE ago = 0) AS arpu_1m,
            {mean("total_charge_fen", FEN, "ago <= 2")} AS arpu_3m,
            {mean("total_charge_fen", FEN)} AS arpu_6m,
            CASE WHEN count(*) >= 3 THEN {slope("total_charge_fen", "(-ago)", FEN)} END AS arpu_trend_6m,
            {mean("total_charge_fen", FEN, "ago BETWEEN 1 AND 3")} AS prev3,
            count(*) FILTER (WHERE ago BETWEEN 1 AND 3) AS n_prev3,
            CASE WHEN count(*) >= 3 AND sum(total_charge_fen) > 0 THEN {cv("total_charge_fen")} END AS arpu_volatility_6m,
            min(total_charge) FILTER (WHERE ago <= 2) AS min3,
            count(*) FILTER (WHERE ago <= 2) AS n3,
            max(voice_overage_charge) FILTER (WHERE ago = 0) AS voice_overage_charge_1m,
            max(data_overage_charge) FILTER (WHERE ago = 0) AS data_overage_charge_1m,
            {mean("voice_overage_charge_fen", FEN, "ago <= 2")} AS voice_overage_charge_3m,
            {mean("data_overage_charge_fen", FEN, "ago <= 2")} AS data_overage_charge_3m,
            {ratio("discount_fen", "total_charge_fen + discount_fen", "ago <= 2")} AS discount_share_3m,
            max(balance) FILTER (WHERE ago = 0) AS balance,
            max(arrears) FILTER (WHERE ago = 0) AS arrears,
            CAST(count(*) FILTER (WHERE arrears > 0) AS INTEGER) AS months_in_arrears_6m,
            {ratio("paid_amount_fen", "total_charge_fen", "ago <= 2")} AS paid_to_bill_ratio_3m,
            CAST(max(points_balance) FILTER (WHERE ago = 0) AS DOUBLE) AS points_balance,
            CAST(sum(points_redeemed) AS DOUBLE) AS points_redeemed_6m,
            CAST(max(family_bundle) FILTER (WHERE ago = 0) AS INTEGER) AS family_bundle,
            CAST(max(group_bundle) FILTER (WHERE ago = 0) AS INTEGER) AS group_bundle,
            CAST(max(status IN ('suspended_arrears', 'suspended_request', 'pre_cancel')) FILTER (WHERE ago = 0) AS INTEGER) AS status_suspended
        FROM b WHERE ago BETWEEN 0 AND 5
        GROUP BY msisdn
    )
    SELECT
        msisdn, arpu_1m, arpu_3m, arpu_6m, arpu_trend_6m,
        CASE WHEN n_prev3 = 3 AND prev3 > 0 THEN arpu_1m / prev3 - 1 END AS arpu_change_vs_prev3m,
        arpu_volatility_6m,
        CASE WHEN n_prev3 = 3 AND prev3 > 0
             THEN CAST(arpu_1m > {r.alert_bill_ratio} * prev3 OR arpu_1m < prev3 / {r.alert_bill_ratio} AS INTEGER)
             ELSE 0 END AS alert_bill,
        CASE WHEN n3 = 3 AND min3 > {r.member_min_bill} THEN 'member'
             WHEN n3 = 3 AND min3 >= {r.vip_min_bill} THEN 'vip' ELSE 'ordinary' END AS value_tier,
        CASE WHEN n3 = 3 AND min3 > {r.member_min_bill} THEN 2
             WHEN n3 = 3 AND min3 >= {r.vip_min_bill} THEN 1 ELSE 0 END AS value_tier_code,
        voice_overage_charge_1m, data_overage_charge_1m, voice_overage_charge_3m, data_overage_charge_3m,
        discount_share_3m, balance, arrears, months_in_arrears_6m, paid_to_bill_ratio_3m,
        points_balance, points_redeemed_6m, family_bundle, group_bundle,
        CAST(family_bundle = 1 OR group_bundle = 1 AS INTEGER) AS any_bundle,
        status_suspended
    FROM a
    """


FAMILY = Family(F, FEATURES, sql)
