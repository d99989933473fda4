"""The machine fails under the lake: a full disk, a read-only file system.

Each ends in one line that names the path and what to do, never a traceback, and the
lake stays as its last commit says, so the run after the fix completes it.
Real file systems: a tiny tmpfs is mounted for the data folder (needs the right to
mount, which the CI machine has; elsewhere these tests are skipped, saying why).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from pipelines.lake import store as lk
from pipelines.lake.contract import CONTRACTS
from tests.leaks import read_parts

CHURN = str(Path(sys.executable).with_name("churn"))


@pytest.fixture
def tmpfs(tmp_path):
    """A 400 kB file system of our own, remountable (bigger, read-only) by the test."""
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], check=True)


def _run(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHURN, "--config", str(cfg), *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _config(tmp: Path, data_dir: Path, landing: Path) -> Path:
    cfg = tmp / f"cfg-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"data_dir": str(data_dir), "landing": str(landing)}}))
    return cfg


def lake_rows(lake: Path) -> dict[str, list]:
    """Every committed row of every source, in a stable order (what the lake says it holds)."""
    out = {}
    for source in CONTRACTS:
        parts = lk.parts(lake, source)
        if not parts:
            out[source] = []
            continue
        t = read_parts(parts).drop_columns(["_delivered_at"])
        out[source] = sorted(map(str, t.to_pylist()))
    return out


def _one_line_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def test_a_full_disk_names_the_path_and_the_next_run_completes_the_lake(
    tmpfs, tiny_landing, tmp_path
):
    data = tmpfs / "data"
    r = _run(_config(tmp_path, data, tiny_landing), "ingest", "--no-prefect")
    assert r.returncode != 0
    line = _one_line_error(r.stderr)
    assert "disk is full" in line and str(tmpfs) in line, line
    for source in CONTRACTS:  # whatever was committed is readable and whole
        lk.read_manifest(data / "lake", source)
    _remount(tmpfs, "size=200m")
    assert _run(_config(tmp_path, data, tiny_landing), "ingest", "--no-prefect").returncode == 0
    clean = tmp_path / "clean"
    assert _run(_config(tmp_path, clean, tiny_landing), "ingest", "--no-prefect").returncode == 0
    assert lake_rows(data / "lake") == lake_rows(clean / "lake")
    assert not list((data / "lake").rglob("*.tmp"))
    assert not (data / "lake" / lk.STAGING).exists() or not any(
        (data / "lake" / lk.STAGING).rglob("*.parquet")
    )


def test_a_read_only_lake_names_the_path_and_changes_nothing(tmpfs, tiny_landing, tmp_path):
    _remount(tmpfs, "size=200m")
    data = tmpfs / "data"
    cfg = _config(tmp_path, data, tiny_landing)
    assert _run(cfg, "ingest", "--no-prefect").returncode == 0
    before = lake_rows(data / "lake")
    extra = tmp_path / "landing2"
    shutil.copytree(tiny_landing, extra)
    (extra / "billing_202501.csv").write_bytes(
        (extra / "billing_202501.csv").read_bytes().replace(b",active", b",pre_cancel", 5)
    )
    _remount(tmpfs, "ro")
    r = _run(_config(tmp_path, data, extra), "ingest", "--no-prefect")
    assert r.returncode != 0
    line = _one_line_error(r.stderr)
    assert "read-only" in line and str(tmpfs) in line, line
    _remount(tmpfs, "rw")
    assert lake_rows(data / "lake") == before
