"""Prefect flows: thin wiring of :mod:`pipelines.steps` into tasks, with artifacts for people.

Import this module only after :func:`pipelines.runtime.prepare_environment`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines import steps
from pipelines.config import Settings, load_config
from pipelines.ingest.run import IngestFailed


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_config()


@task(name="ingest-landing", retries=2, retry_delay_seconds=5)
def ingest_task(settings: Settings) -> dict:
    logger = get_run_logger()
    try:
        report = steps.ingest(settings)
    except IngestFailed as e:
        create_table_artifact(
            key="ingest-reconciliation", table=e.report.table(), description=str(e)
        )
        raise
    totals = report.totals()
    create_table_artifact(
        key="ingest-reconciliation",
        table=report.table(),
        description=(
            f"read {totals['read']} = accepted {totals['accepted']} + quarantined {totals['quarantined']}"
            f" + duplicates {totals['duplicates']}; report {report.path}"
        ),
    )
    logger.info("ingest totals: %s", totals)
    return totals


@flow(name="ingest", log_prints=False)
def ingest_flow(settings: Settings | None = None) -> dict:
    """Validate new deliveries in the landing folder into the Parquet lake."""
    return ingest_task(_settings(settings))


__all__ = ["create_markdown_artifact", "ingest_flow"]
