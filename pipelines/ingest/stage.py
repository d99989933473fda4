"""One delivery read and validated into a staging folder: month parts, a quarantine file, counts.

Nothing here touches the lake: the staged parts become part of it only when the file
transaction (:mod:`pipelines.ingest.run`) moves them in and rewrites the manifest. The
encoding plan (:class:`ReadPlan`) says what to stream: the delivery, or a UTF-8 copy
with its undecodable bytes marked when the whole-file survey found mixed encodings.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.ingest.config import IngestConfig, SourceConfig
from pipelines.ingest.encoding import UNDECODABLE, survey_encoding, transcode
from pipelines.ingest.reader import (
    LEGACY_ENCODING,
    Delivery,
    InvalidRow,
    UnreadableFile,
    prefetch,
    stream,
)
from pipelines.ingest.validate import validate_batch
from pipelines.lake.contract import CONTRACTS, QUARANTINE_SCHEMA, lake_schema, parquet_layout
from pipelines.lake.numbers import NumberPlan, mask_text

log = logging.getLogger(__name__)


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


def part_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of one lake part, laid out as the contract says for its source."""
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
        on_write: Callable[[pa.Table, Path], None],
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
        return part_writer(path, self.schema), 0

    def close(self) -> dict[str, list[Path]]:
        for writer, _ in self.open.values():
            writer.close()
        self.open.clear()
        return self.parts


@dataclass
class Staged:
    """What staging one delivery produced: counts, month parts, the quarantine file."""

    read: int
    accepted: int
    reasons: Counter
    parts: dict[str, list[Path]]
    quarantine: Path


@dataclass(frozen=True)
class ReadPlan:
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


def replan(
    d: Delivery,
    cfg: SourceConfig,
    plan: ReadPlan,
    copy: Path,
    failure: UnreadableFile | None = None,
) -> ReadPlan:
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
        return ReadPlan(d.path, choice.encoding, surveyed=True)
    transcode(d.path, copy, choice)
    note = (
        f"{choice.bad_lines} line(s) not valid {choice.encoding} (mixed encodings?): "
        "their rows are quarantined as bad_encoding"
    )
    log.warning("%s: %s", d.name, note)
    return ReadPlan(
        copy, "utf-8", marked=True, surveyed=True, note=note, source_encoding=choice.encoding
    )


def _undecodable(batch: pa.RecordBatch) -> np.ndarray:
    """Rows of a marked copy that hold the UNDECODABLE marker in any column."""
    hits = [pc.match_substring(batch.column(i), UNDECODABLE) for i in range(batch.num_columns)]
    return reduce(pc.or_, hits).to_numpy(zero_copy_only=False)


def stage_delivery(
    d: Delivery,
    stage: Path,
    *,
    read: ReadPlan,
    delimiter: str,
    names: list[str],
    plan: NumberPlan,
    cfg: IngestConfig,
    threads: bool,
    on_part: Callable[[pa.Table, Path], None],
) -> Staged:
    """Read, validate and write one delivery into ``stage``: month parts plus a quarantine file.

    The steps overlap: pyarrow parses ahead on its own threads, one worker validates,
    another encodes Parquet (pyarrow releases the GIL in all three), and this thread
    keeps the order and the counts. A few batches are in flight at most, so memory
    does not grow with the file. (A second validator only added GIL contention on
    two cores: CPU time rose by a third, wall time did not fall.) ``on_part`` sees
    every accepted table with the part it went into (the duplicate-key index).
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
    parts = _MonthParts(stage / "final", lake_schema(d.source), cfg.part_max_rows, on_part)
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
    return Staged(counts["read"], counts["accepted"], reasons, months, qfile)


def _unsplittable(d: Delivery, invalid: list[InvalidRow]) -> pa.Table:
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
