"""DuckDB over the committed lake: one view per source, and the one connection helper.

Point in time starts here: with ``max_month`` a view opens only partitions up to that
month, before any filter in a feature query.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.lake.contract import CONTRACTS, lake_schema
from pipelines.lake.store import parts


def connect(
    memory_limit: str, threads: int, temp_dir: Path, *, keep_order: bool = False
) -> duckdb.DuckDBPyConnection:
    """DuckDB with a memory ceiling and a spill folder, so data larger than RAM still runs.

    ``threads`` 0 means one per core (``os.cpu_count()``).
    """
    temp_dir.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "threads": threads or os.cpu_count() or 1,
            "temp_directory": str(temp_dir),
            "preserve_insertion_order": keep_order,
        }
    )


def sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths, quotes escaped."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def scan_sql(lake: Path, source: str, max_month: str | None = None) -> str:
    """SQL reading one source as committed, with latest-delivery-wins where the contract says so.

    With ``max_month`` only partitions up to that month are read: the point-in-time
    guarantee starts here, before any filter in a feature query.
    """
    files = parts(lake, source, max_month)
    if not files:
        cols = ", ".join(
            f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in lake_schema(source)
        )
        return f"SELECT {cols} WHERE false"
    base = f"SELECT * FROM read_parquet({sql_list(files)}, hive_partitioning = false, union_by_name = true)"
    key = CONTRACTS[source].latest_wins_key
    if key:
        k = ", ".join(key)
        return (
            f"{base} QUALIFY row_number() OVER (PARTITION BY {k} "
            "ORDER BY _delivered_at DESC, _source_file DESC, _row_number DESC) = 1"
        )
    return base


def _duck_type(t) -> str:
    return {
        pa.string(): "VARCHAR",
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
        pa.int8(): "TINYINT",
        pa.date32(): "DATE",
        pa.timestamp("s"): "TIMESTAMP",
    }[t]


def register_views(
    con: duckdb.DuckDBPyConnection, lake: Path, max_month: str | None = None, suffix: str = ""
) -> None:
    """``billing``, ``cdr`` and ``complaints`` views (names + ``suffix``) over the committed lake."""
    for source in CONTRACTS:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {source}{suffix} AS {scan_sql(lake, source, max_month)}"
        )
