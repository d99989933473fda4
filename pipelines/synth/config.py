"""Settings of the synthetic operator: its size, its seed, and the dirt its extracts carry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipelines.lake.config import Strict, check_month

DirtKind = Literal[
    "bad_date", "negative_duration", "unknown_enum", "missing_key", "malformed_number",
    "bad_number_type",
]  # fmt: skip


class DirtConfig(Strict):
    rate: float = Field(
        0.005, ge=0, le=0.5, description="share of rows made invalid, per kind below"
    )
    kinds: list[DirtKind] = Field(
        default_factory=lambda: list(DirtKind.__args__), description="kinds of invalid rows"
    )
    msisdn_format_rate: float = Field(
        0.03, ge=0, le=1, description="valid but unusual number formats (+86, 0086, dashes, spaces)"
    )
    duplicate_cdr_rate: float = Field(
        0.004, ge=0, le=0.5, description="CDR records repeated in the next file"
    )
    delivered_twice: bool = Field(True, description="one billing file delivered again, unchanged")
    corrected_redelivery: bool = Field(
        True, description="one billing file re-delivered with corrections"
    )
    truncated_last_line: bool = Field(True, description="the last CDR file ends mid-row")
    gzip: bool = Field(False, description="deliver .csv.gz")
    gbk_pipe_complaints: bool = Field(
        False, description="complaints as GBK, '|' delimited, Chinese headers"
    )


Channel = Literal["account_manager", "call_centre", "sms_app"]


class ResponseConfig(Strict):
    """How the synthetic operator's subscribers answer a retention contact (docs/crm.md)."""

    campaigns: bool = Field(
        True,
        description="run the operator's own past campaigns (pilot, targeted); off: no contacts",
    )
    open_months: int = Field(
        2,
        ge=1,
        le=3,
        description="a leaver who decided within this many months before the contact can "
        "still be talked round; earlier deciders are fading and leave whatever is said",
    )
    heterogeneous: bool = Field(
        True,
        description="persuadability varies by subscriber, channel, offer; sleeping dogs. "
        "Off: one save probability for everyone, no sleeping dogs",
    )
    reach: dict[Channel, float] = Field(
        default_factory=lambda: {"account_manager": 0.85, "call_centre": 0.65, "sms_app": 0.9},
        description="probability that a contact reaches the subscriber, per channel",
    )
    channel_gain: dict[Channel, float] = Field(
        default_factory=lambda: {"account_manager": 1.0, "call_centre": 0.7, "sms_app": 0.35},
        description="multiplier of the save probability, per channel (heterogeneous only)",
    )
    base_save: float = Field(
        0.5,
        ge=0,
        le=1,
        description="mean save probability of a reached persuadable (matched offer)",
    )
    mismatch: float = Field(
        0.4, ge=0, le=1, description="share of the effect kept when the offer misses the driver"
    )
    homogeneous_save: float = Field(
        0.45, ge=0, le=1, description="the one save probability when heterogeneous is off"
    )
    push: float = Field(
        0.25, ge=0, le=1, description="probability that a wrong contact makes a sleeping dog leave"
    )
    pilot_share: float = Field(
        0.05, ge=0, le=0.5, description="share of the base in the monthly randomised pilot"
    )
    targeted_share: float = Field(
        0.03, ge=0, le=0.5, description="share of the base in the monthly rule-based campaign"
    )
    holdout: float = Field(
        0.1, ge=0, lt=1, description="share of the targeted campaign held out as control"
    )


class TariffChange(Strict):
    """A planted price change from one month on: every plan fee times ``factor``.

    For drift tests: the billing features move, the calling behaviour does not.
    """

    month: str = Field(description="first month at the new prices, YYYY-MM")
    factor: float = Field(1.3, gt=0, description="plan fees are multiplied by this")

    _month = field_validator("month")(classmethod(lambda cls, v: check_month(v)))


class SynthConfig(Strict):
    subscribers: int = Field(20000, ge=50)
    months: int = Field(12, ge=3, le=120)
    start_month: str = Field("2025-01", description="first month, YYYY-MM")
    seed: int = 42
    target_monthly_churn: float = Field(0.022, gt=0, lt=0.2)
    events_per_subscriber_month: float = Field(22, gt=0, description="calls and SMS")
    cdr_file_granularity: Literal["month", "day"] = Field(
        "month", description="one CDR file a month or a day"
    )
    dirt: DirtConfig = Field(default_factory=DirtConfig)
    response: ResponseConfig = Field(
        default_factory=ResponseConfig, description="retention contacts and how they work"
    )
    tariff_change: TariffChange | None = Field(
        None, description="a planted price change (none: prices fixed throughout)"
    )

    def price_factor(self, period) -> float:
        """What plan fees are multiplied by in ``period`` (1 before any tariff change)."""
        t = self.tariff_change
        return t.factor if t is not None and str(period) >= t.month else 1.0

    _month = field_validator("start_month")(classmethod(lambda cls, v: check_month(v)))
