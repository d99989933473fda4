"""Tuning: trials are child runs of one tuning run, trial 0 is the default fit, the search
never sees the test month, and the best parameters are trained, registered and gated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from models import registry
from models.estimator import ChurnModel
from models.tables import prepare_table
from models.train import time_split
from models.tune import search
from pipelines import steps
from tests.worlds import make_settings

TRIALS = 4
PERIODS = ["2024Q1", "2024Q2", "2024Q3", "2024Q4"]  # train, train, validation, test


def _table(seed: int = 5, n: int = 4000) -> pd.DataFrame:
    """Churn from an interaction and a bend, where the parameters matter a little."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    z = -2.2 + 1.1 * X[:, 0] + np.sin(2 * X[:, 1]) + 0.8 * X[:, 2] * X[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    t = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    return t.assign(cust=[f"c{i}" for i in range(n)], period=rng.choice(PERIODS, n), churned=y)


def _shuffled_test(t: pd.DataFrame) -> pd.DataFrame:
    """The test month's labels permuted: a search that looked at them would be steered."""
    t = t.copy()
    test = t.period == PERIODS[-1]
    t.loc[test, "churned"] = np.random.default_rng(0).permutation(t.loc[test, "churned"].values)
    return t


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("tuning"))
    s.model.name = "tuned-model"
    path = s.path("data_dir") / "t.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    _shuffled_test(_table()).to_csv(path, index=False)
    res = steps.train_table(s, path, id_col="cust", label_col="churned", time_col="period",
                            tune=TRIALS)  # fmt: skip
    client = MlflowClient(s.tracking_uri())
    parent_id = client.get_run(res.run_id).data.tags["tuning_run_id"]
    exp = client.get_experiment_by_name(s.model.experiment).experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    children = sorted(children, key=lambda r: int(r.data.params["trial"]))
    return s, res, client, client.get_run(parent_id), children


def _split(t: pd.DataFrame, seed: int):
    prep = prepare_table(t, id_col="cust", label_col="churned", time_col="period")
    return prep, time_split(prep.frame, "period", "churned", 0.99, seed)


def test_each_trial_is_a_child_run_of_the_tuning_run_scored_on_the_validation_month(tuned):
    s, res, client, parent, children = tuned
    assert parent.info.run_name == f"tune-{PERIODS[-1]}"
    assert [r.info.run_name for r in children] == [f"trial-{i}" for i in range(TRIALS)]
    for r in children:
        assert r.data.params["objective_period"] == PERIODS[2]  # validation, never the test
        assert 0.5 < r.data.metrics["valid_roc_auc"] <= 1
        assert r.data.metrics["best_iteration"] >= 1
    p = parent.data
    assert p.params["n_trials"] == str(TRIALS) and p.params["objective_period"] == PERIODS[2]
    values = [r.data.metrics["valid_roc_auc"] for r in children]
    assert p.metrics["best_valid_roc_auc"] == max(values)
    assert p.metrics["default_valid_roc_auc"] == values[0] <= max(values)
    trials = client.download_artifacts(parent.info.run_id, "tuning/trials.csv")
    assert pd.read_csv(trials)["value"].tolist() == pytest.approx(values, abs=1e-12)


def test_trial_0_is_a_plain_default_fit(tuned):
    s, _, _, _, children = tuned
    prep, sp = _split(_shuffled_test(_table()), s.model.seed)
    m = ChurnModel(s.model.lgbm.model_dump(), seed=s.model.seed,
                   early_stopping_rounds=s.model.early_stopping_rounds,
                   categorical=prep.categorical or None)  # fmt: skip
    m.fit(sp.train[prep.features], sp.train.churned, sp.valid[prep.features], sp.valid.churned)
    auc = roc_auc_score(sp.valid.churned, m.raw_margin(sp.valid[prep.features]))
    assert children[0].data.metrics["valid_roc_auc"] == pytest.approx(auc, abs=1e-9)
    defaults = {f"lgbm_{k}": str(v) for k, v in s.model.lgbm.model_dump().items()}
    assert {k: v for k, v in children[0].data.params.items() if k in defaults} == defaults


def test_the_best_parameters_are_refitted_registered_and_gated(tuned):
    s, res, client, parent, children = tuned
    best = max(children, key=lambda r: r.data.metrics["valid_roc_auc"])
    assert parent.data.metrics["best_trial"] == int(best.data.params["trial"])
    assert res.alias in (registry.CHAMPION, registry.CHALLENGER) and res.decision
    version = client.get_model_version_by_alias(s.model.name, res.alias)
    assert str(version.version) == res.version and version.run_id == res.run_id
    run = client.get_run(res.run_id).data
    lgbm = {k: v for k, v in run.params.items() if k.startswith("lgbm_")}
    assert lgbm == {k: v for k, v in best.data.params.items() if k.startswith("lgbm_")}
    assert run.tags["tuning_run_id"] == parent.info.run_id and "mlflow.parentRunId" not in run.tags
    assert parent.data.tags["refit_run_id"] == res.run_id
    assert parent.data.tags["model_version"] == res.version
    assert res.tuning.startswith(f"tuned {TRIALS} trials on {PERIODS[2]}")
    assert run.params["test_period"] == PERIODS[-1]  # the gate's month, as without tuning


def test_the_test_month_does_not_steer_the_search(tuned):
    """The same search with the test month's true labels: every trial scores the same."""
    s, _, _, _, children = tuned
    prep, sp = _split(_table(), s.model.seed)
    study = search(sp, prep.features, "churned", s.model, trials=TRIALS,
                   base=s.model.lgbm.model_dump(), categorical_cols=prep.categorical)  # fmt: skip
    logged = [r.data.metrics["valid_roc_auc"] for r in children]
    assert [t.value for t in study.trials] == pytest.approx(logged, abs=1e-12)


def test_no_phone_number_or_id_reaches_the_tuning_runs(tuned):
    _, _, _, parent, children = tuned
    for r in [parent, *children]:
        text = " ".join(f"{k}={v}" for k, v in {**r.data.params, **r.data.tags}.items())
        assert "msisdn" not in text and "cust" not in text
