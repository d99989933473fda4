"""Ingest whatever is in the landing folder into the lake, file by file, reconciling every row.

For each delivery: stream and validate into staging, quarantine bad rows, remove
duplicates (inside the file, and against what other files already committed), move
the parts in, then commit by rewriting the source's manifest. Every row read is
accounted for: read = accepted + quarantined + duplicates.

A delivery that cannot be read (cut-off gzip, bytes no encoding explains, no header)
fails alone: the run goes on with the others, the report says why in one line, and
:class:`IngestFailed` is raised at the end. Every message is masked: a phone number
in a broken header must not reach the report or the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial, reduce
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pipelines.ingest.config import IngestConfig, SourceConfig, Sources
from pipelines.ingest.reader import (
    LEGACY_ENCODING,
    UNDECODABLE,
    Delivery,
    DeliveryError,
    LineNumbersNeeded,
    UnreadableFile,
    discover,
    looks_like_data,
    map_header,
    prefetch,
    sniff,
    stream,
    survey_encoding,
    transcode,
)
from pipelines.ingest.validate import validate_batch
from pipelines.lake import store as lk
from pipelines.lake import views
from pipelines.lake.config import Numbering
from pipelines.lake.contract import (
    CONTRACTS,
    QUARANTINE_SCHEMA,
    SCHEMA_VERSION,
    SourceContract,
    lake_schema,
    parquet_layout,
)
from pipelines.lake.errors import ChurnError, UsageError
from pipelines.lake.numbers import NumberPlan, mask_text

log = logging.getLogger(__name__)


@dataclass
class FileReport:
    file: str
    source: str
    path: str
    status: str  # committed | unchanged | failed | superseded
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    duplicates_within_file: int = 0
    duplicates_across_files: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    months: list[str] = field(default_factory=list)
    replaced_previous: bool = False
    encoding: str = ""
    delimiter: str = ""
    seconds: float = 0.0
    message: str = ""

    @property
    def reconciles(self) -> bool:
        return self.read == self.accepted + self.quarantined + self.duplicates


@dataclass
class IngestReport:
    started_at: str
    files: list[FileReport] = field(default_factory=list)
    unknown_files: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def totals(self) -> dict[str, int]:
        done = [f for f in self.files if f.status in ("committed", "failed")]
        reasons: Counter[str] = Counter()
        for f in done:
            reasons.update(f.quarantined_by_reason)
        return {
            "files_committed": sum(f.status == "committed" for f in self.files),
            "files_unchanged": sum(f.status == "unchanged" for f in self.files),
            "files_failed": len(self.failed),
            "files_superseded": sum(f.status == "superseded" for f in self.files),
            "read": sum(f.read for f in done),
            "accepted": sum(f.accepted for f in done if f.status == "committed"),
            "quarantined": sum(f.quarantined for f in done),
            "duplicates": sum(f.duplicates for f in done),
            "quarantined_by_reason": dict(sorted(reasons.items())),
        }

    def to_dict(self) -> dict:
        return {
            "started_at": self.started_at,
            "schema_version": SCHEMA_VERSION,
            "totals": self.totals(),
            "files": [asdict(f) | {"reconciles": f.reconciles} for f in self.files],
            "unknown_files": self.unknown_files,
        }

    def table(self) -> list[dict]:
        """Rows for a human: one per file that was looked at."""
        return [
            {
                "file": f.file,
                "status": f.status,
                "read": f.read,
                "accepted": f.accepted,
                "quarantined": f.quarantined,
                "duplicates": f.duplicates,
                "reasons": ", ".join(
                    f"{k}={v}" for k, v in sorted(f.quarantined_by_reason.items())
                ),
                "seconds": f.seconds,
                "rows_per_s": round(f.read / f.seconds)
                if f.status == "committed" and f.seconds
                else None,
            }
            for f in self.files
        ]


class IngestFailed(ChurnError, RuntimeError):
    """Some deliveries failed (the others went in): one line naming them, the report for the rest.

    The lake keeps its last good state for the failed files; ``report`` has every detail.
    """

    shown = 3  # failed files named in the message; the report lists them all

    def __init__(self, report: IngestReport):
        self.report = report
        failed = report.failed
        looked_at = sum(f.status != "superseded" for f in report.files)
        named = "; ".join(f"{f.file}: {f.message}" for f in failed[: self.shown])
        if len(failed) > self.shown:
            named += f"; and {len(failed) - self.shown} more"
        super().__init__(
            mask_text(
                f"{len(failed)} of {looked_at} files failed ingest ({named}); report: {report.path}"
            )
        )

    def __reduce__(self):  # rebuilt from the report (Prefect pickles exceptions)
        return (type(self), (self.report,))


@dataclass
class Hooks:
    """Points where callers (progress bars, tests simulating a crash) can step in."""

    before_commit: Callable[[FileReport], None] | None = None
    after_file: Callable[[FileReport], None] | None = None


def _connect(tmp: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={"memory_limit": memory_limit, "threads": threads, "temp_directory": str(tmp)}
    )
    con.execute("SET preserve_insertion_order = false")
    return con


def use_memory_pool(name: str) -> None:
    """Make ``name`` Arrow's default allocator, unless ARROW_DEFAULT_MEMORY_POOL says otherwise.

    Validation allocates and frees some 100 MB per block. mimalloc, Arrow's default,
    returns freed pages to the system within milliseconds, so every block faults them
    in again; jemalloc keeps them for a second. On the 247 MB benchmark CDR file that
    is 15 % of the wall time (2.5 s -> 2.15 s, CPU 4.5 s -> 3.9 s).
    """
    if name == "default" or os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    if pa.default_memory_pool().backend_name == name:
        return
    make = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool,
            "system": pa.system_memory_pool}[name]  # fmt: skip
    try:
        pa.set_memory_pool(make())
    except NotImplementedError:  # a pyarrow build without it (e.g. jemalloc on Windows)
        log.info("Arrow memory pool %s is not available; keeping %s", name,
                 pa.default_memory_pool().backend_name)  # fmt: skip


def check_landing(landing: Path) -> None:
    """Refuse a landing folder that is not there, before anything is created.

    Ingesting a folder that does not exist would "succeed" with nothing read, after
    making an empty lake, quarantine and reports: a wrong path would look like a
    quiet month.
    """
    landing = Path(landing)
    if landing.is_dir():
        return
    if landing.exists():
        raise UsageError(f"landing folder {landing} is not a folder")
    parent = landing.parent
    hint = (
        f"neither does its parent {parent}: check paths.data_dir"
        if not parent.exists()
        else "put the operator's extracts there, or point paths.landing / paths.data_dir elsewhere"
    )
    raise UsageError(f"landing folder {landing} does not exist: {hint}")


def _stem(d: Delivery, checksum: str) -> str:
    base = d.name.split(".csv")[0]
    return f"{base}-{checksum[:12]}"


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, **parquet_layout(schema.metadata[b"source"].decode()))


class _MonthParts:
    """Accepted rows into Parquet parts per month, a new part every ``max_rows`` rows.

    Written while the file is still being read (on a worker thread: encoding releases
    the GIL), so a part is final unless duplicates are found in it afterwards.
    """

    def __init__(
        self,
        root: Path,
        schema: pa.Schema,
        max_rows: int,
        on_write: Callable[[pa.Table, Path], None] | None = None,
    ):
        self.root, self.schema, self.max_rows, self.on_write = root, schema, max_rows, on_write
        self.open: dict[str, tuple[pq.ParquetWriter, int]] = {}
        self.parts: dict[str, list[Path]] = {}

    def write(self, table: pa.Table) -> None:
        months = pc.unique(table["month"]).to_pylist()
        for m in months:
            t = table if len(months) == 1 else table.filter(pc.equal(table["month"], m))
            writer, rows = self.open.get(m) or self._new(m)
            writer.write_table(t)
            if self.on_write:
                self.on_write(t, self.parts[m][-1])
            rows += t.num_rows
            if rows >= self.max_rows:
                writer.close()
                del self.open[m]
            else:
                self.open[m] = (writer, rows)

    def _new(self, month: str) -> tuple[pq.ParquetWriter, int]:
        done = self.parts.setdefault(month, [])
        path = self.root / f"month={month}" / f"part-{len(done):03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        done.append(path)
        return _parquet_writer(path, self.schema), 0

    def close(self) -> dict[str, list[Path]]:
        for writer, _ in self.open.values():
            writer.close()
        self.open.clear()
        return self.parts


@dataclass
class _Staged:
    read: int
    accepted: int
    reasons: Counter
    parts: dict[str, list[Path]]
    quarantine: Path


@dataclass(frozen=True)
class _ReadPlan:
    """What to stream for a delivery: the file itself, or a UTF-8 copy with undecodable bytes marked."""

    path: Path
    encoding: str  # of ``path``
    marked: bool = False  # the copy of transcode(): rows holding UNDECODABLE are bad_encoding
    surveyed: bool = False  # the whole file's encoding is known, not guessed from its head
    note: str = ""  # for the report: what the survey found
    source_encoding: str = ""  # the delivery's own, when ``path`` is a copy

    @property
    def delivery_encoding(self) -> str:
        return self.source_encoding or self.encoding


def _candidates(cfg: SourceConfig) -> tuple[str, ...]:
    return ("utf-8", LEGACY_ENCODING) if cfg.encoding == "auto" else (cfg.encoding,)


def _replan(
    d: Delivery,
    cfg: SourceConfig,
    plan: _ReadPlan,
    copy: Path,
    failure: UnreadableFile | None = None,
) -> _ReadPlan:
    """Survey the whole file and read it in the encoding its lines use.

    Done after a read in the encoding guessed from the head failed (``failure``, raised
    again if every line is valid in the guess: the fault was not the encoding), and
    up front for a head that is not UTF-8: GB18030 decodes most UTF-8 too, as nonsense,
    so a read would not fail on UTF-8 lines further down. A file all in one encoding
    is read as such; a mixed one through a UTF-8 copy with its bad lines marked
    (:func:`transcode`), so only their rows are quarantined.
    """
    if failure is None:  # a GBK head: only UTF-8 lines matter, pyarrow checks the rest
        quick = survey_encoding(d.path, _candidates(cfg), trust_legacy=True)
        if quick.bad_lines == 0 and quick.encoding == plan.encoding:
            return plan  # not surveyed in full: a decoding error later still leads here
    choice = survey_encoding(d.path, _candidates(cfg))
    why = f"{mask_text(str(failure))} ({plan.encoding})" if failure else "head not UTF-8"
    log.info("%s: %s; surveyed the whole file: %s", d.name, why, choice.describe())
    if choice.bad_lines == 0:
        if failure is not None and choice.encoding == plan.encoding:
            raise failure
        return _ReadPlan(d.path, choice.encoding, surveyed=True)
    transcode(d.path, copy, choice)
    note = (
        f"{choice.bad_lines} line(s) not valid {choice.encoding} (mixed encodings?): "
        "their rows are quarantined as bad_encoding"
    )
    log.warning("%s: %s", d.name, note)
    return _ReadPlan(
        copy, "utf-8", marked=True, surveyed=True, note=note, source_encoding=choice.encoding
    )


def _undecodable(batch: pa.RecordBatch) -> np.ndarray:
    """Rows of a marked copy that hold the UNDECODABLE marker in any column."""
    hits = [pc.match_substring(batch.column(i), UNDECODABLE) for i in range(batch.num_columns)]
    return reduce(pc.or_, hits).to_numpy(zero_copy_only=False)


def _stage(
    d: Delivery,
    stage: Path,
    *,
    read: _ReadPlan,
    delimiter: str,
    names: list[str],
    plan: NumberPlan,
    cfg: IngestConfig,
    threads: bool,
    keys: _KeyIndex,
) -> _Staged:
    """Read, validate and write one delivery into ``stage``: month parts plus a quarantine file.

    The steps overlap: pyarrow parses ahead on its own threads, one worker validates,
    another encodes Parquet (pyarrow releases the GIL in all three), and this thread
    keeps the order and the counts. A few batches are in flight at most, so memory
    does not grow with the file. (A second validator only added GIL contention on
    two cores: CPU time rose by a third, wall time did not fall.)
    """
    contract = CONTRACTS[d.source]
    validate = partial(
        validate_batch,
        contract=contract,
        plan=plan,
        file_name=d.name,
        period_end=d.period_end,
        delivered_at=d.delivered_at,
        delimiter=delimiter,
    )
    parts = _MonthParts(stage / "final", lake_schema(d.source), cfg.part_max_rows, keys.add)
    qfile = stage / "quarantine.parquet"
    reasons: Counter[str] = Counter()
    counts = Counter()
    checking: deque[tuple[Future | None, list]] = deque()
    writing: deque[Future] = deque()
    keep = [n for n in names if not n.startswith("_extra_")]
    with (
        ThreadPoolExecutor(1, thread_name_prefix="validate") as checkers,
        ThreadPoolExecutor(1, thread_name_prefix="parquet-writer") as writer,
        pq.ParquetWriter(qfile, QUARANTINE_SCHEMA, compression="zstd") as q_w,
    ):

        def settle_oldest() -> None:
            fut, invalid = checking.popleft()
            if fut is not None:
                acc, rej = fut.result()
                counts["read"] += acc.num_rows + rej.num_rows
                counts["accepted"] += acc.num_rows
                if acc.num_rows:
                    writing.append(writer.submit(parts.write, acc))
                if rej.num_rows:
                    q_w.write_table(rej)
                    reasons.update(rej["reason"].to_pylist())
            if invalid:
                unsplit = _unsplittable(d, invalid)
                q_w.write_table(unsplit)
                counts["read"] += len(invalid)
                reasons.update(unsplit["reason"].to_pylist())
            while len(writing) > 2:
                writing.popleft().result()

        try:
            for batch, rows, invalid in prefetch(
                stream(read.path, read.encoding, delimiter, names, cfg.batch_bytes, threads=threads)
            ):
                table = pa.Table.from_batches([batch]).select(keep)
                bad_text = _undecodable(batch) if read.marked and batch.num_rows else None
                fut = (
                    checkers.submit(validate, table, row_numbers=rows, undecodable=bad_text)
                    if table.num_rows
                    else None
                )
                checking.append((fut, invalid))
                while len(checking) > 2:
                    settle_oldest()
            while checking:
                settle_oldest()
            while writing:
                writing.popleft().result()
        finally:
            for f, _ in checking:
                if f is not None:
                    f.cancel()
            for f in writing:
                f.cancel()
            checkers.shutdown(wait=True)
            writer.shutdown(wait=True)
            months = parts.close()
    return _Staged(counts["read"], counts["accepted"], reasons, months, qfile)


def _unsplittable(d: Delivery, invalid: list) -> pa.Table:
    """Quarantine rows for lines the parser could not split; undecodable ones say so."""
    bad = [UNDECODABLE in r.text for r in invalid]
    return pa.table(
        {
            "source": [d.source] * len(invalid),
            "file": [d.name] * len(invalid),
            "row_number": [(r.line - 1) if r.line else None for r in invalid],
            "reason": ["bad_encoding" if b else "truncated_row" for b in bad],
            "column": [None] * len(invalid),
            "raw": [r.text.replace(UNDECODABLE, "") for r in invalid],
        },
        schema=QUARANTINE_SCHEMA,
    )


class _KeyIndex:
    """64-bit hashes of every accepted row's key, filled while parts are written.

    Grouping hashes at the end is far cheaper than grouping key strings; the few rows
    whose hash repeats (or matches another file's) are then compared on the key
    itself, so a hash collision can never drop a row.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, key: tuple[str, ...]):
        self.con, self.key = con, ", ".join(key)
        self.parts: list[Path] = []
        con.execute("CREATE TABLE k (h UBIGINT, _row_number BIGINT)")

    def add(self, table: pa.Table, part: Path) -> None:
        if part not in self.parts:
            self.parts.append(part)
        batch = table.select([*self.key.split(", "), "_row_number"])  # noqa: F841 - read by DuckDB
        self.con.execute(f"INSERT INTO k SELECT hash({self.key}), _row_number FROM batch")

    def duplicates(self, latest_wins: bool, others: list[Path]) -> pa.Table:
        """Rows to drop: (filename, _row_number, within_file).

        Inside the file the first delivery of a key is kept (the last one where the
        latest delivery wins); a key another file already committed is a duplicate
        across files.
        """
        con, key = self.con, self.key
        empty = pa.table({"filename": pa.array([], pa.string()), "_row_number": pa.array([], pa.int64()),
                          "within_file": pa.array([], pa.bool_())})  # fmt: skip
        if not self.parts:
            return empty
        other_h = "(SELECT NULL::UBIGINT AS h WHERE false)"
        if others:
            other_h = (
                f"(SELECT DISTINCT hash({key}) AS h FROM read_parquet({views.sql_list(others)}))"
            )
        cand = con.sql(f"""
            SELECT _row_number FROM k SEMI JOIN (
                SELECT h FROM k GROUP BY h HAVING count(*) > 1
                UNION SELECT h FROM {other_h}
            ) USING (h)""").fetchnumpy()["_row_number"]
        if len(cand) == 0:
            return empty
        con.register("cand", pa.table({"_row_number": pa.array(cand, pa.int64())}))
        order = "_row_number DESC" if latest_wins else "_row_number"
        rows = f"""SELECT {key}, _row_number, filename
                   FROM read_parquet({views.sql_list(self.parts)}, filename = true)
                   SEMI JOIN cand USING (_row_number)"""
        sql = f"""
            WITH c AS ({rows}),
            within AS (
                SELECT filename, _row_number FROM (
                    SELECT filename, _row_number,
                           row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS n
                    FROM c
                ) WHERE n > 1
            )
            SELECT filename, _row_number, true AS within_file FROM within"""
        if others:
            sql += f"""
            UNION ALL
            SELECT filename, _row_number, false AS within_file
            FROM (c ANTI JOIN within USING (filename, _row_number))
            SEMI JOIN (SELECT DISTINCT {key} FROM read_parquet({views.sql_list(others)})) USING ({key})"""
        return con.sql(sql).to_arrow_table()


def _drop_rows(part: Path, row_numbers: pa.Array) -> None:
    """Rewrite a staged part without the given rows; remove it if none are left."""
    tmp = part.with_name(part.name + ".tmp")
    kept = 0
    pf = pq.ParquetFile(part)
    with _parquet_writer(tmp, pf.schema_arrow) as w:
        for b in pf.iter_batches(batch_size=256_000):
            t = pa.Table.from_batches([b])
            t = t.filter(pc.invert(pc.is_in(t["_row_number"], value_set=row_numbers)))
            kept += t.num_rows
            if t.num_rows:
                w.write_table(t)
    pf.close()
    if kept:
        os.replace(tmp, part)
    else:
        tmp.unlink()
        part.unlink()


def _other_files_parts(
    lake: Path, d: Delivery, manifest: dict, months: dict[str, list[Path]]
) -> list[Path]:
    """Committed parts of other deliveries in the months this delivery touches."""
    wanted = {f"month={m}" for m in months}
    return [
        lake / d.source / rel
        for name, e in manifest["files"].items()
        if name != d.name
        for rel in e["parts"]
        if rel.split("/")[0] in wanted
    ]


def _without(parts: dict[str, list[Path]], drops: pa.Table) -> dict[str, list[Path]]:
    """Rewrite the staged parts that hold dropped rows; the parts left, by month."""
    files = drops["filename"]
    for name in pc.unique(files).to_pylist():
        _drop_rows(
            Path(name), pc.filter(drops["_row_number"], pc.equal(files, name)).combine_chunks()
        )
    left = {m: [p for p in ps if p.exists()] for m, ps in parts.items()}
    return {m: ps for m, ps in left.items() if ps}


def _move_in(parts: dict[str, list[Path]], root: Path, stem: str) -> list[str]:
    """Move staged parts under ``root/month=…/`` named for the delivery; their relative paths."""
    rels = []
    for m, ps in parts.items():
        for p in ps:
            dest = root / f"month={m}" / f"{stem}-{p.name.removeprefix('part-')}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            rels.append(f"month={m}/{dest.name}")
    return rels


def _header_names(raw: list[str], cfg: SourceConfig, contract: SourceContract) -> list[str]:
    """Contract names for a file's header; a first line of data fails without showing its values."""
    try:
        names = map_header(raw, cfg.aliases, contract.names)
    except DeliveryError:
        if looks_like_data(raw):
            raise DeliveryError(_NO_HEADER) from None
        raise
    missing = [c.name for c in contract.columns if c.required and c.name not in names]
    if missing:
        if looks_like_data(raw):
            raise DeliveryError(_NO_HEADER)
        raise DeliveryError(f"missing required column(s) {missing}; header was {raw}")
    return names


_NO_HEADER = (
    "no header row: the first line looks like data; the file must start with the column names"
)


def ingest_file(
    d: Delivery,
    *,
    lake: Path,
    quarantine: Path,
    sources: Sources,
    plan: NumberPlan,
    cfg: IngestConfig,
    memory_limit: str = "2GB",
    threads: int = 2,
    hooks: Hooks | None = None,
) -> FileReport:
    """Ingest one delivery; commits it, skips it as unchanged, or fails it leaving the lake as it was."""
    t0 = time.perf_counter()
    use_memory_pool(cfg.memory_pool)
    hooks = hooks or Hooks()
    contract = CONTRACTS[d.source]
    src_cfg = getattr(sources, d.source)
    rep = FileReport(file=d.name, source=d.source, path=str(d.path), status="failed")
    manifest = lk.read_manifest(lake, d.source)
    prev = manifest["files"].get(d.name)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    if prev and prev["size"] == d.size:  # probably unchanged: make sure before any work
        checksum = d.checksum()
        if prev["sha256"] == checksum:
            hasher.shutdown()
            rep.status = "unchanged"
            for k in ("read", "accepted", "quarantined", "duplicates"):
                setattr(rep, k, prev["counts"][k])
            rep.message = "already ingested with the same checksum"
            return rep
        pending_sum = hasher.submit(lambda: checksum)
    else:  # new or different: the checksum is computed while the file is read
        pending_sum = hasher.submit(d.checksum)
    rep.replaced_previous = prev is not None

    stage = lake / lk.STAGING / d.source / f"{d.name}.{os.getpid()}"
    copy = stage.with_name(stage.name + ".utf8.csv")  # a mixed-encoding file, transcoded
    con: duckdb.DuckDBPyConnection | None = None
    try:
        try:
            d.period_end  # noqa: B018 - the file name's date must be a date
        except ValueError as e:
            raise DeliveryError(
                f"the date in the file name ({d.period}) is not a valid date"
            ) from e
        encoding, delimiter, raw_header = sniff(d.path, src_cfg)
        names = _header_names(raw_header, src_cfg, contract)
        rep.encoding, rep.delimiter = encoding, delimiter
        read_kw = dict(delimiter=delimiter, names=names, plan=plan, cfg=cfg)
        read = _ReadPlan(d.path, encoding)
        if src_cfg.encoding == "auto" and encoding != "utf-8":
            stage.parent.mkdir(parents=True, exist_ok=True)
            read = _replan(d, src_cfg, read, copy)
            rep.encoding, rep.message = read.delivery_encoding, read.note
        threaded = True
        while True:  # at most: guessed encoding, whole-file encoding, each once more unthreaded
            if con is not None:
                con.close()
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
            con = _connect(stage / "duck", memory_limit, threads)
            keys = _KeyIndex(con, contract.dedup_key)
            try:
                staged = _stage(d, stage, read=read, threads=threaded, keys=keys, **read_kw)
                break
            except LineNumbersNeeded as e:
                log.info("%s; reading it again single-threaded for line numbers", e)
                threaded = False
            except UnreadableFile as e:
                if not e.encoding_related or read.surveyed:
                    raise
                read = _replan(d, src_cfg, read, copy, e)
                rep.encoding, rep.message = read.delivery_encoding, read.note
        checksum = pending_sum.result()
        stem = _stem(d, checksum)
        rep.read = staged.read
        rep.quarantined = sum(staged.reasons.values())
        rep.quarantined_by_reason = dict(sorted(staged.reasons.items()))
        qfile = staged.quarantine
        rate = rep.quarantined / max(rep.read, 1)
        if rep.read == 0:
            raise DeliveryError("no data rows")
        if rate > cfg.max_quarantine_rate:
            failed_dir = quarantine / d.source / "failed"
            failed_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(qfile, failed_dir / f"{stem}.parquet")
            top = ", ".join(f"{k} {v}" for k, v in staged.reasons.most_common(3))
            raise DeliveryError(
                f"{rate:.1%} of rows quarantined ({top}), above the limit of "
                f"{cfg.max_quarantine_rate:.1%}; rejected rows kept in {failed_dir / (stem + '.parquet')}"
            )

        # duplicates: inside the file, then against what other files already committed
        others = (
            _other_files_parts(lake, d, manifest, staged.parts)
            if contract.dedup_across_files
            else []
        )
        drops = keys.duplicates(bool(contract.latest_wins_key), others)
        con.close()
        rep.duplicates_within_file = pc.sum(drops["within_file"].cast(pa.int64())).as_py() or 0
        rep.duplicates_across_files = drops.num_rows - rep.duplicates_within_file
        rep.duplicates = drops.num_rows
        rep.accepted = staged.accepted - drops.num_rows
        out_parts = _without(staged.parts, drops)
        rep.months = sorted(out_parts)

        # move parts in (invisible until the manifest lists them), then commit
        rels = _move_in(out_parts, lake / d.source, stem)
        qname = None
        if rep.quarantined:
            (quarantine / d.source).mkdir(parents=True, exist_ok=True)
            qname = f"{stem}.parquet"
            os.replace(qfile, quarantine / d.source / qname)
        if hooks.before_commit:
            hooks.before_commit(rep)
        manifest["files"][d.name] = {
            "landing_path": str(d.path),
            "size": d.size,
            "sha256": checksum,
            "delivered_at": d.delivered_at.isoformat(),
            "ingested_at": dt.datetime.now(dt.UTC)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
            "encoding": rep.encoding,
            "delimiter": delimiter,
            "parts": sorted(rels),
            "quarantine": qname,
            "counts": {
                "read": rep.read,
                "accepted": rep.accepted,
                "quarantined": rep.quarantined,
                "duplicates": rep.duplicates,
                "quarantined_by_reason": rep.quarantined_by_reason,
            },
        }
        lk.write_manifest(lake, d.source, manifest)
        rep.status = "committed"
        lk.recover(lake, quarantine, d.source)  # the replaced version's parts are orphans now
    except DeliveryError as e:
        _failed(rep, str(e))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        # data the checks did not foresee: this file fails, the run goes on
        log.debug("validating %s failed", d.name, exc_info=True)
        _failed(rep, f"rows that could not be validated ({type(e).__name__}: {e})")
    finally:
        if con is not None:
            con.close()
        hasher.shutdown(wait=True)
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        copy.unlink(missing_ok=True)
        rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _failed(rep: FileReport, message: str) -> None:
    """Mark a file failed with a one-line, masked reason (it may quote the file's text)."""
    rep.status = "failed"
    rep.message = mask_text(" ".join(message.split()))
    log.error("ingest of %s failed: %s", rep.file, rep.message)


def ingest_landing(
    landing: Path,
    *,
    lake: Path,
    quarantine: Path,
    reports: Path,
    sources: Sources,
    numbering: Numbering,
    cfg: IngestConfig,
    memory_limit: str = "2GB",
    threads: int = 2,
    hooks: Hooks | None = None,
    raise_on_failure: bool = True,
) -> IngestReport:
    """Ingest every current delivery under ``landing``; write and return the reconciliation report."""
    check_landing(landing)
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = IngestReport(started_at=started.isoformat(timespec="seconds"))
    for source in CONTRACTS:
        lk.recover(lake, quarantine, source)
    found = discover(landing, {k: getattr(sources, k) for k in CONTRACTS})
    report.unknown_files = [str(p) for p in found.unknown]
    for p in found.unknown:
        log.warning("not a known extract (ignored): %s", mask_text(p.name))
    plan = NumberPlan.from_config(numbering)
    for d in tqdm(found.current, desc="ingest", unit="file", disable=None):
        rep = ingest_file(
            d,
            lake=lake,
            quarantine=quarantine,
            sources=sources,
            plan=plan,
            cfg=cfg,
            memory_limit=memory_limit,
            threads=threads,
            hooks=hooks,
        )
        report.files.append(rep)
        if rep.status == "committed":
            log.info(
                "%s: read %d = accepted %d + quarantined %d + duplicates %d (%.1f s)",
                d.name, rep.read, rep.accepted, rep.quarantined, rep.duplicates, rep.seconds,
            )  # fmt: skip
        if hooks and hooks.after_file:
            hooks.after_file(rep)
    for d in found.superseded:
        report.files.append(
            FileReport(
                file=d.name,
                source=d.source,
                path=str(d.path),
                status="superseded",
                message="a later copy of this name exists",
            )
        )
    reports.mkdir(parents=True, exist_ok=True)
    out = reports / f"ingest_{started.strftime('%Y%m%dT%H%M%S')}.json"
    text = json.dumps(report.to_dict(), indent=1, ensure_ascii=False)
    out.write_text(text, encoding="utf-8")
    (reports / "ingest_latest.json").write_text(text, encoding="utf-8")
    report.path = str(out)
    if report.failed and raise_on_failure:
        raise IngestFailed(report)
    return report
