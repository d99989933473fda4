"""Personal data: the key that joins subscribers across months, and who may read which folder.

A published list shows ``138****5678``: 7 of 11 digits. Any key computable from
published or configured text (a hash of the number with a known salt) therefore gives
the full number back after at most 10,000 guesses. The subscriber key is instead a
keyed HMAC whose secret is drawn at random on first use and kept outside ``outputs/``,
readable by its owner only; without that file a stolen list and this repository
together reveal nothing.

Folders that hold full numbers (lake, quarantine, features, scores, ...) are created
owner-only; ``outputs/`` (masked lists) is made readable for the team that works them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets as _secrets
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

SECRET_FILE = "subscriber_key"
PREVIOUS_FILE = "subscriber_key.previous"
KEY_HEX_DIGITS = 16


def _secret_dir(settings) -> Path:
    return settings.path("secrets")


def _write_new_secret(path: Path) -> bytes:
    """A fresh 256-bit secret, written owner-only; if another run made one first, that one wins."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    secret = _secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic and never overwrites: a concurrent first run keeps its own
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text(encoding="ascii").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        from pipelines.lake.errors import ChurnError

        raise ChurnError(
            f"{path} does not hold a subscriber-key secret (64 hex digits); "
            "restore it from backup, or remove it to start a new key (see README: rotating the key)"
        )
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by others; making it owner-only", path)
        os.chmod(path, 0o600)
    return secret


def subscriber_secret(settings) -> bytes:
    """The secret behind subscriber keys, created on first use."""
    path = _secret_dir(settings) / SECRET_FILE
    if path.exists():
        return _read_secret(path)
    log.info("no subscriber-key secret yet: creating %s (owner-only; back it up)", path)
    return _write_new_secret(path)


def previous_secret(settings) -> bytes | None:
    """The secret in use before the last rotation, kept so diffs still match last month's list."""
    path = _secret_dir(settings) / PREVIOUS_FILE
    return _read_secret(path) if path.exists() else None


def rotate_secret(settings) -> tuple[str, str]:
    """Start a new secret; the old one is kept as ``.previous`` for one diff. (old id, new id)."""
    path = _secret_dir(settings) / SECRET_FILE
    old = subscriber_secret(settings)
    prev = path.with_name(PREVIOUS_FILE)
    os.replace(path, prev)
    new = _write_new_secret(path)
    return key_id(old), key_id(new)


def key_id(secret: bytes) -> str:
    """A public name for a secret (published in the manifest); says nothing about the secret."""
    return hmac.new(secret, b"churn-ews key id", hashlib.sha256).hexdigest()[:8]


def subscriber_keys(msisdn: pd.Series, secret: bytes) -> pd.Series:
    """HMAC-SHA256 of each number under the secret: stable across months, useless without it."""
    return msisdn.map(
        lambda m: hmac.new(secret, str(m).encode(), hashlib.sha256).hexdigest()[:KEY_HEX_DIGITS]
    )


# --------------------------------------------------------------------------- folders

PRIVATE_FOLDERS = (
    "lake", "quarantine", "features", "scores", "reports", "truth", "mlflow",
    "prefect_home", "secrets", "campaigns",
)  # fmt: skip
"""Folders holding full numbers, or state derived from them: owner-only."""

SHARED_FOLDERS = ("outputs",)
"""Masked lists for retention teams: readable by group and others unless configured otherwise."""


def protect(settings) -> None:
    """Owner-only creation for the rest of this process, and owner-only private roots now.

    A folder at mode 0700 cannot be entered by anyone else, whatever the files in it
    say, so tightening the roots also covers files written before this version. The
    landing folder belongs to the operator's delivery process and is left as it is.
    """
    cfg = settings.privacy
    if not cfg.owner_only:
        return
    os.umask(0o077)
    for name in PRIVATE_FOLDERS:
        _chmod_own(settings.path(name), 0o700)
    # the data folder: others may pass through to outputs/ (when shared), never list it
    _chmod_own(settings.path("data_dir"), 0o711 if cfg.share_outputs else 0o700)


def _chmod_own(p: Path, mode: int) -> None:
    if p.is_dir() and p.stat().st_uid == os.getuid() and (p.stat().st_mode & 0o777) != mode:
        os.chmod(p, mode)


def share(settings, folder: Path) -> None:
    """Make a published folder (masked lists only) readable for the team, per configuration."""
    cfg = settings.privacy
    if not (cfg.owner_only and cfg.share_outputs):
        return
    root = settings.path("outputs")
    d = folder
    while True:
        _chmod_own(d, 0o755)
        if d == root or root not in d.parents:
            break
        d = d.parent
    for p in folder.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
