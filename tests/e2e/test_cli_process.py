"""Each step as a fresh ``churn`` process from a foreign working folder, on a copy of a small world."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = Path(sys.prefix) / "bin" / "churn"


@pytest.fixture(scope="module")
def world_copy(published, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the published world (other tests read its month 2025-11) and its config file."""
    s, *_ = published
    root = tmp_path_factory.mktemp("cliworld")
    data = root / "data"
    shutil.copytree(s.path("data_dir"), data, ignore=shutil.ignore_patterns(".lock*"))
    _repoint_mlflow(data / "mlflow" / "mlflow.db", str(s.path("data_dir")), str(data))
    cfg = root / "churn.yaml"
    cfg.write_text(f"paths:\n  data_dir: {data}\n")
    return data, cfg


def _repoint_mlflow(db: Path, old: str, new: str) -> None:
    """Point the copied store's artifact locations into the copy, so scoring writes only there."""
    import sqlite3

    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in con.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    con.execute(
                        f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                        f'WHERE "{col[1]}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )


def _churn(cwd: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_"))}
    return subprocess.run(
        [str(CHURN), "--config", str(cfg), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("step", ["score", "publish"])
def test_a_step_runs_alone_from_any_folder_and_writes_only_the_data_folder(
    world_copy, tmp_path, step
):
    data, cfg = world_copy
    res = _churn(tmp_path, cfg, step, "--month", "2025-11", "--no-prefect")
    assert res.returncode == 0, res.stderr[-3000:]
    assert '"month": "2025-11"' in res.stdout
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no outputs, no Prefect home here


def test_publish_from_the_process_gives_the_month_s_list(world_copy, tmp_path):
    import pandas as pd

    data, cfg = world_copy
    assert _churn(tmp_path, cfg, "publish", "--month", "2025-11", "--no-prefect").returncode == 0
    lst = pd.read_parquet(data / "outputs" / "retention" / "2025-11" / "all.parquet")
    assert len(lst) > 0
    html = (data / "outputs" / "retention" / "2025-11" / "report.html").read_text("utf-8")
    assert '<html lang="zh">' in html and "建议联系" in html and "对照组" in html
    assert "<th></th>" not in html and "SHAP|" not in html and "shap_importance" not in html
    assert html.count("<img") == 2


@pytest.mark.parametrize(
    "args, says",
    [
        (["publish", "--month", "2025-13"], "error: --month 2025-13 is not a month (YYYY-MM)"),
        (["publish", "--month", "2031-01"], "error: --month 2031-01: no scores"),
        (["score", "--month", "2031-01", "--no-prefect"], "error: --month 2031-01: no feature"),
        (["features", "--month", "2031-01", "--no-prefect"], "error: --month 2031-01: no billing"),
        (["train", "--table", "missing.csv", "--id-col", "id", "--label-col", "y"],
         "error: --table missing.csv: no such file"),
        (["train", "--table", "missing.csv"], "error: --table missing.csv: no such file"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_exit_2(world_copy, tmp_path, args, says):
    data, cfg = world_copy
    res = _churn(tmp_path, cfg, *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(says.split(":")[0]), lines
    assert lines[0].startswith(says), lines
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(world_copy, tmp_path):
    data, cfg = world_copy
    res = _churn(tmp_path, cfg, "--log-level", "DEBUG", "publish", "--month", "2025-13")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_the_registered_version_says_what_it_was_trained_on(trained):
    """MLflow lineage: version description and tags, datasets as inputs, no phone number."""
    from mlflow.tracking import MlflowClient

    s, res = trained
    c = MlflowClient(s.tracking_uri())
    v = c.get_model_version(s.model.name, res.version)
    assert v.tags["test_month"] == res.test_period
    assert float(v.tags["test_auc"]) == pytest.approx(res.metrics["roc_auc"], abs=1e-4)
    assert ".." in v.tags["training_window"]
    assert res.test_period in v.description and "AUC" in v.description
    inputs = c.get_run(res.run_id).inputs.dataset_inputs
    contexts = {t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "validation", "test"}
    assert not any("msisdn" in i.dataset.schema for i in inputs)


@pytest.fixture(scope="module")
def copy_flows(prefect_harness, world_copy):
    from pipelines.config import load_config
    from pipelines.runtime import prepare_environment

    data, _ = world_copy
    s = load_config(overrides={"paths": {"data_dir": str(data)}}, environ={})
    prepare_environment(s)
    from pipelines import flows

    return flows, s


def test_flow_runs_are_named_by_month_and_artifacts_link_the_right_places(copy_flows, trained):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    flows, s = copy_flows
    scored = flows.score_flow(s, "2025-11", return_state=True)
    state = flows.publish_flow(s, "2025-11", return_state=True)
    assert scored.is_completed() and state.is_completed()
    with get_client(sync_client=True) as c:
        assert c.read_flow_run(scored.state_details.flow_run_id).name == "score 2025-11"
        run = c.read_flow_run(state.state_details.flow_run_id)
        arts = c.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retention-lists"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert run.name == "publish 2025-11"
    assert str(s.path("outputs") / "retention" / "2025-11") in arts[0].description

    _, res = trained
    link = flows.mlflow_run_link(trained[0], res.run_id)
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(trained[0].tracking_uri()).get_experiment_by_name(s.model.experiment)
    assert link == (
        f"{s.orchestration.mlflow_ui_url.rstrip('/')}/#/experiments/{exp.experiment_id}"
        f"/runs/{res.run_id}"
    )
    assert "/experiments/0/" not in link
