"""The training read: every churner, a seeded share of stayers weighted back, float32, in batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features import store


@pytest.fixture()
def feats(tmp_path):
    rng = np.random.default_rng(0)
    for month in ("2025-01", "2025-02"):
        n = 4000
        label = (rng.random(n) < 0.05).astype("float64")
        label[:100] = np.nan  # not yet known
        t = pa.table({
            "msisdn": [f"1380000{i:04d}" for i in range(n)],
            "snapshot_month": [month] * n,
            "x": rng.normal(size=n),
            "k": rng.integers(0, 5, n),
            "label_churn": pa.array([None if np.isnan(v) else int(v) for v in label], pa.int64()),
        })  # fmt: skip
        store.write_snapshot(tmp_path, month, t)
    return tmp_path


def test_all_churners_a_share_of_stayers_and_weights_that_restore_the_month(feats):
    cols = ["snapshot_month", "x", "k"]
    full = store.read_sampled(feats, ["2025-01", "2025-02"], cols)
    some = store.read_sampled(feats, ["2025-01", "2025-02"], cols, stayer_share=0.25, seed=7)
    assert full[store.WEIGHT].eq(1).all() and full["label_churn"].notna().all()  # unknown dropped
    assert len(full) == 2 * 3900
    for m in ("2025-01", "2025-02"):
        f, s = full[full.snapshot_month == m], some[some.snapshot_month == m]
        assert s["label_churn"].sum() == f["label_churn"].sum()  # every churner
        stayers = s[s.label_churn == 0]
        assert len(stayers) / (f.label_churn == 0).sum() == pytest.approx(0.25, abs=0.03)
        assert stayers[store.WEIGHT].eq(4).all()
        assert s[store.WEIGHT].sum() == pytest.approx(len(f), rel=0.05)
    assert some["x"].dtype == np.float32 and some["k"].dtype == np.float32


def test_the_sample_is_the_same_whatever_the_batches_and_months_kept_whole_are_whole(feats):
    cols = ["snapshot_month", "x"]
    a = store.read_sampled(feats, ["2025-01"], cols, stayer_share=0.3, seed=1)
    b = store.read_sampled(feats, ["2025-01"], cols, stayer_share=0.3, seed=1, batch_rows=333)
    assert a["msisdn"].tolist() == b["msisdn"].tolist()
    other = store.read_sampled(feats, ["2025-01"], cols, stayer_share=0.3, seed=2)
    assert a["msisdn"].tolist() != other["msisdn"].tolist()
    kept = store.read_sampled(feats, ["2025-01", "2025-02"], cols, stayer_share=0.3,
                              full=("2025-02",))  # fmt: skip
    assert (kept.snapshot_month == "2025-02").sum() == 3900
