"""One writer at a time per data folder: an advisory lock file, ``<data_dir>/.churn.lock``.

Two runs writing the same lake, features or model store at once delete each other's
staging and interleave their commits, so every writing step holds this lock.

The lock is ``fcntl.flock`` on a file that is never removed: the kernel drops it when
the holder exits in any way, SIGKILL included, so a dead holder can never block the
next run. The file also records who holds it (pid, host, step, command, start time)
for the message a second run prints, and is emptied on a clean release: a record
found by the next holder was left by a run that died, and is reported as stale.

Re-entrant within a process: the monthly refresh takes the lock once and the steps
it runs inside take it again without waiting on themselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.lake.errors import ChurnError

log = logging.getLogger(__name__)

LOCK_NAME = ".churn.lock"
_POLL_SECONDS = 0.2
_INFO_WAIT_SECONDS = 1.0  # a holder writes its record right after locking: give it this long


class LockHeld(ChurnError):
    """Another run holds the data folder; the message names it. Never worth a retry."""

    exit_code = 1


@dataclass
class _Held:
    fd: int
    depth: int
    info: dict[str, Any]


_guard = threading.Lock()
_held: dict[str, _Held] = {}


def _forget_in_child() -> None:
    """A forked child shares the parent's lock; it must not think it holds it, nor keep it alive."""
    global _guard
    for h in _held.values():
        with contextlib.suppress(OSError):
            os.close(h.fd)  # close only: LOCK_UN would release the parent's lock too
    _held.clear()
    _guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCK_NAME


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(blob: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def read_holder(path: Path, wait: float = _INFO_WAIT_SECONDS) -> dict[str, Any] | None:
    """The record in a lock file, waiting briefly for a holder that has just locked it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = _parse(Path(path).read_bytes())
        except FileNotFoundError:
            info = None
        if info is not None or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


def _since(started_at: str) -> str:
    """``12:00:01`` for today, ``2025-03-02 12:00:01`` for an older start."""
    try:
        t = dt.datetime.fromisoformat(started_at)
    except (TypeError, ValueError):
        return str(started_at)
    today = dt.datetime.now(t.tzinfo).date()
    return t.strftime("%H:%M:%S" if t.date() == today else "%Y-%m-%d %H:%M:%S")


def describe(info: dict[str, Any] | None) -> str:
    """``ingest (pid 123 on host h, since 12:00:01)``."""
    if not info:
        return "another run"
    return (
        f"{info.get('step', '?')} (pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
        f"since {_since(info.get('started_at', '?'))})"
    )


def held_message(data_dir: Path, info: dict[str, Any] | None, waited: float = 0) -> str:
    waited_text = f"; still held after waiting {waited:.0f} s" if waited > 0 else ""
    return f"data folder {data_dir} is in use by {describe(info)}{waited_text}; wait or stop it"


def _record(step: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "step": step,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv else "",
        "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _report_left_behind(path: Path, left: dict[str, Any]) -> None:
    """A record found on taking the lock was left by a holder that did not release it."""
    same_host = left.get("host") == socket.gethostname()
    pid = left.get("pid")
    if same_host and isinstance(pid, int) and not pid_alive(pid):
        why = "that process is no longer running"
    elif same_host:
        why = "that process no longer holds it"
    else:
        why = "the lock is free, so that run has ended"
    log.warning("taking over a stale lock %s left by %s: %s", path, describe(left), why)


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on the file now at ``path``, or None when another run holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:
        os.close(fd)
        raise ChurnError(f"cannot lock {path}: the file system does not support locks ({e})") from e
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # the file was removed or replaced between open and lock: lock the new one
        os.close(fd)
        return _try_lock(path)
    return fd


def _acquire(data_dir: Path, step: str, timeout: float) -> _Held:
    path = lock_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    announced = False
    while True:
        fd = _try_lock(path)
        if fd is not None:
            break
        waited = time.monotonic() - t0
        if waited >= timeout:
            raise LockHeld(held_message(data_dir, read_holder(path), waited if timeout else 0))
        if not announced:
            log.info(
                "data folder %s is in use by %s: waiting up to %.0f s for it",
                data_dir,
                describe(read_holder(path)),
                timeout,
            )
            announced = True
        time.sleep(min(_POLL_SECONDS, max(timeout - waited, 0.01)))
    left = _parse(os.pread(fd, 64 << 10, 0))
    if left is not None:
        _report_left_behind(path, left)
    info = _record(step)
    blob = json.dumps(info, sort_keys=True).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, blob, 0)
    return _Held(fd=fd, depth=1, info=info)


def _release(key: str) -> None:
    h = _held[key]
    h.depth -= 1
    if h.depth:
        return
    del _held[key]
    try:
        os.ftruncate(h.fd, 0)  # empty = released cleanly; a record left means the holder died
    finally:
        fcntl.flock(h.fd, fcntl.LOCK_UN)
        os.close(h.fd)


@contextlib.contextmanager
def data_lock(data_dir: Path, step: str, *, timeout: float = 0) -> Iterator[dict[str, Any]]:
    """Hold the data folder for ``step``; raise :class:`LockHeld` if another run keeps it past ``timeout`` s.

    Yields the holder record. Taking it again in the same process only counts depth.
    """
    data_dir = Path(data_dir).resolve()
    key = str(data_dir)
    with _guard:
        h = _held.get(key)
        if h is not None:
            h.depth += 1
        else:
            h = _held[key] = _acquire(data_dir, step, timeout)
            log.debug("locked %s for %s", data_dir, step)
    try:
        yield h.info
    finally:
        with _guard:
            if _held.get(key) is h:
                _release(key)


def holds(data_dir: Path) -> bool:
    """Whether this process holds the lock of ``data_dir``."""
    with _guard:
        return str(Path(data_dir).resolve()) in _held
