"""The uplift path for real: learned from the world's own campaigns, registered in MLflow,
and, once champion, ranking the list by expected incremental value."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from models import registry
from models.score import scores_path


def test_an_uplift_champion_ranks_the_list_by_incremental_value(published):
    from pipelines import steps
    from pipelines.publish.run import decide, with_snapshot

    s, sc, _, _ = published
    s = s.model_copy(deep=True)
    s.uplift.min_control = s.uplift.min_treated = 100  # a 6,000-subscriber world's pilots
    out = steps.train_uplift(s)
    assert "arms" in out, out
    assert out["arms"] and out["metrics"]["qini_arms"] == out["metrics"]["qini_arms"]
    run = mlflow.tracking.MlflowClient(s.tracking_uri()).get_run(out["run_id"])
    assert {"test_qini_arms", "test_qini_risk_arms", "test_auuc"} <= set(run.data.metrics)
    assert run.data.params["baseline_rows"] != "0"  # the risk model read the whole base
    assert "edge over risk" in out["decision"]
    client = registry.connect(s.tracking_uri())
    had = registry.find(s.tracking_uri(), s.uplift.name)
    # an analyst may promote by hand (the gate only advises): the list must follow it
    client.set_registered_model_alias(s.uplift.name, registry.CHAMPION, out["version"])
    try:
        scored = with_snapshot(s, pd.read_parquet(scores_path(s.path("scores"), sc.month)),
                                sc.month)  # fmt: skip
        d, ranking = decide(s, scored, sc.month)
        risk, _ = decide(s, scored, sc.month, use_uplift=False)
    finally:
        if had is None:
            client.delete_registered_model_alias(s.uplift.name, registry.CHAMPION)
    assert ranking["method"] == "uplift" and f"v{out['version']}" in ranking["why"]
    on = d[d["selected"]]
    assert len(on) > 0
    # every contact is expected to help, through the channel whose gain is largest
    assert (on["uplift"] < 0).all()
    assert (on["channel"] == on["uplift_arm"]).all() | on["complaint_callback"].fillna(False).all()
    cols = [c for c in d.columns if c.startswith("uplift_") and c != "uplift_arm"]
    harm = d[(d[cols] > 0).all(axis=1)]
    assert not harm["selected"].any() or harm["complaint_callback"].fillna(False).all()
    # ranked by the gain, not by value at risk: the two lists differ
    assert set(on["msisdn"]) != set(risk.loc[risk["selected"], "msisdn"])
    assert np.all(np.diff(on["priority"].to_numpy()) <= 1e-9)
    assert (on["priority"] == on["expected_profit"]).all()
