"""Uplift meta-learners on simulated randomised campaigns whose true effects are known."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from models.config import UpliftConfig
from models.uplift import UpliftLearner, incremental_value, uplift_learner
from models.uplift_metrics import qini_auc
from models.uplift_risk import RiskScaledUplift
from models.uplift_train import qini_edge

SHARES = {"control": 0.4, "call": 0.2, "email": 0.2, "sms": 0.2}
ARMS = ["call", "email", "sms"]
N = 20_000
FAST = UpliftConfig().lgbm.model_dump() | {"n_jobs": 1}  # the machine is shared


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def simulate(n: int, seed: int, homogeneous: bool = False):
    """Features x0..x5; baseline risk from x2..x4; the effect from x0, x1 (or from the risk).

    Heterogeneous: call and email help where x0 (x1) is high and are sleeping dogs (raise
    churn) where it is low; sms helps only where both are high. Homogeneous: every arm
    keeps a fixed share of would-be leavers, so the effect is proportional to the risk.
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"x{i}" for i in range(6)])
    X.loc[rng.random(n) < 0.05, "x5"] = np.nan  # LightGBM takes missing values as they are
    p0 = _sigmoid(-1.2 + 0.9 * X.x2 + 0.6 * X.x3 - 0.5 * X.x4).to_numpy()
    s0, s1 = _sigmoid(2 * X.x0).to_numpy(), _sigmoid(2 * X.x1).to_numpy()
    if homogeneous:
        tau = {"call": -0.4 * p0, "email": -0.3 * p0, "sms": -0.3 * p0}
    else:
        tau = {"call": 0.05 - 0.2 * s0, "email": 0.04 - 0.18 * s1, "sms": 0.03 - 0.2 * s0 * s1}
    labels = np.array(list(SHARES))
    t = labels[rng.choice(len(labels), n, p=list(SHARES.values()))]
    p, true = p0.copy(), {}
    for arm in ARMS:
        p1 = np.clip(p0 + tau[arm], 0.01, 0.99)
        true[arm] = p1 - p0
        p = np.where(t == arm, p1, p)
    y = (rng.random(n) < p).astype(int)
    return X, t, y, pd.DataFrame(true), p0


def _qini(t, y, arm, score) -> float:
    """Normalised Qini on the arm vs control rows; churn is to go down, so y is negated."""
    m = (t == arm) | (t == "control")
    return qini_auc(y[m], t[m] == arm, np.asarray(score)[m], higher_is_better=False, normalize=True)


@pytest.fixture(scope="module")
def hetero():
    return simulate(N, seed=1), simulate(N, seed=2)


@pytest.fixture(scope="module")
def hetero_fits(hetero):
    (X, t, y, _, _), _ = hetero
    fits = {m: UpliftLearner(method=m, lgbm_params=FAST).fit(X, t, y) for m in ("t", "x", "dr")}
    return fits | {"risk": RiskScaledUplift(lgbm_params=FAST).fit(X, t, y)}


@pytest.mark.parametrize("method", ["risk", "t", "x", "dr"])
def test_each_method_recovers_the_ranking_of_effects(hetero, hetero_fits, method):
    _, (Xt, tt, yt, truet, p0t) = hetero
    eff = hetero_fits[method].predict_effect(Xt)
    assert list(eff.columns) == ARMS and eff.index.equals(Xt.index)
    rho = {a: spearmanr(eff[a], truet[a]).statistic for a in ARMS}
    q = {a: _qini(tt, yt, a, -eff[a]) for a in ARMS}
    q_risk = {a: _qini(tt, yt, a, p0t) for a in ARMS}  # the churn model's ranking, at its best
    print(method, {a: round(v, 2) for a, v in rho.items()}, {a: round(v, 3) for a, v in q.items()})
    assert min(rho.values()) > 0.3 and np.mean(list(rho.values())) > 0.5, rho
    assert all(q[a] > q_risk[a] + 0.03 for a in ARMS), (q, q_risk)
    # sleeping dogs: where the truth says a call harms, the learned effect is mostly harmful too
    # (the risk-based learner's effect is linear in the modifiers' ranks: a blurrier border)
    dogs = truet["call"] > 0.03
    assert (eff["call"][dogs] > 0).mean() > (0.65 if method == "risk" else 0.7)


def test_risk_based_is_the_default_and_not_worse_than_the_meta_learners(hetero, hetero_fits):
    _, (Xt, _, _, truet, _) = hetero
    assert UpliftConfig().method == "risk"
    assert isinstance(uplift_learner(UpliftConfig()), RiskScaledUplift)
    assert UpliftLearner().method == "x"  # the best of the meta-learners when asked for one

    def rho(m):
        eff = hetero_fits[m].predict_effect(Xt)
        return np.mean([spearmanr(eff[a], truet[a]).statistic for a in ARMS])

    assert rho("x") >= rho("t") - 0.02
    assert rho("risk") >= rho("x") - 0.02


@pytest.mark.parametrize("method", ["risk", "x"])
def test_with_a_homogeneous_effect_the_learned_ranking_is_as_good_as_the_risk(method):
    X, t, y, _, _ = simulate(N, seed=3, homogeneous=True)
    Xt, tt, yt, truet, p0t = simulate(N, seed=4, homogeneous=True)
    learner = uplift_learner(UpliftConfig(), method=method, lgbm_params=FAST)
    eff = learner.fit(X, t, y, propensity=SHARES).predict_effect(Xt)
    for arm in ARMS:
        # expected churners kept by contacting the top 30%: learned ranking vs risk ranking
        def kept(score, arm=arm):
            return -truet[arm].to_numpy()[np.argsort(-np.asarray(score))[: 3 * N // 10]].sum()

        assert kept(-eff[arm]) >= 0.8 * kept(p0t), arm
        # paired bootstrap sd of this Qini difference is about 0.04 on these rows
        assert _qini(tt, yt, arm, -eff[arm]) > _qini(tt, yt, arm, p0t) - 0.12, arm


def test_known_shares_and_estimated_propensities_agree(hetero, hetero_fits):
    (X, t, y, _, _), (Xt, *_) = hetero
    given = UpliftLearner(method="dr", lgbm_params=FAST).fit(X, t, y, propensity=SHARES)
    a, b = given.predict_effect(Xt), hetero_fits["dr"].predict_effect(Xt)
    assert all(spearmanr(a[c], b[c]).statistic > 0.8 for c in ARMS)


def test_incremental_value_never_picks_a_harmful_arm(hetero, hetero_fits):
    _, (Xt, *_) = hetero
    eff = hetero_fits["x"].predict_effect(Xt)
    value = pd.Series(np.random.default_rng(0).uniform(0, 600, len(Xt)), index=Xt.index)
    cost = {"call": 3.0, "email": 0.1, "sms": 0.2}
    out = incremental_value(eff, value, cost)
    chosen = out.arm.notna()
    assert 0 < chosen.mean() < 1
    picked = np.array([eff.at[i, a] for i, a in out.arm[chosen].items()])
    assert (picked < 0).all() and np.allclose(picked, out.effect[chosen])
    assert (out.gain[chosen] > 0).all() and (out.gain[~chosen] == 0).all()
    gains = -eff.mul(value, axis=0) - pd.Series(cost)
    assert np.allclose(out.gain[chosen], gains[chosen].where(eff[chosen] < 0).max(axis=1))


def test_incremental_value_by_hand():
    eff = pd.DataFrame({"call": [-0.2, 0.1, -0.01, np.nan], "sms": [-0.1, -0.05, 0.0, -0.3]})
    value = pd.Series([100.0, 100.0, 100.0, 10.0])
    out = incremental_value(eff, value, {"call": 5.0, "sms": 1.0})
    # row 0: call 20 - 5 = 15 beats sms 10 - 1 = 9; row 1: call harms, sms 5 - 1 = 4;
    # row 2: call 1 - 5 < 0 and sms is useless: nobody; row 3: NaN call, sms 3 - 1 = 2
    assert out.arm.tolist() == ["call", "sms", None, "sms"]
    assert out.gain.tolist() == pytest.approx([15.0, 4.0, 0.0, 2.0])
    loose = incremental_value(eff, value, {"call": 5.0, "sms": 1.0}, require_profit=False)
    assert loose.arm.tolist() == ["call", "sms", "call", "sms"]  # still never sms's 0 effect
    with pytest.raises(KeyError, match="sms"):
        incremental_value(eff, value, {"call": 5.0})


def test_an_arm_with_too_few_rows_is_dropped_with_a_warning(caplog):
    X, t, y, _, _ = simulate(3000, seed=5)
    t = t.copy()
    t[np.flatnonzero(t == "sms")[150:]] = "control"  # 150 sms rows left
    t[np.flatnonzero(t == "control")[:40]] = "letter"
    with caplog.at_level(logging.WARNING, logger="models.uplift"):
        m = UpliftLearner(method="t", lgbm_params=FAST).fit(X, t, y)
    assert m.arms_ == ["call", "email"] and m.dropped_arms_ == ["letter", "sms"]
    assert "'sms' dropped: 150 rows" in caplog.text and "'letter' dropped" in caplog.text
    assert list(m.predict_effect(X.head()).columns) == ["call", "email"]
    with pytest.raises(ValueError, match="control"):
        UpliftLearner(min_control=10**6).fit(X, t, y)


def test_deterministic_for_a_seed_and_follows_scikit_learn_conventions():
    X, t, y, _, _ = simulate(3000, seed=6)
    cfg = UpliftConfig(method="dr", min_treated=100, lgbm=UpliftConfig().lgbm.model_copy())
    a = uplift_learner(cfg, lgbm_params=FAST).fit(X, t, y).predict_effect(X)
    b = uplift_learner(cfg, lgbm_params=FAST).fit(X, t, y).predict_effect(X)
    pd.testing.assert_frame_equal(a, b)
    c = uplift_learner(cfg, lgbm_params=FAST, seed=7).fit(X, t, y).predict_effect(X)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    est = UpliftLearner().set_params(method="t", n_folds=3)
    assert est.get_params()["method"] == "t" and est.get_params()["n_folds"] == 3
    fitted = est.set_params(lgbm_params=FAST).fit(X, t, y)
    assert list(fitted.feature_names_in_) == list(X.columns)
    shuffled = X[X.columns[::-1]]  # columns are taken by name, not position
    pd.testing.assert_frame_equal(fitted.predict_effect(shuffled), fitted.predict_effect(X))
    with pytest.raises(ValueError, match="method"):
        UpliftLearner(method="s").fit(X, t, y)


def test_the_risk_based_learner_uses_uncontacted_rows_for_its_risk_and_finds_the_effect_scale():
    """A small pilot beside a large uncontacted base: the risk model reads the base, the
    arm terms the pilot; the effect grows with risk as it does in the truth."""
    X, t, y, _, _ = simulate(4000, seed=5, homogeneous=True)
    Xb, _, _, _, p0b = simulate(40_000, seed=6, homogeneous=True)
    yb = (np.random.default_rng(6).random(len(p0b)) < p0b).astype(int)
    Xt, _, _, truet, p0t = simulate(N, seed=7, homogeneous=True)
    alone = RiskScaledUplift(lgbm_params=FAST).fit(X, t, y)
    based = RiskScaledUplift(lgbm_params=FAST).fit(X, t, y, baseline_X=Xb, baseline_y=yb)
    assert based.baseline_rows_ == 40_000 and alone.baseline_rows_ == 0
    for arm in ARMS:
        e = based.predict_effect(Xt)[arm]
        assert spearmanr(e, truet[arm]).statistic > 0.9
        assert spearmanr(e, truet[arm]).statistic >= spearmanr(
            alone.predict_effect(Xt)[arm], truet[arm]).statistic - 0.01  # fmt: skip
        assert (e < 0).mean() > 0.95  # every arm helps here, and it says so


def test_the_gate_edge_is_wide_on_noise_and_clear_on_a_real_effect():
    """Qini(model) - Qini(risk), bootstrapped: a ranking by noise does not clear 0."""
    Xt, tt, yt, truet, p0t = simulate(6000, seed=8)
    noise = pd.DataFrame(np.random.default_rng(0).normal(size=(len(tt), 3)), columns=ARMS)
    lo, hi = qini_edge(yt, tt, noise, p0t, "control", resamples=60)
    assert lo < 0 < hi
    lo, hi = qini_edge(yt, tt, truet, p0t, "control", resamples=60)
    assert 0 < lo < hi
