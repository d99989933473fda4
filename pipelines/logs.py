"""Logging set-up shared by the CLI and flows: one format, no personal data.

Masking happens where a record is made, not in one handler: Prefect ships records
to its API (and so into its database) through handlers of its own, and every one of
them then sees the masked text, tracebacks included.
"""

from __future__ import annotations

import logging
import traceback

from pipelines.lake.errors import ChurnError
from pipelines.lake.numbers import mask_text

_base_factory = logging.getLogRecordFactory()
_tracebacks_for_expected_errors = False  # --log-level DEBUG turns them on


def _masking_factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    mask_record(record)
    return record


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Replace the message (and a traceback) of a record by their masked text."""
    try:
        msg = record.getMessage()
    except Exception:  # a broken format string: leave it to logging's own error path
        return record
    masked = mask_text(msg)
    if masked != msg:
        record.msg, record.args = masked, None
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, ChurnError) and not _tracebacks_for_expected_errors:
        # an error the user can act on is its one-line message; a traceback says nothing more
        record.exc_info, record.exc_text = None, None
    if record.exc_info and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = mask_text(text)
    return record


class MaskPhoneNumbers(logging.Filter):
    """For handlers that see records made before the factory was installed."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def install_masking() -> None:
    """Every log record made in this process from now on carries masked text."""
    if logging.getLogRecordFactory() is not _masking_factory:
        logging.setLogRecordFactory(_masking_factory)


def setup_logging(level: str = "INFO") -> None:
    global _tracebacks_for_expected_errors
    _tracebacks_for_expected_errors = level.upper() == "DEBUG"
    install_masking()
    root = logging.getLogger()
    if not any(isinstance(f, MaskPhoneNumbers) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler.addFilter(MaskPhoneNumbers())
        root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
