import pyarrow as pa

from pipelines.config import load_config
from pipelines.lake.numbers import NumberPlan, classify_other_number, mask_msisdn, normalize_msisdn

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


def test_landlines_and_codes_are_judged_as_phonenumbers_would():
    """The column-wise landline rule (phonenumbers' metadata) agrees with phonenumbers.parse."""
    import numpy as np

    from pipelines.lake.numbers import _judge_distinct, _parse_one

    rng = np.random.default_rng(3)
    written = ["01012345678", "075512345678", "02112345678", "057112345678", "04001234567",
               "08001234567", "0101234", "010123456789012", "00861012345678", "10086", "95588",
               "123", "0", "+862112345678", "021-1234-5678"]  # fmt: skip
    written += [
        "0" + "".join(map(str, rng.integers(0, 10, rng.integers(6, 13)))) for _ in range(3000)
    ]
    written += ["".join(map(str, rng.integers(0, 10, rng.integers(3, 8)))) for _ in range(500)]
    uniq = pa.array(sorted(set(written)), pa.string())
    nat, kind = _judge_distinct(uniq, PLAN)
    got = list(zip(nat.to_pylist(), kind.to_pylist(), strict=True))
    expected = [
        _parse_one(u, PLAN.country_code, PLAN.service_code_max_digits) for u in uniq.to_pylist()
    ]
    assert got == expected
    assert sum(k == "landline" for _, k in got) > 100  # the fast path was exercised


def test_unknown_other_numbers_lose_their_text_but_keep_their_row():
    norm, cat = classify_other_number(pa.array(["+12125550100", "01012345678", "abc"]), None, PLAN)
    assert norm.to_pylist() == [None, "01012345678", None]
    assert cat.to_pylist() == ["unknown", "landline", "unknown"]
