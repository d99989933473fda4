"""Notebooks run top to bottom on a generated world, show no phone number, and are stored without outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.leaks import known_numbers, numbers_in

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]-*.ipynb"))
PHONE = re.compile(r"(?<![\d.])1[3-9]\d{9}(?!\d)|1\d\d\*{4}\d{4}")


def _texts(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "text" in o:
                out.append(o["text"])
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in o.get("data", {}):
                    out.append(o["data"][mime])
            if o.get("output_type") == "error":
                out.append("\n".join(o.get("traceback", [])))
    return out


def test_there_are_five_notebooks_stored_without_outputs():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, p.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_no_phone_number(path, trained, monkeypatch, tmp_path):
    s, _ = trained
    monkeypatch.setenv("CHURN__PATHS__DATA_DIR", str(s.path("data_dir")))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # a user's kernel: inline charts
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    texts = _texts(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    silent = [i for i, c in enumerate(code) if not c.get("outputs")]
    assert images >= 1, "the notebook drew no chart"
    assert len(silent) <= len(code) // 2, f"code cells {silent} showed nothing"
    leaks = [m.group(0) for t in texts for m in PHONE.finditer(t)]
    assert not leaks, leaks[:5]
    # and no subscriber number in any other spelling (+86, dashes, spaces)
    assert not numbers_in("\n".join(texts).encode(), known_numbers(s))
