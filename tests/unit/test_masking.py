"""The one mask and the subscriber-key secret, on hand-made input.

A published list shows 7 of 11 digits; what protects the rest is that every spelling
of a number is masked wherever text leaves, and that the key joining months is an
HMAC under a secret nobody outside the data folder holds.
"""

from __future__ import annotations

import logging
import stat
import threading

import pyarrow as pa
import pytest

from pipelines import privacy
from pipelines.config import load_config
from pipelines.lake.numbers import NumberPlan, mask_text, normalize_msisdn
from pipelines.logs import install_masking
from tests.leaks import numbers_in
from tests.worlds import make_settings

FORMS = [
    "13812345678",
    "+8613812345678",
    "008613812345678",
    "8613812345678",
    "86-138-1234-5678",
    "+86 138 1234 5678",
    "138 1234 5678",
    "138-1234-5678",
    "0086 138 1234 5678",
]


# ------------------------------------------------------------------ the one mask


@pytest.mark.parametrize("form", FORMS)
def test_every_accepted_spelling_is_masked_in_free_text(form):
    plan = NumberPlan.from_config(load_config(environ={}).numbering)
    assert normalize_msisdn(pa.array([form]), plan).to_pylist() == ["13812345678"]
    text = mask_text(f"客户要求回电 {form}，谢谢")
    assert "138****5678" in text
    assert not numbers_in(text.encode(), {"13812345678"}), text


@pytest.mark.parametrize(
    "text",
    ["2025-11-30 23:59:59", "ticket T2025110000123", "id 1733081234567", "10086"],
)
def test_dates_ids_and_long_digit_runs_are_left_alone(text):
    assert mask_text(text) == text


def test_every_log_handler_gets_masked_text_and_tracebacks(caplog):
    """Prefect ships records to its database through its own handlers: they must see masks."""
    install_masking()
    seen: list[str] = []

    class Collect(logging.Handler):  # stands in for any handler we do not own
        def emit(self, record):
            seen.append(self.format(record))

    logger = logging.getLogger("some.library")
    h = Collect()
    logger.addHandler(h)
    try:
        logger.warning("calling %s", "+86 138-1234-5678")
        try:
            raise ValueError("bad row 86-139-8765-4321,2025-01")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(h)
    joined = "\n".join(seen)
    assert "138****5678" in joined and "139****4321" in joined
    assert not numbers_in(joined.encode(), {"13812345678", "13987654321"}), joined


# ------------------------------------------------------------------ the subscriber key


def test_the_secret_is_random_owner_only_outside_outputs_and_made_once(tmp_path):
    s = make_settings(tmp_path / "a")
    got: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: got.append(privacy.subscriber_secret(s))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got[0]) == 32  # concurrent first runs agree
    path = s.path("secrets") / privacy.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert s.path("outputs") not in path.parents
    other = make_settings(tmp_path / "b")
    assert privacy.subscriber_secret(other) != got[0]  # not derived from the config


def test_rotation_keeps_the_previous_secret_for_one_diff(tmp_path):
    s = make_settings(tmp_path)
    first = privacy.subscriber_secret(s)
    old_id, new_id = privacy.rotate_secret(s)
    assert old_id == privacy.key_id(first) != new_id
    assert privacy.previous_secret(s) == first
    assert privacy.key_id(privacy.subscriber_secret(s)) == new_id
