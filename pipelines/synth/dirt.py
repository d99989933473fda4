"""Dirt in the synthetic extracts, on purpose, and the record of it in the truth.

Every spoiled row is logged (``truth/dirt.parquet``) with the reason the ingest must
give it, and every record sent twice is listed (``truth/duplicates.parquet``), so the
ingest tests can check that each kind lands where it should. Dirt draws from its own
random stream: the world stays the same whatever dirt is configured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.synth.config import DirtConfig

# (source, dirt kind) -> (column to spoil, spoiled values, reason ingest must give)
DIRT_RULES: dict[tuple[str, str], tuple[str, list[str], str]] = {
    ("billing", "bad_date"): (
        "activation_date",
        ["2019-02-30", "15/03/2020", "2020-13-01"],
        "unparseable_date",
    ),
    ("billing", "negative_duration"): ("voice_minutes", ["-12", "-3"], "negative_value"),
    ("billing", "unknown_enum"): ("payment_type", ["hybrid", "PREPAY?"], "unknown_enum"),
    ("billing", "missing_key"): ("msisdn", [""], "missing_key"),
    ("billing", "malformed_number"): (
        "msisdn",
        ["1381234", "12345678901", "138abc45678"],
        "malformed_msisdn",
    ),
    ("billing", "bad_number_type"): (
        "total_charge",
        ["N/A", "12.3.4", "¥88"],
        "unparseable_number",
    ),
    ("cdr", "bad_date"): (
        "start_time",
        ["2025-13-01 10:00:00", "yesterday", "2025-02-30 25:61:00"],
        "unparseable_date",
    ),
    ("cdr", "negative_duration"): ("duration_s", ["-30", "-1", "-600"], "negative_value"),
    ("cdr", "unknown_enum"): ("call_result", ["busy", "UNKNOWN"], "unknown_enum"),
    ("cdr", "missing_key"): ("record_id", [""], "missing_key"),
    ("cdr", "malformed_number"): (
        "msisdn",
        ["1385", "99912345678", "13x12345678"],
        "malformed_msisdn",
    ),
    ("cdr", "bad_number_type"): ("duration_s", ["12s", "1.5e", "abc"], "unparseable_number"),
    ("complaints", "bad_date"): ("opened_at", ["2025-02-30 10:00:00", "n/a"], "unparseable_date"),
    ("complaints", "negative_duration"): ("satisfaction", ["-1", "-5"], "negative_value"),
    ("complaints", "unknown_enum"): ("category", ["weather", "misc"], "unknown_enum"),
    ("complaints", "missing_key"): ("ticket_id", [""], "missing_key"),
    ("complaints", "malformed_number"): ("msisdn", ["110", "13912"], "malformed_msisdn"),
    ("complaints", "bad_number_type"): ("satisfaction", ["good", "4.x"], "unparseable_number"),
}
LOG_COLUMNS = ["source", "file", "row_number", "kind", "expected_reason"]
DUPLICATE_COLUMNS = ["source", "file", "row_number", "record_id"]


def _variant_numbers(rng: np.random.Generator, nums: np.ndarray) -> np.ndarray:
    """The same mobile numbers as operators' systems really write them."""
    style = rng.integers(0, 5, nums.size)
    out = nums.astype(object).copy()
    for i, (n, s) in enumerate(zip(nums, style, strict=True)):
        n = str(n)
        out[i] = [
            "+86" + n,
            "0086" + n,
            f"86-{n[:3]}-{n[3:7]}-{n[7:]}",
            f"{n[:3]} {n[3:7]} {n[7:]}",
            f"+86 {n[:3]} {n[3:7]} {n[7:]}",
        ][s]
    return out


def truncate_last_record(data: bytes) -> tuple[bytes, int]:
    """``data`` with its last record cut in the middle, as an interrupted transfer leaves it.

    Also the number of that record (the header line is not a record).
    """
    body = data.rstrip(b"\n")
    cut = body.rfind(b"\n") + 1
    last = body[cut:]
    return body[:cut] + last[: max(1, len(last) // 2)], body.count(b"\n")


class Dirt:
    """Spoils a share of each file's rows and remembers exactly which and how."""

    def __init__(self, cfg: DirtConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.rng = rng
        self.log: list[dict] = []
        self.duplicates: list[dict] = []

    def apply(self, source: str, file: str, cols: dict[str, np.ndarray]) -> set[int]:
        """Spoil rows of ``cols`` in place, each kind at its rate; the rows made invalid."""
        n = len(next(iter(cols.values())))
        kinds = list(self.cfg.kinds)
        per_kind = self.cfg.rate / max(len(kinds), 1)
        counts = self.rng.binomial(n, per_kind, len(kinds)) if kinds else []
        total = int(np.sum(counts)) if kinds else 0
        total = min(total, n)
        chosen = self.rng.choice(n, total, replace=False) if total else np.array([], dtype=np.int64)
        dirty: set[int] = set()
        start = 0
        for kind, k in zip(kinds, counts, strict=False):
            rows = np.sort(chosen[start : start + k])
            start += k
            col, values, reason = DIRT_RULES[(source, kind)]
            spoiled = self.rng.choice(np.array(values, dtype=object), rows.size)
            cols[col][rows] = spoiled
            for r in rows.tolist():
                self._note(source, file, r + 1, kind, reason)
            dirty.update(rows.tolist())
        # valid but unusual number formats on clean rows
        clean = np.setdiff1d(np.arange(n), chosen)
        k = self.rng.binomial(clean.size, self.cfg.msisdn_format_rate) if clean.size else 0
        rows = (
            np.sort(self.rng.choice(clean, k, replace=False)) if k else np.array([], dtype=np.int64)
        )
        if rows.size:
            cols["msisdn"][rows] = _variant_numbers(self.rng, cols["msisdn"][rows])
            for r in rows.tolist():
                self._note(source, file, r + 1, "msisdn_format", None)
        return dirty

    def blank(self, values: np.ndarray, share: float) -> np.ndarray:
        """An optional column with a share of its values left empty, as exports now and then do."""
        return np.where(self.rng.random(values.size) < share, "", values)

    def resend(self, prev: pa.Table, clean_rows: np.ndarray, file: str, after: int) -> pa.Table:
        """Clean records of the previous file, sent again at the end of ``file`` (after row ``after``)."""
        rng = self.rng
        k = rng.binomial(clean_rows.size, self.cfg.duplicate_cdr_rate)
        pick = np.sort(rng.choice(clean_rows, k, replace=False))
        dup = prev.take(pa.array(pick))
        # the same event re-sent may lack the optional operator column's value
        if "other_operator" in dup.column_names:
            blank = rng.random(k) < 0.5
            op = pc.if_else(pa.array(blank), pa.scalar("", pa.string()), dup["other_operator"])
            dup = dup.set_column(dup.schema.get_field_index("other_operator"), "other_operator", op)
        for j, rid in enumerate(dup["record_id"].to_pylist()):
            self.duplicates.append(
                {"source": "cdr", "file": file, "row_number": after + j + 1, "record_id": rid}
            )
        return dup

    def truncated(self, file: str, row_number: int) -> None:
        """Record that a file's last record was cut: whatever else was done to it is gone."""

        def elsewhere(r: dict) -> bool:
            return not (r["file"] == file and r["row_number"] == row_number)

        self.log = [r for r in self.log if elsewhere(r)]
        self.duplicates = [r for r in self.duplicates if elsewhere(r)]
        self._note("cdr", file, row_number, "truncated_row", "truncated_row")

    def wrong_payments(self, df: pd.DataFrame) -> int:
        """Set ``paid_amount`` of about 2 % of the paying rows to 0.00; how many were changed."""
        ok = df["paid_amount"].str.fullmatch(r"\d+\.\d\d") & df["paid_amount"].ne("0.00")
        idx = np.flatnonzero(ok.to_numpy())
        wrong = self.rng.choice(idx, max(1, idx.size // 50), replace=False)
        df.loc[wrong, "paid_amount"] = "0.00"
        return int(wrong.size)

    def _note(self, source: str, file: str, row: int, kind: str, reason: str | None) -> None:
        self.log.append(
            {
                "source": source,
                "file": file,
                "row_number": row,
                "kind": kind,
                "expected_reason": reason,
            }
        )
