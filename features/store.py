"""The feature store's layout, owned here alone: ``<root>/snapshot=YYYY-MM/features.parquet``.

Writing, reading, listing months, labelled months, fingerprints and the catalog all go
through this module; nothing else spells the layout, so moving it (or putting it on an
object store) is a change in one place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lake import store as lk

log = logging.getLogger(__name__)

FILE = "features.parquet"
CATALOG = "catalog.md"
_SPILL = "_duckdb_tmp"
_PREFIX = "snapshot="


def snapshot_path(root: Path, month: str) -> Path:
    return Path(root) / f"{_PREFIX}{month}" / FILE


def catalog_path(root: Path) -> Path:
    return Path(root) / CATALOG


def spill_dir(root: Path) -> Path:
    """DuckDB's spill folder when the caller names none: beside the snapshots, on the same disk."""
    return Path(root) / _SPILL


def months(root: Path) -> list[str]:
    """Months with a written snapshot, oldest first."""
    return sorted(
        p.parent.name.removeprefix(_PREFIX) for p in Path(root).glob(f"{_PREFIX}*/{FILE}")
    )


def latest_month(root: Path) -> str:
    have = months(root)
    if not have:
        raise FileNotFoundError(f"no feature snapshots under {root}: build features first")
    return have[-1]


def paths(root: Path, which: list[str] | None = None) -> list[Path]:
    """Snapshot files of ``which`` months (all when None), oldest first."""
    have = months(root) if which is None else sorted(set(which) & set(months(root)))
    return [snapshot_path(root, m) for m in have]


def write_snapshot(root: Path, month: str, table: pa.Table) -> Path:
    """Readers see the old file or the whole new one, never a part (temporary name, fsync, rename)."""
    target = snapshot_path(root, month)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = lk.temp_name(target)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    lk.fsync_dir(target.parent)
    return target


def write_catalog(root: Path, markdown: str) -> Path:
    path = catalog_path(root)
    lk.write_atomically(path, markdown.encode("utf-8"))
    return path


def remove_stale_temps(root: Path) -> None:
    """Half-written snapshots and catalogs of a killed build: never read, removed here."""
    root = Path(root)
    folders = [root, *sorted(d for d in root.glob(f"{_PREFIX}*") if d.is_dir())]
    for folder in folders:
        for name in (FILE, f".{FILE}", CATALOG):
            for tmp in lk.stale_temps(folder, name):
                log.info("removing %s, left by an interrupted feature build", tmp)
                tmp.unlink(missing_ok=True)


def read_snapshots(
    root: Path, which: list[str] | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Snapshots as one frame (msisdn included: callers drop it before anything leaves the lake).

    ``columns`` reads only those (a label lookup need not read a hundred features).
    """
    files = paths(root, which)
    if not files:
        wanted = f" for {which}" if which else ""
        raise FileNotFoundError(f"no feature snapshots{wanted} under {root}: build features first")
    return pd.concat([pq.read_table(p, columns=columns).to_pandas() for p in files],
                     ignore_index=True)  # fmt: skip


def label_coverage(root: Path) -> dict[str, float]:
    """Share of each snapshot's subscribers whose label is known (labels arrive months later)."""
    out = {}
    for m in months(root):
        lab = pq.read_table(snapshot_path(root, m), columns=["label_churn"])["label_churn"]
        out[m] = 1 - lab.null_count / len(lab) if len(lab) else 0.0
    return out


def labelled_months(root: Path, min_coverage: float) -> list[str]:
    """Months labelled well enough to train or test on."""
    return [m for m, c in label_coverage(root).items() if c >= min_coverage]


def fingerprint(root: Path, which: list[str] | None = None) -> str:
    """Content hash of the snapshot files (for lineage: which data a model saw)."""
    h = hashlib.sha256()
    for p in paths(root, which):
        h.update(f"{p.parent.name}/{p.name}".encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_token(root: Path) -> str:
    """Cheap identity of what is written (names, sizes, times): for caches, not lineage."""
    h = hashlib.sha256()
    for p in paths(root):
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
