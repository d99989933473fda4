"""Each pipeline step as one call taking the typed config: what the CLI and the flows both run.

They hold no data logic of their own; they resolve paths from the config and call the
library. Every step here runs without Prefect.
"""

from __future__ import annotations

from pipelines.config import Settings
from pipelines.ingest.run import IngestReport, ingest_landing


def ingest(settings: Settings, *, raise_on_failure: bool = True) -> IngestReport:
    return ingest_landing(
        settings.path("landing"),
        lake=settings.path("lake"),
        quarantine=settings.path("quarantine"),
        reports=settings.path("reports") / "ingest",
        sources=settings.sources,
        numbering=settings.numbering,
        cfg=settings.ingest,
        memory_limit=settings.features.duckdb_memory_limit,
        threads=2,
        raise_on_failure=raise_on_failure,
    )
