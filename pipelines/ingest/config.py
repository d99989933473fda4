"""Settings of the ingest: how each source's files are recognised and read, and resource limits."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from pipelines.lake.config import Strict


class SourceConfig(Strict):
    """How one source arrives: file-name pattern, encoding, delimiter, the operator's headers."""

    pattern: str = Field(description="regex on the file name; group 'period' is YYYYMM or YYYYMMDD")
    encoding: Literal["auto", "utf-8", "gbk", "gb18030"] = Field(
        "auto", description="auto: UTF-8 or GB18030, judged over the whole file"
    )
    delimiter: Literal["auto", ",", "|", "\t", ";"] = Field(
        "auto", description="auto: sniffed from the header row"
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="operator header -> contract column"
    )

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class Sources(Strict):
    billing: SourceConfig
    cdr: SourceConfig
    complaints: SourceConfig


class IngestConfig(Strict):
    max_quarantine_rate: float = Field(
        0.05, ge=0, le=1, description="a file with more rows quarantined fails and is not committed"
    )
    batch_bytes: int = Field(
        16 << 20, ge=1 << 16, description="CSV block streamed at a time (smaller reuses memory)"
    )
    part_max_rows: int = Field(
        2_000_000,
        ge=1000,
        description="a month's rows from one file are split into parts this size",
    )
    memory_pool: Literal["jemalloc", "mimalloc", "system", "default"] = Field(
        "jemalloc", description="Arrow allocator while ingesting (ARROW_DEFAULT_MEMORY_POOL wins)"
    )
    duckdb_memory_limit: str = Field(
        "2GB", description="key-hash index for duplicates (20 bytes a row); spills to disk beyond"
    )
    duckdb_threads: int = Field(2, ge=1, description="DuckDB threads for finding duplicates")
