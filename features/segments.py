"""docs/domain.md behavioural segments as flags, from the other families' columns."""

from __future__ import annotations

from features.catalog import Feature
from features.config import FeatureRules

F = "segments"
FEATURES = [
    Feature("seg_high_points_unredeemed", F, "6m", "points at T at least the configured level and none redeemed over T-5..T", "flag", "int"),
    Feature("seg_heavy_data_overage", F, "3m", "mean monthly data overage over T-2..T at least the configured amount", "flag", "int"),
    Feature("seg_heavy_voice_overage", F, "3m", "mean monthly voice overage over T-2..T at least the configured amount", "flag", "int"),
    Feature("seg_silent_old_generation", F, "1m vs 3m", "on 3G and voice or data usage fell by the configured share against T-3..T-1", "flag", "int"),
]  # fmt: skip


def select_sql(rules: FeatureRules) -> str:
    """Extra select-list items over a relation holding the billing, usage and tenure columns."""
    r = rules
    return f"""
        CAST(coalesce(points_balance >= {r.high_points} AND points_redeemed_6m = 0, false) AS INTEGER) AS seg_high_points_unredeemed,
        CAST(coalesce(data_overage_charge_3m >= {r.heavy_data_overage}, false) AS INTEGER) AS seg_heavy_data_overage,
        CAST(coalesce(voice_overage_charge_3m >= {r.heavy_voice_overage}, false) AS INTEGER) AS seg_heavy_voice_overage,
        CAST(coalesce(network_generation_num = 3 AND (coalesce(voice_minutes_change_vs_prev3m, 0) <= {r.silent_usage_drop}
             OR coalesce(data_mb_change_vs_prev3m, 0) <= {r.silent_usage_drop}), false) AS INTEGER) AS seg_silent_old_generation
    """
