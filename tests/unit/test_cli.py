from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def test_every_command_is_registered_and_has_help():
    import typer

    commands = typer.main.get_command(app).commands
    assert set(commands) == {
        "config", "synth", "ingest", "features", "train", "score", "publish", "refresh",
        "demo", "serve", "rotate-key", "prefect-yaml",
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
