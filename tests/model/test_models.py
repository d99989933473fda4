"""Models: out-of-time quality against the truth, behaviour, MLflow round trip, promotion gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from features.build import model_features
from features.store import read_snapshots
from models import registry
from models.config import ModelConfig
from models.estimator import ChurnModel, OperatorRules
from models.evaluate import expected_calibration_error, lift_at
from pipelines import steps
from pipelines.lake.errors import ChurnError
from pipelines.synth.deliver import load_truth
from tests.worlds import load_model


@pytest.fixture(scope="module")
def test_month(trained):
    s, res = trained
    df = read_snapshots(s.path("features"), [res.test_period])
    model = load_model(s, res.model_uri)
    return df[df.label_churn.notna()].reset_index(drop=True), model


def test_evaluation_helpers_on_hand_made_scores():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert lift_at(y, p, 0.1) == pytest.approx(1 / 0.2)


def test_ece_is_the_size_weighted_gap_per_equal_frequency_bin():
    # three bins of 4, 3 and 3 rows (given out of order: the ECE sorts by score)
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9])
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 1])
    by_hand = (4 * abs(1 / 4 - 0.1) + 3 * abs(3 / 3 - 0.5) + 3 * abs(1 / 3 - 0.9)) / 10  # 0.38
    shuffle = np.random.default_rng(0).permutation(len(p))
    assert expected_calibration_error(y[shuffle], p[shuffle], bins=3) == pytest.approx(by_hand)
    # calibrated: a quarter of the 0.25 bin and three quarters of the 0.75 bin churn
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.0, abs=1e-12)


def test_out_of_time_quality_against_truth_and_baselines(trained, test_month):
    s, res = trained
    df, _ = test_month
    truth = load_truth(s.path("truth"))["hazard"]
    t = df.merge(truth[truth.month == res.test_period], on="msisdn")
    best = roc_auc_score(t.label_churn, t.hazard + t.leaving)  # the true latent risk
    m = res.metrics
    assert m["roc_auc"] >= 0.9 * best, (m["roc_auc"], best)
    for name in ("logistic", "rules"):
        assert m["roc_auc"] > res.baselines[name]["roc_auc"], name
        # the top decile is ~400 subscribers here: a lift within 3% of a baseline's is a tie
        assert m["top_decile_lift"] > 0.97 * res.baselines[name]["top_decile_lift"], name
    assert m["ece"] <= 0.03
    assert res.test_period == "2025-07"  # latest fully labelled month of an 11-month world


def test_more_complaints_or_dropped_calls_never_lower_risk_on_average(test_month):
    df, model = test_month
    X = df[model_features()]
    base = model.predict_proba(X)[:, 1]
    for col, bump in (
        ("open_complaints", 2),
        ("dropped_call_rate_3m", 0.08),
        ("dropped_call_rate_1m", 0.08),
    ):
        more = X.assign(**{col: X[col].fillna(0) + bump})
        assert model.predict_proba(more)[:, 1].mean() >= base.mean(), col


def test_shuffling_a_planted_driver_hurts_test_auc(test_month):
    df, model = test_month
    X = df[model_features()]
    y = df.label_churn.astype(int)
    auc = roc_auc_score(y, model.predict_proba(X)[:, 1])
    rng = np.random.default_rng(0)
    drops = {}
    for col in (
        "calls_change_vs_prev3m",
        "tenure_months",
    ):  # fading usage and short tenure are planted
        shuffled = X.assign(**{col: rng.permutation(X[col].to_numpy())})
        drops[col] = auc - roc_auc_score(y, model.predict_proba(shuffled)[:, 1])
    assert drops["calls_change_vs_prev3m"] > 0.01, drops
    assert all(d > 0 for d in drops.values()), drops


def test_champion_loads_in_a_fresh_process_and_scores_identically(trained, test_month, tmp_path):
    s, res = trained
    df, model = test_month
    X = df[model_features()].astype(float)
    X.to_parquet(tmp_path / "x.parquet")
    code = f"""
import mlflow, pandas as pd, numpy as np
mlflow.set_tracking_uri({s.tracking_uri()!r})
m = mlflow.pyfunc.load_model("models:/{s.model.name}@champion")
p = np.asarray(m.predict(pd.read_parquet({str(tmp_path / "x.parquet")!r})))
np.save({str(tmp_path / "p.npy")!r}, p)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    fresh = np.load(tmp_path / "p.npy")
    assert fresh.shape == (len(X), 2)
    np.testing.assert_array_equal(fresh[:, 1], model.predict_proba(X)[:, 1])


def test_a_worse_challenger_does_not_replace_the_champion(trained):
    s, res = trained
    uri = s.tracking_uri()
    before = registry.champion(uri, s.model.name).version
    worse = steps.train(
        s, lgbm_overrides={"n_estimators": 3, "num_leaves": 2, "learning_rate": 0.01}
    )
    assert worse.alias == registry.CHALLENGER and "does not beat" in worse.decision
    assert registry.champion(uri, s.model.name).version == before
    assert registry.find(uri, s.model.name, registry.CHALLENGER).version == worse.version
    run = MlflowClient(uri).get_run(worse.run_id)
    assert run.data.tags["promotion"] == "challenger" and run.data.metrics["promoted"] == 0.0


def test_runs_log_metrics_plots_lineage_and_no_phone_numbers(trained):
    s, res = trained
    client = MlflowClient(s.tracking_uri())
    run = client.get_run(res.run_id)
    for k in ("test_roc_auc", "test_pr_auc", "test_lift_1pct", "test_top_decile_lift", "test_brier", "test_ece",
              "test_emp", "test_emp_contact_fraction", "test_emp_own_value", "test_precision_at_capacity",
              "baseline_logistic_roc_auc", "baseline_rules_roc_auc"):  # fmt: skip
        assert k in run.data.metrics, k
    names = {a.path for a in client.list_artifacts(res.run_id, "evaluation")}
    assert {
        "evaluation/roc.png",
        "evaluation/calibration.png",
        "evaluation/gains_lift.png",
        "evaluation/lineage.json",
    } <= names
    lineage_path = mlflow.artifacts.download_artifacts(
        run_id=res.run_id, artifact_path="evaluation/lineage.json"
    )
    lineage = json.loads(Path(lineage_path).read_text())
    assert lineage["test_period"] == res.test_period and lineage["feature_files_fingerprint"]
    # no subscriber number anywhere in the tracking store or its artifacts
    numbers = set(read_snapshots(s.path("features"), [res.test_period]).msisdn.head(300))
    blob = b"".join(p.read_bytes() for p in s.path("mlflow").rglob("*") if p.is_file())
    assert not [n for n in numbers if n.encode() in blob]


def test_operator_rules_score_points():
    X = pd.DataFrame({"alert_bill": [1, 0, 0], "open_complaints": [1, 0, 0], "tenure_months": [3, 100, 3],
                      "balance": [5.0, 100.0, 100.0], "arrears": [0.0, 0.0, 0.0], "dropped_call_rate_3m": [0.0, 0.0, 0.0]})  # fmt: skip
    r = OperatorRules().fit(X, [1, 0, 0])
    p = r.predict_proba(X)[:, 1]
    assert p[0] > p[2] >= p[1]


def test_bring_your_own_table(tmp_path):
    from tests.worlds import make_settings

    s = make_settings(tmp_path)
    s.model.name = "byo-model"
    rng = np.random.default_rng(1)
    n = 6000
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-3 + 1.5 * x1)))).astype(int)
    t = pd.DataFrame({"cust": [f"c{i}" for i in range(n)], "period": rng.choice(["2024Q1", "2024Q2", "2024Q3", "2024Q4"], n),
                      "x1": x1, "x2": x2, "churned": y})  # fmt: skip
    path = tmp_path / "t.parquet"
    t.to_parquet(path)
    res = steps.train_table(s, path, id_col="cust", label_col="churned", time_col="period")
    assert res.test_period == "2024Q4" and res.alias == "champion"
    assert res.feature_columns == ["x1", "x2"] and res.metrics["roc_auc"] > 0.7


def test_a_table_with_text_categoricals_and_a_yes_no_label_uses_every_column(tmp_path):
    """As a public churn table comes: it trains on all its columns, and as well as a direct
    LightGBM given the same columns as categoricals; the text columns are what matter."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    from models.tables import prepare_table
    from models.train import time_split
    from tests.tables import telco_like
    from tests.worlds import make_settings

    s = make_settings(tmp_path)
    s.model.name = "byo-telco"
    t = telco_like(8000, seed=4)
    path = tmp_path / "telco.csv"
    t.to_csv(path, index=False)
    res = steps.train_table(s, path, id_col="customerID", label_col="Churn")
    assert set(res.feature_columns) == set(t.columns) - {"customerID", "Churn", "Notes"}
    run = mlflow.tracking.MlflowClient(s.tracking_uri()).get_run(res.run_id)
    assert run.data.params["categorical"] == "Contract,InternetService,Partner,PaymentMethod,gender"
    # the same split, a LightGBM given the same columns as pandas categoricals
    prep = prepare_table(pd.read_csv(path), id_col="customerID", label_col="Churn")
    sp = time_split(prep.frame, None, "Churn", 0.99, s.model.seed)
    cats = {c: pd.CategoricalDtype(range(len(v))) for c, v in prep.levels.items()}

    def direct(cols):
        X = {k: d[cols].astype({c: cats[c] for c in cols if c in cats}) for k, d in
             (("tr", sp.train), ("va", sp.valid), ("te", sp.test))}  # fmt: skip
        m = lgb.LGBMClassifier(n_estimators=2000, learning_rate=0.03, verbose=-1, random_state=0)
        m.fit(X["tr"], sp.train["Churn"], eval_set=[(X["va"], sp.valid["Churn"])],
              callbacks=[lgb.early_stopping(50, verbose=False)])  # fmt: skip
        return roc_auc_score(sp.test["Churn"], m.predict_proba(X["te"])[:, 1])

    ours, theirs = res.metrics["roc_auc"], direct(prep.features)
    numeric_only = direct([c for c in prep.features if c not in prep.categorical])
    assert ours >= theirs - 0.01, (ours, theirs)
    assert ours > numeric_only + 0.03, (ours, numeric_only)  # the categoricals carry it
    assert res.baselines["logistic"]["roc_auc"] > numeric_only  # one-hot in the baseline too


def test_with_the_true_prevalence_an_oversampled_table_scores_calibrated(tmp_path, caplog):
    """Training periods sampled at 50% churners, the period to score at its natural 2%."""
    from tests.worlds import make_settings

    rng = np.random.default_rng(3)

    def period(name: str, n: int, balanced: bool) -> pd.DataFrame:
        x = rng.normal(size=(n, 3))
        y = rng.random(n) < 1 / (1 + np.exp(-(-4.6 + 1.2 * x[:, 0] - 0.8 * x[:, 1])))
        keep = np.flatnonzero(y)
        if balanced:
            keep = np.r_[keep, rng.choice(np.flatnonzero(~y), keep.size, replace=False)]
        else:
            keep = np.arange(n)
        return pd.DataFrame({"period": name, "x0": x[keep, 0], "x1": x[keep, 1], "x2": x[keep, 2],
                             "churned": np.where(y[keep], "Yes", "No")})  # fmt: skip

    t = pd.concat([period("2024Q1", 120_000, True), period("2024Q2", 120_000, True),
                   period("2024Q3", 120_000, True), period("2024Q4", 30_000, False)])  # fmt: skip
    t.insert(0, "cust", [f"c{i}" for i in range(len(t))])
    path = tmp_path / "oversampled.parquet"
    t.to_parquet(path)
    natural = (t[t.period == "2024Q4"].churned == "Yes").mean()
    out = {}
    for given in (None, float(round(natural, 4))):
        s = make_settings(tmp_path / str(given))
        s.model.name = "prior-shift"
        with caplog.at_level("WARNING", logger="models.train"):
            caplog.clear()
            res = steps.train_table(s, path, id_col="cust", label_col="churned",
                                    time_col="period", prevalence=given)  # fmt: skip
        out[given] = (res.metrics["ece"], "give the true rate with --prevalence" in caplog.text)
    print(out)
    (ece_raw, warned_raw), (ece_given, warned_given) = out.values()
    assert ece_raw > 0.2 and warned_raw, out  # off by an order of magnitude, and it says so
    assert ece_given < 0.03 and not warned_given, out


def test_a_model_without_champion_says_train_first_and_is_due_for_training(trained):
    s, _ = trained
    with pytest.raises(registry.NoChampion) as e:
        registry.champion(s.tracking_uri(), "no-such-model")
    assert isinstance(e.value, ChurnError)  # the CLI prints it as one line, without a traceback
    assert str(e.value) == (
        "no champion registered for model 'no-such-model': train first (churn train)"
    )
    unknown = ModelConfig(name="no-such-model")
    due = registry.retrain_due(s.tracking_uri(), unknown, s.path("features"))
    assert due == (True, "no champion yet")


def test_churn_model_requires_out_of_time_validation():
    with pytest.raises(ValueError, match="validation"):
        ChurnModel().fit(pd.DataFrame({"a": [1.0, 2.0]}), [0, 1])
