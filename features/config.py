"""Settings of the feature library: the churn definition, the operators' thresholds, resources."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from pipelines.lake.config import Strict, check_month


class ChurnDefinition(Strict):
    horizon_months: int = Field(
        2, ge=1, le=12, description="label window T+1 .. T+H (after the gap)"
    )
    gap_months: int = Field(0, ge=0, le=6, description="months skipped between T and the window")
    prepaid_inactivity_months: int = Field(
        3, ge=1, le=12, description="silent prepaid months that make churn"
    )


class FeatureRules(Strict):
    """Business thresholds from docs/domain.md; operators tune them here, not in code."""

    member_min_bill: float = Field(
        1000.0, gt=0, description="member: every bill of 3 consecutive months above this (CNY)"
    )
    vip_min_bill: float = Field(
        500.0, gt=0, description="VIP: every bill of 3 consecutive months at least this (CNY)"
    )
    alert_bill_ratio: float = Field(
        3.0, gt=1, description="alert bill: > ratio x or < 1/ratio of the previous 3 months' mean"
    )
    high_points: int = Field(
        5000, ge=0, description="segment: high points, nothing redeemed in 6 months"
    )
    heavy_data_overage: float = Field(
        30.0, ge=0, description="segment: mean monthly data overage (CNY, 3 months)"
    )
    heavy_voice_overage: float = Field(
        20.0, ge=0, description="segment: mean monthly voice overage (CNY, 3 months)"
    )
    silent_usage_drop: float = Field(
        -0.3, lt=0, description="segment: usage change vs previous 3 months on an old generation"
    )
    night_start_hour: int = Field(22, ge=0, le=23)
    night_end_hour: int = Field(6, ge=0, le=23)

    @model_validator(mode="after")
    def _tiers(self) -> FeatureRules:
        if self.vip_min_bill >= self.member_min_bill:
            raise ValueError("vip_min_bill must be below member_min_bill")
        return self


class FeatureConfig(Strict):
    snapshot_months: list[str] = Field(
        default_factory=list, description="empty: every month with enough history"
    )
    rules: FeatureRules = Field(default_factory=FeatureRules)
    min_history_months: int = Field(3, ge=1)
    duckdb_memory_limit: str = Field("4GB", description="DuckDB memory ceiling; spills beyond")
    duckdb_threads: int = Field(
        0,
        ge=0,
        description="DuckDB threads, 0 = all cores (os.cpu_count()); rebuilds are bit-exact at any count",
    )

    @field_validator("snapshot_months")
    @classmethod
    def _months(cls, v: list[str]) -> list[str]:
        for m in v:
            check_month(m)
        return v
