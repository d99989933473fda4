"""Settings of campaign measurement: the CRM extract, the ledger and the statistics."""

from __future__ import annotations

from pydantic import Field

from pipelines.lake.config import Strict


class CampaignConfig(Strict):
    contact_history: str = Field(
        "",
        description="the CRM's contact history (docs/crm.md); empty: <data_dir>/crm/contact_history.csv",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of the intervals on saved churn")
    power: float = Field(0.8, gt=0.5, lt=1, description="for the power note (months to detect)")
    min_group: int = Field(
        30, ge=1, description="smallest treated or control group a difference is reported for"
    )
    breakdowns: list[str] = Field(
        default_factory=lambda: ["value_tier", "channel", "offer", "reason"],
        description="the results are also broken down by each of these",
    )
