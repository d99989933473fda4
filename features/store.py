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

import numpy as np
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


WEIGHT = "sample_weight"


def read_sampled(
    root: Path, months: list[str], columns: list[str], *, label: str = "label_churn",
    full: tuple[str, ...] = (), stayer_share: float = 1.0, seed: int = 0,
    batch_rows: int = 262_144,
) -> pd.DataFrame:  # fmt: skip
    """Labelled rows of ``months`` for training, streamed in batches, numbers as float32.

    Every churner is kept; a stayer of a month not in ``full`` is kept with probability
    ``stayer_share`` and weighs ``1 / stayer_share`` (column :data:`WEIGHT`), so sums and
    rates over the sample estimate those of the whole month. The draw hashes the
    subscriber with the seed: the same rows whatever the batch size or order. Months in
    ``full`` (validation and test: calibration needs the true rate) are read whole.
    A table of 10 M rows x 100 features is 8 GB as float64; at a 10% stayer share it is
    well under 1 GB.
    """
    cols = list(dict.fromkeys(["msisdn", *columns, label]))
    cut = int(stayer_share * 2**64) if stayer_share < 1 else None
    frames = []
    for month in months:
        sampled = cut is not None and month not in full
        batches = pq.ParquetFile(snapshot_path(root, month)).iter_batches(batch_rows, columns=cols)
        for batch in batches:
            y = batch.column(label).to_pandas()
            keep = y.notna().to_numpy().copy()
            w = np.ones(len(y), dtype=np.float32)
            if sampled:
                ids = batch.column("msisdn").to_pandas()
                h = pd.util.hash_pandas_object(ids, index=False, hash_key=f"{seed:016d}"[:16])
                stayer = (y == 0).fillna(False).to_numpy()
                keep &= ~stayer | (h.to_numpy() < cut)
                w[stayer] = 1 / stayer_share
            t = batch.filter(pa.array(keep))
            arrays = [c.cast(pa.float32()) if _numeric(c.type) and n != label else c
                      for n, c in zip(t.column_names, t.columns, strict=True)]  # fmt: skip
            t = pa.table(arrays, names=t.column_names).append_column(WEIGHT, pa.array(w[keep]))
            frames.append(t.to_pandas())
    if not frames:
        raise FileNotFoundError(
            f"no feature snapshots for {months} under {root}: build features first"
        )
    return pd.concat(frames, ignore_index=True)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


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
