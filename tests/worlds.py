"""Small generated worlds for tests: settings on a folder of their own, and the ingest on them."""

from __future__ import annotations

from pathlib import Path

from pipelines.config import Settings, load_config


def make_settings(root: Path, **synth) -> Settings:
    """Default settings on ``root`` as data folder, the environment ignored, synth overridden."""
    over = {"paths": {"data_dir": str(root)}, "synth": synth}
    return load_config(overrides=over, environ={})


def run_ingest(s: Settings, landing: Path | None = None, **kw):
    """The library ingest on a world's own folders (no lock, no Prefect: what a unit of it does)."""
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


def load_model(s: Settings, model_uri: str):
    """A registered model of this world's store (other worlds in the session point MLflow elsewhere)."""
    import mlflow

    mlflow.set_tracking_uri(s.tracking_uri())
    return mlflow.sklearn.load_model(model_uri)
