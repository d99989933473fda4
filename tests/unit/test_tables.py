"""Bring-your-own tables: labels in their common spellings, text columns used or refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.tables import TableError, prepare_table, read_label

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "values",
    [["Yes", "No", "yes "], ["True", "False", "TRUE"], ["是", "否", "是"], [1, 0, 1], ["1", "0", "1"],
     [True, False, True]],
)  # fmt: skip
def test_common_label_spellings_read_as_0_1(values):
    assert read_label(pd.Series(values), "Churn").tolist() == [1.0, 0.0, 1.0]


def test_a_blank_label_is_unknown_and_an_odd_one_is_named_in_one_line():
    assert np.isnan(read_label(pd.Series(["Yes", "", "No"]), "y").iat[1])
    with pytest.raises(TableError, match=r"label column 'Churn': values \['Maybe'\]") as e:
        read_label(pd.Series(["Yes", "No", "Maybe"]), "Churn")
    assert "\n" not in str(e.value)
    with pytest.raises(TableError, match="one class"):
        read_label(pd.Series(["No", "No"]), "Churn")


def test_each_column_is_used_coerced_or_dropped_for_a_stated_reason():
    t = pd.DataFrame({
        "id": ["a", "b", "c", "d"], "y": ["Yes", "No", "No", "Yes"],
        "tenure": [1, 2, 3, 4], "total": ["29.85", " ", "1,024.5", "7"],
        "contract": ["Month-to-month", "Two year", "Two year", None],
        "note": ["x1", "x2", "x3", "x4"], "same": ["k", "k", "k", "k"],
    })  # fmt: skip
    p = prepare_table(t, id_col="id", label_col="y", max_levels=3)
    use = {r["column"]: r["use"] for r in p.columns}
    assert use == {"tenure": "numeric", "total": "numeric (coerced)", "contract": "categorical",
                   "note": "dropped", "same": "dropped"}  # fmt: skip
    assert p.frame["total"].tolist()[0] == 29.85 and np.isnan(p.frame["total"].iat[1])
    assert p.frame["total"].iat[2] == 1024.5
    assert p.categorical == ["contract"] and p.levels["contract"] == ["Month-to-month", "Two year"]
    assert p.frame["contract"].tolist()[:3] == [0.0, 1.0, 1.0] and np.isnan(
        p.frame["contract"].iat[3]
    )
    assert p.features == ["tenure", "total", "contract"] and "id" not in p.frame
    assert "1 blank" in next(r["why"] for r in p.columns if r["column"] == "total")
    assert t["total"].iat[0] == "29.85"  # the input is not changed


def test_a_missing_column_is_named():
    with pytest.raises(TableError, match=r"no column\(s\) \['label'\]"):
        prepare_table(pd.DataFrame({"id": [1]}), id_col="id", label_col="label")
