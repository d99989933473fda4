"""Ingest: quarantine with reasons, exact reconciliation, idempotence, re-delivery, atomicity."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.config import load_config
from pipelines.ingest.report import IngestFailed
from pipelines.ingest.run import Hooks
from pipelines.ingest.validate import validate_batch
from pipelines.lake import store as lk
from pipelines.lake import views
from pipelines.lake.contract import BILLING, COMPLAINTS
from pipelines.lake.numbers import NumberPlan
from pipelines.synth.deliver import generate, load_truth
from tests.worlds import make_settings, run_ingest

PLAN = NumberPlan.from_config(load_config(environ={}).numbering)


def _lake_digest(s) -> dict[str, str]:
    root = s.path("lake")
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _copy_world(world, tmp_path):
    s = make_settings(tmp_path)
    shutil.copytree(world.path("landing"), s.path("landing"), copy_function=shutil.copy2)
    return s


def test_each_kind_of_dirt_is_quarantined_with_its_reason(ingested):
    world, report = ingested
    q = pd.read_parquet(world.path("quarantine"), columns=["file", "row_number", "reason"])
    dirt = load_truth(world.path("truth"))["dirt"]
    expected = dirt[dirt.expected_reason.notna()]
    merged = expected.merge(q, on=["file", "row_number"], how="outer", indicator=True)
    assert (merged._merge == "both").all(), merged[merged._merge != "both"].head(10)
    assert (merged.reason == merged.expected_reason).all(), merged[
        merged.reason != merged.expected_reason
    ].head(10)
    assert set(q.reason) >= {
        "missing_key",
        "malformed_msisdn",
        "unparseable_date",
        "unparseable_number",
        "negative_value",
        "unknown_enum",
        "truncated_row",
    }


def test_quarantine_rows_carry_file_row_raw_text_and_reason(ingested):
    world, _ = ingested
    q = pd.read_parquet(world.path("quarantine"))
    assert q[["source", "file", "row_number", "reason", "raw"]].notna().all().all()
    trunc = q[q.reason == "truncated_row"].iloc[0]
    assert trunc.file.startswith("cdr_") and trunc.raw.count(",") < 10


def test_counts_reconcile_exactly_and_duplicates_are_the_injected_ones(ingested):
    world, report = ingested
    for f in report.files:
        if f.status == "committed":
            assert f.read == f.accepted + f.quarantined + f.duplicates, f
    t = report.totals()
    assert t["read"] == t["accepted"] + t["quarantined"] + t["duplicates"]
    dups = load_truth(world.path("truth"))["duplicates"]
    per_file = {f.file: f.duplicates for f in report.files if f.source == "cdr"}
    for name, n in dups.groupby("file").size().items():
        assert per_file[name] == n
    # the lake holds each record once, and every accepted row
    con = duckdb.connect()
    views.register_views(con, world.path("lake"))
    n, distinct = con.sql("SELECT count(*), count(DISTINCT record_id) FROM cdr").fetchall()[0]
    assert n == distinct == sum(f.accepted for f in report.files if f.source == "cdr")
    saved = json.loads((world.path("reports") / "ingest" / "ingest_latest.json").read_text())
    assert saved["totals"] == json.loads(json.dumps(t))


def test_lake_is_partitioned_by_month_with_the_versioned_schema(ingested):
    world, _ = ingested
    months = sorted(p.name for p in (world.path("lake") / "cdr").glob("month=*"))
    assert months == [f"month=2025-{m:02d}" for m in range(1, 8)]
    import pyarrow.parquet as pq

    part = next((world.path("lake") / "billing").rglob("*.parquet"))
    schema = pq.read_schema(part)
    assert schema.metadata[b"schema_version"] == b"1"
    assert schema.field("total_charge").type == pa.float64()
    assert schema.field("activation_date").type == pa.date32()


def test_running_twice_changes_nothing(ingested):
    world, _ = ingested
    before = _lake_digest(world)
    again = run_ingest(world)
    assert {f.status for f in again.files} <= {"unchanged", "superseded"}
    assert _lake_digest(world) == before


def test_corrected_redelivery_replaces_what_the_first_delivery_contributed(world, tmp_path):
    s = _copy_world(world, tmp_path)
    red = s.path("landing") / "redelivery"
    held = tmp_path / "held"
    shutil.move(red, held)
    run_ingest(s)
    con = duckdb.connect()

    def paid(con):
        views.register_views(con, s.path("lake"))
        return con.sql(
            "SELECT count(*), round(sum(paid_amount), 2) FROM billing WHERE bill_month = '202504'"
        ).fetchall()[0]

    first = paid(con)
    shutil.move(held, red)
    report = run_ingest(s)
    by_name = {f.file: f for f in report.files if f.status != "superseded"}
    assert (
        by_name["billing_202504.csv"].status == "committed"
        and by_name["billing_202504.csv"].replaced_previous
    )
    assert by_name["billing_202502.csv"].status == "unchanged"  # delivered twice, same bytes
    second = paid(duckdb.connect())
    assert second[0] == first[0]  # same rows, no duplicates
    assert second[1] > first[1]  # the zeroed payments are back
    corrected = pd.read_csv(red / "billing_202504.csv", dtype=str, keep_default_na=False)
    ok = pd.to_numeric(corrected.paid_amount, errors="coerce")
    assert (
        abs(second[1] - ok[ok.notna()].sum()) < 5000
    )  # rows quarantined for other reasons excluded
    assert len(list((s.path("lake") / "billing" / "month=2025-04").glob("*.parquet"))) == 1


def test_gbk_pipe_file_with_chinese_headers_ingests_like_its_clean_twin(tmp_path):
    frames = []
    for name, gbk in (("clean", False), ("gbk", True)):
        s = make_settings(tmp_path / name, subscribers=400, months=4, seed=3)
        s.synth.dirt.gbk_pipe_complaints = gbk
        generate(s, s.path("landing"), s.path("truth"), show_progress=False)
        if gbk:
            raw = next(s.path("landing").glob("complaints_*.csv")).read_bytes()
            assert b"|" in raw.splitlines()[0] and "工单编号".encode("gbk") in raw
        run_ingest(s)
        con = duckdb.connect()
        views.register_views(con, s.path("lake"))
        frames.append(
            con.sql(
                "SELECT * EXCLUDE (_delivered_at) FROM complaints ORDER BY ticket_id, updated_at"
            ).df()
        )
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[1].description.str.contains("信号").any()


def test_run_killed_between_files_leaves_a_consistent_lake_that_the_next_run_completes(
    world, tmp_path
):
    reference = _copy_world(world, tmp_path / "ref")
    run_ingest(reference)
    s = _copy_world(world, tmp_path / "killed")
    done = []

    def die(rep):
        done.append(rep.file)
        if len(done) == 5:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        run_ingest(s, hooks=Hooks(after_file=die))
    for source in ("billing", "cdr", "complaints"):
        for p in lk.parts(s.path("lake"), source):
            assert p.exists()
    committed = {
        n
        for src in ("billing", "cdr", "complaints")
        for n in lk.read_manifest(s.path("lake"), src)["files"]
    }
    assert committed == set(done)
    run_ingest(s)
    assert _lake_digest(s).keys() == _lake_digest(reference).keys()


def test_kill_after_parts_moved_but_before_commit_is_invisible_and_recovered(world, tmp_path):
    s = _copy_world(world, tmp_path)

    def die(rep):
        if rep.file == "cdr_202503.csv":
            raise KeyboardInterrupt("killed before manifest")

    with pytest.raises(KeyboardInterrupt):
        run_ingest(s, hooks=Hooks(before_commit=die))
    # the moved-in part exists on disk but is not part of the lake
    on_disk = list((s.path("lake") / "cdr" / "month=2025-03").glob("cdr_202503-*.parquet"))
    assert on_disk and all(p not in lk.parts(s.path("lake"), "cdr") for p in on_disk)
    report = run_ingest(s)
    assert {f.file for f in report.files if f.status == "committed"} >= {"cdr_202503.csv"}
    con = duckdb.connect()
    views.register_views(con, s.path("lake"))
    n, distinct = con.sql("SELECT count(*), count(DISTINCT record_id) FROM cdr").fetchall()[0]
    assert n == distinct


def test_mostly_garbage_file_fails_loudly_and_leaves_no_partition(world, tmp_path):
    s = _copy_world(world, tmp_path)
    path = s.path("landing") / "billing_202508.csv"
    good = pd.read_csv(
        s.path("landing") / "billing_202507.csv", dtype=str, keep_default_na=False
    ).head(50)
    good["bill_month"] = "202508"
    garbage = pd.DataFrame({c: ["#garbage#"] * 200 for c in good.columns})
    pd.concat([good, garbage]).to_csv(path, index=False)
    with pytest.raises(IngestFailed) as e:
        run_ingest(s)
    assert "billing_202508.csv" in str(e.value) and "above the limit" in str(e.value)
    assert not (s.path("lake") / "billing" / "month=2025-08").exists()
    assert "billing_202508.csv" not in lk.read_manifest(s.path("lake"), "billing")["files"]
    assert (s.path("lake") / "billing" / "month=2025-07").exists()  # other files went in
    failed_q = list((s.path("quarantine") / "billing" / "failed").glob("*.parquet"))
    assert failed_q


def _batch(contract, rows: list[dict]) -> pa.Table:
    return pa.table({c: [r.get(c, "") for r in rows] for c in contract.names})


def _billing_row(**over):
    row = dict(
        msisdn="13812345678", bill_month="202503", activation_date="2020-01-05", payment_type="prepaid",
        plan_id="G4-38", plan_fee="38.00", total_charge="40.00", voice_charge="17.10", data_charge="20.90",
        sms_charge="0.00", vas_charge="2.00", voice_overage_charge="0.00", data_overage_charge="0.00",
        discount="0.00", paid_amount="50.00", balance="12.00", arrears="0.00", voice_minutes="120",
        data_mb="2048.5", sms_count="3", points_balance="1000", points_redeemed="0", family_bundle="0",
        group_bundle="1", contract_end_date="", network_generation="4G", status="active",
    )  # fmt: skip
    row.update(over)
    return row


@pytest.mark.parametrize(
    ("over", "reason", "column"),
    [
        ({}, None, None),
        ({"activation_date": "2019-02-30"}, "unparseable_date", "activation_date"),
        ({"activation_date": "2025-04-02"}, "activation_after_bill_month", "activation_date"),
        ({"bill_month": "202505"}, "future_date", "bill_month"),
        ({"total_charge": "99.00"}, "bill_arithmetic", "total_charge"),
        ({"plan_fee": "-38.00"}, "negative_value", "plan_fee"),
        ({"family_bundle": "2"}, "out_of_range", "family_bundle"),
        ({"status": "frozen"}, "unknown_enum", "status"),
        ({"msisdn": ""}, "missing_key", "msisdn"),
        ({"plan_id": ""}, "missing_value", "plan_id"),
        ({"msisdn": "+86 138-1234-5678"}, None, None),
        # padding is not an error: values are read trimmed
        (
            {
                "payment_type": " prepaid ",
                "plan_fee": " 38.00",
                "activation_date": "2020-01-05 ",
                "msisdn": " 13812345678",
                "contract_end_date": "  ",
                "family_bundle": "0 ",
            },
            None,
            None,
        ),  # fmt: skip
        ({"msisdn": "   "}, "missing_key", "msisdn"),
        ({"plan_id": " "}, "missing_value", "plan_id"),
        ({"status": " frozen "}, "unknown_enum", "status"),
    ],
)
def test_billing_row_rules(over, reason, column):
    acc, rej = validate_batch(
        _batch(BILLING, [_billing_row(**over)]), BILLING, PLAN, file_name="billing_202503.csv",
        period_end=dt.datetime(2025, 3, 31, 23, 59, 59), row_numbers=np.array([1]),
        delivered_at=dt.datetime(2025, 4, 2),
    )  # fmt: skip
    if reason is None:
        assert acc.num_rows == 1 and rej.num_rows == 0
        assert acc["msisdn"][0].as_py() == "13812345678" and acc["month"][0].as_py() == "2025-03"
        assert acc["payment_type"][0].as_py() == "prepaid" and acc["plan_fee"][0].as_py() == 38.0
        assert acc["activation_date"][0].as_py() == dt.date(2020, 1, 5)
        assert acc["family_bundle"][0].as_py() == 0 and acc["contract_end_date"][0].as_py() is None
    else:
        assert rej.num_rows == 1 and acc.num_rows == 0
        assert rej["reason"][0].as_py() == reason and rej["column"][0].as_py() == column


def test_complaint_satisfaction_range_and_update_order():
    base = dict(ticket_id="T1", msisdn="13812345678", opened_at="2025-03-01 10:00:00", updated_at="2025-03-02 10:00:00",
                closed_at="", category="network", channel="app", severity="normal", status="open", satisfaction="", description="x")  # fmt: skip
    rows = [
        base,
        base | {"satisfaction": "7"},
        base | {"opened_at": "2025-03-03 10:00:00"},
        base | {"updated_at": "2025-04-01 00:00:01"},
    ]
    acc, rej = validate_batch(
        _batch(COMPLAINTS, rows), COMPLAINTS, PLAN, file_name="complaints_202503.csv",
        period_end=dt.datetime(2025, 3, 31, 23, 59, 59), row_numbers=np.arange(1, 5),
        delivered_at=dt.datetime(2025, 4, 2),
    )  # fmt: skip
    assert acc.num_rows == 1
    assert rej["reason"].to_pylist() == ["out_of_range", "opened_after_update", "future_date"]


def test_gzip_daily_cdr_and_gbk_deliveries_ingest_like_the_plain_ones(tmp_path):
    """The same world delivered as .csv.gz, one CDR file a day and GBK complaints gives the same lake."""
    lakes = []
    for name, variant in (("plain", False), ("variant", True)):
        s = make_settings(tmp_path / name, subscribers=300, months=4, seed=9)
        s.synth.dirt.truncated_last_line = (
            False  # the cut row would differ between daily and monthly files
        )
        if variant:
            s.synth.dirt.gzip = True
            s.synth.dirt.gbk_pipe_complaints = True
            s.synth.cdr_file_granularity = "day"
        generate(s, s.path("landing"), s.path("truth"), show_progress=False)
        if variant:
            names = [p.name for p in s.path("landing").glob("cdr_*")]
            assert len(names) > 100 and all(n.endswith(".csv.gz") for n in names)
        report = run_ingest(s)
        assert all(f.reconciles for f in report.files if f.status == "committed")
        con = duckdb.connect()
        views.register_views(con, s.path("lake"))
        lakes.append(
            {
                src: con.sql(
                    f"SELECT * EXCLUDE (_source_file, _row_number, _delivered_at) FROM {src} ORDER BY ALL"
                ).df()
                for src in ("billing", "cdr", "complaints")
            }
        )
    for src in ("billing", "cdr", "complaints"):
        pd.testing.assert_frame_equal(lakes[0][src], lakes[1][src], check_like=True)


def test_a_file_named_for_a_date_that_does_not_exist_fails_clearly(tmp_path):
    s = make_settings(tmp_path)
    s.path("landing").mkdir(parents=True)
    (s.path("landing") / "cdr_20250229.csv").write_text(
        "record_id,msisdn,other_number,direction,event_type,start_time,duration_s,call_result,cell_id,roaming\n"
        "E1,13812345678,13912345678,MO,voice,2025-02-28 10:00:00,30,completed,C1,0\n"
    )
    report = run_ingest(s, raise_on_failure=False)
    (f,) = report.files
    assert f.status == "failed" and "20250229" in f.message and "not a valid date" in f.message
    assert not lk.parts(s.path("lake"), "cdr")


def _write_csv(path, contract, rows):
    pd.DataFrame([{c: r.get(c, "") for c in contract.names} for r in rows]).to_csv(
        path, index=False
    )


def test_duplicates_keep_the_first_call_the_latest_bill_and_drop_repeats_across_files(tmp_path):
    from pipelines.lake.contract import CDR

    s = make_settings(tmp_path)
    land = s.path("landing")
    land.mkdir(parents=True)
    call = dict(msisdn="13812345678", other_number="13912345678", direction="MO", event_type="voice",
                start_time="2025-03-05 10:00:00", duration_s="60", call_result="completed",
                cell_id="C1", roaming="0", other_operator="own")  # fmt: skip
    _write_csv(land / "cdr_202503.csv", CDR, [
        call | {"record_id": "R1"},
        call | {"record_id": "R2"},
        call | {"record_id": "R1", "duration_s": "61"},  # resent inside the file: the first stays
    ])  # fmt: skip
    _write_csv(land / "cdr_202504.csv", CDR, [
        call | {"record_id": "R2"},  # March's record delivered again in April's file
        call | {"record_id": "R3", "start_time": "2025-04-01 08:00:00"},
    ])  # fmt: skip
    _write_csv(land / "billing_202503.csv", BILLING, [
        _billing_row(),
        _billing_row(msisdn="13812345679"),
        _billing_row(plan_fee="48.00"),  # the same bill again, corrected: the latest row wins
    ])  # fmt: skip
    report = run_ingest(s)
    by_file = {f.file: f for f in report.files}
    march, april, bills = (
        by_file["cdr_202503.csv"],
        by_file["cdr_202504.csv"],
        by_file["billing_202503.csv"],
    )
    assert (march.duplicates_within_file, march.duplicates_across_files, march.accepted) == (
        1,
        0,
        2,
    )
    assert (april.duplicates_within_file, april.duplicates_across_files, april.accepted) == (
        0,
        1,
        1,
    )
    assert (bills.duplicates_within_file, bills.accepted) == (1, 2)
    con = duckdb.connect()
    views.register_views(con, s.path("lake"))
    calls = con.sql("SELECT record_id, duration_s, _source_file FROM cdr ORDER BY 1").fetchall()
    assert calls == [
        ("R1", 60, "cdr_202503.csv"),
        ("R2", 60, "cdr_202503.csv"),
        ("R3", 60, "cdr_202504.csv"),
    ]
    fees = con.sql("SELECT msisdn, plan_fee FROM billing ORDER BY 1").fetchall()
    assert fees == [("13812345678", 48.0), ("13812345679", 38.0)]


def test_small_blocks_and_parts_give_the_same_lake(world, tmp_path):
    """Rolling parts and many blocks (duplicates spread over several parts) change nothing."""
    cdr = sorted(world.path("landing").glob("cdr_*.csv"))[:3]
    lakes = []
    for name, over in (("default", {}), ("small", {"batch_bytes": 1 << 16, "part_max_rows": 1000})):
        s = make_settings(tmp_path / name)
        s.path("landing").mkdir(parents=True)
        for p in cdr:
            shutil.copy2(p, s.path("landing") / p.name)
        s.ingest = s.ingest.model_copy(update=over)
        report = run_ingest(s)
        assert all(f.reconciles for f in report.files)
        lakes.append((report, s))
    (big, s_big), (small, s_small) = lakes
    assert [(f.accepted, f.duplicates, f.quarantined) for f in big.files] == [
        (f.accepted, f.duplicates, f.quarantined) for f in small.files
    ]
    assert sum(f.duplicates_across_files for f in small.files) > 0
    manifest = lk.read_manifest(s_small.path("lake"), "cdr")
    split = [
        len(e["parts"]) > len({rel.split("/")[0] for rel in e["parts"]})
        for e in manifest["files"].values()
    ]
    assert any(split)  # a file's month really was written as several parts
    rows = []
    for s in (s_big, s_small):
        con = duckdb.connect()
        views.register_views(con, s.path("lake"))
        rows.append(
            con.sql("SELECT * EXCLUDE (_delivered_at) FROM cdr ORDER BY record_id").fetchall()
        )
    assert rows[0] == rows[1]
