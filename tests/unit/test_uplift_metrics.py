"""Qini and uplift curves on examples worked by hand, and how they rank rankings."""

from __future__ import annotations

import numpy as np
import pytest

from models.uplift_metrics import auuc, qini_auc, qini_curve, uplift_at_k, uplift_curve

# Six rows, already in falling score (y is the outcome we want to raise):
#   row  score  group    y   | N_t Y_t N_c Y_c | Q = Y_t - Y_c N_t/N_c | U = (Y_t/N_t - Y_c/N_c)(N_t+N_c)
#   1    0.9    treated  1   |  1   1   0   0  | 1 (no control: 0)    | (1 - 0) * 1 = 1
#   2    0.8    control  0   |  1   1   1   0  | 1                    | (1 - 0) * 2 = 2
#   3    0.7    treated  1   |  2   2   1   0  | 2                    | (1 - 0) * 3 = 3
#   4    0.6    control  1   |  2   2   2   1  | 2 - 1 * 2/2 = 1      | (1 - 1/2) * 4 = 2
#   5    0.5    treated  0   |  3   2   2   1  | 2 - 1 * 3/2 = 0.5    | (2/3 - 1/2) * 5 = 5/6
#   6    0.4    control  1   |  3   2   3   2  | 2 - 2 * 3/3 = 0      | (2/3 - 2/3) * 6 = 0
Y = np.array([1, 0, 1, 1, 0, 1])
T = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
S = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
SHUFFLE = np.array([3, 0, 5, 1, 4, 2])  # the order of the rows must not matter

# Trapezoids of unit width (the random lines end at Q(6) = U(6) = 0, so they add nothing):
QINI_AREA = (0 + 1) / 2 + (1 + 1) / 2 + (1 + 2) / 2 + (2 + 1) / 2 + (1 + 0.5) / 2 + 0.5 / 2  # 5.5
UPLIFT_AREA = 0.5 + 1.5 + 2.5 + 2.5 + (2 + 5 / 6) / 2 + (5 / 6) / 2  # 53/6
# Perfect ranking: treated responders (rows 1, 3), then the rows of y = 0 (2, 5), then the
# control responders (4, 6), as three tied blocks:
#   k = 2: N_t 2, Y_t 2, no control      -> Q = 2, U = (1 - 0) * 2 = 2
#   k = 4: N_t 3, Y_t 2, N_c 1, Y_c 0    -> Q = 2, U = (2/3 - 0) * 4 = 8/3
#   k = 6: Q = U = 0
PERFECT_QINI = 2 / 2 * 2 + (2 + 2) / 2 * 2 + 2 / 2 * 2  # 8
PERFECT_UPLIFT = 2 / 2 * 2 + (2 + 8 / 3) / 2 * 2 + (8 / 3) / 2 * 2  # 28/3


def test_qini_and_uplift_curves_by_hand():
    k, q = qini_curve(Y[SHUFFLE], T[SHUFFLE], S[SHUFFLE])
    assert k.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert q.tolist() == pytest.approx([0, 1, 1, 2, 1, 0.5, 0])
    k, u = uplift_curve(Y[SHUFFLE], T[SHUFFLE], S[SHUFFLE])
    assert u.tolist() == pytest.approx([0, 1, 2, 3, 2, 5 / 6, 0])


def test_areas_by_hand_raw_and_normalised_by_the_perfect_ranking():
    assert qini_auc(Y, T, S) == pytest.approx(QINI_AREA)
    assert qini_auc(Y, T, S, normalize=True) == pytest.approx(QINI_AREA / PERFECT_QINI)
    assert auuc(Y, T, S) == pytest.approx(53 / 6)
    assert auuc(Y, T, S, normalize=True) == pytest.approx(UPLIFT_AREA / PERFECT_UPLIFT)
    perfect = np.where(T, Y, -Y)
    assert qini_auc(Y, T, perfect, normalize=True) == pytest.approx(1.0)


def test_the_random_line_is_taken_off():
    # all treated rows respond, no control row does: Q(n) = 3, so the random line has area 9
    y = np.array([1, 0, 1, 0, 1, 0])
    k, q = qini_curve(y, T, S)  # Q: 0, 1, 1, 2, 2, 3, 3
    assert q.tolist() == pytest.approx([0, 1, 1, 2, 2, 3, 3])
    assert qini_auc(y, T, S) == pytest.approx(0.5 + 1 + 1.5 + 2 + 2.5 + 3 - 3 * 6 / 2)


def test_ties_form_one_block_whatever_the_row_order():
    s = S.copy()
    s[1] = s[0]  # rows 1 and 2 tie: the curve skips k = 1 and joins k = 0 to k = 2
    k, q = qini_curve(Y, T, s)
    assert k.tolist() == [0, 2, 3, 4, 5, 6]
    assert q.tolist() == pytest.approx([0, 1, 2, 1, 0.5, 0])
    area = QINI_AREA - 1.5 + (0 + 1) / 2 * 2
    for order in (np.arange(6), SHUFFLE, SHUFFLE[::-1]):
        assert qini_auc(Y[order], T[order], s[order]) == pytest.approx(area)
    assert qini_auc(Y, T, np.zeros(6)) == pytest.approx(0.0)  # one block: the random line


def test_uplift_at_k_by_hand_and_with_a_tie_across_the_cut():
    assert uplift_at_k(Y, T, S, 3) == pytest.approx(1 - 0)  # rows 1, 3 vs row 2
    assert uplift_at_k(Y, T, S, 4) == pytest.approx(1 - 1 / 2)
    assert uplift_at_k(Y, T, S, 0.5) == uplift_at_k(Y, T, S, 3)
    s = S.copy()
    s[3] = s[2]  # rows 3 and 4 tie across k = 3: each counts one half
    # treated: row 1 (y 1) + half of row 3 (y 1) -> 1.5 / 1.5; control: row 2 (0) + half of 4 (1)
    assert uplift_at_k(Y[SHUFFLE], T[SHUFFLE], s[SHUFFLE], 3) == pytest.approx(1 - 0.5 / 1.5)
    assert np.isnan(uplift_at_k(Y, T, S, 1))  # no control row yet
    with pytest.raises(ValueError):
        uplift_at_k(Y, T, S, 7)


def test_sign_convention_for_churn():
    churned = 1 - Y
    # higher_is_better=False negates the outcome...
    for curve in (qini_curve, uplift_curve):
        assert np.allclose(
            curve(churned, T, S, higher_is_better=False)[1], curve(-churned, T, S)[1]
        )
    # ...which for a 0/1 outcome is passing 1 - churned wherever the top k holds both groups
    k, a = qini_curve(churned, T, S, higher_is_better=False)
    _, b = qini_curve(Y, T, S)
    assert np.allclose(a[2:], b[2:])
    assert uplift_at_k(churned, T, S, 4, higher_is_better=False) == uplift_at_k(Y, T, S, 4)
    # a contact that cuts churn ranked first scores well; ranked last, badly
    assert qini_auc(churned, T, S, higher_is_better=False) > 0
    assert qini_auc(churned, T, -S, higher_is_better=False) < 0


@pytest.fixture(scope="module")
def campaign():
    """100k simulated rows, half contacted; contact cuts churn for high x, raises it for low x."""
    rng = np.random.default_rng(0)
    n = 100_000
    x = rng.normal(size=n)
    effect = -0.1 * np.tanh(x)  # change in P(churn); negative = the contact helps
    treated = rng.random(n) < 0.5
    churned = (rng.random(n) < 0.3 + effect * treated).astype(int)
    return churned, treated, effect


def test_perfect_beats_random_beats_reversed(campaign):
    churned, treated, effect = campaign
    rng = np.random.default_rng(1)

    def q(score):
        return qini_auc(churned, treated, score, higher_is_better=False, normalize=True)

    best, rand, worst = q(-effect), q(rng.random(len(effect))), q(effect)
    assert best > 0.1 > abs(rand) and worst < -0.1
    assert abs(rand) < 0.03  # a random ranking is the random line, up to noise
    a = [auuc(churned, treated, s, higher_is_better=False) for s in (-effect, effect)]
    assert a[0] > 0 > a[1]
    assert uplift_at_k(churned, treated, -effect, 0.2, higher_is_better=False) > 0.05


def test_random_scores_average_to_zero(campaign):
    churned, treated, _ = campaign
    rng = np.random.default_rng(2)
    raw = [qini_auc(churned, treated, rng.random(len(churned))) for _ in range(5)]
    scale = qini_auc(churned, treated, np.where(treated, churned, -churned))  # the perfect area
    assert abs(np.mean(raw)) / scale < 0.01


def test_bad_inputs():
    with pytest.raises(ValueError, match="length"):
        qini_curve(Y, T[:3], S)
    with pytest.raises(ValueError, match="finite"):
        qini_auc(Y, T, np.r_[S[:5], np.nan])
