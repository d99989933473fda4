"""A real Prefect server on loopback: serve the deployments, trigger the monthly refresh by API, see it complete."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipelines.runtime import OFFLINE

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL after a timeout (Prefect workers may ignore the first)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout / 2)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_healthy(url: str, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError("prefect server did not become healthy")


def test_served_monthly_refresh_runs_through_a_real_server(flow_world, tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHURN__"))}
    env |= OFFLINE | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "CHURN__PATHS__DATA_DIR": str(flow_world.path("data_dir")),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    serve = None
    try:
        _wait_healthy(api, server)
        env["PREFECT_API_URL"] = api
        serve = subprocess.Popen(
            [str(BIN / "churn"), "serve"], env=env, stdout=open(logs / "serve.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        trigger = """
import json, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
deadline = time.time() + 60
with get_client(sync_client=True) as c:
    while time.time() < deadline:
        names = {d.name for d in c.read_deployments()}
        if {"monthly-refresh", "ingest", "publish"} <= names:
            break
        time.sleep(1)
    deps = {d.name: d for d in c.read_deployments()}
    cron = deps["monthly-refresh"].schedules[0].schedule
run = run_deployment("monthly-refresh/monthly-refresh", timeout=600)
print(json.dumps({"state": run.state.type.value, "names": sorted(deps), "cron": cron.cron, "tz": cron.timezone}))
"""
        out = subprocess.run(
            [sys.executable, "-c", trigger], env=env, capture_output=True, text=True, timeout=700
        )
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["state"] == "COMPLETED", (logs / "serve.log").read_text()[-4000:]
        assert {"monthly-refresh", "ingest", "build-features", "train", "score", "publish"} <= set(
            result["names"]
        )
        assert result["cron"] == "0 3 3 * *" and result["tz"] == "Asia/Shanghai"
        assert (flow_world.path("outputs") / "retention" / "2025-10" / "manifest.json").exists()
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
