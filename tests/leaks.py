"""Finding phone numbers wherever they might have gone: files, archives, databases, text.

A scan looks for the *known* subscriber numbers of a world, in every spelling the
ingest accepts (``+86``, ``0086``, ``86-``, spaces, dashes), inside plain files,
Parquet, XLSX/zip archives (model files too) and gzip. Matching known numbers only
keeps random digit runs in binary files from raising false alarms.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path

import pyarrow.parquet as pq

# 11 digits, optionally split by spaces or dashes, not inside a longer number or a decimal
SPELLED = re.compile(rb"(?<![\d.])(?:(?:\+|00)?86[\s-]?)?(1[\s-]?[3-9](?:[\s-]?\d){9})(?!\d)")


def contents(path: Path) -> bytes:
    """The bytes a reader of ``path`` could see: archives opened, Parquet as text."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        try:
            return pq.read_table(path).to_pandas().to_csv(index=False).encode()
        except Exception:
            return data
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError):
            return data
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                return b"\n".join(z.read(n) for n in z.namelist())
        except zipfile.BadZipFile:
            return data
    return data


def numbers_in(data: bytes, known: set[str]) -> set[str]:
    """Known numbers spelled out in ``data`` (each match's digits checked against ``known``)."""
    found = {re.sub(rb"\D", b"", m.group(1)).decode() for m in SPELLED.finditer(data)}
    return found & known


def leaks_under(root: Path, known: set[str]) -> dict[str, set[str]]:
    """{file: numbers} for every file below ``root`` that shows a known number."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            hit = numbers_in(contents(p), known)
            if hit:
                out[str(p.relative_to(root))] = hit
    return out


def known_numbers(settings) -> set[str]:
    """Every subscriber number in a world's lake."""
    from pipelines.lake import store as lk

    table = read_parts(lk.parts(settings.path("lake"), "billing"), ["msisdn"])
    return set(table["msisdn"].to_pylist())


def read_parts(parts: list[Path], columns: list[str] | None = None):
    """Lake parts as one table, each file as written (no folder names taken for columns)."""
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(p, columns=columns, partitioning=None) for p in parts])
