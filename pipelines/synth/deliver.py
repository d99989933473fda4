"""Write the simulated operator as the extracts an operator delivers (EXTRACTS.md).

Dirt is injected on purpose and logged row by row in ``truth/dirt.parquet`` so the
ingest tests can check that each kind lands in quarantine with the right reason.
Output is byte-identical for a seed.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipelines.config import Settings
from pipelines.synth.world import World

log = logging.getLogger(__name__)

BILLING_COLUMNS = [
    "msisdn", "bill_month", "activation_date", "payment_type", "plan_id", "plan_fee",
    "total_charge", "voice_charge", "data_charge", "sms_charge", "vas_charge",
    "voice_overage_charge", "data_overage_charge", "discount", "paid_amount", "balance",
    "arrears", "voice_minutes", "data_mb", "sms_count", "points_balance", "points_redeemed",
    "family_bundle", "group_bundle", "contract_end_date", "network_generation", "status",
]  # fmt: skip
CDR_COLUMNS = [
    "record_id", "msisdn", "other_number", "direction", "event_type", "start_time",
    "duration_s", "call_result", "cell_id", "roaming", "other_operator",
]  # fmt: skip
COMPLAINT_COLUMNS = [
    "ticket_id", "msisdn", "opened_at", "updated_at", "closed_at", "category", "channel",
    "severity", "status", "satisfaction", "description",
]  # fmt: skip
MONEY = [
    "plan_fee", "total_charge", "voice_charge", "data_charge", "sms_charge", "vas_charge",
    "voice_overage_charge", "data_overage_charge", "discount", "paid_amount", "balance", "arrears",
]  # fmt: skip

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


@dataclass
class SynthSummary:
    landing: Path
    truth: Path
    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    bytes_on_disk: int = 0
    seconds: float = 0.0


def _fmt_money(x: np.ndarray) -> np.ndarray:
    return np.char.mod("%.2f", np.asarray(x, float))


def _fmt_date(x) -> np.ndarray:
    s = pd.Series(pd.to_datetime(x)).dt.strftime("%Y-%m-%d")
    return s.fillna("").to_numpy(dtype=object)


def _fmt_ts(x) -> np.ndarray:
    s = pd.Series(pd.to_datetime(x)).dt.strftime("%Y-%m-%d %H:%M:%S")
    return s.fillna("").to_numpy(dtype=object)


def billing_strings(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for c in BILLING_COLUMNS:
        v = df[c]
        if c in MONEY:
            out[c] = _fmt_money(v.to_numpy())
        elif c in ("activation_date", "contract_end_date"):
            out[c] = _fmt_date(v.to_numpy())
        elif c == "data_mb":
            out[c] = np.char.mod("%.1f", v.to_numpy(float))
        else:
            out[c] = v.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(out)


def cdr_strings(t: pa.Table) -> pa.Table:
    cols = {}
    for c in CDR_COLUMNS:
        a = t[c]
        if c == "start_time":
            a = pc.strftime(a, format="%Y-%m-%d %H:%M:%S")
        cols[c] = a.cast(pa.string())
    return pa.table(cols)


def complaint_strings(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for c in COMPLAINT_COLUMNS:
        v = df[c]
        if c in ("opened_at", "updated_at", "closed_at"):
            out[c] = _fmt_ts(v.to_numpy())
        elif c == "satisfaction":
            out[c] = np.where(v.isna(), "", v.fillna(0).astype(int).astype(str))
        else:
            out[c] = v.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(out, columns=COMPLAINT_COLUMNS)


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


class _Dirt:
    """Spoils a share of a file's rows and remembers exactly which and how."""

    def __init__(self, settings: Settings, rng: np.random.Generator):
        self.cfg = settings.synth.dirt
        self.rng = rng
        self.log: list[dict] = []

    def apply(self, source: str, file: str, cols: dict[str, np.ndarray]) -> set[int]:
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
                self.log.append(
                    {
                        "source": source,
                        "file": file,
                        "row_number": r + 1,
                        "kind": kind,
                        "expected_reason": reason,
                    }
                )
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
                self.log.append(
                    {
                        "source": source,
                        "file": file,
                        "row_number": r + 1,
                        "kind": "msisdn_format",
                        "expected_reason": None,
                    }
                )
        return dirty


def _write_atomic(data: bytes, path: Path, gz: bool) -> None:
    """Write via a temporary name; gzip without a timestamp so bytes are reproducible for a seed."""
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as f:
            f.write(data)
        data = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_csv(
    df: pd.DataFrame, path: Path, *, delimiter: str = ",", encoding: str = "utf-8", gz: bool = False
) -> None:
    """Minimal quoting, like a BOSS export."""
    _write_atomic(
        df.to_csv(index=False, sep=delimiter, lineterminator="\n").encode(encoding), path, gz
    )


def _write_cdr(t: pa.Table, path: Path, gz: bool) -> None:
    buf = io.BytesIO()
    buf.write((",".join(t.column_names) + "\n").encode())
    pacsv.write_csv(t, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    _write_atomic(buf.getvalue().replace(b"\r\n", b"\n"), path, gz)


def generate(
    settings: Settings, landing: Path, truth: Path, *, show_progress: bool = True
) -> SynthSummary:
    """Simulate ``settings.synth`` and write extracts to ``landing`` and the hidden truth to ``truth``."""
    t0 = time.perf_counter()
    cfg = settings.synth
    dcfg = cfg.dirt
    for d in (landing, truth):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    (truth / "hazard").mkdir()
    rng = np.random.default_rng(cfg.seed + 7919)  # dirt has its own stream: world stays the same
    dirt = _Dirt(settings, rng)
    world = World(cfg, settings.numbering, settings.churn.prepaid_inactivity_months)
    summary = SynthSummary(
        landing=landing, truth=truth, rows={"billing": 0, "cdr": 0, "complaints": 0}
    )
    ext = ".csv.gz" if dcfg.gzip else ".csv"
    reverse_alias = {}
    for zh, en in settings.sources.complaints.aliases.items():
        reverse_alias.setdefault(en, zh)
    prev_cdr: pa.Table | None = None
    prev_cdr_clean: np.ndarray | None = None
    dup_log: list[dict] = []
    n_months = cfg.months
    billing_files: list[Path] = []
    cdr_files: list[Path] = []
    months = tqdm(world.months(), total=n_months, desc="synth months", disable=not show_progress)
    for month_i, out in enumerate(months):
        ym = f"{out.month.year:04d}{out.month.month:02d}"
        # billing
        bs = billing_strings(out.billing)
        cols = {c: bs[c].to_numpy(dtype=object).copy() for c in bs.columns}
        name = f"billing_{ym}{ext}"
        dirt.apply("billing", name, cols)
        path = landing / name
        _write_csv(pd.DataFrame(cols), path, gz=dcfg.gzip)
        billing_files.append(path)
        summary.rows["billing"] += len(bs)
        # cdr
        ct = cdr_strings(out.cdr)
        cols = {c: ct[c].to_numpy(zero_copy_only=False).astype(object) for c in CDR_COLUMNS}
        name = f"cdr_{ym}{ext}"
        dirty = dirt.apply("cdr", name, cols)
        n_rows = ct.num_rows
        clean_rows = np.setdiff1d(np.arange(n_rows), np.fromiter(dirty, np.int64, len(dirty)))
        # The optional operator column: older switch exports (the first two months) lack
        # it entirely; later ones leave it empty now and then.
        blank = rng.random(n_rows) < 0.05
        cols["other_operator"] = np.where(blank, "", cols["other_operator"])
        table = pa.table({c: pa.array(cols[c], pa.string()) for c in CDR_COLUMNS})
        if prev_cdr is not None and dcfg.duplicate_cdr_rate > 0:
            k = rng.binomial(prev_cdr_clean.size, dcfg.duplicate_cdr_rate)
            pick = np.sort(rng.choice(prev_cdr_clean, k, replace=False))
            dup = prev_cdr.take(pa.array(pick))
            # the same event re-sent may lack the optional operator column's value
            if "other_operator" in dup.column_names:
                blank = rng.random(k) < 0.5
                op = pc.if_else(pa.array(blank), pa.scalar("", pa.string()), dup["other_operator"])
                dup = dup.set_column(
                    dup.schema.get_field_index("other_operator"), "other_operator", op
                )
            for j, rid in enumerate(dup["record_id"].to_pylist()):
                dup_log.append(
                    {"source": "cdr", "file": name, "row_number": n_rows + j + 1, "record_id": rid}
                )
            table = pa.concat_tables([table, dup])
        if month_i < 2:
            table = table.drop_columns(["other_operator"])
        files = (
            _split_days(table, ym, n_rows) if cfg.cdr_file_granularity == "day" else [(name, table)]
        )
        for fname, part in files:
            p = landing / (fname if fname.endswith(ext) else fname + ext)
            _write_cdr(part, p, dcfg.gzip)
            cdr_files.append(p)
        summary.rows["cdr"] += table.num_rows
        prev_cdr, prev_cdr_clean = table.slice(0, n_rows), clean_rows
        if "other_operator" not in prev_cdr.column_names:
            prev_cdr = prev_cdr.append_column(
                "other_operator", pa.array([""] * n_rows, pa.string())
            )
        # complaints
        cs = complaint_strings(out.ticket_states)
        cols = {c: cs[c].to_numpy(dtype=object).copy() for c in cs.columns}
        name = f"complaints_{ym}{ext}"
        if len(cs):
            dirt.apply("complaints", name, cols)
        frame = pd.DataFrame(cols, columns=COMPLAINT_COLUMNS)
        if dcfg.gbk_pipe_complaints:
            frame = frame.rename(columns=reverse_alias)
            _write_csv(frame, landing / name, delimiter="|", encoding="gbk", gz=dcfg.gzip)
        else:
            _write_csv(frame, landing / name, gz=dcfg.gzip)
        summary.rows["complaints"] += len(cs)
        pq.write_table(
            pa.Table.from_pandas(out.truth, preserve_index=False),
            truth / "hazard" / f"month={out.month}.parquet",
        )

    dirt_log = pd.DataFrame(
        dirt.log, columns=["source", "file", "row_number", "kind", "expected_reason"]
    )
    dup_frame = pd.DataFrame(dup_log, columns=["source", "file", "row_number", "record_id"])
    if dcfg.truncated_last_line and cdr_files:
        dirt_log = _truncate_last_line(cdr_files[-1], dirt_log, dcfg.gzip)
        cut = dirt_log[dirt_log.kind == "truncated_row"].iloc[0]
        dup_frame = dup_frame[
            ~((dup_frame.file == cut.file) & (dup_frame.row_number == cut.row_number))
        ]
    redeliveries = _redeliver(landing, billing_files, settings, rng)
    pq.write_table(pa.Table.from_pandas(dirt_log, preserve_index=False), truth / "dirt.parquet")
    pq.write_table(
        pa.Table.from_pandas(dup_frame, preserve_index=False),
        truth / "duplicates.parquet",
    )
    pq.write_table(
        pa.Table.from_pandas(world.churn_truth(), preserve_index=False),
        truth / "subscribers.parquet",
    )
    _set_delivery_times(landing)
    summary.files = sorted(str(p.relative_to(landing)) for p in landing.rglob("*") if p.is_file())
    summary.bytes_on_disk = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file())
    summary.seconds = time.perf_counter() - t0
    meta = {
        "seed": cfg.seed,
        "subscribers": cfg.subscribers,
        "months": cfg.months,
        "start_month": cfg.start_month,
        "rows": summary.rows,
        "files": summary.files,
        "redeliveries": redeliveries,
        "bytes_on_disk": summary.bytes_on_disk,
        "seconds": round(summary.seconds, 1),
        "dirt_rows": dirt_log["kind"].value_counts().to_dict(),
    }
    (truth / "summary.json").write_text(
        json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return summary


def _split_days(table: pa.Table, ym: str, n_own: int) -> list[tuple[str, pa.Table]]:
    """One file per day of the month; records re-sent from earlier files ride in the first one."""
    own, resent = table.slice(0, n_own), table.slice(n_own)
    day = pc.utf8_slice_codeunits(own["start_time"], 8, 10)
    valid = sorted(d for d in set(day.to_pylist()) if d and len(d) == 2 and d.isdigit())
    out = [(f"cdr_{ym}{d}", own.filter(pc.equal(day, d))) for d in valid]
    odd = own.filter(pc.invert(pc.fill_null(pc.is_in(day, pa.array(valid, pa.string())), False)))
    if out:
        name, first = out[0]
        out[0] = (name, pa.concat_tables([first, odd, resent]))
    return out


def _truncate_last_line(path: Path, dirt_log: pd.DataFrame, gz: bool) -> pd.DataFrame:
    """Cut the file's last record in the middle, as an interrupted transfer does."""
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    body = data.rstrip(b"\n")
    cut = body.rfind(b"\n") + 1
    last = body[cut:]
    truncated = body[:cut] + last[: max(1, len(last) // 2)]
    _write_atomic(truncated, path, gz)
    # records = newlines before the last record (the header line is not a record)
    n_records = body.count(b"\n")
    name = path.name
    dirt_log = dirt_log[~((dirt_log["file"] == name) & (dirt_log["row_number"] == n_records))]
    row = {
        "source": "cdr",
        "file": name,
        "row_number": n_records,
        "kind": "truncated_row",
        "expected_reason": "truncated_row",
    }
    return pd.concat([dirt_log, pd.DataFrame([row])], ignore_index=True)


def _redeliver(
    landing: Path, billing_files: list[Path], settings: Settings, rng: np.random.Generator
) -> list[dict]:
    """One billing file delivered twice unchanged; one re-delivered with corrections.

    The first delivery of the corrected month had wrong ``paid_amount`` on some rows; the
    re-delivery (same name, under ``redelivery/``, arriving later) is the truth.
    """
    dcfg = settings.synth.dirt
    red = landing / "redelivery"
    done: list[dict] = []
    if not billing_files:
        return done
    if dcfg.delivered_twice and len(billing_files) >= 2:
        src = billing_files[1]
        red.mkdir(exist_ok=True)
        shutil.copy2(src, red / src.name)
        done.append({"file": src.name, "kind": "delivered_twice"})
    if dcfg.corrected_redelivery and len(billing_files) >= 4:
        src = billing_files[3]
        red.mkdir(exist_ok=True)
        shutil.copy2(src, red / src.name)  # the corrected version
        raw = gzip.decompress(src.read_bytes()) if dcfg.gzip else src.read_bytes()
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)
        ok = df["paid_amount"].str.fullmatch(r"\d+\.\d\d") & df["paid_amount"].ne("0.00")
        idx = np.flatnonzero(ok.to_numpy())
        wrong = rng.choice(idx, max(1, idx.size // 50), replace=False)
        df.loc[wrong, "paid_amount"] = "0.00"
        _write_csv(df, src, gz=dcfg.gzip)
        done.append(
            {"file": src.name, "kind": "corrected_redelivery", "rows_changed": int(wrong.size)}
        )
    return done


def _set_delivery_times(landing: Path) -> None:
    """Deliveries arrive in month order; re-deliveries after everything else."""
    base = 1_700_000_000
    files = sorted(p for p in landing.rglob("*") if p.is_file())
    regular = [p for p in files if p.parent == landing]
    later = [p for p in files if p.parent != landing]
    for i, p in enumerate(sorted(regular, key=lambda p: p.name[-10:] + p.name)):
        os.utime(p, (base + i * 60, base + i * 60))
    for i, p in enumerate(later):
        os.utime(p, (base + 10**6 + i * 60, base + 10**6 + i * 60))


def load_truth(truth: Path) -> dict[str, pd.DataFrame]:
    """The hidden truth, for tests and notebooks that compare a model with the best possible."""
    return {
        "subscribers": pd.read_parquet(truth / "subscribers.parquet"),
        "hazard": pd.read_parquet(truth / "hazard"),
        "dirt": pd.read_parquet(truth / "dirt.parquet"),
        "duplicates": pd.read_parquet(truth / "duplicates.parquet"),
    }
