"""How well a score ranks subscribers by the effect of contacting them (Qini and uplift curves).

Measured on a randomised campaign: ``treated`` says who was contacted, ``y`` their outcome,
``score`` the ranking (higher = contact first). The curves follow the top-k rows by score:

- Qini (Radcliffe 2007): Q(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k)
- uplift curve: U(k) = (Y_t(k) / N_t(k) - Y_c(k) / N_c(k)) * (N_t(k) + N_c(k))

with Y_t, Y_c the summed outcomes and N_t, N_c the counts of treated and control rows in the
top k; where a group is still empty its term counts as 0 (as in scikit-uplift). The AUCs are areas between the curve and the random line from (0, 0) to (n, Q(n)),
so a random ranking scores about 0; ``normalize=True`` divides by the same area of the
perfect ranking (treated rows in falling outcome, then control rows in rising outcome, as
in scikit-uplift), which makes Radcliffe's Qini coefficient (1 = perfect, 0 = random, < 0 worse than random).

Sign: the metrics reward a score that puts the rows where contact RAISES ``y`` first. Churn
is to be reduced, so for churn pass ``higher_is_better=False`` (``y`` is negated: for a 0/1
outcome the same as passing ``1 - churned`` wherever the top k holds both groups), and as score pass ``-effect`` (a
useful contact has a negative effect on churn).

Ties: rows with equal scores form one block; the curves are evaluated only where a block
ends and joined by straight lines, and :func:`uplift_at_k` takes a boundary block by equal
shares, so no result depends on the order of the rows.
"""

from __future__ import annotations

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


def _inputs(y, treated, score, higher_is_better: bool):
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated).astype(bool)
    s = np.asarray(score, dtype=float)
    if not (len(y) == len(t) == len(s)):
        raise ValueError(f"y, treated and score differ in length: {len(y)}, {len(t)}, {len(s)}")
    if len(y) == 0:
        raise ValueError("no rows to measure")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise ValueError("y and score must be finite (no NaN)")
    return (y if higher_is_better else -y), t, s


def _cumulative(y, t, s) -> tuple[np.ndarray, ...]:
    """Counts and outcome sums of each group in the top k, at k = 0 and every block end."""
    order = np.argsort(-s, kind="stable")
    y, t, s = y[order], t[order], s[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    n_t = np.r_[0, np.cumsum(t)[ends]].astype(float)
    y_t = np.r_[0, np.cumsum(y * t)[ends]]
    n_c = np.r_[0, np.cumsum(~t)[ends]].astype(float)
    y_c = np.r_[0, np.cumsum(y * ~t)[ends]]
    return np.r_[0, ends + 1], n_t, y_t, n_c, y_c


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, and 0 where b is 0 (an empty group adds nothing)."""
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def qini_curve(y, treated, score, higher_is_better: bool = True) -> Arrays:
    """Radcliffe's Qini curve: (rows targeted k, Q(k)) at 0 and at the end of each score tie."""
    k, n_t, y_t, n_c, y_c = _cumulative(*_inputs(y, treated, score, higher_is_better))
    return k, y_t - y_c * _ratio(n_t, n_c)


def uplift_curve(y, treated, score, higher_is_better: bool = True) -> Arrays:
    """Uplift curve: (rows targeted k, (Y_t/N_t - Y_c/N_c)(N_t + N_c)) as for the Qini curve."""
    k, n_t, y_t, n_c, y_c = _cumulative(*_inputs(y, treated, score, higher_is_better))
    return k, (_ratio(y_t, n_t) - _ratio(y_c, n_c)) * (n_t + n_c)


def _area_over_random(k: np.ndarray, v: np.ndarray) -> float:
    """Trapezoid area between the curve and the straight line from (0, 0) to its end."""
    area = float(np.sum((v[1:] + v[:-1]) * np.diff(k)) / 2)
    return area - float(v[-1]) * float(k[-1]) / 2


def _auc(curve, y, treated, score, higher_is_better: bool, normalize: bool) -> float:
    a = _area_over_random(*curve(y, treated, score, higher_is_better))
    if not normalize:
        return a
    y_, t, _ = _inputs(y, treated, score, higher_is_better)
    perfect = _area_over_random(*curve(y_, t, np.where(t, y_, -y_)))
    return a / perfect if perfect > 0 else float("nan")


def qini_auc(y, treated, score, higher_is_better: bool = True, normalize: bool = False) -> float:
    """Area between the Qini curve and the random line (outcome units x rows).

    ``normalize=True``: divided by that area of the perfect ranking (the Qini coefficient);
    NaN when the perfect ranking is no better than random.
    """
    return _auc(qini_curve, y, treated, score, higher_is_better, normalize)


def auuc(y, treated, score, higher_is_better: bool = True, normalize: bool = False) -> float:
    """Area between the uplift curve and its random line; ``normalize`` as in :func:`qini_auc`."""
    return _auc(uplift_curve, y, treated, score, higher_is_better, normalize)


def uplift_at_k(y, treated, score, k: int | float, higher_is_better: bool = True) -> float:
    """Mean outcome of treated minus control among the top ``k`` by score.

    ``k`` is a row count (int >= 1) or a share of the rows (float in (0, 1]). A tied block
    across the cut counts with equal fractional weights. NaN when the top k lacks a group.
    """
    y, t, s = _inputs(y, treated, score, higher_is_better)
    n = len(s)
    if isinstance(k, (float, np.floating)) and not isinstance(k, bool):
        if not 0 < k <= 1:
            raise ValueError(f"a share k must be in (0, 1], got {k}")
        k = max(1, round(k * n))
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and {n} rows, got {k}")
    cut = np.sort(s)[::-1][k - 1]
    above, at = s > cut, s == cut
    w = above.astype(float) + at * ((k - above.sum()) / at.sum())
    wt, wc = w * t, w * ~t
    if wt.sum() <= 0 or wc.sum() <= 0:
        return float("nan")
    return float((wt @ y) / wt.sum() - (wc @ y) / wc.sum())
