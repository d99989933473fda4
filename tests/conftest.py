"""Shared fixtures: small generated worlds, made once per session; each test's level from its folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.runtime import OFFLINE
from pipelines.synth.deliver import generate
from tests.worlds import make_settings, run_ingest

LEVELS = ("unit", "data", "model", "e2e")

for _k, _v in OFFLINE.items():  # before any test imports Prefect or MLflow
    os.environ.setdefault(_k, _v)


def pytest_collection_modifyitems(items) -> None:
    """Mark every test with its level (the folder it lives in), so `-m unit` selects the units."""
    for item in items:
        level = next((p for p in Path(str(item.fspath)).parts if p in LEVELS), None)
        if level is None:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{LEVELS}")
        item.add_marker(getattr(pytest.mark, level))


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
    s = make_settings(root, subscribers=1500, months=10, seed=6)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return s
