"""The snapshot month T and the dates every feature query is bounded by."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class SnapshotContext:
    month: str  # YYYY-MM
    known_churn: str = "known_churn"  # table of churn already visible in billing by the end of T

    @property
    def period(self) -> pd.Period:
        return pd.Period(self.month, freq="M")

    @property
    def ym(self) -> str:
        return self.period.strftime("%Y%m")

    @property
    def idx(self) -> int:
        p = self.period
        return p.year * 12 + p.month

    @property
    def start(self) -> str:
        return self.period.start_time.strftime("%Y-%m-%d")

    @property
    def next_start(self) -> str:
        """First instant after T: everything a feature reads is strictly before it."""
        return (self.period + 1).start_time.strftime("%Y-%m-%d")

    def months_back(self, k: int) -> str:
        """Start date of month T-k."""
        return (self.period - k).start_time.strftime("%Y-%m-%d")


MONTH_IDX = (
    "(CAST(substr(bill_month, 1, 4) AS INTEGER) * 12 + CAST(substr(bill_month, 5, 2) AS INTEGER))"
)
