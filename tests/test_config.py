from pathlib import Path

import pytest

from pipelines.config import ConfigError, load_config


def test_defaults_load_and_paths_derive_from_data_dir(tmp_path):
    s = load_config(overrides={"paths": {"data_dir": str(tmp_path)}}, environ={})
    assert s.churn.horizon_months == 2
    assert s.path("lake") == tmp_path / "lake"
    assert s.path("data_dir") == tmp_path


def test_user_yaml_then_environment_override(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("churn:\n  horizon_months: 3\nsynth:\n  subscribers: 500\n")
    env = {"CHURN__SYNTH__SUBSCRIBERS": "900", "CHURN__PATHS__DATA_DIR": str(tmp_path / "d")}
    s = load_config(user, environ=env)
    assert s.churn.horizon_months == 3
    assert s.synth.subscribers == 900
    assert s.path("outputs") == tmp_path / "d" / "outputs"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"churn": {"horizon_months": 0}}, "churn.horizon_months"),
        ({"synth": {"start_month": "2025-13"}}, "synth.start_month"),
        ({"sources": {"cdr": {"pattern": "cdr_(["}}}, "sources.cdr.pattern"),
        ({"churn": {"horizon": 2}}, "churn.horizon"),
    ],
)
def test_wrong_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=override, environ={})
    assert key in str(e.value)


def test_missing_user_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Path("/nonexistent/x.yaml"), environ={})


def test_fingerprint_changes_with_config():
    a = load_config(environ={})
    b = load_config(overrides={"churn": {"gap_months": 1}}, environ={})
    assert a.fingerprint() != b.fingerprint()


def test_relative_data_dir_is_the_project_root_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    from pipelines.config import PROJECT_ROOT

    monkeypatch.chdir(tmp_path)
    s = load_config(environ={})
    assert s.path("data_dir") == PROJECT_ROOT / "data"
    assert s.path("lake") == PROJECT_ROOT / "data" / "lake"
