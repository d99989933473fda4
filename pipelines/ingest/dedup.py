"""Duplicates by the contract's key: inside one delivery, and against what other files committed.

While a delivery's parts are written, the 64-bit hash of every accepted row's key goes
into a DuckDB table (:class:`KeyIndex`); only the rows whose hash repeats, or matches
another file's, are then compared on the key itself. The duplicates are dropped from
the staged parts before anything is moved into the lake.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.ingest.reader import Delivery
from pipelines.ingest.stage import part_writer
from pipelines.lake import views
from pipelines.lake.store import temp_name


class KeyIndex:
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
    tmp = temp_name(part)
    kept = 0
    pf = pq.ParquetFile(part)
    with part_writer(tmp, pf.schema_arrow) as w:
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


def other_files_parts(
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


def without(parts: dict[str, list[Path]], drops: pa.Table) -> dict[str, list[Path]]:
    """Rewrite the staged parts that hold dropped rows; the parts left, by month."""
    files = drops["filename"]
    for name in pc.unique(files).to_pylist():
        _drop_rows(
            Path(name), pc.filter(drops["_row_number"], pc.equal(files, name)).combine_chunks()
        )
    left = {m: [p for p in ps if p.exists()] for m, ps in parts.items()}
    return {m: ps for m, ps in left.items() if ps}
