"""One typed configuration for every step.

Loaded from ``configs/default.yaml``, then an optional user YAML, then environment
variables ``CHURN__SECTION__KEY=value``. Every path the system touches derives from
:class:`Paths`, so a deployment moves by changing one key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
ENV_PREFIX = "CHURN__"
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Paths(_Strict):
    data_dir: Path = Path("data")
    landing: Path = Path("landing")
    lake: Path = Path("lake")
    quarantine: Path = Path("quarantine")
    features: Path = Path("features")
    scores: Path = Path("scores")  # internal: full numbers, never handed out
    outputs: Path = Path("outputs")
    truth: Path = Path("truth")
    reports: Path = Path("reports")
    mlflow: Path = Path("mlflow")
    prefect_home: Path = Path("prefect")
    secrets: Path = Path("secrets")  # the subscriber-key secret: owner-only, never under outputs

    def resolve(self, name: str) -> Path:
        """Absolute path of a named folder: relative ones live under ``data_dir``.

        A relative ``data_dir`` is taken from the project root, not the working directory,
        so the CLI, the flows and a notebook kernel started in ``notebooks/`` agree.
        """
        base = self.data_dir.expanduser()
        base = (base if base.is_absolute() else PROJECT_ROOT / base).resolve()
        if name == "data_dir":
            return base
        p = Path(getattr(self, name)).expanduser()
        return p if p.is_absolute() else base / p


class DirtConfig(_Strict):
    rate: float = Field(0.005, ge=0, le=0.5)
    kinds: list[
        Literal[
            "bad_date",
            "negative_duration",
            "unknown_enum",
            "missing_key",
            "malformed_number",
            "bad_number_type",
        ]
    ] = Field(
        default_factory=lambda: [
            "bad_date",
            "negative_duration",
            "unknown_enum",
            "missing_key",
            "malformed_number",
            "bad_number_type",
        ]
    )
    msisdn_format_rate: float = Field(0.03, ge=0, le=1)
    duplicate_cdr_rate: float = Field(0.004, ge=0, le=0.5)
    delivered_twice: bool = True
    corrected_redelivery: bool = True
    truncated_last_line: bool = True
    gzip: bool = False
    gbk_pipe_complaints: bool = False


class SynthConfig(_Strict):
    subscribers: int = Field(20000, ge=50)
    months: int = Field(12, ge=3, le=120)
    start_month: str = "2025-01"
    seed: int = 42
    target_monthly_churn: float = Field(0.022, gt=0, lt=0.2)
    events_per_subscriber_month: float = Field(22, gt=0)
    cdr_file_granularity: Literal["month", "day"] = "month"
    dirt: DirtConfig = Field(default_factory=DirtConfig)

    @field_validator("start_month")
    @classmethod
    def _month(cls, v: str) -> str:
        if not MONTH_RE.match(v):
            raise ValueError(f"must be a month written YYYY-MM, got {v!r}")
        return v


class SourceConfig(_Strict):
    pattern: str
    encoding: Literal["auto", "utf-8", "gbk", "gb18030"] = "auto"
    delimiter: Literal["auto", ",", "|", "\t", ";"] = "auto"
    aliases: dict[str, str] = Field(default_factory=dict)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class Sources(_Strict):
    billing: SourceConfig
    cdr: SourceConfig
    complaints: SourceConfig


class Numbering(_Strict):
    country_code: str = "86"
    own_mobile_prefixes: list[str]
    other_mobile_prefixes: list[str]
    service_code_max_digits: int = Field(6, ge=3, le=8)

    @model_validator(mode="after")
    def _disjoint(self) -> Numbering:
        both = set(self.own_mobile_prefixes) & set(self.other_mobile_prefixes)
        if both:
            raise ValueError(f"prefixes listed as both own and other: {sorted(both)}")
        return self


class IngestConfig(_Strict):
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)
    batch_bytes: int = Field(16 << 20, ge=1 << 16)
    part_max_rows: int = Field(2_000_000, ge=1000)
    memory_pool: Literal["jemalloc", "mimalloc", "system", "default"] = "jemalloc"
    duckdb_memory_limit: str = "2GB"  # for the key index used to find duplicates; spills beyond
    duckdb_threads: int = Field(2, ge=1)
    schema_version: int = 1


class ChurnDefinition(_Strict):
    horizon_months: int = Field(2, ge=1, le=12)
    gap_months: int = Field(0, ge=0, le=6)
    prepaid_inactivity_months: int = Field(3, ge=1, le=12)


class FeatureRules(_Strict):
    """Business thresholds from docs/domain.md; operators tune them here, not in code."""

    member_min_bill: float = Field(1000.0, gt=0)
    vip_min_bill: float = Field(500.0, gt=0)
    alert_bill_ratio: float = Field(3.0, gt=1)
    high_points: int = Field(5000, ge=0)
    heavy_data_overage: float = Field(30.0, ge=0)
    heavy_voice_overage: float = Field(20.0, ge=0)
    silent_usage_drop: float = Field(-0.3, lt=0)
    night_start_hour: int = Field(22, ge=0, le=23)
    night_end_hour: int = Field(6, ge=0, le=23)

    @model_validator(mode="after")
    def _tiers(self) -> FeatureRules:
        if self.vip_min_bill >= self.member_min_bill:
            raise ValueError("vip_min_bill must be below member_min_bill")
        return self


class FeatureConfig(_Strict):
    snapshot_months: list[str] = Field(default_factory=list)
    rules: FeatureRules = Field(default_factory=FeatureRules)
    min_history_months: int = Field(3, ge=1)
    duckdb_memory_limit: str = "4GB"
    duckdb_threads: int = Field(1, ge=1)

    @field_validator("snapshot_months")
    @classmethod
    def _months(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if not MONTH_RE.match(m)]
        if bad:
            raise ValueError(f"months must be written YYYY-MM, got {bad}")
        return v


class LGBMParams(_Strict):
    n_estimators: int = Field(800, ge=10)
    learning_rate: float = Field(0.03, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    max_depth: int = Field(8, ge=-1)
    min_child_samples: int = Field(40, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    subsample_freq: int = Field(1, ge=0)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    n_jobs: int = Field(2, ge=1)


class EMPConfig(_Strict):
    clv: float = Field(200.0, gt=0)
    incentive: float = Field(10.0, ge=0)
    contact_cost: float = Field(1.0, ge=0)
    alpha: float = Field(6.0, gt=0)
    beta: float = Field(14.0, gt=0)


class ModelConfig(_Strict):
    name: str = "churn-model"
    experiment: str = "churn-early-warning"
    tracking_uri: str = ""  # empty: SQLite under paths.mlflow
    promotion_metric: Literal["roc_auc", "pr_auc", "top_decile_lift", "emp"] = "roc_auc"
    retrain_every_months: int = Field(3, ge=1)
    seed: int = 42
    early_stopping_rounds: int = Field(50, ge=5)
    calibration: Literal["auto", "isotonic", "sigmoid"] = "auto"
    capacity_share: float = Field(0.05, gt=0, le=1)
    min_label_coverage: float = Field(0.99, gt=0, le=1)
    value_horizon_months: int = Field(12, ge=1)
    lgbm: LGBMParams = Field(default_factory=LGBMParams)
    emp: EMPConfig = Field(default_factory=EMPConfig)


class ReasonGroup(_Strict):
    features: list[str]
    en: str
    zh: str


class ReasonConfig(_Strict):
    groups: dict[str, ReasonGroup]

    @model_validator(mode="after")
    def _unique(self) -> ReasonConfig:
        seen: dict[str, str] = {}
        for g, rg in self.groups.items():
            for f in rg.features:
                if f in seen:
                    raise ValueError(f"feature {f} is in reason groups {seen[f]} and {g}")
                seen[f] = g
        return self


class PublishConfig(_Strict):
    show_full_msisdn: bool = False
    capacity_share: float = Field(0.05, gt=0, le=1)
    capacity_per_channel: dict[str, int] = Field(default_factory=dict)
    channel_by_tier: dict[Literal["member", "vip", "ordinary"], str]
    revisit_months: dict[Literal["member", "vip", "ordinary"], int]
    complaint_callback_days: int = Field(3, ge=0)
    control_share: float = Field(0.10, ge=0, lt=1)
    acceptance_rate: float = Field(0.3, gt=0, le=1)
    incentive: float = Field(10.0, ge=0)
    contact_cost: float = Field(1.0, ge=0)
    contact_history: str = ""
    do_not_contact: str = ""
    explain_sample: int = Field(200, ge=10)


class PrivacyConfig(_Strict):
    """Who may read what: folders with full numbers are owner-only; masked lists are shared."""

    owner_only: bool = True
    share_outputs: bool = True


class OrchestrationConfig(_Strict):
    monthly_cron: str = "0 3 3 * *"
    timezone: str = "Asia/Shanghai"
    task_retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(5, ge=0)
    cache_days: int = Field(40, ge=0)
    fail_once: list[Literal["ingest", "features", "train", "score", "publish"]] = Field(
        default_factory=list
    )
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    lock_timeout_seconds: float = Field(0, ge=0)  # 0: a second writer fails at once

    @field_validator("monthly_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"a cron schedule has 5 fields, got {v!r}")
        return v


class Settings(_Strict):
    paths: Paths = Field(default_factory=Paths)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    sources: Sources
    numbering: Numbering
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    churn: ChurnDefinition = Field(default_factory=ChurnDefinition)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    reasons: ReasonConfig
    publish: PublishConfig
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    def tracking_uri(self) -> str:
        if self.model.tracking_uri:
            return self.model.tracking_uri
        return f"sqlite:///{self.path('mlflow') / 'mlflow.db'}"

    def path(self, name: str) -> Path:
        return self.paths.resolve(name)

    def crm_file(self, configured: str, default_name: str) -> Path:
        if configured:
            p = Path(configured).expanduser()
            return p if p.is_absolute() else self.path("data_dir") / p
        return self.path("data_dir") / "crm" / default_name

    def fingerprint(self) -> str:
        """Short stable hash of the effective configuration (for manifests and lineage)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _strip_none(tp: Any) -> Any:
    """``X | None`` as ``X``; other annotations unchanged."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _field_type(parts: list[str]) -> Any:
    """The annotation a key path leads to in :class:`Settings` (dict values included); None if unknown."""
    tp: Any = Settings
    for p in parts:
        tp = _strip_none(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(p)
            if f is None:
                return None
            tp = f.annotation
        elif get_origin(tp) is dict:
            args = get_args(tp)
            tp = args[1] if len(args) == 2 else Any
        else:
            return None
    return tp


def _is_text(tp: Any) -> bool:
    """Fields whose value is the text itself: str, paths, literals of strings."""
    tp = _strip_none(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return all(isinstance(a, str) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return all(_is_text(a) for a in get_args(tp))
    return isinstance(tp, type) and issubclass(tp, (str, PurePath))


def _is_structured(tp: Any) -> bool:
    tp = _strip_none(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    return get_origin(tp) in (list, dict, set, tuple, frozenset)


def _env_value(key: str, parts: list[str], raw: str) -> Any:
    """An environment value typed for its field: environment values are text, the model is not.

    Text fields keep the raw value (``86`` stays ``"86"``, ``007`` stays ``"007"``). Lists,
    dicts and sections are YAML, with scalars kept as text so pydantic coerces each one to
    the declared item type (``[134, 0135]`` into list[str] keeps both as written). Numbers
    and booleans, and keys the model does not know, are YAML scalars.
    """
    if raw == "":
        return ""
    tp = _field_type(parts)
    if tp is not None and _is_text(tp):
        return raw
    try:
        if tp is not None and _is_structured(tp):
            return yaml.load(raw, Loader=yaml.BaseLoader)  # BaseLoader: every scalar stays text
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"environment variable {key} is not valid YAML: {e}") from None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``CHURN__A__B=v`` becomes ``{"a": {"b": v}}``, ``v`` typed for the field ``a.b``."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _env_value(key, parts, raw)
    return tree


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key}: {e['msg']}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Defaults < user YAML < environment < explicit overrides (highest)."""
    data = _read_yaml(DEFAULT_CONFIG)
    if path:
        data = _deep_merge(data, _read_yaml(Path(path)))
    data = _deep_merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None
