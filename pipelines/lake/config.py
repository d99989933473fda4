"""Settings of the lake leaf: the strict base every settings section uses, and numbering."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class Strict(BaseModel):
    """A settings section: unknown keys are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_month(v: str) -> str:
    if not MONTH_RE.match(v):
        raise ValueError(f"must be a month written YYYY-MM, got {v!r}")
    return v


class Numbering(Strict):
    """Whose numbers are whose: the operator's own mobile ranges (a delivered other_operator wins)."""

    country_code: str = Field("86", description="country code stripped from +86 / 0086 / 86 forms")
    own_mobile_prefixes: list[str] = Field(
        description="first 3 digits of the operator's own mobiles"
    )
    other_mobile_prefixes: list[str] = Field(
        description="first 3 digits of other operators' mobiles"
    )
    service_code_max_digits: int = Field(
        6,
        ge=3,
        le=8,
        description="short numbers up to this length starting 1 or 9 are service codes",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> Numbering:
        both = set(self.own_mobile_prefixes) & set(self.other_mobile_prefixes)
        if both:
            raise ValueError(f"prefixes listed as both own and other: {sorted(both)}")
        return self
