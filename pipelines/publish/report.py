"""The month's HTML report: the list in numbers, and how good the model that ranked it is.

The model's quality and charts come from its MLflow run, opened on the project's store
(the tracking URI is passed in, so no stray ``./mlflow.db`` appears where it is run).
"""

from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from jinja2 import Template

from models import registry

log = logging.getLogger(__name__)

CHARTS = ("evaluation/gains_lift.png", "evaluation/calibration.png")

REPORT = Template(
    """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Retention list {{ month }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#1F4E78;color:#fff}
img{max-width:520px;margin:0 1em 1em 0}</style></head><body>
<h1>Retention list {{ month }}</h1>
<p>Model <b>{{ model }}</b> v{{ version }} (MLflow run <code>{{ run_id }}</code>). {{ selected }} subscribers selected out of
{{ scored }} scored; {{ control }} held out as control group; {{ callbacks }} complaint callbacks due.
Expected value at risk on the list: {{ "{:,.0f}".format(var) }} CNY; expected retention profit: {{ "{:,.0f}".format(profit) }} CNY.</p>
<h2>How good is the model (out-of-time test {{ test_period }})</h2>
<p>AUC {{ "%.3f"|format(metrics.roc_auc) }}, top-decile lift {{ "%.2f"|format(metrics.top_decile_lift) }},
calibration error {{ "%.4f"|format(metrics.ece) }}.</p>
{% for img in images %}<img src="data:image/png;base64,{{ img }}">{% endfor %}
<h2>Top drivers (mean |SHAP|)</h2>{{ drivers }}
<h2>List size by tier and channel</h2>{{ by_tier }}{{ by_channel }}
<h2>Main reasons on the list</h2>{{ by_reason }}
<h2>Change against last month</h2>{{ diff }}
</body></html>"""
)


def render(
    tracking_uri: str,
    month: str,
    lst: pd.DataFrame,
    diff: pd.DataFrame,
    scored: pd.DataFrame,
    manifest: dict,
) -> str:
    """The report of a published month; a chart or the drivers missing in MLflow are left out."""
    run_id = manifest["run_id"]
    run = registry.connect(tracking_uri).get_run(run_id)
    metrics = {
        k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")
    }
    images = []
    with tempfile.TemporaryDirectory() as d:
        for name in CHARTS:
            try:
                p = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=d, tracking_uri=tracking_uri
                )
                images.append(base64.b64encode(Path(p).read_bytes()).decode())
            except Exception as e:  # a report without a chart is still a report
                log.warning("chart %s not available: %s", name, e)
        try:
            p = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=f"explanations/{month}/shap_importance.csv",
                dst_path=d,
                tracking_uri=tracking_uri,
            )
            drivers = pd.read_csv(p).head(12).to_html(index=False, float_format="%.4f")
        except Exception:
            drivers = "<p>not available</p>"
    reasons = pd.concat([lst[f"reason_{k}"] for k in (1, 2, 3)]).dropna()
    by_reason = reasons.value_counts().rename("subscribers (any of top 3)").to_frame().to_html()
    return REPORT.render(
        month=month, model=manifest["model"], version=manifest["model_version"], run_id=run_id,
        selected=len(lst), scored=len(scored), control=int(lst.control_group.sum()),
        callbacks=int(lst.complaint_callback.sum()), var=float(lst.value_at_risk.sum()),
        profit=float(lst.expected_profit.sum()), test_period=run.data.params.get("test_period", ""),
        metrics=metrics, images=images, drivers=drivers,
        by_tier=lst.value_tier.value_counts().to_frame("subscribers").to_html(),
        by_channel=lst.channel.value_counts().to_frame("subscribers").to_html(),
        by_reason=by_reason, diff=diff.groupby(["change", "why"]).size().rename("subscribers").to_frame().to_html(),
    )  # fmt: skip
