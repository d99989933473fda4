import pyarrow as pa

from pipelines.config import load_config
from pipelines.numbers import NumberPlan, classify_other_number, mask_msisdn, normalize_msisdn

PLAN = NumberPlan.from_config(load_config(environ={}).numbering)


def test_every_delivered_format_normalises_to_eleven_digits():
    raw = [
        "13812345678",
        "+8613812345678",
        "008613812345678",
        "86-138-1234-5678",
        "138 1234 5678",
        "+86 138 1234 5678",
    ]
    assert normalize_msisdn(pa.array(raw), PLAN).to_pylist() == ["13812345678"] * len(raw)


def test_malformed_numbers_become_null():
    raw = ["1381234", "12345678901", "138abc45678", "", None, "99912345678", "+1 212 555 0100"]
    assert normalize_msisdn(pa.array(raw), PLAN).to_pylist() == [None] * len(raw)


def test_other_party_categories_and_declared_operator_wins():
    nums = pa.array(
        [
            "13812345678",
            "13012345678",
            "+8613012345678",
            "01012345678",
            "075512345678",
            "10086",
            "13812345678",
        ]
    )
    declared = pa.array(["", None, "", "", "", "", "other"])  # the last one ported away
    norm, cat = classify_other_number(nums, declared, PLAN)
    assert cat.to_pylist() == [
        "own_mobile", "other_mobile", "other_mobile", "landline", "landline", "service_code", "other_mobile",
    ]  # fmt: skip
    assert norm.to_pylist()[2] == "13012345678"


def test_mask_keeps_only_prefix_and_last_four():
    assert mask_msisdn(pa.array(["13812345678"])).to_pylist() == ["138****5678"]
