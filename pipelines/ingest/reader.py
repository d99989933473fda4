"""Find deliveries in the landing folder and stream them as batches of strings.

Files are recognised by name pattern (config), may be gzip-compressed, UTF-8 or
GBK/GB18030, comma or pipe delimited, with an operator's own headers mapped by
aliases. Reading is streamed with pyarrow's multithreaded reader; pyarrow only knows
the physical line of a row it cannot split (a truncated last line) when it reads
single-threaded, so such a file is read again that way (:class:`LineNumbersNeeded`).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.config import SourceConfig


class DeliveryError(ValueError):
    """A file that cannot be read at all (no usable header, missing required columns)."""


class LineNumbersNeeded(RuntimeError):
    """A threaded read met rows the parser cannot split: read the file single-threaded instead."""


@dataclass(frozen=True)
class Delivery:
    path: Path
    name: str
    source: str
    period: str  # YYYYMM or YYYYMMDD from the file name
    size: int
    mtime: float

    @property
    def delivered_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(int(self.mtime), tz=dt.UTC).replace(tzinfo=None)

    @property
    def period_end(self) -> dt.datetime:
        """The last second the extract may speak of."""
        p = pd.Period(self.period, freq="D" if len(self.period) == 8 else "M")
        return (p.end_time.floor("s")).to_pydatetime()

    def checksum(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


@dataclass
class Discovery:
    current: list[Delivery] = field(default_factory=list)
    superseded: list[Delivery] = field(default_factory=list)  # older copies of a re-delivered name
    unknown: list[Path] = field(default_factory=list)


def discover(landing: Path, sources: dict[str, SourceConfig]) -> Discovery:
    """Every file under ``landing``; for a name delivered more than once, the latest copy wins."""
    patterns = {name: re.compile(cfg.pattern) for name, cfg in sources.items()}
    found: dict[str, list[Delivery]] = {}
    out = Discovery()
    for p in sorted(landing.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.name.endswith(".tmp"):
            continue
        for source, rx in patterns.items():
            m = rx.search(p.name)
            if m:
                st = p.stat()
                period = m.groupdict().get("period") or ""
                found.setdefault(p.name, []).append(
                    Delivery(p, p.name, source, period, st.st_size, st.st_mtime)
                )
                break
        else:
            out.unknown.append(p)
    for _, copies in sorted(found.items()):
        copies.sort(key=lambda d: (d.mtime, str(d.path)))
        out.current.append(copies[-1])
        out.superseded.extend(copies[:-1])
    out.current.sort(key=lambda d: (d.source, d.period, d.name))
    return out


def _head_bytes(path: Path, n: int = 1 << 20) -> bytes:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read(n)


def sniff(path: Path, cfg: SourceConfig) -> tuple[str, str, list[str]]:
    """(encoding, delimiter, raw header names) of one file."""
    head = _head_bytes(path)
    if not head.strip():
        raise DeliveryError(f"{path.name}: the file is empty")
    encoding = cfg.encoding
    if encoding == "auto":
        dec = codecs.getincrementaldecoder("utf-8")()
        try:
            dec.decode(head, final=False)
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "gb18030"  # a superset of GBK
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    first = text.splitlines()[0] if text else ""
    delimiter = cfg.delimiter
    if delimiter == "auto":
        counts = {d: first.count(d) for d in (",", "|", "\t", ";")}
        delimiter = max(counts, key=counts.get)
    header = next(csv.reader(io.StringIO(first), delimiter=delimiter))
    return encoding, delimiter, [h.strip() for h in header]


def map_header(raw: list[str], aliases: dict[str, str], known: list[str]) -> list[str]:
    """Operator headers onto contract names; unknown columns keep a marked name and are ignored."""
    low = {k.strip().lower(): v for k, v in aliases.items()}
    out = []
    for h in raw:
        name = aliases.get(h) or low.get(h.lower()) or h.lower()
        out.append(name if name in known else f"_extra_{name}")
    dup = {x for x in out if out.count(x) > 1}
    if dup:
        raise DeliveryError(f"header maps more than one column onto {sorted(dup)}")
    return out


@dataclass
class InvalidRow:
    line: int | None
    text: str


def stream(
    path: Path,
    encoding: str,
    delimiter: str,
    names: list[str],
    block_size: int,
    threads: bool = False,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[InvalidRow]]]:
    """Yield (batch of strings, 1-based record numbers, rows the parser could not split).

    Record numbers count data records; for files without line breaks inside fields a
    record number is the physical line number minus the header. With ``threads`` a
    row the parser cannot split raises :class:`LineNumbersNeeded`.
    """
    invalid: list[InvalidRow] = []

    def on_invalid(row) -> str:
        invalid.append(InvalidRow(row.number, row.text))
        return "skip"

    reader = pacsv.open_csv(
        str(path),
        read_options=pacsv.ReadOptions(
            use_threads=threads,
            block_size=block_size,
            column_names=names,
            skip_rows=1,
            encoding=encoding,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    seen_valid = 0
    bad_records: list[int] = []
    for batch in reader:
        if threads and invalid:
            raise LineNumbersNeeded(f"{path.name}: {len(invalid)} row(s) the parser cannot split")
        new_bad = invalid[:]
        invalid.clear()
        bad_records.extend(
            (b.line - 1) if b.line else seen_valid + batch.num_rows + 1 for b in new_bad
        )
        bad_sorted = np.sort(np.asarray(bad_records, dtype=np.int64))
        rows = _record_numbers(seen_valid, batch.num_rows, bad_sorted)
        seen_valid += batch.num_rows
        yield batch, rows, new_bad
    if invalid:  # rows reported after the last batch (the file's tail)
        if threads:
            raise LineNumbersNeeded(f"{path.name}: {len(invalid)} row(s) the parser cannot split")
        yield (
            pa.RecordBatch.from_pydict({n: pa.array([], pa.string()) for n in names}),
            np.array([], np.int64),
            invalid[:],
        )


def _record_numbers(start: int, n: int, bad_sorted: np.ndarray) -> np.ndarray:
    """Record numbers of the next n valid rows, stepping over records the parser rejected."""
    v = np.arange(start + 1, start + n + 1, dtype=np.int64)
    r = v.copy()
    for _ in range(64):
        nxt = v + np.searchsorted(bad_sorted, r, side="right")
        if np.array_equal(nxt, r):
            break
        r = nxt
    return r


def prefetch(it: Iterator, depth: int = 2) -> Iterator:
    """Run an iterator in a background thread, `depth` items ahead.

    Parsing (pyarrow, GIL released) then overlaps with validation in the caller; an
    exception in the producer is raised in the consumer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in it:
                q.put(item)
        except BaseException as e:  # handed to the consumer
            q.put(e)
        q.put(done)

    t = threading.Thread(target=produce, daemon=True, name="csv-prefetch")
    t.start()
    while True:
        item = q.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()
