"""Broken deliveries: each fails alone and says why; bad lines are quarantined; no number leaks.

Files are built inline (a few hundred rows) or copied from the session world; the
CLI tests run the real ``churn`` command in a child process, and one of them kills it
with SIGKILL in the middle of an ingest.
"""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import load_config
from pipelines.ingest.reader import UnreadableFile, read_failure
from pipelines.ingest.report import IngestFailed
from pipelines.ingest.validate import validate_batch
from pipelines.lake import store as lk
from pipelines.lake.contract import COMPLAINTS
from pipelines.lake.errors import UsageError
from pipelines.lake.numbers import NumberPlan
from tests.worlds import make_settings, run_ingest

ROOT = Path(__file__).resolve().parents[2]
PLAN = NumberPlan.from_config(load_config(environ={}).numbering)

CDR_HEADER = "record_id,msisdn,other_number,direction,event_type,start_time,duration_s,call_result,cell_id,roaming"
COMPLAINT_COLUMNS = COMPLAINTS.names


def _cdr_rows(n: int, month: int, prefix: str = "R") -> str:
    return "".join(
        f"{prefix}{month:02d}{i:06d},1381234{i % 10000:04d},13912345678,MO,voice,"
        f"2025-{month:02d}-05 10:00:00,30,completed,C1,0\n"
        for i in range(n)
    )


def _cdr_file(n: int, month: int) -> str:
    return CDR_HEADER + "\n" + _cdr_rows(n, month)


def _complaint(i: int, description: str, sep: str = ",", **over: str) -> str:
    row = {
        "ticket_id": f"T{i:07d}",
        "msisdn": f"1391234{i % 10000:04d}",
        "opened_at": "2025-03-02 09:00:00",
        "updated_at": "2025-03-03 10:00:00",
        "closed_at": "2025-03-03 10:00:00",
        "category": "network",
        "channel": "hotline",
        "severity": "normal",
        "status": "resolved",
        "satisfaction": "4",
        "description": description,
    } | over
    return sep.join(row[c] for c in COMPLAINT_COLUMNS) + "\n"


def _header(sep: str = ",") -> str:
    return sep.join(COMPLAINT_COLUMNS) + "\n"


def _landing(tmp_path: Path):
    s = make_settings(tmp_path)
    s.path("landing").mkdir(parents=True)
    return s


def _committed(s, source: str) -> dict:
    return lk.read_manifest(s.path("lake"), source)["files"]


def _lake_rows(s, source: str) -> pa.Table:
    parts = lk.parts(s.path("lake"), source)
    t = pa.concat_tables([pq.read_table(p) for p in parts])
    return t.sort_by([("_source_file", "ascending"), ("_row_number", "ascending")])


def _quarantine(s, source: str) -> pa.Table:
    files = sorted((s.path("quarantine") / source).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in files]).sort_by("row_number")


# 1. one broken file fails alone ------------------------------------------------------


def test_each_broken_file_fails_alone_with_its_reason_and_the_others_go_in(tmp_path):
    s = _landing(tmp_path)
    land = s.path("landing")
    (land / "cdr_202505.csv").write_text(_cdr_file(100, 5))  # good
    big = gzip.compress(_cdr_file(40_000, 3).encode())  # > 1 MB unpacked before the cut
    (land / "cdr_202503.csv.gz").write_bytes(big[: len(big) // 2])
    small = gzip.compress(_cdr_file(300, 4).encode())  # cut inside the first megabyte
    (land / "cdr_202504.csv.gz").write_bytes(small[: len(small) // 2])
    (land / "cdr_202506.csv").write_bytes(  # a valid header, then bytes no encoding decodes
        (CDR_HEADER + "\n").encode() + random.Random(0).randbytes(20_000)
    )
    lines = [_complaint(i, "信号很差") for i in range(60)]  # half UTF-8, half GBK
    mixed = b"".join(
        line.encode("utf-8" if i % 2 else "gbk") for i, line in enumerate([_header(), *lines])
    )
    (land / "complaints_202503.csv").write_bytes(mixed)
    (land / "complaints_202504.csv").write_text(  # good
        _header()
        + "".join(
            _complaint(
                i,
                "网络",
                opened_at="2025-04-01 08:00:00",
                updated_at="2025-04-02 08:00:00",
                closed_at="",
            )
            for i in range(50)
        )
    )

    with pytest.raises(IngestFailed) as e:
        run_ingest(s)

    by_file = {f.file: f for f in e.value.report.files}
    assert {n for n, f in by_file.items() if f.status == "committed"} == {
        "cdr_202505.csv",
        "complaints_202504.csv",
    }
    reasons = {n: f.message for n, f in by_file.items() if f.status == "failed"}
    assert reasons["cdr_202503.csv.gz"].startswith("truncated gzip stream")
    assert reasons["cdr_202504.csv.gz"].startswith("truncated gzip stream")
    assert "quarantined" in reasons["cdr_202506.csv"]
    assert "bad_encoding" in reasons["cdr_202506.csv"]
    assert "bad_encoding 30" in reasons["complaints_202503.csv"]
    assert "above the limit" in reasons["complaints_202503.csv"]
    assert all("\n" not in m for m in reasons.values())
    # the failed files left nothing in the lake, the good ones are whole
    assert set(_committed(s, "cdr")) == {"cdr_202505.csv"}
    assert set(_committed(s, "complaints")) == {"complaints_202504.csv"}
    assert _lake_rows(s, "cdr").num_rows == 100 and _lake_rows(s, "complaints").num_rows == 50
    assert all("cdr_202505" in p.name for p in (s.path("lake") / "cdr").rglob("*.parquet"))
    assert not list((s.path("lake") / lk.STAGING).rglob("*.csv"))  # no transcoded copy left
    # one line for the run, the report on disk says the same per file
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("4 of 6 files failed ingest (")
    assert "cdr_202503.csv.gz: truncated gzip stream" in msg and "and 1 more" in msg
    saved = json.loads(Path(e.value.report.path).read_text())
    assert msg.endswith(f"report: {e.value.report.path}")
    assert {f["file"]: f["message"] for f in saved["files"] if f["status"] == "failed"} == reasons


def test_a_broken_redelivery_fails_and_the_lake_keeps_the_good_version(tmp_path):
    s = _landing(tmp_path)
    path = s.path("landing") / "cdr_202505.csv"
    path.write_text(_cdr_file(100, 5))
    run_ingest(s)
    before = _committed(s, "cdr")
    parts_before = lk.parts(s.path("lake"), "cdr")
    path.write_bytes((CDR_HEADER + "\n").encode() + b"\xff\xfe," * 10 + b"\n" * 3)
    report = run_ingest(s, raise_on_failure=False)
    (f,) = report.files
    assert f.status == "failed" and "bad_encoding" in f.message
    assert _committed(s, "cdr") == before and lk.parts(s.path("lake"), "cdr") == parts_before
    assert _lake_rows(s, "cdr").num_rows == 100


def test_errors_of_the_machine_are_not_blamed_on_the_file(tmp_path, monkeypatch):
    """Disk full or permission denied stop the run (one line in the CLI), never a 'bad file'."""
    assert read_failure(OSError(errno.ENOSPC, "No space left on device", "/lake/x")) is None
    assert read_failure(PermissionError(errno.EACCES, "Permission denied", "/x")) is None
    assert isinstance(read_failure(OSError("Truncated compressed stream")), UnreadableFile)
    assert isinstance(read_failure(EOFError("Compressed file ended")), UnreadableFile)
    s = _landing(tmp_path)
    (s.path("landing") / "cdr_202505.csv").write_text(_cdr_file(50, 5))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(s.path("lake")))

    monkeypatch.setattr(lk, "write_manifest", full)
    with pytest.raises(OSError) as e:
        run_ingest(s)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()

    import pyarrow.csv as pacsv

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(a[0]))

    monkeypatch.setattr(pacsv, "open_csv", denied)
    with pytest.raises(PermissionError):
        run_ingest(s)


def test_an_integer_too_long_for_int64_is_quarantined_not_a_crash():
    from pipelines.lake.contract import CDR

    row = dict(zip(CDR_HEADER.split(","), _cdr_rows(1, 3).strip().split(","), strict=True))
    batch = pa.table({c: [row.get(c, ""), row.get(c, "")] for c in CDR.names})
    batch = batch.set_column(
        CDR.names.index("duration_s"), "duration_s", pa.array(["9" * 20, "30"])
    )
    acc, rej = validate_batch(
        batch, CDR, PLAN, file_name="cdr_202503.csv", period_end=dt.datetime(2025, 3, 31, 23, 59, 59),
        row_numbers=np.array([1, 2]), delivered_at=dt.datetime(2025, 4, 2),
    )  # fmt: skip
    assert acc.num_rows == 1 and rej["reason"].to_pylist() == ["unparseable_number"]


# 2. undecodable lines are quarantined row by row -------------------------------------


def test_undecodable_lines_are_quarantined_row_by_row_as_bad_encoding(tmp_path):
    s = _landing(tmp_path)
    good = ["信号", "网络很慢", "话费有误", "宽带故障"]  # their UTF-8 also decodes as GB18030
    rows: list[bytes] = []
    for i in range(200):
        if i in (17, 120):  # lines from a GBK system
            rows.append(_complaint(i, "信号差").encode("gbk"))
        elif i == 150:  # a quoted description over two lines, one of them GBK
            rows.append(_complaint(i, '"first line\n' + "信号差" + '"').encode("gbk"))
        else:
            rows.append(_complaint(i, good[i % 4]).encode("utf-8"))
    raw = _header().encode() + b"".join(rows)
    raw.decode("gb18030")  # the whole file is "valid GB18030": only line votes read it right
    (s.path("landing") / "complaints_202503.csv").write_bytes(raw)

    report = run_ingest(s)

    (f,) = report.files
    assert f.status == "committed" and f.encoding == "utf-8"
    assert f.quarantined_by_reason == {"bad_encoding": 3}
    assert f.read == 200 == f.accepted + f.quarantined + f.duplicates
    assert "bad_encoding" in f.message
    q = _quarantine(s, "complaints")
    assert q["reason"].to_pylist() == ["bad_encoding"] * 3
    assert q["row_number"].to_pylist() == [18, 121, 151]
    texts = q["raw"].to_pylist()
    assert all("\uffff" not in t for t in texts)
    assert "T0000017" in texts[0] and "\\x" in texts[0]  # the bytes shown, escaped
    assert "first line" in texts[2]
    lake = _lake_rows(s, "complaints")
    assert lake.num_rows == 197
    expected = [good[i % 4] for i in range(200) if i not in (17, 120, 150)]
    assert lake["description"].to_pylist() == expected  # no mojibake
    assert lake["_row_number"].to_pylist() == [i + 1 for i in range(200) if i not in (17, 120, 150)]


@pytest.mark.parametrize(
    ("majority", "minority", "odd_rows"),
    [("gbk", "utf-8", (5, 60)), ("utf-8", "gbk", (0,))],  # (0,): the head is not UTF-8
)
def test_a_mixed_file_is_read_in_the_encoding_most_lines_use(
    tmp_path, majority, minority, odd_rows
):
    """UTF-8 Chinese also decodes, as nonsense, in GB18030: the lines' own reading must decide."""
    s = _landing(tmp_path)
    texts = ["信号", "网络很慢", "话费有误", "宽带故障"]
    raw = _header().encode() + b"".join(
        _complaint(i, texts[i % 4]).encode(minority if i in odd_rows else majority)
        for i in range(100)
    )
    raw.decode("gb18030")  # every line decodes as GB18030: a plain read would take them all
    (s.path("landing") / "complaints_202503.csv").write_bytes(raw)

    (f,) = run_ingest(s).files

    assert f.status == "committed"
    assert f.encoding == ("gb18030" if majority == "gbk" else "utf-8")
    assert f.quarantined_by_reason == {"bad_encoding": len(odd_rows)}
    q = _quarantine(s, "complaints")
    assert q["row_number"].to_pylist() == [i + 1 for i in odd_rows]
    if minority == "utf-8":  # a valid line of the other encoding is shown as it reads
        assert all(texts[i % 4] in t for i, t in zip(odd_rows, q["raw"].to_pylist(), strict=True))
    lake = _lake_rows(s, "complaints")
    assert lake["description"].to_pylist() == [
        texts[i % 4] for i in range(100) if i not in odd_rows
    ]


def test_a_gbk_pipe_file_with_one_undecodable_line_loses_only_that_row(tmp_path):
    s = _landing(tmp_path)
    rows = [_complaint(i, "信号很差", sep="|").encode("gbk") for i in range(80)]
    rows[70] = rows[70].replace("信号很差".encode("gbk"), b"\x81\xff\xfe")  # valid in neither
    (s.path("landing") / "complaints_202503.csv.gz").write_bytes(
        gzip.compress(_header("|").encode() + b"".join(rows))
    )
    (f,) = run_ingest(s).files
    assert (f.status, f.encoding, f.delimiter) == ("committed", "gb18030", "|")
    assert f.quarantined_by_reason == {"bad_encoding": 1} and f.accepted == 79
    q = _quarantine(s, "complaints")
    assert q["row_number"].to_pylist() == [71] and "\\x81\\xff\\xfe" in q["raw"][0].as_py()
    assert set(_lake_rows(s, "complaints")["description"].to_pylist()) == {"信号很差"}


def test_undecodable_lines_count_against_the_quarantine_limit(tmp_path):
    s = _landing(tmp_path)
    rows = [_complaint(i, "ok") for i in range(100)]
    raw = _header().encode() + b"".join(
        r.replace("ok", "\xff\xfe").encode("latin-1") if i % 10 == 0 else r.encode()
        for i, r in enumerate(rows)
    )
    (s.path("landing") / "complaints_202503.csv").write_bytes(raw)
    report = run_ingest(s, raise_on_failure=False)
    (f,) = report.files
    assert f.status == "failed" and f.quarantined_by_reason == {"bad_encoding": 10}
    assert "above the limit" in f.message and not _committed(s, "complaints")
    s.ingest = s.ingest.model_copy(update={"max_quarantine_rate": 0.2})
    (f,) = run_ingest(s).files
    assert f.status == "committed" and (f.accepted, f.quarantined) == (90, 10)


# 3. the encoding of the whole file, not its first megabyte ---------------------------


@pytest.mark.parametrize(("gz", "sep"), [(False, ","), (True, ","), (False, "|"), (True, "|")])
def test_gb18030_with_chinese_only_beyond_the_first_megabyte_ingests_whole(tmp_path, gz, sep):
    s = _landing(tmp_path)
    chinese = {9000 + k: text for k, text in enumerate(["信号很差", "话费多扣了", "𠀀㐀 €"])}
    lines = [_complaint(i, chinese.get(i, "plain ascii text, quite long " * 2).replace(",", ";"),
                        sep=sep) for i in range(9100)]  # fmt: skip
    text = _header(sep) + "".join(lines)
    raw = text.encode("gb18030")
    assert raw[: 1 << 20].isascii() and raw.index("信".encode("gb18030")) > 1 << 20
    name = "complaints_202503.csv" + (".gz" if gz else "")
    (s.path("landing") / name).write_bytes(gzip.compress(raw) if gz else raw)

    (f,) = run_ingest(s).files

    assert (f.status, f.encoding, f.delimiter, f.quarantined) == ("committed", "gb18030", sep, 0)
    assert f.accepted == 9100
    lake = _lake_rows(s, "complaints")
    got = dict(zip(lake["_row_number"].to_pylist(), lake["description"].to_pylist(), strict=True))
    assert {i: got[i + 1] for i in chinese} == chinese


# 4. no header row --------------------------------------------------------------------


def test_a_file_without_header_fails_clearly_without_showing_the_number(tmp_path, caplog):
    s = _landing(tmp_path)
    (s.path("landing") / "cdr_202503.csv").write_text(
        "R1,+86 138-1234-5678,13912345678,MO,voice,2025-03-05 10:00:00,30,completed,C1,0\n"
        + _cdr_rows(20, 3)
    )
    (s.path("landing") / "cdr_202504.csv").write_text(_cdr_file(20, 4))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IngestFailed) as e:
        run_ingest(s)
    f = next(f for f in e.value.report.files if f.file == "cdr_202503.csv")
    assert f.status == "failed"
    assert f.message.startswith("no header row: the first line looks like data")
    report_text = Path(e.value.report.path).read_text()
    for where in (f.message, str(e.value), report_text, caplog.text):
        for number in ("13812345678", "138-1234-5678", "13912345678", "1381234"):
            assert number not in where, where
    assert "no header row" in caplog.text


# 5. every timestamp against the delivery month ---------------------------------------


@pytest.mark.parametrize(
    ("over", "reason", "column"),
    [
        ({}, None, None),
        ({"closed_at": ""}, None, None),
        ({"closed_at": "2099-01-01 00:00:00"}, "future_date", "closed_at"),
        ({"closed_at": "2025-04-01 00:00:00"}, "future_date", "closed_at"),
        ({"closed_at": "2025-03-01 08:00:00"}, "closed_before_opened", "closed_at"),
        ({"closed_at": "2025-3-3"}, "unparseable_date", "closed_at"),
    ],
)
def test_closed_at_is_checked_against_the_period_and_the_opening(over, reason, column):
    row = dict(
        zip(COMPLAINT_COLUMNS, _complaint(1, "x", **over).rstrip("\n").split(","), strict=True)
    )
    acc, rej = validate_batch(
        pa.table({c: [row[c]] for c in COMPLAINT_COLUMNS}), COMPLAINTS, PLAN,
        file_name="complaints_202503.csv", period_end=dt.datetime(2025, 3, 31, 23, 59, 59),
        row_numbers=np.array([1]), delivered_at=dt.datetime(2025, 4, 2),
    )  # fmt: skip
    if reason is None:
        assert acc.num_rows == 1 and rej.num_rows == 0
    else:
        assert acc.num_rows == 0
        assert (rej["reason"][0].as_py(), rej["column"][0].as_py()) == (reason, column)


def test_a_complaint_closed_in_2099_is_quarantined_by_ingest(tmp_path):
    s = _landing(tmp_path)
    rows = [_complaint(i, "ok") for i in range(40)]
    rows[7] = _complaint(7, "ok", closed_at="2099-12-31 23:59:59")
    (s.path("landing") / "complaints_202503.csv").write_text(_header() + "".join(rows))
    (f,) = run_ingest(s).files
    assert f.status == "committed" and f.quarantined_by_reason == {"future_date": 1}
    assert _quarantine(s, "complaints")["row_number"].to_pylist() == [8]


# 6. a landing folder that does not exist ---------------------------------------------


def test_a_missing_landing_folder_is_refused_before_anything_is_created(tmp_path):
    s = make_settings(tmp_path / "nowhere")
    with pytest.raises(UsageError) as e:
        run_ingest(s)
    assert str(s.path("landing")) in str(e.value) and "does not exist" in str(e.value)
    assert not (tmp_path / "nowhere").exists()


# the real command line: one line, an exit code, and SIGKILL -----------------------------


def _config(tmp_path: Path, data_dir: Path) -> Path:
    cfg = tmp_path / f"{data_dir.name}.yaml"
    cfg.write_text(f"paths:\n  data_dir: {json.dumps(str(data_dir))}\n")
    return cfg


def _churn(cfg: Path, *args: str) -> list[str]:
    exe = Path(sys.executable).with_name("churn")
    head = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from pipelines.cli import app; app()"]
    )
    return [*head, "--config", str(cfg), *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_churn(cfg, *args), cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_cli_prints_one_line_for_failed_files_and_for_a_missing_landing(tmp_path):
    data = tmp_path / "data"
    (data / "landing").mkdir(parents=True)
    (data / "landing" / "cdr_202504.csv").write_text(_cdr_file(30, 4))
    packed = gzip.compress(_cdr_file(300, 3).encode())
    (data / "landing" / "cdr_202503.csv.gz").write_bytes(packed[: len(packed) // 2])
    out = _run(_config(tmp_path, data), "ingest", "--no-prefect")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "Aborted" not in out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(
        "error: 1 of 2 files failed ingest (cdr_202503.csv.gz: truncated gzip stream"
    ), line
    assert "report: " in line
    assert set(lk.read_manifest(data / "lake", "cdr")["files"]) == {"cdr_202504.csv"}

    missing = tmp_path / "absent"
    out = _run(_config(tmp_path, missing), "ingest", "--no-prefect")
    assert out.returncode != 0
    (line,) = [x for x in out.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: landing folder {missing / 'landing'} does not exist")
    assert not missing.exists()


def _lake_state(data: Path) -> dict:
    """Everything the lake says: committed entries, the rows of every part, quarantine files."""
    lake, state = data / "lake", {}
    for src in ("billing", "cdr", "complaints"):
        files = lk.read_manifest(lake, src)["files"]
        state[src] = {
            name: (sorted(e["parts"]), e["sha256"], e["counts"], e["quarantine"])
            for name, e in files.items()
        }
        parts = lk.parts(lake, src)
        on_disk = sorted((lake / src).rglob("*.parquet"))
        assert on_disk == parts, f"{src}: parts on disk that no manifest lists"
        for p in parts:
            t = pq.read_table(p).sort_by(
                [("_source_file", "ascending"), ("_row_number", "ascending")]
            )
            state[f"{src}/{p.relative_to(lake / src)}"] = t
        q = data / "quarantine" / src
        state[f"{src}/quarantine"] = (
            sorted(x.name for x in q.glob("*.parquet")) if q.exists() else []
        )
    return state


def test_sigkill_mid_ingest_then_rerun_gives_the_lake_of_an_uninterrupted_run(world, tmp_path):
    picked = [
        p
        for source in ("billing", "cdr", "complaints")
        for p in sorted(world.path("landing").glob(f"{source}_*.csv*"))[:2]
    ]
    runs = {}
    for name in ("killed", "reference"):
        land = tmp_path / name / "landing"
        land.mkdir(parents=True)
        for p in picked:
            shutil.copy2(p, land / p.name)
        runs[name] = tmp_path / name
    killed = runs["killed"]
    cfg = _config(tmp_path, killed)
    proc = subprocess.Popen(_churn(cfg, "ingest", "--no-prefect"), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    staging = killed / "lake" / lk.STAGING
    try:
        while True:
            committed = list((killed / "lake").glob(f"*/{lk.MANIFEST}"))
            if committed and staging.exists() and any(staging.rglob("*")):
                break  # one file committed, the next one half staged
            if proc.poll() is not None:
                pytest.fail("the ingest ended before it could be killed")
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = {n for src in ("billing", "cdr", "complaints")
            for n in lk.read_manifest(killed / "lake", src)["files"]}  # fmt: skip
    assert done and done < {p.name for p in picked}  # it really died in the middle

    again = _run(cfg, "ingest", "--no-prefect")
    assert again.returncode == 0, again.stderr
    run_ingest(make_settings(runs["reference"]))

    got, want = _lake_state(killed), _lake_state(runs["reference"])
    assert got.keys() == want.keys()
    for k in want:
        if isinstance(want[k], pa.Table):
            assert got[k].equals(want[k]), k
        else:
            assert got[k] == want[k], k
    assert not staging.exists() or not any(staging.rglob("*"))
