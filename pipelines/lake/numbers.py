"""Phone numbers: normalise to the 11-digit national form and classify the other party.

The common case (an already canonical 11-digit mobile) is handled column-wise with
pyarrow, and so are landlines and service codes, using the fixed-line patterns of
``phonenumbers``' own metadata. Anything else (foreign numbers, odd punctuation)
goes through ``phonenumbers.parse`` once per distinct value, so numbers are judged by
a maintained numbering plan rather than by home-made regexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers.phonemetadata import PhoneMetadata

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
    country_code: str
    service_code_max_digits: int

    @classmethod
    def from_config(cls, numbering) -> NumberPlan:  # numbering: pipelines.config.Numbering
        return cls(
            frozenset(numbering.own_mobile_prefixes),
            frozenset(numbering.other_mobile_prefixes),
            numbering.country_code,
            numbering.service_code_max_digits,
        )


@lru_cache(maxsize=200_000)
def _parse_one(raw: str, country_code: str, service_max: int) -> tuple[str | None, str]:
    """Return (national number or None, kind) for one non-canonical value."""
    s = raw.strip()
    if not s:
        return None, UNKNOWN
    digits = "".join(ch for ch in s if ch.isdigit())
    if not digits or len(digits) != len(s.replace(" ", "").replace("-", "").lstrip("+")):
        # letters or other symbols inside: not a number at all
        return None, UNKNOWN
    # Short service codes (10086, 95588, 12345) have no country form.
    if not s.startswith(("+", "00")) and len(digits) <= service_max and digits[0] in "19":
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


def _canonicalise(
    values: pa.Array | pa.ChunkedArray, plan: NumberPlan
) -> tuple[pa.Array, pa.Array]:
    """(values with unambiguous formats rewritten, mask of canonical mobiles); odd values only are rewritten."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    canonical = pc.fill_null(pc.match_substring_regex(arr, _CANONICAL), False)
    odd = pc.and_(pc.invert(canonical), pc.is_valid(arr))
    if pc.any(odd).as_py():
        before = pc.filter(arr, odd)
        fixed = _prenormalise(before, plan.country_code)
        if not pc.all(
            pc.fill_null(pc.equal(fixed, before), False)
        ).as_py():  # landlines and codes stay as they are
            arr = pc.replace_with_mask(arr, odd, fixed)
            canonical = pc.replace_with_mask(
                canonical, odd, pc.fill_null(pc.match_substring_regex(fixed, _CANONICAL), False)
            )
    return arr, canonical


_SPECIAL_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
                  "uan", "voicemail")  # fmt: skip


@lru_cache(maxsize=8)
def _fixed_line_rules(country_code: str) -> tuple | None:
    """The numbering plan's own fixed-line rules, as RE2 patterns for column-wise use.

    phonenumbers types a number by trying these descriptions in this order; applying
    the same patterns to a whole column gives its answer without a Python call per
    distinct landline (tests check the two agree).
    """
    region = phonenumbers.region_code_for_country_code(int(country_code))
    md = PhoneMetadata.metadata_for_region(region)
    if md is None or md.fixed_line is None or not md.fixed_line.national_number_pattern:
        return None

    def desc(d) -> tuple[str, list[int]] | None:
        if d is None or not d.national_number_pattern:
            return None
        return f"^(?:{d.national_number_pattern})$", [n for n in (d.possible_length or ()) if n > 0]

    special = [x for x in (desc(getattr(md, k, None)) for k in _SPECIAL_TYPES) if x]
    return md.national_prefix or "", desc(md.general_desc), desc(md.fixed_line), special


def _matches(national: pa.Array, rule: tuple[str, list[int]]) -> pa.Array:
    pattern, lengths = rule
    ok = pc.fill_null(pc.match_substring_regex(national, pattern), False)
    if lengths:
        ok = pc.and_(
            ok, pc.is_in(pc.binary_length(national), value_set=pa.array(lengths, pa.int32()))
        )
    return ok


def _landline_mask(uniq: pa.Array, digits: pa.Array, plan: NumberPlan) -> pa.Array:
    """Digit strings written as trunk prefix + a national fixed-line number."""
    rules = _fixed_line_rules(plan.country_code)
    if rules is None:
        return pa.array([False] * len(uniq))
    prefix, general, fixed, special = rules
    if not prefix or general is None:
        return pa.array([False] * len(uniq))
    trunk = pc.and_(pc.starts_with(uniq, prefix), pc.invert(pc.starts_with(uniq, prefix * 2)))
    cand = pc.and_(digits, trunk)
    national = pc.utf8_slice_codeunits(uniq, len(prefix))
    ok = pc.and_(cand, pc.and_(_matches(national, general), _matches(national, fixed)))
    for rule in special:
        ok = pc.and_(ok, pc.invert(_matches(national, rule)))
    return ok


def _judge_distinct(uniq: pa.Array, plan: NumberPlan) -> tuple[pa.Array, pa.Array]:
    """(national number or null, kind) of distinct non-canonical values.

    Service codes and landlines are recognised column-wise; whatever is left (foreign
    numbers, odd punctuation, garbage) goes through ``phonenumbers.parse`` one by one.
    """
    digits = pc.ascii_is_decimal(uniq)
    length = pc.binary_length(uniq)
    service = pc.and_(
        pc.and_(digits, pc.less_equal(length, plan.service_code_max_digits)),
        pc.or_(pc.starts_with(uniq, "1"), pc.starts_with(uniq, "9")),
    )
    landline = _landline_mask(uniq, digits, plan)
    fast = pc.or_(service, landline)
    nat = pc.if_else(fast, uniq, pa.scalar(None, pa.string()))
    kind = pc.if_else(
        service, SERVICE_CODE, pc.if_else(landline, LANDLINE, pa.scalar(None, pa.string()))
    )
    slow = pc.invert(fast)
    if pc.any(slow).as_py():
        judged = [
            _parse_one(u, plan.country_code, plan.service_code_max_digits)
            for u in pc.filter(uniq, slow).to_pylist()
        ]
        nat = pc.replace_with_mask(nat, slow, pa.array([j[0] for j in judged], pa.string()))
        kind = pc.replace_with_mask(kind, slow, pa.array([j[1] for j in judged], pa.string()))
    return nat, kind


def _judge(values: pa.Array, plan: NumberPlan) -> tuple[pa.Array, pa.Array]:
    """(national number or null, kind) per value, each distinct value judged once."""
    uniq = pc.drop_null(pc.unique(values))
    nat_u, kind_u = _judge_distinct(uniq, plan)
    idx = pc.index_in(values, value_set=uniq)
    return pc.take(nat_u, idx), pc.fill_null(pc.take(kind_u, idx), UNKNOWN)


def normalize_msisdn(values: pa.Array | pa.ChunkedArray, plan: NumberPlan) -> pa.Array:
    """11-digit national mobile numbers; null where the value is not a valid mobile."""
    arr, canonical = _canonicalise(values, plan)
    odd = pc.and_(pc.invert(canonical), pc.is_valid(arr))
    if not pc.any(odd).as_py():
        return arr
    nat, kind = _judge(pc.filter(arr, odd), plan)
    fixed = pc.if_else(pc.equal(kind, "mobile"), nat, pa.scalar(None, pa.string()))
    return pc.replace_with_mask(arr, odd, fixed)


def classify_other_number(
    values: pa.Array | pa.ChunkedArray,
    declared_operator: pa.Array | pa.ChunkedArray | None,
    plan: NumberPlan,
) -> tuple[pa.Array, pa.Array]:
    """Normalised other-party number and its category.

    A declared ``other_operator`` (own/other) wins over the prefix table, because a
    number ported between operators keeps its old prefix.
    """
    arr, canonical = _canonicalise(values, plan)
    norm = arr
    kind = pa.nulls(len(arr), pa.string())
    odd = pc.invert(canonical)
    if pc.any(odd).as_py():
        before = pc.filter(arr, odd)
        nat, knd = _judge(before, plan)
        if not pc.all(pc.fill_null(pc.equal(nat, before), False)).as_py():
            norm = pc.replace_with_mask(arr, odd, nat)
        kind = pc.replace_with_mask(kind, odd, knd)
    is_mobile = pc.fill_null(pc.or_kleene(canonical, pc.equal(kind, "mobile")), False)
    if declared_operator is not None:
        dec = declared_operator
        dec = dec.combine_chunks() if isinstance(dec, pa.ChunkedArray) else dec
        dec = pc.fill_null(dec.cast(pa.string()), "")
        own, other = pc.equal(dec, "own"), pc.equal(dec, "other")
        by_prefix = pc.and_(is_mobile, pc.invert(pc.or_(own, other)))
    else:
        own, by_prefix = pa.repeat(pa.scalar(False), len(arr)), is_mobile
    if pc.any(by_prefix).as_py():  # only mobiles whose operator nobody declared
        prefix = pc.utf8_slice_codeunits(pc.filter(norm, by_prefix), 0, 3)
        own_prefix = pc.is_in(prefix, value_set=pa.array(sorted(plan.own_prefixes), pa.string()))
        own = pc.replace_with_mask(own, by_prefix, own_prefix)
    category = pc.case_when(
        pc.make_struct(pc.and_(is_mobile, own), is_mobile),
        OWN_MOBILE,
        OTHER_MOBILE,
        pc.fill_null(kind, UNKNOWN),
    )
    return norm, category


def mask_msisdn(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """138****5678: enough for an agent to confirm, useless to anyone else."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.string())
    head = pc.utf8_slice_codeunits(arr, 0, 3)
    tail = pc.utf8_slice_codeunits(arr, 7, 11)
    return pc.binary_join_element_wise(head, "****", tail, "")


# Any way a mobile number can be written that ``normalize_msisdn`` accepts: an optional
# country code (+86, 0086, 86, with or without a separator), a trunk 0, and spaces,
# dashes or dots between the digits. Digits on either side mean it is part of
# something longer (an id, a timestamp) and is left alone.
_SEP = r"[\s\-.]?"
MOBILE_IN_TEXT = re.compile(
    r"(?<![\d+])(?:(?:\+|00)\s?86" + _SEP + r"|\(\+?86\)\s?|86" + _SEP + r"|0)?"
    r"(1" + _SEP + r"[3-9]" + _SEP + r"\d)((?:" + _SEP + r"\d){4})((?:" + _SEP + r"\d){4})(?!\d)"
)


def _masked(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group(1)) + "****" + re.sub(r"\D", "", m.group(3))
    return digits


def mask_text(text: str) -> str:
    """Every mobile number inside free text, in any accepted form, as ``138****5678``.

    The one mask used by logs, error messages, reports, Prefect artifacts and exported
    free text (complaint descriptions), so a number cannot slip out in a spelling that
    a narrower pattern misses.
    """
    if not text:
        return text
    return MOBILE_IN_TEXT.sub(_masked, text)
