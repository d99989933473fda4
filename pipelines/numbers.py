"""Phone numbers: normalise to the 11-digit national form and classify the other party.

The common case (an already canonical 11-digit mobile) is handled column-wise with
pyarrow; everything else (``+86``, ``0086``, dashes, spaces, landlines) goes through
``phonenumbers`` once per distinct value, so odd formats are judged by a maintained
numbering plan rather than by home-made regexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

# Categories of the other party in a call record.
OWN_MOBILE = "own_mobile"
OTHER_MOBILE = "other_mobile"
LANDLINE = "landline"
SERVICE_CODE = "service_code"
UNKNOWN = "unknown"

_CANONICAL = r"^1[3-9]\d{9}$"


@dataclass(frozen=True)
class NumberPlan:
    """Which mobile prefixes are ours; everything else is judged by phonenumbers."""

    own_prefixes: frozenset[str]
    other_prefixes: frozenset[str]
    country_code: str = "86"
    service_code_max_digits: int = 6

    @classmethod
    def from_config(cls, numbering) -> NumberPlan:  # numbering: pipelines.config.Numbering
        return cls(
            frozenset(numbering.own_mobile_prefixes),
            frozenset(numbering.other_mobile_prefixes),
            numbering.country_code,
            numbering.service_code_max_digits,
        )


@lru_cache(maxsize=200_000)
def _parse_one(raw: str, country_code: str) -> tuple[str | None, str]:
    """Return (national number or None, kind) for one non-canonical value."""
    s = raw.strip()
    if not s:
        return None, UNKNOWN
    digits = "".join(ch for ch in s if ch.isdigit())
    if not digits or len(digits) != len(s.replace(" ", "").replace("-", "").lstrip("+")):
        # letters or other symbols inside: not a number at all
        return None, UNKNOWN
    # Short service codes (10086, 95588, 12345) have no country form.
    if not s.startswith(("+", "00")) and len(digits) <= 6 and digits[0] in "19":
        return digits, SERVICE_CODE
    text = s
    if s.startswith("00"):
        text = "+" + s[2:]
    elif (
        s.startswith(country_code)
        and len(digits) == 11 + len(country_code)
        and digits[len(country_code)] == "1"
    ):
        # "8613812345678" / "86-138-1234-5678": a country code without '+'
        text = "+" + digits
    try:
        num = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None, UNKNOWN
    if str(num.country_code) != country_code:
        return None, UNKNOWN
    national = str(num.national_number)
    ntype = phonenumbers.number_type(num)
    if ntype == phonenumbers.PhoneNumberType.MOBILE and len(national) == 11:
        return national, "mobile"
    if ntype in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return "0" + national, LANDLINE
    if re.fullmatch(r"1[3-9]\d{9}", national) and phonenumbers.is_possible_number(num):
        # A mobile range newer than the library's metadata: still a mobile.
        return national, "mobile"
    return None, UNKNOWN


def _prenormalise(arr: pa.Array, country_code: str) -> pa.Array:
    """Column-wise: drop separators and a +86 / 0086 / 86 country prefix in front of an 11-digit mobile.

    Only this unambiguous rewrite is done by pattern; anything it leaves non-canonical
    goes to phonenumbers.
    """
    compact = pc.replace_substring_regex(arr, r"[\s\-()]", "")
    stripped = pc.replace_substring_regex(
        compact, rf"^(?:\+|00)?{country_code}(1[3-9]\d{{9}})$", r"\1"
    )
    return stripped


def normalize_msisdn(values: pa.Array | pa.ChunkedArray, plan: NumberPlan) -> pa.Array:
    """11-digit national mobile numbers; null where the value is not a valid mobile."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    canonical = pc.fill_null(pc.match_substring_regex(arr, _CANONICAL), False)
    if not pc.all(pc.or_(canonical, pc.is_null(arr))).as_py():
        arr = pc.if_else(canonical, arr, _prenormalise(arr, plan.country_code))
        canonical = pc.fill_null(pc.match_substring_regex(arr, _CANONICAL), False)
    if pc.all(pc.or_(canonical, pc.is_null(arr))).as_py():
        return arr
    odd = pc.filter(arr, pc.invert(canonical))
    uniq = pc.unique(odd).to_pylist()
    mapping = {}
    for u in uniq:
        if u is None:
            continue
        nat, kind = _parse_one(u, plan.country_code)
        mapping[u] = nat if kind == "mobile" else None
    fixed = pa.array([mapping.get(v) for v in odd.to_pylist()], type=pa.string())
    return pc.replace_with_mask(arr, pc.invert(canonical), fixed)


def classify_other_number(
    values: pa.Array | pa.ChunkedArray,
    declared_operator: pa.Array | pa.ChunkedArray | None,
    plan: NumberPlan,
) -> tuple[pa.Array, pa.Array]:
    """Normalised other-party number and its category.

    A declared ``other_operator`` (own/other) wins over the prefix table, because a
    number ported between operators keeps its old prefix.
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    canonical = pc.fill_null(pc.match_substring_regex(arr, _CANONICAL), False)
    if not pc.all(pc.or_(canonical, pc.is_null(arr))).as_py():
        arr = pc.if_else(canonical, arr, _prenormalise(arr, plan.country_code))
        canonical = pc.fill_null(pc.match_substring_regex(arr, _CANONICAL), False)
    norm = arr
    kind = pa.nulls(len(arr), pa.string())
    odd = pc.invert(canonical)
    if pc.any(odd).as_py():
        odd_vals = pc.filter(arr, odd).to_pylist()
        parsed = {u: _parse_one(u, plan.country_code) for u in set(odd_vals) if u is not None}
        nat = [parsed[v][0] if v is not None else None for v in odd_vals]
        knd = [parsed[v][1] if v is not None else UNKNOWN for v in odd_vals]
        norm = pc.replace_with_mask(arr, odd, pa.array(nat, pa.string()))
        kind = pc.replace_with_mask(kind, odd, pa.array(knd, pa.string()))
    is_mobile = pc.fill_null(pc.or_kleene(canonical, pc.equal(kind, "mobile")), False)
    prefix = pc.utf8_slice_codeunits(pc.fill_null(norm, ""), 0, 3)
    own_by_prefix = pc.is_in(prefix, value_set=pa.array(sorted(plan.own_prefixes), pa.string()))
    mobile_kind = pc.if_else(own_by_prefix, OWN_MOBILE, OTHER_MOBILE)
    if declared_operator is not None:
        dec = declared_operator
        dec = dec.combine_chunks() if isinstance(dec, pa.ChunkedArray) else dec
        dec = pc.fill_null(dec.cast(pa.string()), "")
        mobile_kind = pc.if_else(
            pc.equal(dec, "own"),
            OWN_MOBILE,
            pc.if_else(pc.equal(dec, "other"), OTHER_MOBILE, mobile_kind),
        )
    category = pc.if_else(is_mobile, mobile_kind, pc.fill_null(kind, UNKNOWN))
    return norm, category


def mask_msisdn(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """138****5678: enough for an agent to confirm, useless to anyone else."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    head = pc.utf8_slice_codeunits(arr, 0, 3)
    tail = pc.utf8_slice_codeunits(arr, 7, 11)
    return pc.binary_join_element_wise(head, "****", tail, "")
