"""``churn``: the command line of the churn early-warning system.

The shared parts are in :mod:`pipelines.cli_base`, the model commands in
:mod:`pipelines.cli_model`; importing this module registers every command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipelines.cli_base import (
    MonthOption,
    NoPrefectOption,
    _flows,
    _steps,
    app,
    check_month,
    log,
    need_months,
    one_line,
    settings,
)
from pipelines.lake.errors import ChurnError


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


from pipelines import cli_model  # noqa: E402,F401  (registers train, score, campaigns, simulate here)


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
