"""The extract contract of EXTRACTS.md as data: columns, types, rules, keys.

Bump ``SCHEMA_VERSION`` when a lake schema changes; the manifest records it, and the
lake refuses to mix versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

SCHEMA_VERSION = 1

STATUS = (
    "active",
    "suspended_request",
    "pre_cancel",
    "suspended_arrears",
    "cancelled",
    "ported_out",
)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # str | msisdn | number | money | int | date | timestamp | month | enum | flag
    required: bool = True
    key: bool = False
    values: tuple[str, ...] = ()
    nonnegative: bool = False
    lo: float | None = None
    hi: float | None = None
    distinct: bool = False  # values hardly repeat: a Parquet dictionary would only cost time

    @property
    def plain(self) -> bool:
        return self.distinct or self.kind == "msisdn" or (self.key and self.kind == "str")


RowTest = Literal["after_period_end", "after", "before", "month_after", "sum_differs"]


@dataclass(frozen=True)
class RowRule:
    """A check across one row's columns, run after the column checks, in the order listed.

    ``column`` is the left-hand side and the column the quarantine names. ``test``:
    ``after_period_end``, later than the end of the file's period (a month column against
    the file's month); ``after`` / ``before``, than ``others[0]``; ``month_after``, the
    month of a date after the month column ``others[0]``; ``sum_differs``, further than
    ``tolerance`` from the sum of ``others`` less ``minus``. A row with an operand empty
    passes: empty values are the column checks' business.
    """

    reason: str
    column: str
    test: RowTest
    others: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()
    tolerance: float = 0.0


@dataclass(frozen=True)
class SourceContract:
    name: str
    columns: tuple[Column, ...]
    partition_by: str  # column whose month partitions the lake
    dedup_key: tuple[str, ...]
    dedup_across_files: bool  # anti-join against what other files already put in the lake
    latest_wins_key: tuple[str, ...] = field(default=())  # resolved at read time by delivery time
    row_rules: tuple[RowRule, ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def enum(self, column: str, *names: str) -> tuple[str, ...]:
        """An enum column's values; with ``names``, those, each checked to be one of them.

        Writers of extracts (the synthetic operator) name values through this, so a value
        the contract does not list fails where it is written, not later in a quarantine.
        """
        allowed = self.column(column).values
        unknown = [v for v in names if v not in allowed]
        if unknown:
            raise ValueError(f"{self.name}.{column} has no value {unknown}: it lists {allowed}")
        return names or allowed


def _money(name: str, nonneg: bool = True) -> Column:
    return Column(name, "money", nonnegative=nonneg)


BILLING = SourceContract(
    name="billing",
    columns=(
        Column("msisdn", "msisdn", key=True),
        Column("bill_month", "month", key=True),
        Column("activation_date", "date"),
        Column("payment_type", "enum", values=("prepaid", "postpaid")),
        Column("plan_id", "str"),
        _money("plan_fee"),
        _money("total_charge", nonneg=False),
        _money("voice_charge"),
        _money("data_charge"),
        _money("sms_charge"),
        _money("vas_charge"),
        _money("voice_overage_charge"),
        _money("data_overage_charge"),
        _money("discount"),
        _money("paid_amount"),
        _money("balance", nonneg=False),
        _money("arrears"),
        Column("voice_minutes", "int", nonnegative=True),
        Column("data_mb", "number", nonnegative=True),
        Column("sms_count", "int", nonnegative=True),
        Column("points_balance", "int", nonnegative=True),
        Column("points_redeemed", "int", nonnegative=True),
        Column("family_bundle", "flag"),
        Column("group_bundle", "flag"),
        Column("contract_end_date", "date", required=False),
        Column("network_generation", "enum", values=("3G", "4G", "5G")),
        Column("status", "enum", values=STATUS),
    ),
    partition_by="bill_month",
    dedup_key=("msisdn", "bill_month"),
    dedup_across_files=False,
    latest_wins_key=("msisdn", "bill_month"),
    row_rules=(
        RowRule("future_date", "bill_month", "after_period_end"),
        RowRule("activation_after_bill_month", "activation_date", "month_after", ("bill_month",)),
        RowRule(
            "bill_arithmetic",
            "total_charge",
            "sum_differs",
            ("voice_charge", "data_charge", "sms_charge", "vas_charge"),
            minus=("discount",),
            tolerance=0.011,
        ),
    ),
)

CDR = SourceContract(
    name="cdr",
    columns=(
        Column("record_id", "str", key=True),
        Column("msisdn", "msisdn", key=True),
        Column("other_number", "str", distinct=True),
        Column("direction", "enum", values=("MO", "MT")),
        Column("event_type", "enum", values=("voice", "sms")),
        Column("start_time", "timestamp"),
        Column("duration_s", "int", nonnegative=True),
        Column("call_result", "enum", values=("completed", "dropped", "failed")),
        Column("cell_id", "str", required=False),
        Column("roaming", "flag"),
        Column("other_operator", "enum", required=False, values=("own", "other", "unknown")),
    ),
    partition_by="start_time",
    dedup_key=("record_id",),
    dedup_across_files=True,
    row_rules=(RowRule("future_date", "start_time", "after_period_end"),),
)

COMPLAINTS = SourceContract(
    name="complaints",
    columns=(
        Column("ticket_id", "str", key=True),
        Column("msisdn", "msisdn", key=True),
        Column("opened_at", "timestamp"),
        Column("updated_at", "timestamp", key=True),
        Column("closed_at", "timestamp", required=False),
        Column(
            "category",
            "enum",
            values=("network", "billing", "service", "product", "handset", "other"),
        ),
        Column("channel", "enum", values=("hotline", "store", "app", "wechat", "regulator")),
        Column("severity", "enum", values=("normal", "urgent")),
        Column("status", "enum", values=("open", "resolved", "reopened")),
        Column("satisfaction", "int", required=False, nonnegative=True, lo=1, hi=5),
        Column("description", "str", required=False, distinct=True),
    ),
    partition_by="updated_at",
    dedup_key=("ticket_id", "updated_at"),
    dedup_across_files=True,
    # opened_at <= updated_at <= period end; closed_at (may be empty) within both ends
    row_rules=(
        RowRule("future_date", "updated_at", "after_period_end"),
        RowRule("opened_after_update", "opened_at", "after", ("updated_at",)),
        RowRule("future_date", "closed_at", "after_period_end"),
        RowRule("closed_before_opened", "closed_at", "before", ("opened_at",)),
    ),
)

CONTRACTS: dict[str, SourceContract] = {c.name: c for c in (BILLING, CDR, COMPLAINTS)}

_ARROW = {
    "str": pa.string(),
    "msisdn": pa.string(),
    "number": pa.float64(),
    "money": pa.float64(),
    "int": pa.int64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("s"),
    "month": pa.string(),
    "enum": pa.string(),
    "flag": pa.int8(),
}

# Columns the lake adds to every source.
LINEAGE_FIELDS = [
    pa.field("_source_file", pa.string()),
    pa.field("_row_number", pa.int64()),
    pa.field("_delivered_at", pa.timestamp("s")),
]
EXTRA_FIELDS = {
    "cdr": [pa.field("other_category", pa.string())],
}


def lake_schema(source: str) -> pa.Schema:
    """The explicit, versioned Parquet schema of one source in the lake."""
    c = CONTRACTS[source]
    fields = [pa.field(col.name, _ARROW[col.kind]) for col in c.columns]
    fields += EXTRA_FIELDS.get(source, [])
    fields += LINEAGE_FIELDS
    fields.append(pa.field("month", pa.string()))
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION), "source": source})


def parquet_layout(source: str) -> dict:
    """ParquetWriter options for a source: delta-coded times and row numbers, no dictionary
    where values hardly repeat (a quarter less encoding time and a tenth smaller files
    on CDR than pyarrow's defaults)."""
    c = CONTRACTS[source]
    delta = [col.name for col in c.columns if col.kind in ("date", "timestamp")] + ["_row_number"]
    plain = {col.name for col in c.columns if col.plain} | set(delta)
    return {
        "compression": "zstd",
        "use_dictionary": [f.name for f in lake_schema(source) if f.name not in plain],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    }


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("file", pa.string()),
        pa.field("row_number", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("column", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

REASONS = (
    "missing_key",
    "missing_value",
    "malformed_msisdn",
    "unparseable_number",
    "unparseable_date",
    "negative_value",
    "out_of_range",
    "unknown_enum",
    "future_date",
    "activation_after_bill_month",
    "opened_after_update",
    "closed_before_opened",
    "bill_arithmetic",
    "truncated_row",
    "bad_encoding",  # bytes not valid in the file's encoding (a line from another system)
)
