"""Settings of publishing: the outreach policy (channels, revisits, control group) and the lists."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.lake.config import Strict

Tier = Literal["member", "vip", "ordinary"]


class PublishConfig(Strict):
    show_full_msisdn: bool = Field(
        False, description="true only when a person explicitly asks for full numbers"
    )
    capacity_per_channel: dict[str, int] = Field(
        description="most subscribers a channel can work in a month"
    )
    channel_by_tier: dict[Tier, str]
    overflow_order: list[str] = Field(
        default_factory=lambda: ["account_manager", "call_centre", "sms_app"],
        description="a subscriber whose channel is full goes to the next channel in this order",
    )
    list_capacity: dict[str, int] = Field(
        default_factory=lambda: {"renewal": 500, "reminders": 1000},
        description="most rows of the renewal and reminder lists (highest value first)",
    )
    revisit_months: dict[Tier, int] = Field(
        description="not contacted again within this many months"
    )
    complaint_callback_days: int = Field(
        3,
        ge=0,
        description="high-value subscribers called back within this many days of a resolution",
    )
    control_share: float = Field(
        0.10, ge=0, lt=1, description="held out of contact at random, to measure the campaign"
    )
    do_not_contact: str = Field(
        "", description="CSV/text of msisdn; empty: <data_dir>/crm/do_not_contact.csv"
    )
    language: Literal["zh", "en"] = Field(
        "zh", description="language of the workbook's headers, legend and yes/no cells"
    )
    renewal_window_months: int = Field(
        2, ge=0, description="contracts ending within this many months go on the renewal list"
    )
    call_value_threshold: float = Field(
        6000.0,
        ge=0,
        description="an ordinary-tier subscriber worth at least this (CNY) is called, not sent an SMS",
    )
    high_points: float = Field(
        5000.0, ge=0, description="points balance at which a redemption reminder is sent"
    )
