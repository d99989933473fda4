"""Find deliveries in the landing folder and stream them as batches of strings.

Files are recognised by name pattern (config), may be gzip-compressed, UTF-8 or
GBK/GB18030, comma or pipe delimited, with an operator's own headers mapped by
aliases. Reading is streamed with pyarrow's multithreaded reader; pyarrow only knows
the physical line of a row it cannot split (a truncated last line) when it reads
single-threaded, so such a file is read again that way (:class:`LineNumbersNeeded`).

The encoding read here is the first guess from the file's head; pyarrow checks every
string against it, so a file that is what its head says costs nothing more. A guess
that turns out wrong further down is settled for the whole file in
:mod:`pipelines.ingest.encoding`.

Whatever goes wrong reading one file (a cut-off gzip stream, bytes no encoding
explains, a quote never closed) becomes an :class:`UnreadableFile` naming the cause in
one line: one broken delivery fails alone. Errors of the machine itself (an ``OSError``
with an errno: disk full, permission denied) are not the file's fault and pass through.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import logging
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.ingest.config import SourceConfig
from pipelines.lake.contract import SourceContract
from pipelines.lake.numbers import MOBILE_IN_TEXT

log = logging.getLogger(__name__)

LEGACY_ENCODING = "gb18030"  # a superset of GBK: the one non-UTF-8 encoding "auto" considers


class DeliveryError(ValueError):
    """A file that cannot be read at all (no usable header, missing required columns)."""


class UnreadableFile(DeliveryError):
    """Reading, decompressing, decoding or parsing a delivery failed; the message says why in one line.

    ``encoding_related`` marks failures that may only mean the encoding guessed from the
    file's head is wrong further down: worth a survey of the whole file and a new read.
    """

    def __init__(self, message: str, *, encoding_related: bool = False):
        super().__init__(message)
        self.encoding_related = encoding_related


def _first_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_failure(e: BaseException) -> UnreadableFile | None:
    """The :class:`UnreadableFile` a reading error means, or None when it is not the file's fault.

    An ``OSError`` with an errno (disk full, permission, I/O error) concerns the machine,
    not the delivery; pyarrow's and gzip's complaints about the bytes carry none.
    """
    if isinstance(e, UnreadableFile):
        return e
    if isinstance(e, EOFError):
        return UnreadableFile("truncated gzip stream: the file ends inside its compressed data")
    if isinstance(e, zlib.error):
        return UnreadableFile(f"corrupt gzip stream ({_first_line(e)})")
    if isinstance(e, UnicodeDecodeError):
        return UnreadableFile(f"bytes that are not valid {e.encoding} text", encoding_related=True)
    if isinstance(e, csv.Error):
        return UnreadableFile(f"unreadable header line ({_first_line(e)})")
    if isinstance(e, OSError):
        if e.errno is not None:
            return None
        msg = _first_line(e)
        if "truncated compressed stream" in msg.lower():
            return UnreadableFile("truncated gzip stream: the file ends inside its compressed data")
        if isinstance(e, gzip.BadGzipFile) or "gzip" in msg.lower() or "zlib" in msg.lower():
            return UnreadableFile(f"corrupt gzip stream ({msg})")
        return UnreadableFile(f"unreadable file ({msg})")
    if isinstance(e, pa.ArrowInvalid):
        msg = _first_line(e)
        if "invalid utf8" in msg.lower():
            return UnreadableFile("bytes that are not valid UTF-8 text", encoding_related=True)
        if "straddl" in msg.lower():
            return UnreadableFile(
                f"a quoted field does not end: probably a quote that is never closed ({msg})",
                encoding_related=True,
            )
        return UnreadableFile(f"unreadable CSV ({msg})", encoding_related=True)
    if isinstance(e, pa.ArrowTypeError | pa.ArrowNotImplementedError | pa.ArrowCapacityError):
        return UnreadableFile(f"unreadable CSV ({type(e).__name__}: {_first_line(e)})")
    return None


@contextmanager
def reading() -> Iterator[None]:
    """Turn errors about a delivery's bytes into :class:`UnreadableFile`; let others pass."""
    try:
        yield
    except Exception as e:
        failure = read_failure(e)
        if failure is None or failure is e:
            raise
        raise failure from e


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


def open_binary(path: Path):
    """The delivery's bytes, decompressed if its name ends in .gz."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _head_bytes(path: Path, n: int = 1 << 20) -> bytes:
    with open_binary(path) as f:
        return f.read(n)


def sniff(path: Path, cfg: SourceConfig) -> tuple[str, str, list[str]]:
    """(encoding, delimiter, raw header names) of one file.

    The encoding is only a first guess from the head; :func:`survey_encoding` decides
    for the whole file if the guess turns out wrong further down.
    """
    with reading():
        return _sniff(path, cfg)


def _sniff(path: Path, cfg: SourceConfig) -> tuple[str, str, list[str]]:
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
            encoding = LEGACY_ENCODING
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    first = text.splitlines()[0] if text else ""
    delimiter = cfg.delimiter
    if delimiter == "auto":
        counts = {d: first.count(d) for d in (",", "|", "\t", ";")}
        delimiter = max(counts, key=counts.get)
    header = next(csv.reader(io.StringIO(first), delimiter=delimiter))
    return encoding, delimiter, [h.strip() for h in header]


_DATA_LIKE = re.compile(
    r"^[-+]?\d+([.,]\d+)?$"  # a number
    r"|^\d{4}-\d{2}-\d{2}"  # a date or timestamp
    r"|^\d{6}$"  # a month
)


def looks_like_data(fields: list[str]) -> bool:
    """Whether a first line holds values (phone numbers, dates, numbers) rather than column names."""
    return any(_DATA_LIKE.search(f.strip()) or MOBILE_IN_TEXT.search(f) for f in fields if f)


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


_NO_HEADER = (
    "no header row: the first line looks like data; the file must start with the column names"
)


def header_names(raw: list[str], cfg: SourceConfig, contract: SourceContract) -> list[str]:
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

    on_invalid._churn_invalid_row_handler = True  # type: ignore[attr-defined]
    _quiet_undecodable_invalid_rows()
    with reading():
        yield from _read(path, encoding, delimiter, names, block_size, threads, invalid, on_invalid)


def _read(
    path: Path,
    encoding: str,
    delimiter: str,
    names: list[str],
    block_size: int,
    threads: bool,
    invalid: list[InvalidRow],
    on_invalid,
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[InvalidRow]]]:
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


def _quiet_undecodable_invalid_rows() -> None:
    """Keep pyarrow's "Exception ignored" noise for an unsplittable row that is not UTF-8 off stderr.

    pyarrow cannot make that row's text for our handler and then fails the read with
    a parse error, which leads to a survey of the file's encoding: the printed
    UnicodeDecodeError says nothing more. Installed on each read (test runners swap
    the hook); anything else goes to the hook that was there.
    """
    prev = sys.unraisablehook
    if getattr(prev, "_churn_quiet", False):
        return

    def hook(u) -> None:
        if isinstance(u.exc_value, UnicodeDecodeError) and getattr(
            u.object, "_churn_invalid_row_handler", False
        ):
            log.debug("an unsplittable row is not valid UTF-8: %s", u.exc_value)
            return
        prev(u)

    hook._churn_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


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
