"""The floor plan holds: who may import whom, module size, generated files in step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 450


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports hide cycles)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("library", ["features", "models"])
def test_libraries_import_from_pipelines_at_most_its_lake(library):
    wrong = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in _modules(library)
        for m in _imports(p)
        if m.split(".")[0] == "pipelines" and not m.startswith("pipelines.lake")
    }
    assert not wrong, sorted(wrong)


def test_the_lake_is_a_leaf():
    above = ("pipelines", "features", "models")
    wrong = {
        f"{p.relative_to(ROOT)}: {m}"
        for p in _modules("pipelines/lake")
        for m in _imports(p)
        if m.split(".")[0] in above and not m.startswith("pipelines.lake")
    }
    assert not wrong, sorted(wrong)


def test_no_module_is_a_warehouse():
    big = {
        str(p.relative_to(ROOT)): n
        for p in _modules("pipelines", "features", "models", "benchmarks")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, big


def test_the_configuration_reference_is_generated_from_the_settings():
    from pipelines.config import settings_reference

    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert doc == settings_reference(), "run: churn config --reference > docs/configuration.md"


def test_prefect_yaml_is_the_list_of_deployments_that_serve_serves():
    from pipelines.config import load_config
    from pipelines.runtime import prepare_environment

    s = load_config(environ={})
    prepare_environment(s)
    from pipelines import flows

    text = (ROOT / "prefect.yaml").read_text(encoding="utf-8")
    assert text == flows.prefect_yaml(s), "run: churn prefect-yaml > prefect.yaml"
    served = {d.name for d in flows.deployments(s)}
    assert served == {"monthly-refresh", "ingest", "build-features", "train", "score", "publish",
                      "train-uplift", "measure-campaigns", "monitor"}  # fmt: skip
    assert all(f"- name: {n}\n" in text for n in served)
