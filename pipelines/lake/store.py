"""The Parquet lake: immutable parts, and one manifest per source as the commit point.

A part belongs to the lake only once the source's ``_manifest.json`` lists it, and
the manifest is replaced atomically (write, fsync, rename). A run killed at any
moment therefore leaves the lake as the last manifest says; parts it had already
moved in are orphans, removed by the next run. Readers go through :func:`parts` or
:func:`pipelines.lake.views.register_views`, never through a directory glob.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from pipelines.lake.contract import SCHEMA_VERSION
from pipelines.lake.lock import pid_alive

MANIFEST = "_manifest.json"
STAGING = "_staging"


class LakeError(RuntimeError):
    pass


def manifest_path(lake: Path, source: str) -> Path:
    return lake / source / MANIFEST


def read_manifest(lake: Path, source: str) -> dict[str, Any]:
    p = manifest_path(lake, source)
    if not p.exists():
        return {"schema_version": SCHEMA_VERSION, "source": source, "files": {}}
    m = json.loads(p.read_text(encoding="utf-8"))
    if m.get("schema_version") != SCHEMA_VERSION:
        raise LakeError(
            f"lake/{source} has schema version {m.get('schema_version')}, this code writes {SCHEMA_VERSION}: "
            "migrate or rebuild the lake (delete it and ingest again)"
        )
    return m


def temp_name(path: Path) -> Path:
    """A temporary sibling no other writer can pick: ``<name>.<pid>.<random>.tmp``.

    Two writers of one file never share a temporary, and a leftover names the process
    that wrote it (see :func:`stale_temps`).
    """
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _temp_owner(tmp: Path, name: str) -> int | None:
    """The pid in a :func:`temp_name` leftover of ``name``; None for an old fixed-name temporary."""
    middle = tmp.name.removeprefix(name).removesuffix(".tmp").strip(".")
    pid = middle.split(".", 1)[0]
    return int(pid) if pid.isdigit() else None


def stale_temps(folder: Path, name: str) -> list[Path]:
    """Temporaries of ``folder/name`` left by writers that are gone (killed mid-write)."""
    out = []
    for tmp in sorted(folder.glob(f"{glob.escape(name)}*.tmp")):
        pid = _temp_owner(tmp, name)
        if pid is None or (pid != os.getpid() and not pid_alive(pid)):
            out.append(tmp)
    return out


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: unique temporary, fsync, rename, fsync folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(lake: Path, source: str, manifest: dict[str, Any]) -> None:
    """Commit point of a source: the whole manifest replaces the old one, or nothing changes."""
    text = json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False)
    write_atomically(manifest_path(lake, source), text.encode("utf-8"))


def parts(lake: Path, source: str, max_month: str | None = None) -> list[Path]:
    """Committed Parquet parts of a source, in a stable order; up to ``max_month`` (YYYY-MM) if given."""
    files = read_manifest(lake, source)["files"]
    rels = [rel for entry in files.values() for rel in entry["parts"]]
    if max_month is not None:
        rels = [r for r in rels if r.split("/", 1)[0].removeprefix("month=") <= max_month]
    return sorted(lake / source / r for r in rels)


def months(lake: Path, source: str) -> list[str]:
    """Months (YYYY-MM) that hold committed data of a source."""
    files = read_manifest(lake, source)["files"]
    return sorted(
        {rel.split("/", 1)[0].removeprefix("month=") for e in files.values() for rel in e["parts"]}
    )


def recover(lake: Path, quarantine: Path, source: str) -> list[Path]:
    """Delete what a killed run left behind: staging, manifest temporaries, parts no manifest lists."""
    removed = []
    staging = lake / STAGING / source
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(staging)
    for tmp in stale_temps(lake / source, MANIFEST):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    m = read_manifest(lake, source)
    keep = {rel for e in m["files"].values() for rel in e["parts"]}
    keep_q = {e.get("quarantine") for e in m["files"].values()}
    root = lake / source
    if root.exists():
        for p in root.rglob("*.parquet"):
            if str(p.relative_to(root)) not in keep:
                p.unlink()
                removed.append(p)
        for d in sorted(root.glob("month=*")):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    qroot = quarantine / source
    if qroot.exists():
        for p in qroot.glob("*.parquet"):
            if p.name not in keep_q:
                p.unlink()
                removed.append(p)
    return removed
