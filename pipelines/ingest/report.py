"""The reconciliation report of an ingest run: per file, totals, and the error that names the failures.

Every file looked at gets a :class:`FileReport` (committed, unchanged, failed or
superseded) whose counts reconcile: read = accepted + quarantined + duplicates. The
report is written as JSON twice, under the run's time and as ``ingest_latest.json``,
each atomically, so a reader never sees half a report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.lake.contract import SCHEMA_VERSION
from pipelines.lake.errors import ChurnError
from pipelines.lake.numbers import mask_text
from pipelines.lake.store import write_atomically


@dataclass
class FileReport:
    file: str
    source: str
    path: str
    status: str  # committed | unchanged | failed | superseded
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    duplicates_within_file: int = 0
    duplicates_across_files: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    months: list[str] = field(default_factory=list)
    replaced_previous: bool = False
    encoding: str = ""
    delimiter: str = ""
    seconds: float = 0.0
    message: str = ""

    @property
    def reconciles(self) -> bool:
        return self.read == self.accepted + self.quarantined + self.duplicates


@dataclass
class IngestReport:
    started_at: str
    files: list[FileReport] = field(default_factory=list)
    unknown_files: list[str] = field(default_factory=list)
    path: str = ""

    @property
    def failed(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "failed"]

    def totals(self) -> dict[str, int]:
        done = [f for f in self.files if f.status in ("committed", "failed")]
        reasons: Counter[str] = Counter()
        for f in done:
            reasons.update(f.quarantined_by_reason)
        return {
            "files_committed": sum(f.status == "committed" for f in self.files),
            "files_unchanged": sum(f.status == "unchanged" for f in self.files),
            "files_failed": len(self.failed),
            "files_superseded": sum(f.status == "superseded" for f in self.files),
            "read": sum(f.read for f in done),
            "accepted": sum(f.accepted for f in done if f.status == "committed"),
            "quarantined": sum(f.quarantined for f in done),
            "duplicates": sum(f.duplicates for f in done),
            "quarantined_by_reason": dict(sorted(reasons.items())),
        }

    def to_dict(self) -> dict:
        return {
            "started_at": self.started_at,
            "schema_version": SCHEMA_VERSION,
            "totals": self.totals(),
            "files": [asdict(f) | {"reconciles": f.reconciles} for f in self.files],
            "unknown_files": self.unknown_files,
        }

    def table(self) -> list[dict]:
        """Rows for a human: one per file that was looked at."""
        return [
            {
                "file": f.file,
                "status": f.status,
                "read": f.read,
                "accepted": f.accepted,
                "quarantined": f.quarantined,
                "duplicates": f.duplicates,
                "reasons": ", ".join(
                    f"{k}={v}" for k, v in sorted(f.quarantined_by_reason.items())
                ),
                "seconds": f.seconds,
                "rows_per_s": round(f.read / f.seconds)
                if f.status == "committed" and f.seconds
                else None,
            }
            for f in self.files
        ]


class IngestFailed(ChurnError, RuntimeError):
    """Some deliveries failed (the others went in): one line naming them, the report for the rest.

    The lake keeps its last good state for the failed files; ``report`` has every detail.
    """

    shown = 3  # failed files named in the message; the report lists them all

    def __init__(self, report: IngestReport):
        self.report = report
        failed = report.failed
        looked_at = sum(f.status != "superseded" for f in report.files)
        named = "; ".join(f"{f.file}: {f.message}" for f in failed[: self.shown])
        if len(failed) > self.shown:
            named += f"; and {len(failed) - self.shown} more"
        super().__init__(
            mask_text(
                f"{len(failed)} of {looked_at} files failed ingest ({named}); report: {report.path}"
            )
        )

    def __reduce__(self):  # rebuilt from the report (Prefect pickles exceptions)
        return (type(self), (self.report,))


def write_report(report: IngestReport, reports: Path, started: dt.datetime) -> None:
    """Write the run's report and ``ingest_latest.json``; ``report.path`` names the first."""
    out = reports / f"ingest_{started.strftime('%Y%m%dT%H%M%S')}.json"
    data = json.dumps(report.to_dict(), indent=1, ensure_ascii=False).encode("utf-8")
    write_atomically(out, data)
    write_atomically(reports / "ingest_latest.json", data)
    report.path = str(out)
