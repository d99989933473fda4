"""What every ``churn`` command shares: the app, one-line errors, settings and month checks."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path
from typing import Annotated

# before MLflow is imported: its artifact downloads draw progress bars on every report
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# shap announces a change of its LightGBM output format on every explanation; we know it
warnings.filterwarnings(
    "ignore",
    message="LightGBM binary classifier with TreeExplainer shap values output has changed",
)

import typer  # noqa: E402

from pipelines.config import ConfigError, Settings, load_config  # noqa: E402
from pipelines.lake.errors import ChurnError, UsageError  # noqa: E402
from pipelines.lake.numbers import mask_text  # noqa: E402
from pipelines.logs import setup_logging  # noqa: E402


class _App(typer.Typer):
    """Errors end as one masked line on stderr; the traceback only with ``--log-level DEBUG``."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit:
            raise
        except Exception as e:
            if _State.debug:
                raise
            code = e.exit_code if isinstance(e, ChurnError) else 1
            typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
            if not isinstance(e, ChurnError):
                typer.secho(
                    "  (unexpected: run again with --log-level DEBUG for the traceback)", err=True
                )
            raise SystemExit(code) from None


def one_line(e: BaseException) -> str:
    """An exception as one masked line, naming the file an OS error is about."""
    if isinstance(e, OSError) and e.filename:
        what = {
            "ENOSPC": "the disk is full: free space and run again",
            "EACCES": "permission denied: check who owns the data folder",
            "EROFS": "the file system is read-only: mount it writable",
            "EDQUOT": "the disk quota is exceeded",
        }
        import errno

        hint = what.get(errno.errorcode.get(e.errno or 0, ""), e.strerror or str(e))
        text = f"{e.filename}: {hint}"
    elif isinstance(e, ChurnError):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    return mask_text(" ".join(text.split()))


app = _App(
    help="Churn early-warning system for mobile operators.",
    no_args_is_help=True,
    add_completion=False,
)
log = logging.getLogger("churn")


MonthOption = Annotated[
    str | None, typer.Option(help="Snapshot month YYYY-MM; default the latest.")
]


NoPrefectOption = Annotated[
    bool, typer.Option("--no-prefect", help="Run the library step directly.")
]


class _State:
    config: Path | None = None
    debug: bool = False


def settings(overrides: dict | None = None) -> Settings:
    """The effective settings; from here on this process creates files owner-only (privacy)."""
    from pipelines.privacy import protect

    try:
        s = load_config(_State.config, overrides=overrides)
    except ConfigError as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    protect(s)
    return s


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def check_month(month: str) -> str:
    """A real YYYY-MM month, so a typo stops here instead of after retries deep in a step."""
    m = _MONTH.fullmatch(month.strip())
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise UsageError(f"--month {month} is not a month (YYYY-MM)")
    return m.group(0)


def need_months(months: list[str], have: list[str], what: str, then: str) -> list[str]:
    """Real months that each have the step's input; one line says what is missing, what to run."""
    months = [check_month(m) for m in months]
    if missing := [m for m in months if m not in have]:
        span = f"{have[0]} to {have[-1]}" if have else "none"
        raise UsageError(f"--month {', '.join(missing)}: no {what} (have {span}); {then}")
    return months


def need_file(option: str, path: Path) -> Path:
    """An input file that exists, named in one line when it does not."""
    if not path.is_file():
        raise UsageError(f"{option} {path}: no such file")
    return path


@app.callback()
def main(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML overriding configs/default.yaml.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    setup_logging(log_level)
    _State.config = config
    _State.debug = log_level.upper() == "DEBUG"


def _steps(s: Settings):
    """The library steps, with MLflow's and Prefect's environment set before either is imported."""
    from pipelines.runtime import prepare_environment

    prepare_environment(s)
    from pipelines import steps

    return steps


def _flows(s: Settings):
    _steps(s)
    from pipelines import flows

    return flows
