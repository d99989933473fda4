"""Calls from CDR: volume, contact concentration (DOMAIN U-shape), off-net mix, network quality.

Contacts are the other parties except short service codes. Shares and concentration
count calls and SMS together; rates of dropped and failed calls count voice only.
"""

from __future__ import annotations

from features.catalog import Family, Feature
from features.config import FeatureRules
from features.context import SnapshotContext
from features.exact import decimal_sum

F = "calls"


def _f(name, window, definition, unit, dtype="double", zero=False):
    return Feature(name, F, window, definition, unit, dtype, True, zero)


FEATURES = [
    _f("calls_1m", "1m", "voice calls (MO and MT) in T", "calls", "int", True),
    _f("calls_3m", "3m", "voice calls over T-2..T", "calls", "int", True),
    _f("calls_change_vs_prev3m", "1m vs 3m", "calls of T / monthly mean of T-3..T-1 minus 1; null without earlier calls", "ratio"),
    _f("call_minutes_1m", "1m", "voice minutes from CDR in T", "minutes", zero=True),
    _f("call_minutes_3m", "3m", "voice minutes from CDR over T-2..T", "minutes", zero=True),
    _f("sms_1m", "1m", "SMS events (MO and MT) in T", "messages", "int", True),
    _f("sms_3m", "3m", "SMS events over T-2..T", "messages", "int", True),
    _f("active_days_1m", "1m", "days of T with at least one call or SMS", "days", "int", True),
    _f("active_days_3m", "3m", "days of T-2..T with at least one call or SMS", "days", "int", True),
    _f("days_since_last_call", "6m", "days from the last voice call to the end of T; null without a call in 6 months", "days"),
    _f("distinct_contacts_1m", "1m", "distinct other parties called or texted in T", "contacts", "int", True),
    _f("distinct_contacts_3m", "3m", "distinct other parties over T-2..T", "contacts", "int", True),
    _f("top1_contact_share_1m", "1m", "share of events with the most frequent contact in T", "share"),
    _f("top3_contact_share_1m", "1m", "share of events with the 3 most frequent contacts in T", "share"),
    _f("top1_contact_share_3m", "3m", "share of events with the most frequent contact over T-2..T", "share"),
    _f("top3_contact_share_3m", "3m", "share of events with the 3 most frequent contacts over T-2..T", "share"),
    _f("top1_minutes_share_1m", "1m", "share of voice seconds spent with the most frequent contact in T", "share"),
    _f("contact_hhi_1m", "1m", "Herfindahl index of events over contacts in T (1 = a single contact)", "index"),
    _f("contact_hhi_3m", "3m", "Herfindahl index of events over contacts over T-2..T", "index"),
    _f("contact_entropy_norm_1m", "1m", "entropy of events over contacts / ln(contacts) in T (0 = one contact, 1 = evenly spread)", "index"),
    _f("contact_entropy_norm_3m", "3m", "normalised contact entropy over T-2..T", "index"),
    _f("new_contacts_1m", "1m vs 3m", "contacts in T not seen in T-3..T-1", "contacts", "int", True),
    _f("lost_contacts_1m", "1m vs 3m", "contacts of T-3..T-1 not seen in T", "contacts", "int", True),
    _f("offnet_call_share_1m", "1m", "events with other operators' mobiles / events with any mobile, in T", "share"),
    _f("offnet_call_share_3m", "3m", "off-net share of mobile events over T-2..T", "share"),
    _f("offnet_call_share_prev3m", "3m", "off-net share of mobile events over T-3..T-1", "share"),
    _f("offnet_minutes_share_1m", "1m", "voice seconds with other operators' mobiles / with any mobile, in T", "share"),
    _f("offnet_minutes_share_3m", "3m", "off-net share of mobile voice seconds over T-2..T", "share"),
    _f("mo_share_1m", "1m", "share of events the subscriber originated (MO) in T", "share"),
    _f("mo_share_3m", "3m", "share of MO events over T-2..T", "share"),
    _f("night_share_3m", "3m", "share of events at night (configured hours) over T-2..T", "share"),
    _f("distinct_cells_1m", "1m", "distinct serving cells in T", "cells", "int", True),
    _f("distinct_cells_3m", "3m", "distinct serving cells over T-2..T", "cells", "int", True),
    _f("roaming_share_3m", "3m", "share of events while roaming over T-2..T", "share"),
    _f("dropped_call_rate_1m", "1m", "dropped / all voice calls in T", "share"),
    _f("dropped_call_rate_3m", "3m", "dropped / all voice calls over T-2..T", "share"),
    _f("dropped_call_rate_prev3m", "3m", "dropped / all voice calls over T-3..T-1", "share"),
    _f("failed_call_rate_3m", "3m", "failed / all voice calls over T-2..T", "share"),
]  # fmt: skip


def _share(num: str, den: str) -> str:
    return (
        f"CAST(count(*) FILTER (WHERE {num}) AS DOUBLE) / nullif(count(*) FILTER (WHERE {den}), 0)"
    )


def sql(ctx: SnapshotContext, rules: FeatureRules) -> str:
    mob = "other_category IN ('own_mobile', 'other_mobile')"
    off = "other_category = 'other_mobile'"
    v = "event_type = 'voice'"
    night = f"(hour(start_time) >= {rules.night_start_hour} OR hour(start_time) < {rules.night_end_hour})"
    return f"""
    WITH ev AS (
        SELECT *, {ctx.idx} - (year(start_time) * 12 + month(start_time)) AS ago
        FROM cdr_t
        WHERE start_time >= TIMESTAMP '{ctx.months_back(5)}' AND start_time < TIMESTAMP '{ctx.next_start}'
    ),
    base AS (
        SELECT
            msisdn,
            count(*) FILTER (WHERE {v} AND ago = 0) AS calls_1m,
            count(*) FILTER (WHERE {v} AND ago <= 2) AS calls_3m,
            count(*) FILTER (WHERE {v} AND ago BETWEEN 1 AND 3) AS calls_prev3m,
            coalesce(sum(duration_s) FILTER (WHERE {v} AND ago = 0), 0) / 60.0 AS call_minutes_1m,
            coalesce(sum(duration_s) FILTER (WHERE {v} AND ago <= 2), 0) / 60.0 AS call_minutes_3m,
            count(*) FILTER (WHERE event_type = 'sms' AND ago = 0) AS sms_1m,
            count(*) FILTER (WHERE event_type = 'sms' AND ago <= 2) AS sms_3m,
            count(DISTINCT CAST(start_time AS DATE)) FILTER (WHERE ago = 0) AS active_days_1m,
            count(DISTINCT CAST(start_time AS DATE)) FILTER (WHERE ago <= 2) AS active_days_3m,
            date_diff('second', max(start_time) FILTER (WHERE {v}), TIMESTAMP '{ctx.next_start}') / 86400.0 AS days_since_last_call,
            {_share(f"ago = 0 AND {off}", f"ago = 0 AND {mob}")} AS offnet_call_share_1m,
            {_share(f"ago <= 2 AND {off}", f"ago <= 2 AND {mob}")} AS offnet_call_share_3m,
            {_share(f"ago BETWEEN 1 AND 3 AND {off}", f"ago BETWEEN 1 AND 3 AND {mob}")} AS offnet_call_share_prev3m,
            sum(duration_s) FILTER (WHERE ago = 0 AND {v} AND {off}) / nullif(sum(duration_s) FILTER (WHERE ago = 0 AND {v} AND {mob}), 0) AS offnet_minutes_share_1m,
            sum(duration_s) FILTER (WHERE ago <= 2 AND {v} AND {off}) / nullif(sum(duration_s) FILTER (WHERE ago <= 2 AND {v} AND {mob}), 0) AS offnet_minutes_share_3m,
            {_share("ago = 0 AND direction = 'MO'", "ago = 0")} AS mo_share_1m,
            {_share("ago <= 2 AND direction = 'MO'", "ago <= 2")} AS mo_share_3m,
            {_share(f"ago <= 2 AND {night}", "ago <= 2")} AS night_share_3m,
            count(DISTINCT cell_id) FILTER (WHERE ago = 0) AS distinct_cells_1m,
            count(DISTINCT cell_id) FILTER (WHERE ago <= 2) AS distinct_cells_3m,
            {_share("ago <= 2 AND roaming = 1", "ago <= 2")} AS roaming_share_3m,
            {_share(f"ago = 0 AND {v} AND call_result = 'dropped'", f"ago = 0 AND {v}")} AS dropped_call_rate_1m,
            {_share(f"ago <= 2 AND {v} AND call_result = 'dropped'", f"ago <= 2 AND {v}")} AS dropped_call_rate_3m,
            {_share(f"ago BETWEEN 1 AND 3 AND {v} AND call_result = 'dropped'", f"ago BETWEEN 1 AND 3 AND {v}")} AS dropped_call_rate_prev3m,
            {_share(f"ago <= 2 AND {v} AND call_result = 'failed'", f"ago <= 2 AND {v}")} AS failed_call_rate_3m
        FROM ev GROUP BY msisdn
    ),
    pairs AS (
        SELECT msisdn, other_number,
            count(*) FILTER (WHERE ago = 0) AS n1,
            count(*) FILTER (WHERE ago <= 2) AS n3,
            count(*) FILTER (WHERE ago BETWEEN 1 AND 3) AS nprev,
            coalesce(sum(duration_s) FILTER (WHERE ago = 0 AND {v}), 0) AS d1
        FROM ev WHERE other_category <> 'service_code' AND other_number IS NOT NULL
        GROUP BY msisdn, other_number
    ),
    ranked AS (
        SELECT *,
            row_number() OVER (PARTITION BY msisdn ORDER BY n1 DESC, other_number) AS r1,
            row_number() OVER (PARTITION BY msisdn ORDER BY n3 DESC, other_number) AS r3,
            sum(n1) OVER (PARTITION BY msisdn) AS t1,
            sum(n3) OVER (PARTITION BY msisdn) AS t3,
            sum(d1) OVER (PARTITION BY msisdn) AS td1
        FROM pairs
    ),
    conc AS (
        SELECT msisdn,
            count(*) FILTER (WHERE n1 > 0) AS distinct_contacts_1m,
            count(*) FILTER (WHERE n3 > 0) AS distinct_contacts_3m,
            sum(n1) FILTER (WHERE r1 = 1) / nullif(max(t1), 0) AS top1_contact_share_1m,
            sum(n1) FILTER (WHERE r1 <= 3) / nullif(max(t1), 0) AS top3_contact_share_1m,
            sum(n3) FILTER (WHERE r3 = 1) / nullif(max(t3), 0) AS top1_contact_share_3m,
            sum(n3) FILTER (WHERE r3 <= 3) / nullif(max(t3), 0) AS top3_contact_share_3m,
            sum(d1) FILTER (WHERE r1 = 1) / nullif(max(td1), 0) AS top1_minutes_share_1m,
            CAST(sum(n1 * n1) FILTER (WHERE n1 > 0) AS DOUBLE) / CAST(max(t1) * max(t1) AS DOUBLE) AS contact_hhi_1m,
            CAST(sum(n3 * n3) FILTER (WHERE n3 > 0) AS DOUBLE) / CAST(max(t3) * max(t3) AS DOUBLE) AS contact_hhi_3m,
            -{decimal_sum("(n1 / t1) * ln(n1 / t1)", "n1 > 0")} AS ent1,
            -{decimal_sum("(n3 / t3) * ln(n3 / t3)", "n3 > 0")} AS ent3,
            count(*) FILTER (WHERE n1 > 0 AND nprev = 0) AS new_contacts_1m,
            count(*) FILTER (WHERE n1 = 0 AND nprev > 0) AS lost_contacts_1m
        FROM ranked GROUP BY msisdn
    )
    SELECT
        base.msisdn, calls_1m, calls_3m,
        CASE WHEN calls_prev3m > 0 THEN calls_1m / (calls_prev3m / 3.0) - 1 END AS calls_change_vs_prev3m,
        call_minutes_1m, call_minutes_3m, sms_1m, sms_3m, active_days_1m, active_days_3m, days_since_last_call,
        coalesce(distinct_contacts_1m, 0) AS distinct_contacts_1m, coalesce(distinct_contacts_3m, 0) AS distinct_contacts_3m,
        top1_contact_share_1m, top3_contact_share_1m, top1_contact_share_3m, top3_contact_share_3m, top1_minutes_share_1m,
        contact_hhi_1m, contact_hhi_3m,
        CASE WHEN distinct_contacts_1m > 1 THEN ent1 / ln(distinct_contacts_1m) WHEN distinct_contacts_1m = 1 THEN 0 END AS contact_entropy_norm_1m,
        CASE WHEN distinct_contacts_3m > 1 THEN ent3 / ln(distinct_contacts_3m) WHEN distinct_contacts_3m = 1 THEN 0 END AS contact_entropy_norm_3m,
        coalesce(new_contacts_1m, 0) AS new_contacts_1m, coalesce(lost_contacts_1m, 0) AS lost_contacts_1m,
        offnet_call_share_1m, offnet_call_share_3m, offnet_call_share_prev3m, offnet_minutes_share_1m, offnet_minutes_share_3m,
        mo_share_1m, mo_share_3m, night_share_3m, distinct_cells_1m, distinct_cells_3m, roaming_share_3m,
        dropped_call_rate_1m, dropped_call_rate_3m, dropped_call_rate_prev3m, failed_call_rate_3m
    FROM base LEFT JOIN conc USING (msisdn)
    """


FAMILY = Family(F, FEATURES, sql)
