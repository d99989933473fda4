"""One typed configuration for every step.

Loaded from ``configs/default.yaml``, then an optional user YAML, then environment
variables ``CHURN__SECTION__KEY=value``. Every path the system touches derives from
:class:`Paths`, so a deployment moves by changing one key.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from pathlib import Path, PurePath
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from features.config import ChurnDefinition, FeatureConfig
from models.config import (
    Economics,
    ModelConfig,
    MonitorConfig,
    ReasonConfig,
    TimingConfig,
    UpliftConfig,
)
from pipelines.campaigns.config import CampaignConfig
from pipelines.ingest.config import IngestConfig, Sources
from pipelines.lake.config import Numbering
from pipelines.lake.config import Strict as _Strict
from pipelines.lake.errors import UsageError
from pipelines.publish.config import PublishConfig
from pipelines.synth.config import SynthConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
ENV_PREFIX = "CHURN__"


class ConfigError(UsageError):
    """A configuration that cannot be used; the message names the key and the problem."""


class Paths(_Strict):
    """Every folder the system touches; relative ones live under data_dir."""

    data_dir: Path = Field(Path("data"), description="relative: from the project root")
    landing: Path = Field(Path("landing"), description="where the operator drops extracts")
    lake: Path = Field(Path("lake"), description="validated Parquet, one manifest per source")
    quarantine: Path = Field(Path("quarantine"), description="rejected rows with reasons")
    features: Path = Field(Path("features"), description="point-in-time snapshots and catalog")
    scores: Path = Field(Path("scores"), description="internal scores with full numbers")
    outputs: Path = Field(Path("outputs"), description="published lists (masked), for teams")
    truth: Path = Field(Path("truth"), description="what the synthetic operator hides")
    reports: Path = Field(Path("reports"), description="ingest reconciliation reports")
    mlflow: Path = Field(
        Path("mlflow"), description="MLflow store when model.tracking_uri is empty"
    )
    prefect_home: Path = Field(Path("prefect"), description="Prefect's local state")
    campaigns: Path = Field(
        Path("campaigns"), description="the campaign ledger and measured results (full numbers)"
    )
    secrets: Path = Field(
        Path("secrets"), description="the subscriber-key secret: owner-only, never under outputs"
    )

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


class PrivacyConfig(_Strict):
    """Who may read what: folders with full numbers are owner-only; masked lists are shared."""

    owner_only: bool = Field(
        True,
        description="lake, quarantine, features, scores, reports, mlflow, prefect, secrets: 0700/0600",
    )
    share_outputs: bool = Field(
        True, description="outputs/ (masked lists) readable by group and others (0755/0644)"
    )


class OrchestrationConfig(_Strict):
    monthly_cron: str = Field("0 3 3 * *", description="the monthly refresh: 03:00 on the 3rd")
    timezone: str = "Asia/Shanghai"
    task_retries: int = Field(
        2, ge=0, description="retries of a task failing for a transient reason"
    )
    retry_delay_seconds: float = Field(5, ge=0)
    cache_days: int = Field(
        40, ge=0, description="reuse the feature build's result while its inputs are unchanged"
    )
    fail_once: list[Literal["ingest", "features", "train", "score", "publish"]] = Field(
        default_factory=list,
        description="fault drill: tasks named here fail on their first attempt",
    )
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000", description="where people open MLflow (links in Prefect artifacts)"
    )
    lock_timeout_seconds: float = Field(
        0, ge=0, description="how long a second writer of the data folder waits (0: fails at once)"
    )

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
    economics: Economics = Field(default_factory=Economics)
    uplift: UpliftConfig = Field(default_factory=UpliftConfig)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    reasons: ReasonConfig
    publish: PublishConfig
    campaigns: CampaignConfig = Field(default_factory=CampaignConfig)
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


def _type_name(tp: Any) -> str:
    tp = _strip_none(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _default_text(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "*(in configs/default.yaml)*"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return f"`{text}`" if len(text) < 60 else f"`{text[:57]}...`"


def settings_reference() -> str:
    """Every setting with its type, default and meaning, from the models themselves (docs/configuration.md)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `churn config --reference` from the settings models, where every default",
        "is written once; `configs/default.yaml` holds only the operator's tables (sources,",
        "numbering, reason texts, channels). Override any key in a YAML passed with",
        "`churn --config my.yaml …` or as `CHURN__SECTION__KEY=value` (values take the key's type).",
        "",
    ]

    def walk(model: type[BaseModel], prefix: str) -> None:
        rows, subs = [], []
        for name, f in model.model_fields.items():
            ann = _strip_none(f.annotation)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((ann, f"{prefix}{name}."))
                continue
            desc = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_type_name(ann)} | {_default_text(f)} | {desc} |")
        if rows:
            doc = (model.__doc__ or "").strip().splitlines()
            title = prefix.rstrip(".") or "top level"
            lines.extend([f"## `{title}`", ""])
            if doc and not doc[0].startswith(("!!!", "Usage docs")):
                lines.extend([doc[0], ""])
            lines.extend(["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])
        for sub, sub_prefix in subs:
            walk(sub, sub_prefix)

    for name, f in Settings.model_fields.items():
        walk(_strip_none(f.annotation), f"{name}.")
    return "\n".join(lines)
