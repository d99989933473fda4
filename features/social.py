"""Social circle: churn spreads along calling ties.

Ties are on-net contacts weighted by events over T-5..T. A contact counts as churned
only if that churn was already visible in billing by the end of T.
"""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import SnapshotContext

F = "social"
FEATURES = [
    Feature("churned_contacts_1m", F, "1m", "on-net contacts (ties of the last 6 months) whose churn showed in T", "contacts", "int", True, True),
    Feature("churned_contacts_3m", F, "3m", "on-net contacts whose churn showed in T-2..T", "contacts", "int", True, True),
    Feature("churned_contact_share_1m", F, "1m", "tie-weighted share of on-net contacts who churned in T", "share", "double", True, True),
    Feature("churned_contact_share_3m", F, "3m", "tie-weighted share of on-net contacts who churned in T-2..T", "share", "double", True, True),
]  # fmt: skip


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    return f"""
    WITH ties AS (
        SELECT msisdn, other_number, count(*) AS w
        FROM cdr_t
        WHERE other_category = 'own_mobile'
          AND start_time >= TIMESTAMP '{ctx.months_back(5)}' AND start_time < TIMESTAMP '{ctx.next_start}'
        GROUP BY msisdn, other_number
    )
    SELECT t.msisdn,
        count(*) FILTER (WHERE {ctx.idx} - c.churn_idx = 0) AS churned_contacts_1m,
        count(*) FILTER (WHERE {ctx.idx} - c.churn_idx BETWEEN 0 AND 2) AS churned_contacts_3m,
        coalesce(sum(w) FILTER (WHERE {ctx.idx} - c.churn_idx = 0), 0) / sum(w) AS churned_contact_share_1m,
        coalesce(sum(w) FILTER (WHERE {ctx.idx} - c.churn_idx BETWEEN 0 AND 2), 0) / sum(w) AS churned_contact_share_3m
    FROM ties t LEFT JOIN {ctx.known_churn} c ON c.msisdn = t.other_number
    GROUP BY t.msisdn
    """


FAMILY = Family(F, FEATURES, sql)
