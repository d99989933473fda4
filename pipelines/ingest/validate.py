"""Type and check one batch of an extract, column-wise: accepted rows, and rejected rows with a reason.

Each row gets at most one reason: ``bad_encoding`` first (a row whose bytes could
not be decoded says nothing reliable), then the first rule it breaks, in contract
column order, then the row rules. Nothing is dropped here; duplicates are judged
later, on accepted rows only.
"""

from __future__ import annotations

import datetime as dt
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.ingest.encoding import UNDECODABLE
from pipelines.lake.contract import (
    QUARANTINE_SCHEMA,
    REASONS,
    Column,
    RowRule,
    SourceContract,
    lake_schema,
)
from pipelines.lake.numbers import NumberPlan, classify_other_number, normalize_msisdn

_NUM = {
    "money": r"^-?\d+(\.\d{1,2})?$",
    "number": r"^-?\d+(\.\d+)?$",
    "int": r"^-?\d{1,18}$",  # more digits would not fit int64: the cast would fail the file
}
_FMT = {"date": "%Y-%m-%d", "timestamp": "%Y-%m-%d %H:%M:%S"}


class _Reasons:
    """First-failure-wins reason and column per row, kept as small integer codes."""

    def __init__(self, n: int):
        self.reason = np.zeros(n, dtype=np.int16)  # 0 = fine, else 1 + index into REASONS
        self.column = np.zeros(n, dtype=np.int16)
        self.columns: list[str | None] = [None]

    def flag(self, mask: pa.Array | np.ndarray, reason: str, column: str | None) -> None:
        if isinstance(mask, pa.Array | pa.ChunkedArray):
            if not pc.any(mask).as_py():
                return
            mask = mask.to_numpy(zero_copy_only=False)
        m = np.asarray(mask, dtype=bool) & (self.reason == 0)
        if not m.any():
            return
        self.reason[m] = REASONS.index(reason) + 1
        if column not in self.columns:
            self.columns.append(column)
        self.column[m] = self.columns.index(column)

    @property
    def ok(self) -> np.ndarray:
        return self.reason == 0

    def names(self, rows: np.ndarray) -> tuple[list[str], list[str | None]]:
        return [REASONS[c - 1] for c in self.reason[rows]], [
            self.columns[c] for c in self.column[rows]
        ]


def _filled(mask: pa.Array) -> pa.Array:
    return pc.fill_null(mask, False)


def _parse_times(v: pa.Array, kind: str) -> pa.Array:
    """Timestamps (or dates) in the contract's format; null where the text is not one.

    strptime alone rolls 30 February over to 2 March, so its results go through
    Arrow's strict ISO parser as well; only if that finds a rolled-over day does the
    slower day-by-day comparison run.
    """
    parsed = pc.strptime(v, format=_FMT[kind], unit="s", error_is_null=True)
    width = 10 if kind == "date" else 19
    shaped = pc.and_(pc.is_valid(parsed), pc.equal(pc.binary_length(v), width))
    try:
        out = pc.cast(pc.if_else(shaped, v, pa.scalar(None, pa.string())), pa.timestamp("s"))
    except pa.ArrowInvalid:
        shape = (
            r"^\d{4}-\d{2}-\d{2}$" if kind == "date" else r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
        )
        written_day = pc.cast(
            pc.if_else(
                pc.match_substring_regex(v, shape),
                pc.utf8_slice_codeunits(v, 8, 10),
                pa.scalar(None, pa.string()),
            ),
            pa.int64(),
        )
        good = _filled(pc.equal(pc.day(parsed), written_day))
        out = pc.if_else(good, parsed, pa.scalar(None, pa.timestamp("s")))
    return out


def _typed(col: Column, raw: pa.Array, r: _Reasons, plan: NumberPlan) -> pa.Array:
    """Parse one column and flag its failures; returns the typed array (null where bad/empty).

    Values are read trimmed. Plain strings are trimmed outright; for every other kind a
    padded value fails its check, so only when a failing value has whitespace around
    it is the column trimmed and checked again (most files never pay for trimming).
    """
    if col.kind == "str":
        out, flags = _column(col, pc.utf8_trim_whitespace(raw), plan)
    else:
        out, flags = _column(col, raw, plan)
        failed = [m for m, _ in flags if pc.any(m).as_py()]
        if failed:
            bad = reduce(pc.or_, failed)
            sub = pc.filter(raw, bad)
            if not pc.all(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(sub), sub), True)).as_py():
                out, flags = _column(col, pc.utf8_trim_whitespace(raw), plan)
    for mask, reason in flags:
        r.flag(mask, reason, col.name)
    return out


def _column(
    col: Column, v: pa.Array, plan: NumberPlan
) -> tuple[pa.Array, list[tuple[pa.Array, str]]]:
    """(typed values, [(row mask, reason)] in the order the rules apply)."""
    empty = pc.fill_null(pc.equal(pc.binary_length(v), 0), True)
    flags = [(empty, "missing_key" if col.key else "missing_value")] if col.required else []
    present = pc.invert(empty)
    k = col.kind
    if k == "msisdn":
        out = normalize_msisdn(v, plan)
        return out, [*flags, (pc.and_(present, pc.is_null(out)), "malformed_msisdn")]
    if k in _NUM:
        good = _filled(pc.match_substring_regex(v, _NUM[k]))
        flags.append((pc.and_(present, pc.invert(good)), "unparseable_number"))
        safe = pc.if_else(good, v, pa.scalar(None, pa.string()))
        out = pc.cast(safe, pa.int64() if k == "int" else pa.float64())
        if col.nonnegative:
            flags.append((_filled(pc.less(out, 0)), "negative_value"))
        if col.lo is not None:
            flags.append((_filled(pc.less(out, col.lo)), "out_of_range"))
        if col.hi is not None:
            flags.append((_filled(pc.greater(out, col.hi)), "out_of_range"))
        return out, flags
    if k in _FMT:
        out = _parse_times(v, k)
        flags.append((pc.and_(present, pc.is_null(out)), "unparseable_date"))
        return (out.cast(pa.date32()) if k == "date" else out), flags
    # below, a bad value is left in place: its row is rejected, only empties must become null
    if k == "month":
        good = _filled(pc.match_substring_regex(v, r"^\d{4}(0[1-9]|1[0-2])$"))
        flags.append((pc.and_(present, pc.invert(good)), "unparseable_date"))
        return _null_if_empty(v, empty), flags
    if k == "enum":
        good = pc.is_in(v, value_set=pa.array(col.values, pa.string()))
        flags.append((pc.and_(present, pc.invert(good)), "unknown_enum"))
        return _null_if_empty(v, empty), flags
    if k == "flag":
        good = pc.is_in(v, value_set=pa.array(["0", "1"]))
        flags.append((pc.and_(present, pc.invert(good)), "out_of_range"))
        return pc.cast(pc.if_else(good, v, pa.scalar(None, pa.string())), pa.int8()), flags
    return _null_if_empty(v, empty), flags  # plain string


def _null_if_empty(v: pa.Array, empty: pa.Array) -> pa.Array:
    return pc.if_else(empty, pa.scalar(None, pa.string()), v) if pc.any(empty).as_py() else v


def _month_label(
    contract: SourceContract, typed: dict[str, pa.Array], raw: dict[str, pa.Array]
) -> pa.Array:
    """YYYY-MM of the partitioning column, cut from the validated text (cheaper than formatting)."""
    if contract.partition_by == "bill_month":
        p = typed["bill_month"]
        return pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(p, 0, 4), pc.utf8_slice_codeunits(p, 4, 6), "-"
        )
    text = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(raw[contract.partition_by]), 0, 7)
    return pc.if_else(pc.is_valid(typed[contract.partition_by]), text, pa.scalar(None, pa.string()))


def _breaks(
    rule: RowRule, contract: SourceContract, typed: dict[str, pa.Array], period_end: dt.datetime
) -> pa.Array:
    """Rows that break one row rule of the contract (null where an operand is empty)."""
    left = typed[rule.column]
    if rule.test == "after_period_end":
        if contract.column(rule.column).kind == "month":  # YYYYMM text against the file's month
            return pc.greater(left, period_end.strftime("%Y%m"))
        return pc.greater(left, pa.scalar(period_end, pa.timestamp("s")))
    if rule.test == "after":
        return pc.greater(left, typed[rule.others[0]])
    if rule.test == "before":
        return pc.less(left, typed[rule.others[0]])
    if rule.test == "month_after":
        month = pc.strftime(left.cast(pa.timestamp("s")), format="%Y%m")
        return pc.greater(month, typed[rule.others[0]])
    if rule.test == "sum_differs":
        parts = reduce(pc.add, [typed[c] for c in rule.others])
        parts = reduce(pc.subtract, [typed[c] for c in rule.minus], parts)
        return pc.greater(pc.abs(pc.subtract(left, parts)), rule.tolerance)
    raise ValueError(f"unknown row test {rule.test!r} in the {contract.name} contract")


def validate_batch(
    batch: pa.Table,
    contract: SourceContract,
    plan: NumberPlan,
    *,
    file_name: str,
    period_end: dt.datetime,
    row_numbers: np.ndarray,
    delivered_at: dt.datetime,
    delimiter: str = ",",
    undecodable: np.ndarray | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Split a batch of string columns into (typed accepted rows, quarantine rows).

    ``undecodable`` marks rows whose line held bytes not valid in the file's encoding
    (see :func:`pipelines.ingest.encoding.transcode`): they are quarantined as
    ``bad_encoding`` whatever else they hold.
    """
    n = batch.num_rows
    r = _Reasons(n)
    if undecodable is not None:
        r.flag(undecodable, "bad_encoding", None)
    typed: dict[str, pa.Array] = {}
    raws: dict[str, pa.Array] = {}
    for col in contract.columns:
        present = col.name in batch.column_names
        raws[col.name] = batch[col.name].combine_chunks() if present else pa.nulls(n, pa.string())
        typed[col.name] = _typed(col, raws[col.name], r, plan)

    for rule in contract.row_rules:
        r.flag(_filled(_breaks(rule, contract, typed, period_end)), rule.reason, rule.column)

    ok = pa.array(r.ok)
    schema = lake_schema(contract.name)
    cols: dict[str, pa.Array] = {name: typed[name] for name in contract.names}
    if contract.name == "cdr":
        norm, cat = classify_other_number(typed["other_number"], typed["other_operator"], plan)
        cols["other_number"] = norm
        cols["other_category"] = cat
    cols["_source_file"] = pa.repeat(pa.scalar(file_name, pa.string()), n)
    cols["_row_number"] = pa.array(row_numbers, pa.int64())
    cols["_delivered_at"] = pa.repeat(pa.scalar(delivered_at, pa.timestamp("s")), n)
    cols["month"] = _month_label(contract, typed, raws)
    full = pa.table([cols[f.name] for f in schema], schema=schema)
    accepted = full.filter(ok)

    bad = np.flatnonzero(~r.ok)
    if bad.size:
        idx = pa.array(bad)
        raw_cols = [pc.fill_null(batch[c].take(idx), "") for c in batch.column_names]
        raw = (
            pc.binary_join_element_wise(*raw_cols, delimiter) if len(raw_cols) > 1 else raw_cols[0]
        )
        if undecodable is not None:
            raw = pc.replace_substring(raw, UNDECODABLE, "")
        reasons, columns = r.names(bad)
        rejected = pa.table(
            {
                "source": pa.array([contract.name] * bad.size, pa.string()),
                "file": pa.array([file_name] * bad.size, pa.string()),
                "row_number": pa.array(row_numbers[bad], pa.int64()),
                "reason": pa.array(reasons, pa.string()),
                "column": pa.array(columns, pa.string()),
                "raw": raw,
            },
            schema=QUARANTINE_SCHEMA,
        )
    else:
        rejected = QUARANTINE_SCHEMA.empty_table()
    return accepted, rejected
