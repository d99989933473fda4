"""``churn``: the command line of the churn early-warning system."""

from __future__ import annotations

import json
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


@app.command("config")
def show_config(
    reference: Annotated[
        bool, typer.Option("--reference", help="Every key with type, default, meaning (Markdown).")
    ] = False,
) -> None:
    """Print the effective configuration (defaults + --config + environment) as JSON."""
    if reference:
        from pipelines.config import settings_reference

        typer.echo(settings_reference(), nl=False)
        return
    typer.echo(json.dumps(settings().model_dump(mode="json"), indent=2, ensure_ascii=False))


@app.command()
def synth(
    subscribers: Annotated[int | None, typer.Option(help="Number of subscribers.")] = None,
    months: Annotated[int | None, typer.Option(help="Number of months.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    start_month: Annotated[str | None, typer.Option(help="First month, YYYY-MM.")] = None,
) -> None:
    """Generate a synthetic operator's extracts into the landing folder (truth kept apart)."""
    from pipelines.synth.deliver import generate

    over = {
        k: v
        for k, v in dict(
            subscribers=subscribers, months=months, seed=seed, start_month=start_month
        ).items()
        if v is not None
    }
    s = settings({"synth": over} if over else None)
    summary = generate(s, s.path("landing"), s.path("truth"))
    log.info(
        "synthetic operator: %d subscribers x %d months in %.1f s; %s rows; %.1f MB in %s; truth in %s",
        s.synth.subscribers,
        s.synth.months,
        summary.seconds,
        summary.rows,
        summary.bytes_on_disk / 1e6,
        summary.landing,
        summary.truth,
    )


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


@app.command()
def ingest(
    no_prefect: NoPrefectOption = False,
) -> None:
    """Validate the landing folder into the Parquet lake (quarantine, reconciliation report)."""
    from pipelines.ingest.report import IngestFailed
    from pipelines.ingest.run import check_landing

    s = settings()
    check_landing(s.path("landing"))  # before the lock or Prefect create anything under data_dir
    try:
        if no_prefect:
            from pipelines import steps

            totals = steps.ingest(s).totals()
        else:
            totals = _flows(s).ingest_flow(s)
    except IngestFailed as e:  # the files that went in stay in; one line names the others
        typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(totals, indent=2))


@app.command()
def features(
    month: Annotated[
        list[str] | None,
        typer.Option("--month", "-m", help="Snapshot month(s) YYYY-MM; default: all."),
    ] = None,
    no_prefect: NoPrefectOption = False,
) -> None:
    """Build point-in-time feature snapshots and the feature catalog from the lake."""
    s = settings()
    if month:
        from pipelines.lake import store as lake

        have = lake.months(s.path("lake"), "billing")
        month = need_months(month, have, "billing data in the lake", "ingest it first")
    if no_prefect:
        from pipelines import steps

        out = steps.build_features(s, month).summary()
    else:
        out = _flows(s).build_features_flow(s, month)
    typer.echo(json.dumps(out, indent=2))


# fmt: off
@app.command()
def train(
    table: Annotated[Path | None, typer.Option(help="Your own customer-level table (parquet, csv).")] = None,
    id_col: Annotated[str | None, typer.Option(help="Customer id column of --table (dropped).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Label column of --table (0/1, Yes/No).")] = None,
    time_col: Annotated[str | None, typer.Option(help="Period column of --table (out of time).")] = None,
    prevalence: Annotated[float | None, typer.Option(help="True churn rate where the model will score, "
                                                     "if --table was sampled at another", min=1e-6, max=0.999999)] = None,
    no_prefect: NoPrefectOption = False,
) -> None:
    """Train the calibrated LightGBM churn model and baselines; track and register in MLflow."""
    # fmt: on
    s = settings()
    if table is not None:
        need_file("--table", table)
        if not (id_col and label_col):
            raise UsageError("--table needs --id-col and --label-col")
    steps = _steps(s)
    if table is not None:
        res = steps.train_table(s, table, id_col=id_col, label_col=label_col, time_col=time_col,
                                prevalence=prevalence)  # fmt: skip
    elif no_prefect:
        res = steps.train(s)
    else:
        res = _flows(s).train_flow(s)
    typer.echo(res.summary() if hasattr(res, "summary") else json.dumps(res, indent=2))


@app.command()
def score(
    month: MonthOption = None,
    no_prefect: NoPrefectOption = False,
    explain: Annotated[str | None, typer.Option(help="listed (reasons at publishing) | all")] = None,
) -> None:
    """Score a snapshot with the MLflow champion; SHAP reasons for the listed, or --explain all."""
    from features import store

    s = settings()
    if explain not in (None, "listed", "all"):
        raise typer.BadParameter(f"{explain!r}: listed or all", param_hint="--explain")
    s.model.explain = explain or s.model.explain
    if month is not None:
        have = store.months(s.path("features"))
        (month,) = need_months([month], have, "feature snapshot", "run churn features first")
    if no_prefect:
        r = _steps(s).score(s, month)
        out = {"month": r.month, "scored": r.scored, "model_version": r.model_version,
               "shap_max_abs_diff": r.shap_max_abs_diff}  # fmt: skip
    else:
        out = _flows(s).score_flow(s, month)
    typer.echo(json.dumps(out, indent=2))


@app.command()
def publish(
    month: MonthOption = None,
    no_prefect: NoPrefectOption = False,
) -> None:
    """Publish ranked retention lists (CSV, XLSX, Parquet), manifest, diff and HTML report."""
    from features import store
    from models.score import scores_path

    s = settings()
    feats = store.months(s.path("features"))
    have = [m for m in feats if scores_path(s.path("scores"), m).exists()]
    if month is None:  # the latest snapshot, as the step would take it
        month = feats[-1] if feats else "(none: no feature snapshots)"
        if month not in have:
            raise ChurnError(f"the latest month {month} is not scored: run churn score first")
    else:
        (month,) = need_months([month], have, "scores", "run churn score first")
    if no_prefect:
        m = _steps(s).publish(s, month)
        out = {"month": m["snapshot_month"], "counts": m["counts"]}
    else:
        out = _flows(s).publish_flow(s, month)
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@app.command()
def campaigns(no_prefect: NoPrefectOption = False) -> None:
    """Measure every campaign whose horizon has passed: churn of treated against control."""
    s = settings()
    if no_prefect:
        got = _steps(s).measure_campaigns(s)
        out = {"observed": len(got["campaigns"]), "waiting": len(got["waiting"]),
               "power": got["power"], "campaigns": got["campaigns"]}  # fmt: skip
    else:
        out = _flows(s).campaigns_flow(s)
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@app.command()
def simulate(
    months: Annotated[int, typer.Option(min=1, help="Months with the system in the loop.")] = 3,
    subscribers: Annotated[int | None, typer.Option(help="Subscribers in the world.")] = None,
    history: Annotated[int | None, typer.Option(help="Months before the system joins.")] = None,
) -> None:
    """Run the synthetic operator with the system in the loop: last month's list is worked, measured."""
    from pipelines.simulate import simulate as run

    over = {k: v for k, v in dict(subscribers=subscribers, months=history).items() if v is not None}
    s = settings({"synth": over} if over else None)
    with _steps(s).settings_lock(s, "simulate"):
        out = run(s, months)
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@app.command()
def refresh(
    month: MonthOption = None,
    force_retrain: Annotated[bool, typer.Option(help="Retrain even when not due.")] = False,
) -> None:
    """Run the monthly refresh flow: ingest, features, train when due, score, publish."""
    s = settings()
    month = check_month(month) if month is not None else None
    out = _flows(s).monthly_refresh(month=month, settings=s, force_retrain=force_retrain)
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False, default=str))


@app.command()
def demo(
    subscribers: Annotated[
        int | None, typer.Option(help="Subscribers in the generated world.")
    ] = None,
    months: Annotated[int | None, typer.Option(help="Months in the generated world.")] = None,
) -> None:
    """Generate a synthetic operator (unless one is already there) and run the monthly refresh on it."""
    from pipelines.synth.deliver import generate

    over = {k: v for k, v in dict(subscribers=subscribers, months=months).items() if v is not None}
    s = settings({"synth": over} if over else None)
    summary_file = s.path("truth") / "summary.json"
    from pipelines.synth.deliver import WORLD_VERSION

    wanted = {"seed": s.synth.seed, "subscribers": s.synth.subscribers, "months": s.synth.months,
              "world_version": WORLD_VERSION}  # fmt: skip
    have = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    if {k: have.get(k) for k in wanted} != wanted:
        log.info("generating a synthetic operator: %s (derived state rebuilt)", wanted)
        _steps(s).clear_derived(s)
        generate(s, s.path("landing"), s.path("truth"))
    else:
        log.info(
            "synthetic operator already in %s (same seed and size): reusing it", s.path("landing")
        )
    out = _flows(s).monthly_refresh(settings=s)
    from pipelines.demo import summary

    typer.echo(summary(s, out))


@app.command("prefect-yaml")
def prefect_yaml(
    pool: Annotated[str, typer.Option(help="Work pool the deployments run on.")] = "churn-pool",
) -> None:
    """Print prefect.yaml (for `prefect deploy --all` with workers) from the one list of deployments."""
    typer.echo(_flows(settings()).prefect_yaml(settings(), pool), nl=False)


@app.command("rotate-key")
def rotate_key() -> None:
    """Start a new subscriber-key secret (keys in lists change; next month's diff still matches)."""
    from pipelines.privacy import rotate_secret

    old, new = rotate_secret(settings())
    log.info("subscriber key %s replaced by %s; the previous secret is kept for one diff", old, new)
    typer.echo(json.dumps({"previous_key_id": old, "key_id": new}))


@app.command()
def serve(
    paused: Annotated[bool, typer.Option(help="Register the schedule paused.")] = False,
) -> None:
    """Serve the Prefect deployments: the monthly refresh on its cron schedule, each step on demand.

    Needs a Prefect server (PREFECT_API_URL); see the README for a local one on 127.0.0.1.
    """
    import os

    s = settings()
    flows = _flows(s)
    if not os.environ.get("PREFECT_API_URL"):
        typer.secho(
            "PREFECT_API_URL is not set: schedules only fire with a running Prefect server "
            "(prefect server start --host 127.0.0.1), see README.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    from prefect import serve as prefect_serve

    prefect_serve(*flows.deployments(s, paused=paused))
