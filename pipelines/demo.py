"""What ``churn demo`` tells its user at the end: where everything is, and what it found."""

from __future__ import annotations

from pipelines.config import Settings


def _uplift_line(up: dict) -> str:
    if "skipped" in up:
        return up["skipped"]
    m = up.get("metrics", {})
    return f"v{up['version']} ({up['alias']}): {up['decision']}; AUUC {m.get('auuc', float('nan')):.3f}"


def _campaigns_line(c: dict) -> str:
    p = c.get("power") or {}
    note = (
        f"; the latest list's expected effect shows after ~{p['months_to_detect']:.0f} month(s)"
        if p and p.get("months_to_detect") not in (None, float("inf"))
        else ""
    )
    return f"{c['observed']} observed, {c['waiting']} waiting (churn campaigns; report.html){note}"


def _monitor_line(m: dict) -> str:
    if "headline" not in m:
        return m.get("skipped", "not run")
    return f"{m['headline']} ({m['path']})"


def summary(s: Settings, out: dict) -> str:
    """The closing lines of the demo, from the monthly refresh's result ``out``."""
    pub = out["publish"]
    root = s.path("outputs") / "retention" / pub["month"]
    return "\n".join(
        [
            "",
            "Demo finished. Where things are:",
            f"  extracts (landing)      {s.path('landing')}",
            f"  Parquet lake            {s.path('lake')}",
            f"  quarantine              {s.path('quarantine')}",
            f"  ingest report           {s.path('reports') / 'ingest' / 'ingest_latest.json'}",
            f"  feature snapshots       {s.path('features')}  (catalog: catalog.md)",
            f"  MLflow store            {s.tracking_uri()}",
            f"  retention lists         {root}  ({pub['counts']['selected']} subscribers, report.html)",
            f"  model                   {out['train']}",
            f"  monitoring              {_monitor_line(out.get('monitor') or {})}",
            f"  uplift model            {_uplift_line(out['uplift'])}",
            f"  ranking                 {pub['ranking']['method']}: {pub['ranking']['why']}",
            f"  campaign ledger         {s.path('campaigns') / 'ledger'}",
            f"  measured campaigns      {_campaigns_line(out['campaigns'])}",
            "",
            "Next: churn simulate --months 3 runs the operator with the system in the loop.",
            f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri()} --host 127.0.0.1",
        ]
    )
