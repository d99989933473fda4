"""Every feature is declared once: name, family, window, definition, unit.

The build checks that each family produces exactly the columns it declares, so the
catalog a data scientist reads is the table the model sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from features.config import FeatureRules
from features.context import SnapshotContext


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    window: str  # "T" (at month end), "1m", "3m", "6m", "30d", …
    definition: str
    unit: str
    dtype: str = "double"  # double | int | str
    model_input: bool = True
    zero_if_missing: bool = False  # a subscriber with no rows in the family has 0 of it, not null


@dataclass(frozen=True)
class Family:
    """A feature family: its columns and the one query (``msisdn`` + those columns) computing them.

    Every family's query has the same shape, so the build joins them in one loop.
    """

    name: str
    features: list[Feature]
    sql: Callable[[SnapshotContext, FeatureRules], str]

    def __post_init__(self) -> None:
        strays = [f.name for f in self.features if f.family != self.name]
        if strays:
            raise ValueError(f"family {self.name} holds features of another family: {strays}")


def render_markdown(features: list[Feature], title: str = "Feature catalog") -> str:
    lines = [
        f"# {title}",
        "",
        "One row per subscriber active at the end of snapshot month T, computed only from data",
        "dated up to the end of T. A null means *not applicable* (e.g. no previous bill to",
        "compare with, no resolved complaint to time), never *unknown by accident*.",
        "",
    ]
    fams: dict[str, list[Feature]] = {}
    for f in features:
        fams.setdefault(f.family, []).append(f)
    for fam, items in fams.items():
        lines += [
            f"## {fam}",
            "",
            "| feature | window | definition | unit | model input |",
            "|---|---|---|---|---|",
        ]
        for f in items:
            lines.append(
                f"| `{f.name}` | {f.window} | {f.definition} | {f.unit} | {'yes' if f.model_input else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)
