"""Offline-safe settings for Prefect and MLflow, with their state under the data folder.

Called before Prefect or MLflow is imported, so nothing they start waits on the
internet and nothing they keep lands in the home directory.
"""

from __future__ import annotations

import os

from pipelines.config import Settings

OFFLINE = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no download bars in a run's output
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


def prepare_environment(settings: Settings) -> None:
    """Set (without overriding what the user exported) the environment Prefect and MLflow read."""
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    # charts are drawn in worker threads and saved to files: never a GUI backend here
    # (libraries force none, so a notebook kernel keeps its inline charts)
    os.environ.setdefault("MPLBACKEND", "Agg")
    home = settings.path("prefect_home")
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
