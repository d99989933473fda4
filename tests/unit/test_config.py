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


def test_environment_values_take_the_type_of_their_field():
    """Environment values are text: a str field keeps it as written, other fields parse it."""
    env = {
        "CHURN__NUMBERING__COUNTRY_CODE": "86",  # the YAML default itself; was refused as an int
        "CHURN__MODEL__NAME": "007",  # not the number 7
        "CHURN__SOURCES__CDR__DELIMITER": "|",  # not a YAML block scalar
        "CHURN__SYNTH__SUBSCRIBERS": "900",
        "CHURN__ORCHESTRATION__LOCK_TIMEOUT_SECONDS": "2.5",
        "CHURN__PUBLISH__SHOW_FULL_MSISDN": "true",
        "CHURN__ORCHESTRATION__FAIL_ONCE": "[ingest, score]",
        "CHURN__NUMBERING__OWN_MOBILE_PREFIXES": "[134, 0135]",  # list[str]: kept as written
        "CHURN__PUBLISH__CAPACITY_PER_CHANNEL": "{sms_app: 50}",
        "CHURN__REASONS__GROUPS__NETWORK__EN": "123",  # a str inside a dict of models
    }
    s = load_config(environ=env)
    assert s.numbering.country_code == "86"
    assert s.model.name == "007"
    assert s.sources.cdr.delimiter == "|"
    assert s.synth.subscribers == 900
    assert s.orchestration.lock_timeout_seconds == 2.5
    assert s.publish.show_full_msisdn is True
    assert s.orchestration.fail_once == ["ingest", "score"]
    assert s.numbering.own_mobile_prefixes == ["134", "0135"]
    assert s.publish.capacity_per_channel["sms_app"] == 50  # merged into the YAML mapping
    assert s.reasons.groups["network"].en == "123"


def test_a_wrong_environment_value_names_its_key():
    with pytest.raises(ConfigError, match="synth.subscribers"):
        load_config(environ={"CHURN__SYNTH__SUBSCRIBERS": "many"})
    with pytest.raises(ConfigError, match="CHURN__ORCHESTRATION__FAIL_ONCE"):
        load_config(environ={"CHURN__ORCHESTRATION__FAIL_ONCE": "[ingest"})


def _repeats(data, model_cls, path=""):
    """Keys of the YAML whose value restates the default the model already has."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    out = []
    for key, value in data.items():
        field = model_cls.model_fields.get(key)
        assert field is not None, f"{path}{key} is not a setting"
        ann = field.annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _repeats(value, ann, f"{path}{key}.")
            continue
        sub = getattr(ann, "__args__", ())
        if (
            isinstance(value, dict)
            and len(sub) == 2
            and isinstance(sub[1], type)
            and issubclass(sub[1], BaseModel)
        ):
            for k, v in value.items():
                out += _repeats(v, sub[1], f"{path}{key}.{k}.")
            continue
        default = field.default_factory() if field.default_factory is not None else field.default
        if default is not PydanticUndefined and value == default:
            out.append(f"{path}{key}")
    return out


def test_every_default_is_written_once():
    """configs/default.yaml holds the operator's tables only; no key restates a code default."""
    import yaml

    from pipelines.config import DEFAULT_CONFIG, Settings

    assert load_config(environ={}).orchestration.lock_timeout_seconds == 0
    assert _repeats(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")), Settings) == []
