from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def test_every_command_is_registered_and_has_help():
    import typer

    commands = typer.main.get_command(app).commands
    assert set(commands) == {
        "config", "synth", "ingest", "features", "train", "score", "publish", "refresh",
        "demo", "serve", "rotate-key", "prefect-yaml", "campaigns", "simulate", "monitor",
    }  # fmt: skip
    for name in commands:
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0 and commands[name].help.split()[0] in res.output, name


def test_a_wrong_config_value_exits_with_the_key_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("churn:\n  horizon_months: -1\n")
    res = runner.invoke(app, ["--config", str(bad), "config"])
    assert res.exit_code == 2
    assert "churn.horizon_months" in res.output


def test_synth_command_writes_a_small_world(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN__PATHS__DATA_DIR", str(tmp_path))
    res = runner.invoke(app, ["synth", "--subscribers", "200", "--months", "3", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "landing").glob("billing_*.csv")) == [
        "billing_202501.csv", "billing_202502.csv", "billing_202503.csv",
    ]  # fmt: skip


import pytest  # noqa: E402


@pytest.mark.parametrize("bad", ["2025-13", "2025-00", "2025-1", "25-01", "2025/01", "latest"])
def test_a_month_that_is_not_a_month_is_a_usage_error(bad):
    from pipelines.cli import check_month
    from pipelines.lake.errors import UsageError

    with pytest.raises(UsageError, match=r"is not a month \(YYYY-MM\)") as e:
        check_month(bad)
    assert e.value.exit_code == 2


def test_a_real_month_passes():
    from pipelines.cli import check_month

    assert check_month("2025-12") == "2025-12"


def _cfg(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths:\n  data_dir: {tmp_path / 'data'}\n")
    return str(cfg)


@pytest.mark.parametrize(
    "args, says",
    [
        (["publish", "--month", "2025-13"], "error: --month 2025-13 is not a month (YYYY-MM)"),
        (["score", "--month", "2025-13", "--no-prefect"], "error: --month 2025-13 is not a month"),
        (["refresh", "--month", "2025-13"], "error: --month 2025-13 is not a month"),
        (["features", "--month", "2025-02", "--no-prefect"], "error: --month 2025-02: no billing"),
        (["score", "--month", "2025-02", "--no-prefect"], "error: --month 2025-02: no feature"),
        (["publish", "--month", "2025-02", "--no-prefect"], "error: --month 2025-02: no scores"),
        (["train", "--table", "nope.csv"], "error: --table nope.csv: no such file"),
        (["monitor", "--month", "2025-02", "--no-prefect"], "error: --month 2025-02: no feature"),
        (["train", "--tune", "-1"], "error: --tune -1: the number of tuning trials is 0 or more"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_with_exit_2(tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:  # through _App, as the console script runs it
        app(["--config", _cfg(tmp_path), *args], prog_name="churn")
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(says), lines
    assert not (tmp_path / "data" / "outputs").exists()


def test_score_and_publish_run_without_prefect():
    import typer

    commands = typer.main.get_command(app).commands
    for name in ("ingest", "features", "train", "score", "publish"):
        assert "no_prefect" in {p.name for p in commands[name].params}, name


def test_a_step_given_a_month_names_what_is_wrong_in_one_line(tmp_path):
    from pipelines import steps
    from pipelines.lake.errors import ChurnError, UsageError
    from tests.worlds import make_settings

    s = make_settings(tmp_path)
    with pytest.raises(UsageError, match="YYYY-MM, got '2025-13'"):
        steps.given_month(s, "2025-13", "refresh")
    with pytest.raises(ChurnError, match="month 2025-12: not scored; run churn score first"):
        steps.given_month(s, "2025-12", "publish")
    with pytest.raises(ChurnError, match="no feature snapshot"):
        steps.given_month(s, "2025-12", "score")
    assert steps.given_month(s, None, "publish") is None


def test_a_republished_month_keeps_its_first_publication_day(tmp_path):
    import datetime as dt
    import json

    from pipelines.publish.run import first_published

    assert first_published(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"published_on": "2026-01-02"}))
    assert first_published(tmp_path) == dt.date(2026, 1, 2)
    (tmp_path / "manifest.json").write_text("{broken")
    assert first_published(tmp_path) is None
