"""Prefect orchestration for real: the monthly refresh under the test harness, reruns, retries."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def flows(prefect_harness, flow_world):
    from pipelines.runtime import prepare_environment

    prepare_environment(flow_world)
    from pipelines import flows

    return flows


@pytest.fixture(scope="module")
def first_run(flows, flow_world):
    return flows.monthly_refresh(settings=flow_world)


def _artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a for a in arts}


def test_monthly_refresh_runs_every_step_and_leaves_artifacts(first_run, flow_world):
    s = flow_world
    out = first_run
    assert (
        out["ingest"]["read"]
        == out["ingest"]["accepted"] + out["ingest"]["quarantined"] + out["ingest"]["duplicates"]
    )
    assert out["features"]["months"][-1] == "2025-10"
    assert out["train"]["alias"] == "champion" and out["train"]["test_period"] == "2025-06"
    assert out["score"]["month"] == "2025-10" and out["score"]["shap_max_abs_diff"] < 1e-6
    assert out["publish"]["counts"]["selected"] > 0
    assert (s.path("outputs") / "retention" / "2025-10" / "all.xlsx").exists()
    # monitored again after the first champion: against its own training window
    assert out["monitor"]["model_version"] == out["train"]["version"]
    assert out["monitor"]["month"] == "2025-10" and "estimated AUC" in out["monitor"]["headline"]
    keys = ["ingest-reconciliation", "feature-snapshots", "model-metrics", "model-monitoring",
            "retention-lists"]  # fmt: skip
    arts = _artifacts(keys)
    assert set(arts) == set(keys)
    assert out["monitor"]["headline"] in arts["model-monitoring"].data
    assert out["train"]["run_id"] in arts["model-metrics"].data
    assert "roc_auc" in arts["model-metrics"].data


def test_rerunning_the_same_month_changes_nothing(flows, first_run, flow_world):
    s = flow_world
    lake, feats = _digest(s.path("lake")), _digest(s.path("features"))
    lst = pd.read_parquet(s.path("outputs") / "retention" / "2025-10" / "all.parquet")
    versions = len(MlflowClient(s.tracking_uri()).search_model_versions(f"name='{s.model.name}'"))
    again = flows.monthly_refresh(month="2025-10", settings=s)
    assert again["ingest"]["files_committed"] == 0
    assert "skipped" in again["train"]
    assert again["monitor"]["headline"] == first_run["monitor"]["headline"]
    assert _digest(s.path("lake")) == lake
    assert _digest(s.path("features")) == feats
    pd.testing.assert_frame_equal(
        pd.read_parquet(s.path("outputs") / "retention" / "2025-10" / "all.parquet"), lst
    )
    assert (
        len(MlflowClient(s.tracking_uri()).search_model_versions(f"name='{s.model.name}'"))
        == versions
    )


def test_a_task_that_fails_once_is_retried_and_succeeds(flows, first_run, flow_world):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    s = flow_world.model_copy(deep=True)
    s.orchestration.fail_once = ["publish"]
    state = flows.publish_flow(s, "2025-10", return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    publish = [r for r in runs if r.name.startswith("publish-lists")]
    assert len(publish) == 1 and publish[0].run_count == 2
    assert not (s.path("prefect_home") / "fault-drill-publish").exists()


def test_a_failed_step_stops_with_a_clear_message_and_leaves_what_was_written(
    flows, first_run, flow_world, tmp_path
):
    from pipelines.lake.errors import ChurnError

    s = flow_world.model_copy(deep=True)
    before = {k: _digest(s.path(k)) for k in ("scores", "outputs")}
    s.model.name = "no-such-model"  # score cannot find a champion
    with pytest.raises(ChurnError, match="no champion registered for model 'no-such-model'"):
        flows.score_flow(s, "2025-10")
    with pytest.raises(ChurnError, match="month 2025-04: not scored; run churn score first"):
        flows.publish_flow(flow_world, "2025-04")  # a month never scored: one line, no retry
    assert {k: _digest(s.path(k)) for k in ("scores", "outputs")} == before
    root = s.path("outputs") / "retention"
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no staging left
