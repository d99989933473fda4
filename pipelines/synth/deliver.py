"""Write the simulated operator as the extracts an operator delivers (EXTRACTS.md).

Column names and their kinds come from the contract (:mod:`pipelines.lake.contract`);
the dirt (:mod:`pipelines.synth.dirt`) is logged row by row in the truth. Output is
byte-identical for a seed.
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
from pipelines.lake.contract import BILLING, CDR, COMPLAINTS
from pipelines.synth.config import DirtConfig
from pipelines.synth.dirt import DUPLICATE_COLUMNS, LOG_COLUMNS, Dirt, truncate_last_record
from pipelines.synth.response import CRM_COLUMNS
from pipelines.synth.world import MonthOutput, World

log = logging.getLogger(__name__)

WORLD_VERSION = 2  # 2: subscribers answer contacts, the CRM's campaigns (docs/crm.md)


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
    """The billing text as BOSS writes it: money with two decimals, data with one."""
    out = {}
    for col in BILLING.columns:
        v = df[col.name]
        if col.kind == "money":
            out[col.name] = _fmt_money(v.to_numpy())
        elif col.kind == "date":
            out[col.name] = _fmt_date(v.to_numpy())
        elif col.kind == "number":
            out[col.name] = np.char.mod("%.1f", v.to_numpy(float))
        else:
            out[col.name] = v.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(out)


def cdr_strings(t: pa.Table) -> pa.Table:
    cols = {}
    for col in CDR.columns:
        a = t[col.name]
        if col.kind == "timestamp":
            a = pc.strftime(a, format="%Y-%m-%d %H:%M:%S")
        cols[col.name] = a.cast(pa.string())
    return pa.table(cols)


def complaint_strings(df: pd.DataFrame) -> pd.DataFrame:
    """The complaint text; an unrated ticket's satisfaction is empty."""
    out = {}
    for col in COMPLAINTS.columns:
        v = df[col.name]
        if col.kind == "timestamp":
            out[col.name] = _fmt_ts(v.to_numpy())
        elif col.kind == "int":
            out[col.name] = np.where(v.isna(), "", v.fillna(0).astype(int).astype(str))
        else:
            out[col.name] = v.astype(str).to_numpy(dtype=object)
    return pd.DataFrame(out, columns=COMPLAINTS.names)


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


class Delivery:
    """Writes a world month by month, so a caller can drive it (``World.step(m, contacts)``).

    ``generate`` is this with no contacts of the caller's own: ``write_month`` each output
    of ``delivery.world`` in order, then ``finish``.
    """

    def __init__(
        self, settings: Settings, landing: Path, truth: Path, *, crm: Path | None = None
    ) -> None:
        self.t0 = time.perf_counter()
        self.settings, self.landing, self.truth = settings, landing, truth
        self.crm = crm if crm is not None else settings.path("data_dir") / "crm"
        cfg = self.cfg = settings.synth
        for d in (landing, truth):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        (truth / "hazard").mkdir()
        (truth / "response").mkdir()
        self.dirt = Dirt(cfg.dirt, np.random.default_rng(cfg.seed + 7919))  # its own stream
        self.world = World(cfg, settings.numbering, settings.churn.prepaid_inactivity_months)
        self.world.response.window = (settings.churn.gap_months, settings.churn.horizon_months)
        self.summary = SynthSummary(
            landing=landing, truth=truth, rows={"billing": 0, "cdr": 0, "complaints": 0}
        )
        self.ext = ".csv.gz" if cfg.dirt.gzip else ".csv"
        self.reverse_alias: dict[str, str] = {}
        for zh, en in settings.sources.complaints.aliases.items():
            self.reverse_alias.setdefault(en, zh)
        self.prev_cdr: pa.Table | None = None
        self.prev_cdr_clean: np.ndarray | None = None
        self.billing_files: list[Path] = []
        self.cdr_files: list[Path] = []
        self.contacts: list[pd.DataFrame] = []
        self.month_i = 0

    def write_month(self, out: MonthOutput) -> None:
        """The month's extracts, its truth and its CRM rows (kept for :meth:`finish`)."""
        cfg, dcfg, dirt, landing, ext = self.cfg, self.cfg.dirt, self.dirt, self.landing, self.ext
        summary, truth, month_i = self.summary, self.truth, self.month_i
        ym = f"{out.month.year:04d}{out.month.month:02d}"
        # billing
        bs = billing_strings(out.billing)
        cols = {c: bs[c].to_numpy(dtype=object).copy() for c in bs.columns}
        name = f"billing_{ym}{ext}"
        dirt.apply("billing", name, cols)
        path = landing / name
        _write_csv(pd.DataFrame(cols), path, gz=dcfg.gzip)
        self.billing_files.append(path)
        summary.rows["billing"] += len(bs)
        # cdr
        ct = cdr_strings(out.cdr)
        cols = {c: ct[c].to_numpy(zero_copy_only=False).astype(object) for c in CDR.names}
        name = f"cdr_{ym}{ext}"
        dirty = dirt.apply("cdr", name, cols)
        n_rows = ct.num_rows
        clean_rows = np.setdiff1d(np.arange(n_rows), np.fromiter(dirty, np.int64, len(dirty)))
        # The optional operator column: older switch exports (the first two months) lack
        # it entirely; later ones leave it empty now and then.
        cols["other_operator"] = dirt.blank(cols["other_operator"], 0.05)
        table = pa.table({c: pa.array(cols[c], pa.string()) for c in CDR.names})
        if self.prev_cdr is not None and dcfg.duplicate_cdr_rate > 0:
            resent = dirt.resend(self.prev_cdr, self.prev_cdr_clean, name, n_rows)
            table = pa.concat_tables([table, resent])
        if month_i < 2:
            table = table.drop_columns(["other_operator"])
        files = (
            _split_days(table, ym, n_rows) if cfg.cdr_file_granularity == "day" else [(name, table)]
        )
        for fname, part in files:
            p = landing / (fname if fname.endswith(ext) else fname + ext)
            _write_cdr(part, p, dcfg.gzip)
            self.cdr_files.append(p)
        summary.rows["cdr"] += table.num_rows
        self.prev_cdr, self.prev_cdr_clean = table.slice(0, n_rows), clean_rows
        if "other_operator" not in self.prev_cdr.column_names:
            self.prev_cdr = self.prev_cdr.append_column(
                "other_operator", pa.array([""] * n_rows, pa.string())
            )
        # complaints
        cs = complaint_strings(out.ticket_states)
        cols = {c: cs[c].to_numpy(dtype=object).copy() for c in cs.columns}
        name = f"complaints_{ym}{ext}"
        if len(cs):
            dirt.apply("complaints", name, cols)
        frame = pd.DataFrame(cols, columns=COMPLAINTS.names)
        if dcfg.gbk_pipe_complaints:
            frame = frame.rename(columns=self.reverse_alias)
            _write_csv(frame, landing / name, delimiter="|", encoding="gbk", gz=dcfg.gzip)
        else:
            _write_csv(frame, landing / name, gz=dcfg.gzip)
        summary.rows["complaints"] += len(cs)
        pq.write_table(
            pa.Table.from_pandas(out.truth, preserve_index=False),
            truth / "hazard" / f"month={out.month}.parquet",
        )
        if out.response is not None:
            pq.write_table(
                pa.Table.from_pandas(out.response, preserve_index=False),
                truth / "response" / f"month={out.month}.parquet",
            )
        if out.contacts is not None and len(out.contacts):
            self.contacts.append(out.contacts)
        self.month_i += 1

    def finish(self) -> SynthSummary:
        """The dirt that spans files, the truth of the whole run, the CRM extract, the summary."""
        cfg, dcfg, dirt, landing, truth = (
            self.cfg,
            self.cfg.dirt,
            self.dirt,
            self.landing,
            self.truth,
        )
        summary, world = self.summary, self.world
        if dcfg.truncated_last_line and self.cdr_files:
            _truncate_last_line(self.cdr_files[-1], dirt, dcfg.gzip)
        redeliveries = _redeliver(landing, self.billing_files, dcfg, dirt)
        dirt_log = pd.DataFrame(dirt.log, columns=LOG_COLUMNS)
        dup_frame = pd.DataFrame(dirt.duplicates, columns=DUPLICATE_COLUMNS)
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
        self.write_crm()
        summary.files = sorted(
            str(p.relative_to(landing)) for p in landing.rglob("*") if p.is_file()
        )
        summary.bytes_on_disk = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file())
        summary.seconds = time.perf_counter() - self.t0
        meta = {
            "world_version": WORLD_VERSION,
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

    def write_crm(self) -> None:
        """``crm/contact_history.csv``: every contact and hold-out of the run (docs/crm.md)."""
        frame = (
            pd.concat(self.contacts, ignore_index=True)
            if self.contacts
            else pd.DataFrame(columns=CRM_COLUMNS)
        )
        self.crm.mkdir(parents=True, exist_ok=True)
        _write_csv(frame[CRM_COLUMNS], self.crm / "contact_history.csv")
        self.summary.rows["contacts"] = len(frame)


def generate(
    settings: Settings,
    landing: Path,
    truth: Path,
    *,
    crm: Path | None = None,
    show_progress: bool = True,
) -> SynthSummary:
    """Simulate ``settings.synth`` and write extracts to ``landing``, the hidden truth to ``truth``.

    The operator's own past contacts go to ``crm`` (default ``<data_dir>/crm``).
    """
    delivery = Delivery(settings, landing, truth, crm=crm)
    months = tqdm(
        delivery.world.months(),
        total=settings.synth.months,
        desc="synth months",
        disable=not show_progress,
    )
    for out in months:
        delivery.write_month(out)
    return delivery.finish()


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


def _truncate_last_line(path: Path, dirt: Dirt, gz: bool) -> None:
    """Cut the file's last record in the middle, as an interrupted transfer does."""
    data = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    truncated, record = truncate_last_record(data)
    _write_atomic(truncated, path, gz)
    dirt.truncated(path.name, record)


def _redeliver(
    landing: Path, billing_files: list[Path], dcfg: DirtConfig, dirt: Dirt
) -> list[dict]:
    """One billing file delivered twice unchanged; one re-delivered with corrections.

    The first delivery of the corrected month had wrong ``paid_amount`` on some rows; the
    re-delivery (same name, under ``redelivery/``, arriving later) is the truth.
    """
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
        changed = dirt.wrong_payments(df)
        _write_csv(df, src, gz=dcfg.gzip)
        done.append({"file": src.name, "kind": "corrected_redelivery", "rows_changed": changed})
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


def load_truth(truth: Path, *, response: bool = False) -> dict[str, pd.DataFrame]:
    """The hidden truth, for tests and notebooks that compare a model with the best possible.

    ``response`` adds the true effects of every contact month (large: 30-odd columns per
    subscriber-month; ``response.true_effects`` reads one month).
    """
    out = {
        "subscribers": pd.read_parquet(truth / "subscribers.parquet"),
        "hazard": pd.read_parquet(truth / "hazard"),
        "dirt": pd.read_parquet(truth / "dirt.parquet"),
        "duplicates": pd.read_parquet(truth / "duplicates.parquet"),
    }
    if response and any((truth / "response").glob("*.parquet")):
        out["response"] = pd.read_parquet(truth / "response")
    return out
