"""The tuning search space: trial 0 is the configured parameters, every trial stays in range."""

from __future__ import annotations

import warnings

import optuna
import pytest

from models.config import LGBMParams, ModelConfig
from models.tune import DEPTH, SPACE, default_point, objective_metric, suggest, trainer
from pipelines.lake.errors import UsageError


def _asked(base: dict, n: int = 1) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
    study.enqueue_trial(default_point(base))
    out = []
    for i in range(n):
        trial = study.ask()
        out.append(suggest(trial, base))
        study.tell(trial, float(i % 3))
    return out


@pytest.mark.parametrize(
    "over",
    [{}, {"max_depth": -1}, {"learning_rate": 0.5, "num_leaves": 200, "max_depth": 20},
     {"min_child_samples": 3, "reg_lambda": 100.0}],
)  # fmt: skip
def test_trial_0_is_the_configured_parameters_even_outside_the_usual_ranges(over):
    base = LGBMParams(**over).model_dump()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an enqueued value out of its range warns in Optuna
        (first,) = _asked(base)
    assert first == {k: base[k] for k in first}
    assert set(first) == {*SPACE, "max_depth"}


def test_later_trials_stay_in_the_search_space():
    for p in _asked(LGBMParams().model_dump(), n=15)[1:]:
        for name, r in SPACE.items():
            assert r.low <= p[name] <= r.high, (name, p[name])
        assert p["max_depth"] == -1 or DEPTH.low <= p["max_depth"] <= DEPTH.high
        assert isinstance(p["num_leaves"], int) and isinstance(p["min_child_samples"], int)


def test_the_objective_is_a_ranking_of_the_validation_month():
    assert objective_metric(ModelConfig().promotion_metric) == "roc_auc"
    assert objective_metric("pr_auc") == "pr_auc"
    assert objective_metric("emp") == "roc_auc"  # needs probabilities calibrated on that month


def test_a_negative_number_of_trials_is_a_usage_error():
    from models.train import train_and_register

    assert trainer(0) is train_and_register
    assert trainer(3).keywords == {"trials": 3}
    with pytest.raises(UsageError, match=r"--tune -1: the number of tuning trials is 0 or more"):
        trainer(-1)
