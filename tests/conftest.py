"""Shared fixtures: small generated worlds, made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipelines.config import Settings, load_config
from pipelines.synth.deliver import generate


def make_settings(root: Path, **synth) -> Settings:
    over = {"paths": {"data_dir": str(root)}, "synth": synth}
    return load_config(overrides=over, environ={})


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Settings:
    """A 2,500-subscriber, 7-month operator with default dirt: for statistics and ingest."""
    root = tmp_path_factory.mktemp("world")
    s = make_settings(root, subscribers=2500, months=7, seed=11)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return s


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory) -> Path:
    """A tiny operator's extracts (300 subscribers x 6 months), for runs in child processes."""
    root = tmp_path_factory.mktemp("tinyworld")
    s = make_settings(root, subscribers=300, months=6, seed=3)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return s.path("landing")


def run_ingest(s: Settings, landing: Path | None = None, **kw):
    from pipelines.ingest.run import ingest_landing

    return ingest_landing(
        landing or s.path("landing"),
        lake=s.path("lake"),
        quarantine=s.path("quarantine"),
        reports=s.path("reports") / "ingest",
        sources=s.sources,
        numbering=s.numbering,
        cfg=s.ingest,
        **kw,
    )


@pytest.fixture(scope="session")
def ingested(world):
    """The session world, ingested once (tests that change the lake work on copies)."""
    report = run_ingest(world)
    return world, report


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A 6,000-subscriber, 11-month operator taken through ingest, features and training."""
    from pipelines import steps
    from pipelines.runtime import prepare_environment

    root = tmp_path_factory.mktemp("modelworld")
    s = make_settings(root, subscribers=6000, months=11, seed=21)
    prepare_environment(s)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    steps.ingest(s)
    steps.build_features(s)
    result = steps.train(s)
    return s, result


@pytest.fixture(scope="session")
def published(trained):
    """The trained world scored and published for two months (the second diffs the first)."""
    from pipelines import steps

    s, _ = trained
    prev = steps.score(s, "2025-10")
    steps.publish(s, "2025-10")
    sc = steps.score(s)
    manifest = steps.publish(s)
    return s, sc, manifest, prev


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the session (real Prefect, temporary database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def flow_world(tmp_path_factory):
    """A tiny operator for orchestration tests: 1,500 subscribers, 10 months, generated only."""
    root = tmp_path_factory.mktemp("flowworld")
    s = make_settings(root, subscribers=1500, months=10, seed=5)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return s
