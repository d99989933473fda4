"""Ingest whatever is in the landing folder into the lake, file by file, reconciling every row.

For each delivery: stream and validate into staging, quarantine bad rows, remove
duplicates (inside the file, and against what other files already committed), move
the parts in, then commit by rewriting the source's manifest. Every row read is
accounted for: read = accepted + quarantined + duplicates.

A delivery that cannot be read (cut-off gzip, bytes no encoding explains, no header)
fails alone: the run goes on with the others, the report says why in one line, and
:class:`IngestFailed` is raised at the end. Every message is masked: a phone number
in a broken header must not reach the report or the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from pipelines.ingest.config import IngestConfig, Sources
from pipelines.ingest.dedup import KeyIndex, other_files_parts, without
from pipelines.ingest.reader import (
    Delivery,
    DeliveryError,
    LineNumbersNeeded,
    UnreadableFile,
    discover,
    header_names,
    sniff,
)
from pipelines.ingest.report import FileReport, IngestFailed, IngestReport, write_report
from pipelines.ingest.stage import ReadPlan, replan, stage_delivery, use_memory_pool
from pipelines.lake import store as lk
from pipelines.lake import views
from pipelines.lake.config import Numbering
from pipelines.lake.contract import CONTRACTS
from pipelines.lake.errors import UsageError
from pipelines.lake.numbers import NumberPlan, mask_text

log = logging.getLogger(__name__)


@dataclass
class Hooks:
    """Points where callers (progress bars, tests simulating a crash) can step in."""

    before_commit: Callable[[FileReport], None] | None = None
    after_file: Callable[[FileReport], None] | None = None


def check_landing(landing: Path) -> None:
    """Refuse a landing folder that is not there, before anything is created.

    Ingesting a folder that does not exist would "succeed" with nothing read, after
    making an empty lake, quarantine and reports: a wrong path would look like a
    quiet month.
    """
    landing = Path(landing)
    if landing.is_dir():
        return
    if landing.exists():
        raise UsageError(f"landing folder {landing} is not a folder")
    parent = landing.parent
    hint = (
        f"neither does its parent {parent}: check paths.data_dir"
        if not parent.exists()
        else "put the operator's extracts there, or point paths.landing / paths.data_dir elsewhere"
    )
    raise UsageError(f"landing folder {landing} does not exist: {hint}")


def _stem(d: Delivery, checksum: str) -> str:
    base = d.name.split(".csv")[0]
    return f"{base}-{checksum[:12]}"


def _move_in(parts: dict[str, list[Path]], root: Path, stem: str) -> list[str]:
    """Move staged parts under ``root/month=…/`` named for the delivery; their relative paths."""
    rels = []
    for m, ps in parts.items():
        for p in ps:
            dest = root / f"month={m}" / f"{stem}-{p.name.removeprefix('part-')}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
            rels.append(f"month={m}/{dest.name}")
    return rels


def ingest_file(
    d: Delivery,
    *,
    lake: Path,
    quarantine: Path,
    sources: Sources,
    plan: NumberPlan,
    cfg: IngestConfig,
    hooks: Hooks | None = None,
) -> FileReport:
    """Ingest one delivery; commits it, skips it as unchanged, or fails it leaving the lake as it was."""
    t0 = time.perf_counter()
    use_memory_pool(cfg.memory_pool)
    hooks = hooks or Hooks()
    contract = CONTRACTS[d.source]
    src_cfg = getattr(sources, d.source)
    rep = FileReport(file=d.name, source=d.source, path=str(d.path), status="failed")
    manifest = lk.read_manifest(lake, d.source)
    prev = manifest["files"].get(d.name)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    if prev and prev["size"] == d.size:  # probably unchanged: make sure before any work
        checksum = d.checksum()
        if prev["sha256"] == checksum:
            hasher.shutdown()
            rep.status = "unchanged"
            for k in ("read", "accepted", "quarantined", "duplicates"):
                setattr(rep, k, prev["counts"][k])
            rep.message = "already ingested with the same checksum"
            return rep
        pending_sum = hasher.submit(lambda: checksum)
    else:  # new or different: the checksum is computed while the file is read
        pending_sum = hasher.submit(d.checksum)
    rep.replaced_previous = prev is not None

    stage = lake / lk.STAGING / d.source / f"{d.name}.{os.getpid()}"
    copy = stage.with_name(stage.name + ".utf8.csv")  # a mixed-encoding file, transcoded
    con: duckdb.DuckDBPyConnection | None = None
    try:
        try:
            d.period_end  # noqa: B018 - the file name's date must be a date
        except ValueError as e:
            raise DeliveryError(
                f"the date in the file name ({d.period}) is not a valid date"
            ) from e
        encoding, delimiter, raw_header = sniff(d.path, src_cfg)
        names = header_names(raw_header, src_cfg, contract)
        rep.encoding, rep.delimiter = encoding, delimiter
        read_kw = dict(delimiter=delimiter, names=names, plan=plan, cfg=cfg)
        read = ReadPlan(d.path, encoding)
        if src_cfg.encoding == "auto" and encoding != "utf-8":
            stage.parent.mkdir(parents=True, exist_ok=True)
            read = replan(d, src_cfg, read, copy)
            rep.encoding, rep.message = read.delivery_encoding, read.note
        threaded = True
        while True:  # at most: guessed encoding, whole-file encoding, each once more unthreaded
            if con is not None:
                con.close()
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
            con = views.connect(cfg.duckdb_memory_limit, cfg.duckdb_threads, stage / "duck")
            keys = KeyIndex(con, contract.dedup_key)
            try:
                staged = stage_delivery(
                    d, stage, read=read, threads=threaded, on_part=keys.add, **read_kw
                )
                break
            except LineNumbersNeeded as e:
                log.info("%s; reading it again single-threaded for line numbers", e)
                threaded = False
            except UnreadableFile as e:
                if not e.encoding_related or read.surveyed:
                    raise
                read = replan(d, src_cfg, read, copy, e)
                rep.encoding, rep.message = read.delivery_encoding, read.note
        checksum = pending_sum.result()
        stem = _stem(d, checksum)
        rep.read = staged.read
        rep.quarantined = sum(staged.reasons.values())
        rep.quarantined_by_reason = dict(sorted(staged.reasons.items()))
        qfile = staged.quarantine
        rate = rep.quarantined / max(rep.read, 1)
        if rep.read == 0:
            raise DeliveryError("no data rows")
        if rate > cfg.max_quarantine_rate:
            failed_dir = quarantine / d.source / "failed"
            failed_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(qfile, failed_dir / f"{stem}.parquet")
            top = ", ".join(f"{k} {v}" for k, v in staged.reasons.most_common(3))
            raise DeliveryError(
                f"{rate:.1%} of rows quarantined ({top}), above the limit of "
                f"{cfg.max_quarantine_rate:.1%}; rejected rows kept in {failed_dir / (stem + '.parquet')}"
            )

        # duplicates: inside the file, then against what other files already committed
        others = (
            other_files_parts(lake, d, manifest, staged.parts)
            if contract.dedup_across_files
            else []
        )
        drops = keys.duplicates(bool(contract.latest_wins_key), others)
        con.close()
        rep.duplicates_within_file = pc.sum(drops["within_file"].cast(pa.int64())).as_py() or 0
        rep.duplicates_across_files = drops.num_rows - rep.duplicates_within_file
        rep.duplicates = drops.num_rows
        rep.accepted = staged.accepted - drops.num_rows
        out_parts = without(staged.parts, drops)
        rep.months = sorted(out_parts)

        # move parts in (invisible until the manifest lists them), then commit
        rels = _move_in(out_parts, lake / d.source, stem)
        qname = None
        if rep.quarantined:
            (quarantine / d.source).mkdir(parents=True, exist_ok=True)
            qname = f"{stem}.parquet"
            os.replace(qfile, quarantine / d.source / qname)
        if hooks.before_commit:
            hooks.before_commit(rep)
        manifest["files"][d.name] = {
            "landing_path": str(d.path),
            "size": d.size,
            "sha256": checksum,
            "delivered_at": d.delivered_at.isoformat(),
            "ingested_at": dt.datetime.now(dt.UTC)
            .replace(tzinfo=None)
            .isoformat(timespec="seconds"),
            "encoding": rep.encoding,
            "delimiter": delimiter,
            "parts": sorted(rels),
            "quarantine": qname,
            "counts": {
                "read": rep.read,
                "accepted": rep.accepted,
                "quarantined": rep.quarantined,
                "duplicates": rep.duplicates,
                "quarantined_by_reason": rep.quarantined_by_reason,
            },
        }
        lk.write_manifest(lake, d.source, manifest)
        rep.status = "committed"
        lk.recover(lake, quarantine, d.source)  # the replaced version's parts are orphans now
    except DeliveryError as e:
        _failed(rep, str(e))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        # data the checks did not foresee: this file fails, the run goes on
        log.debug("validating %s failed", d.name, exc_info=True)
        _failed(rep, f"rows that could not be validated ({type(e).__name__}: {e})")
    finally:
        if con is not None:
            con.close()
        hasher.shutdown(wait=True)
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        copy.unlink(missing_ok=True)
        rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _failed(rep: FileReport, message: str) -> None:
    """Mark a file failed with a one-line, masked reason (it may quote the file's text)."""
    rep.status = "failed"
    rep.message = mask_text(" ".join(message.split()))
    log.error("ingest of %s failed: %s", rep.file, rep.message)


def ingest_landing(
    landing: Path,
    *,
    lake: Path,
    quarantine: Path,
    reports: Path,
    sources: Sources,
    numbering: Numbering,
    cfg: IngestConfig,
    hooks: Hooks | None = None,
    raise_on_failure: bool = True,
) -> IngestReport:
    """Ingest every current delivery under ``landing``; write and return the reconciliation report."""
    check_landing(landing)
    started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    report = IngestReport(started_at=started.isoformat(timespec="seconds"))
    for source in CONTRACTS:
        lk.recover(lake, quarantine, source)
    found = discover(landing, {k: getattr(sources, k) for k in CONTRACTS})
    report.unknown_files = [str(p) for p in found.unknown]
    for p in found.unknown:
        log.warning("not a known extract (ignored): %s", mask_text(p.name))
    plan = NumberPlan.from_config(numbering)
    for d in tqdm(found.current, desc="ingest", unit="file", disable=None):
        rep = ingest_file(
            d,
            lake=lake,
            quarantine=quarantine,
            sources=sources,
            plan=plan,
            cfg=cfg,
            hooks=hooks,
        )
        report.files.append(rep)
        if rep.status == "committed":
            log.info(
                "%s: read %d = accepted %d + quarantined %d + duplicates %d (%.1f s)",
                d.name, rep.read, rep.accepted, rep.quarantined, rep.duplicates, rep.seconds,
            )  # fmt: skip
        if hooks and hooks.after_file:
            hooks.after_file(rep)
    for d in found.superseded:
        report.files.append(
            FileReport(
                file=d.name,
                source=d.source,
                path=str(d.path),
                status="superseded",
                message="a later copy of this name exists",
            )
        )
    write_report(report, reports, started)
    if report.failed and raise_on_failure:
        raise IngestFailed(report)
    return report
