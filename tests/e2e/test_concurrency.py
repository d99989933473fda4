"""Two runs on one data folder, killed runs, and retries: with real processes and real Prefect.

Timing is forced, never hoped for: the ``churn`` subprocesses load a ``sitecustomize``
(``PYTHONPATH``) that pauses an ingest at its first file until the test says go, or
stops a feature build half-way through writing a snapshot so it can be SIGKILLed there.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines import steps
from pipelines.config import ConfigError, Settings
from pipelines.lake import store as lk
from pipelines.lake.contract import CONTRACTS
from pipelines.lake.errors import UsageError
from pipelines.lake.lock import LockHeld, data_lock, holds, lock_path
from pipelines.steps import settings_lock
from tests.worlds import make_settings

CHURN = Path(sys.executable).with_name("churn")
HELD = re.compile(
    r"^error: data folder (?P<dir>.+) is in use by (?P<step>\w+) \(pid (?P<pid>\d+) on host (?P<host>.+), "
    r"since (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\); wait or stop it$"
)

HOOK = textwrap.dedent(
    '''
    """Test hook for churn subprocesses (see tests/test_concurrency.py)."""
    import os
    import time
    from pathlib import Path

    _mode = os.environ.get("CHURN_TEST_HOOK")
    _dir = Path(os.environ.get("CHURN_TEST_HOOK_DIR", "."))

    if _mode == "pause-ingest":
        import pipelines.ingest.run as _run

        _real = _run.ingest_file
        _paused = []

        def _ingest_file(*args, **kwargs):
            if not _paused:  # first file: say we are in, wait for the test's go
                _paused.append(True)
                (_dir / f"inside.{os.getpid()}").touch()
                deadline = time.monotonic() + 120
                while not (_dir / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            return _real(*args, **kwargs)

        _run.ingest_file = _ingest_file

    if _mode == "kill-mid-snapshot":
        import pyarrow.parquet as _pq

        _real_write = _pq.write_table
        _snapshots = []

        def _write_table(table, where, *args, **kwargs):
            _real_write(table, where, *args, **kwargs)
            if "features.parquet" in str(where):
                _snapshots.append(where)
                if len(_snapshots) == 2:  # the second snapshot: leave it half-written, then hang
                    os.truncate(where, os.path.getsize(where) // 2)
                    (_dir / "mid-write").write_text(str(where))
                    time.sleep(600)

        _pq.write_table = _write_table
    '''
)


# ---------------------------------------------------------------- helpers


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 90) -> None:
    """Poll ``cond``; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


class Churn:
    """A ``churn`` subprocess with its output in files (no pipe to fill up)."""

    def __init__(
        self, root: Path, name: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.out = root / f"{name}.stdout"
        self.err = root / f"{name}.stderr"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN")}
        full_env.update(env or {})
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(
                [str(CHURN), "--config", str(root / "cfg.yaml"), *args],
                stdout=o,
                stderr=e,
                env=full_env,
                cwd=root,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _data_dir(root: Path, landing: Path) -> Settings:
    """A fresh data folder holding a copy of the world's extracts and a cfg.yaml for the CLI."""
    root.mkdir(parents=True, exist_ok=True)
    s = make_settings(root)
    shutil.copytree(landing, s.path("landing"))
    (root / "cfg.yaml").write_text(f"paths:\n  data_dir: {json.dumps(str(root))}\n")
    return s


def _hook_env(tmp: Path, mode: str) -> dict[str, str]:
    hook_dir = tmp / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    signals = tmp / "signals"
    signals.mkdir(exist_ok=True)
    return {
        "PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
        "CHURN_TEST_HOOK": mode,
        "CHURN_TEST_HOOK_DIR": str(signals),
    }


def _lake_content(lake: Path) -> tuple[dict, dict]:
    """What a lake holds, independent of where it lives and when it was written."""
    files, tables = {}, {}
    for src in CONTRACTS:
        m = lk.read_manifest(lake, src)  # fails on an invalid manifest
        for name, e in m["files"].items():
            files[(src, name)] = (e["sha256"], e["counts"], sorted(e["parts"]))
            for rel in e["parts"]:
                tables[(src, rel)] = pq.read_table(lake / src / rel)
        on_disk = {str(p.relative_to(lake / src)) for p in (lake / src).rglob("*.parquet")}
        assert on_disk == {rel for e in m["files"].values() for rel in e["parts"]}, src
    assert not list(lake.rglob("*.tmp")), "temporary files left in the lake"
    staging = lake / lk.STAGING
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*"))
    return files, tables


def _assert_same_lake(a: Path, b: Path) -> None:
    fa, ta = _lake_content(a)
    fb, tb = _lake_content(b)
    assert fa == fb
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equals(tb[k]), k


def _sorted_frame(path: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    return df.sort_values("msisdn").reset_index(drop=True)


def _held_line(stderr: str) -> re.Match:
    assert "Traceback" not in stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0]
    m = HELD.match(errors[0])
    assert m, errors[0]
    return m


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def landing(tiny_landing) -> Path:
    return tiny_landing


@pytest.fixture(scope="module")
def reference(tmp_path_factory, landing) -> Settings:
    """One uninterrupted ingest and feature build, run as a refresh does: under the refresh lock."""
    s = _data_dir(tmp_path_factory.mktemp("reference"), landing)
    with settings_lock(s, "refresh"):
        report = steps.ingest(s)  # re-enters the lock this process holds: no self-deadlock
        steps.build_features(s)
    assert report.totals()["files_committed"] > 0
    return s


# ---------------------------------------------------------------- the lock itself


def test_the_lock_is_reentrant_in_a_process_and_released_clean(tmp_path, reference):
    path = lock_path(tmp_path)
    with data_lock(tmp_path, "refresh") as info:
        assert info["pid"] == os.getpid() and info["step"] == "refresh"
        with data_lock(tmp_path, "ingest"):
            assert holds(tmp_path)
            assert json.loads(path.read_text())["step"] == "refresh"
        assert holds(tmp_path)
    assert not holds(tmp_path)
    assert path.exists() and path.read_bytes() == b""  # empty: released, not left behind
    assert lock_path(reference.path("data_dir")).read_bytes() == b""


def test_a_held_data_folder_is_refused_in_one_line_naming_the_holder_and_a_killed_holder_is_stale(
    tmp_path, landing, reference, caplog
):
    s = _data_dir(tmp_path / "data", landing)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from pipelines.lake.lock import data_lock\n"
            "with data_lock(Path(sys.argv[1]), 'ingest'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
            str(s.path("data_dir")),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as e:
            steps.ingest(s)
        m = HELD.match(f"error: {e.value}")
        assert m and int(m["pid"]) == holder.pid and m["step"] == "ingest"
        assert m["dir"] == str(s.path("data_dir"))
        assert e.value.exit_code == 1
        with (
            pytest.raises(LockHeld, match="still held after waiting"),
            data_lock(s.path("data_dir"), "features", timeout=0.3),
        ):
            pass
        assert not (s.path("lake") / "cdr").exists()  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    left = json.loads(lock_path(s.path("data_dir")).read_text())
    assert left["pid"] == holder.pid  # SIGKILL: the record stays, the kernel dropped the lock

    run = Churn(tmp_path / "data", "ingest", "ingest", "--no-prefect")
    assert run.wait() == 0, run.stderr()
    assert "taking over a stale lock" in run.stderr() and f"pid {holder.pid}" in run.stderr()
    assert "no longer running" in run.stderr()
    _assert_same_lake(s.path("lake"), reference.path("lake"))


# ---------------------------------------------------------------- two ingests at once


def test_two_ingests_at_once_one_runs_the_other_is_refused_and_the_lake_equals_one_run(
    tmp_path, landing, reference
):
    s = _data_dir(tmp_path / "data", landing)
    env = _hook_env(tmp_path, "pause-ingest")
    signals = Path(env["CHURN_TEST_HOOK_DIR"])
    runs = [
        Churn(tmp_path / "data", f"ingest{i}", "ingest", "--no-prefect", env=env) for i in (1, 2)
    ]
    try:
        inside = lambda: list(signals.glob("inside.*"))  # noqa: E731
        _wait_for(
            lambda: (
                inside() and (len(inside()) > 1 or any(r.proc.poll() is not None for r in runs))
            ),
            "one ingest inside the lake and the other refused (or both inside)",
        )
        assert len(inside()) == 1, "both ingests were writing the lake at the same time"
        (signals / "go").touch()
        codes = sorted((r.wait(), i) for i, r in enumerate(runs))
    finally:
        (signals / "go").touch()
        for r in runs:
            r.kill()
    assert [c for c, _ in codes] == [0, 1]
    winner, loser = runs[codes[0][1]], runs[codes[1][1]]
    assert inside()[0].name == f"inside.{winner.pid}"
    m = _held_line(loser.stderr())
    assert int(m["pid"]) == winner.pid and m["step"] == "ingest"
    assert m["dir"] == str(s.path("data_dir"))
    assert json.loads(winner.stdout())["files_committed"] > 0
    _assert_same_lake(s.path("lake"), reference.path("lake"))


def test_with_a_lock_timeout_the_second_ingest_waits_then_finds_nothing_new(
    tmp_path, landing, reference
):
    s = _data_dir(tmp_path / "data", landing)
    env = _hook_env(tmp_path, "pause-ingest")
    signals = Path(env["CHURN_TEST_HOOK_DIR"])
    first = Churn(tmp_path / "data", "first", "ingest", "--no-prefect", env=env)
    second = None
    try:
        _wait_for(lambda: (signals / f"inside.{first.pid}").exists(), "the first ingest inside")
        second = Churn(
            tmp_path / "data",
            "second",
            "ingest",
            "--no-prefect",
            env=env | {"CHURN__ORCHESTRATION__LOCK_TIMEOUT_SECONDS": "120"},
        )
        _wait_for(lambda: "waiting up to 120 s" in second.stderr(), "the second ingest waiting")
        assert f"in use by ingest (pid {first.pid}" in second.stderr()
        (signals / "go").touch()
        assert first.wait() == 0, first.stderr()
        assert second.wait() == 0, second.stderr()
    finally:
        (signals / "go").touch()
        for r in (first, second):
            if r is not None:
                r.kill()
    assert json.loads(first.stdout())["files_committed"] > 0
    again = json.loads(second.stdout())
    assert again["files_committed"] == 0 and again["files_unchanged"] > 0
    _assert_same_lake(s.path("lake"), reference.path("lake"))


# ---------------------------------------------------------------- manifests


def test_two_manifest_writers_never_share_a_temporary(tmp_path, monkeypatch):
    """Writer 1 stops with its temporary written; writer 2 writes a shorter manifest meanwhile.

    With one shared ``_manifest.json.tmp`` writer 2 truncated writer 1's file and the
    tail of the longer manifest stayed behind it: invalid JSON.
    """
    lake = tmp_path / "lake"
    long = {
        "schema_version": 1,
        "source": "cdr",
        "files": {f"f{i}": {"parts": []} for i in range(200)},
    }
    short = {"schema_version": 1, "source": "cdr", "files": {}}
    paused, resume, errors = threading.Event(), threading.Event(), []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "writer-1" and not paused.is_set():
            paused.set()
            resume.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def writer_1() -> None:
        try:
            lk.write_manifest(lake, "cdr", long)
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=writer_1, name="writer-1")
    t.start()
    assert paused.wait(30)
    lk.write_manifest(lake, "cdr", short)
    resume.set()
    t.join(30)
    assert errors == []
    assert lk.read_manifest(lake, "cdr") == long  # the later commit wins, whole
    assert [p.name for p in (lake / "cdr").iterdir()] == ["_manifest.json"]


def test_recover_removes_manifest_temporaries_of_dead_writers_only(tmp_path):
    lake, quarantine = tmp_path / "lake", tmp_path / "quarantine"
    lk.write_manifest(lake, "cdr", {"schema_version": 1, "source": "cdr", "files": {}})
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    folder = lake / "cdr"
    old_style = folder / "_manifest.json.tmp"
    of_dead = folder / f"_manifest.json.{int(dead.stdout)}.0badc0de.tmp"
    in_flight = lk.temp_name(folder / "_manifest.json")  # this process: still writing it
    for p in (old_style, of_dead, in_flight):
        p.write_text('{"half": ')
    removed = lk.recover(lake, quarantine, "cdr")
    assert set(removed) == {old_style, of_dead}
    assert in_flight.exists() and lk.read_manifest(lake, "cdr")["files"] == {}


# ---------------------------------------------------------------- a feature build killed mid-write


def test_a_feature_build_killed_mid_snapshot_leaves_nothing_half_read_and_a_rerun_equals_a_clean_build(
    tmp_path, landing, reference, caplog
):
    s = _data_dir(tmp_path / "data", landing)
    steps.ingest(s)
    env = _hook_env(tmp_path, "kill-mid-snapshot")
    marker = Path(env["CHURN_TEST_HOOK_DIR"]) / "mid-write"
    build = Churn(tmp_path / "data", "features", "features", "--no-prefect", env=env)
    try:
        _wait_for(
            lambda: marker.exists() or build.proc.poll() is not None, "the build mid-snapshot"
        )
        assert marker.exists(), build.stderr()
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
    finally:
        build.kill()
    feats, ref = s.path("features"), reference.path("features")
    half = Path(marker.read_text())
    assert half.exists() and half.name != "features.parquet"  # the cut file is a temporary
    assert not (half.parent / "features.parquet").exists()
    done = sorted(feats.glob("snapshot=*/features.parquet"))
    assert len(done) == 1
    for p in done:  # whatever a later step can read is a whole snapshot
        pd.testing.assert_frame_equal(_sorted_frame(p), _sorted_frame(ref / p.relative_to(feats)))
    assert json.loads(lock_path(s.path("data_dir")).read_text())["pid"] == build.pid

    with caplog.at_level(logging.INFO):
        steps.build_features(s)
    assert "taking over a stale lock" in caplog.text
    assert not half.exists() and not list(feats.rglob("*.tmp"))
    got = sorted(p.relative_to(feats) for p in feats.glob("snapshot=*/features.parquet"))
    want = sorted(p.relative_to(ref) for p in ref.glob("snapshot=*/features.parquet"))
    assert got == want and len(got) > 2
    for rel in got:
        a, b = pq.read_table(feats / rel), pq.read_table(ref / rel)
        assert a.schema.equals(b.schema, check_metadata=True)
        pd.testing.assert_frame_equal(_sorted_frame(feats / rel), _sorted_frame(ref / rel))
    assert (feats / "catalog.md").read_text() == (ref / "catalog.md").read_text()


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (ValueError("bad month"), False),
        (KeyError("col"), False),
        (FileNotFoundError(errno.ENOENT, "no such file", "x.parquet"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (OSError(errno.ENOSPC, "disk full"), False),
        (RuntimeError("no champion registered for model 'm': train first"), False),
        (ConfigError("invalid configuration"), False),
        (UsageError("--table needs --id-col"), False),
        (LockHeld("data folder /x is in use by ingest"), False),
        (steps.InjectedFault("fault drill"), True),
        (OSError(errno.EIO, "i/o error"), True),
        (TimeoutError("timed out"), True),
        (ConnectionResetError("reset"), True),
    ],
)
def test_only_transient_errors_are_retried(exc, retry, reference):
    from pipelines.runtime import prepare_environment

    prepare_environment(reference)
    from pipelines import flows
    from pipelines.ingest.report import IngestFailed, IngestReport

    assert flows.is_transient(exc) is retry
    assert flows.is_transient(IngestFailed(IngestReport(started_at="x"))) is False


@pytest.fixture(scope="module")
def prefect_flows(prefect_harness, reference):
    from pipelines.runtime import prepare_environment

    prepare_environment(reference)
    from pipelines import flows

    return flows


def _attempts(task, settings: Settings) -> tuple[int, str]:
    """Run ``task`` inside a flow; how many times Prefect ran it, and its final message."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    @flow(name="retry-probe")
    def probe() -> dict:
        st = task(settings, None, return_state=True)
        return {"failed": st.is_failed(), "message": st.message or ""}

    state = probe(return_state=True)
    out = state.result()
    assert out["failed"]
    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))

    def final() -> list:
        with get_client(sync_client=True) as c:
            runs = c.read_task_runs(flow_run_filter=flow_run)
        return [r for r in runs if r.state is not None and r.state.is_final()]

    _wait_for(lambda: len(final()) == 1, "the task run's final state in the Prefect API")
    return final()[0].run_count, out["message"]


def test_a_task_failing_for_good_runs_once_and_a_drilled_fault_is_retried(prefect_flows, tmp_path):
    s = make_settings(tmp_path)  # an empty lake: building features is a ValueError every time
    s.orchestration.retry_delay_seconds = 0
    task = prefect_flows._configured(prefect_flows.features_task, s)
    assert task.retries == s.orchestration.task_retries == 2  # the policy of these settings

    runs, message = _attempts(task, s)
    assert "holds no billing data" in message
    assert runs == 1

    s.orchestration.fail_once = ["features"]  # attempt 1: InjectedFault, retried; 2: the ValueError
    runs, message = _attempts(task, s)
    assert "holds no billing data" in message
    assert runs == 2
