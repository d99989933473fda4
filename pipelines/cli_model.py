"""``churn`` commands of the model side: train, score, measure campaigns, simulate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli_base import (
    MonthOption,
    NoPrefectOption,
    _flows,
    _steps,
    app,
    need_file,
    need_months,
    settings,
)
from pipelines.lake.errors import UsageError


# fmt: off
@app.command()
def train(
    table: Annotated[Path | None, typer.Option(help="Your own customer-level table (parquet, csv).")] = None,
    id_col: Annotated[str | None, typer.Option(help="Customer id column of --table (dropped).")] = None,
    label_col: Annotated[str | None, typer.Option(help="Label column of --table (0/1, Yes/No).")] = None,
    time_col: Annotated[str | None, typer.Option(help="Period column of --table (out of time).")] = None,
    prevalence: Annotated[float | None, typer.Option(help="True churn rate where the model will score, "
                                                     "if --table was sampled at another", min=1e-6, max=0.999999)] = None,
    tune: Annotated[int | None, typer.Option(help="Optuna trials (0 or more) on the validation month first; "
                                             "the best is trained and gated (default model.tune_trials).")] = None,
    no_prefect: NoPrefectOption = False,
) -> None:
    """Train the calibrated LightGBM churn model and baselines; track and register in MLflow."""
    # fmt: on
    s = settings()
    if tune is not None:
        if tune < 0:
            raise UsageError(f"--tune {tune}: the number of tuning trials is 0 or more")
        s.model.tune_trials = tune  # the Prefect flow reads it from the settings
    if table is not None:
        need_file("--table", table)
        if not (id_col and label_col):
            raise UsageError("--table needs --id-col and --label-col")
    steps = _steps(s)
    if table is not None:
        res = steps.train_table(s, table, id_col=id_col, label_col=label_col, time_col=time_col,
                                prevalence=prevalence, tune=s.model.tune_trials)  # fmt: skip
    elif no_prefect:
        res = steps.train(s, tune=s.model.tune_trials)
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
def monitor(month: MonthOption = None, no_prefect: NoPrefectOption = False) -> None:
    """Drift of a month against the champion's training window, AUC estimated before labels."""
    from features import store

    s = settings()
    if month is not None:
        have = store.months(s.path("features"))
        (month,) = need_months([month], have, "feature snapshot", "run churn features first")
    out = _steps(s).monitor(s, month) if no_prefect else _flows(s).monitor_flow(s, month)
    out.pop("markdown", None)
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
