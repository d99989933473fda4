"""The synthetic operator: conforms to EXTRACTS.md, is deterministic, and is worth modelling."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from pipelines.lake.contract import CONTRACTS
from pipelines.synth.deliver import generate, load_truth
from tests.worlds import make_settings

MONEY = re.compile(r"^-?\d+\.\d{2}$")


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip", engine="python")


@pytest.fixture(scope="module")
def extracts(world):
    landing = world.path("landing")
    out = {}
    for src in ("billing", "cdr", "complaints"):
        frames = []
        for p in sorted(landing.glob(f"{src}_*.csv")):
            df = _read(p)
            df["_file"] = p.name
            df["_row"] = np.arange(1, len(df) + 1)
            frames.append(df)
        out[src] = pd.concat(frames, ignore_index=True)
    return out


@pytest.fixture(scope="module")
def truth(world):
    return load_truth(world.path("truth"))


def _clean(df, dirt, source):
    d = dirt[(dirt.source == source) & (dirt.kind != "msisdn_format")]
    bad = set(zip(d.file, d.row_number, strict=True))
    keep = [(f, r) not in bad for f, r in zip(df._file, df._row, strict=True)]
    return df[keep]


def test_headers_are_the_contract(world):
    landing = world.path("landing")
    for source in ("billing", "complaints"):
        headers = {tuple(_read(p).columns) for p in landing.glob(f"{source}_*.csv")}
        assert headers == {tuple(CONTRACTS[source].names)}, source
    cdr = CONTRACTS["cdr"].names
    cdr_headers = {tuple(_read(p).columns) for p in landing.glob("cdr_*.csv")}
    # the optional other_operator column is absent from the oldest exports
    assert cdr[-1] == "other_operator" and not CONTRACTS["cdr"].column(cdr[-1]).required
    assert cdr_headers == {tuple(cdr), tuple(cdr[:-1])}


def test_clean_billing_rows_conform(extracts, truth):
    b = _clean(extracts["billing"], truth["dirt"], "billing")
    enums = {c.name: c.values for c in CONTRACTS["billing"].columns if c.values}
    for col in ("payment_type", "status", "network_generation"):
        assert b[col].isin(enums[col]).all(), col
    assert set(b.status) >= {"active", "cancelled", "ported_out"}  # the world has leavers
    for c in (
        "plan_fee",
        "total_charge",
        "voice_charge",
        "data_charge",
        "paid_amount",
        "balance",
        "arrears",
    ):
        assert b[c].str.match(MONEY).all(), c
    assert b.bill_month.str.fullmatch(r"\d{6}").all()
    assert pd.to_datetime(b.activation_date, format="%Y-%m-%d").notna().all()
    # bill arithmetic: total = voice + data + sms + vas - discount
    f = b[
        ["total_charge", "voice_charge", "data_charge", "sms_charge", "vas_charge", "discount"]
    ].astype(float)
    diff = f.total_charge - (
        f.voice_charge + f.data_charge + f.sms_charge + f.vas_charge - f.discount
    )
    assert diff.abs().max() < 0.011
    # activation never after the bill month
    act = pd.to_datetime(b.activation_date).dt.to_period("M")
    assert (act <= pd.PeriodIndex(b.bill_month, freq="M")).all()


def test_clean_cdr_rows_conform(extracts, truth):
    c = _clean(extracts["cdr"], truth["dirt"], "cdr")
    assert c.direction.isin(["MO", "MT"]).all()
    assert c.event_type.isin(["voice", "sms"]).all()
    assert c.call_result.isin(["completed", "dropped", "failed"]).all()
    assert (c.duration_s.astype(int) >= 0).all()
    assert (c.loc[c.event_type == "sms", "duration_s"] == "0").all()
    assert c.other_operator.fillna("").isin(["own", "other", "unknown", ""]).all()
    assert pd.to_datetime(c.start_time, format="%Y-%m-%d %H:%M:%S").notna().all()


def test_complaints_have_chinese_text_quotes_newlines_and_formulas(world):
    text = "".join(
        p.read_text(encoding="utf-8") for p in world.path("landing").glob("complaints_*.csv")
    )
    assert "信号差" in text
    assert '""' in text  # an escaped quote inside a quoted field
    c = pd.concat([_read(p) for p in world.path("landing").glob("complaints_*.csv")])
    assert c.description.str.contains("\n").any()
    assert c.description.str.startswith("=").any()
    # later extracts carry new states of tickets opened earlier
    opened = pd.PeriodIndex(pd.to_datetime(c.opened_at, errors="coerce"), freq="M")
    updated = pd.PeriodIndex(pd.to_datetime(c.updated_at, errors="coerce"), freq="M")
    assert (updated > opened).sum() > 10
    assert (c.status == "reopened").any()


def test_same_seed_gives_byte_identical_files(tmp_path):
    digests = []
    for run in ("a", "b"):
        s = make_settings(tmp_path / run, subscribers=300, months=4, seed=5)
        generate(s, s.path("landing"), s.path("truth"), show_progress=False)
        files = sorted(p for p in s.path("landing").rglob("*") if p.is_file())
        digests.append(
            {
                str(p.relative_to(s.path("landing"))): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in files
            }
        )
    assert digests[0] == digests[1]
    s = make_settings(tmp_path / "c", subscribers=300, months=4, seed=6)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    other = hashlib.sha256((s.path("landing") / "cdr_202501.csv").read_bytes()).hexdigest()
    assert other != digests[0]["cdr_202501.csv"]


def test_monthly_churn_tiers_and_onnet_share_are_realistic(extracts, truth):
    t = truth["subscribers"]
    h = truth["hazard"]
    base = h.groupby("month").size()
    churn = t.churn_month.value_counts().reindex(base.index).fillna(0)
    rate = churn / base
    assert rate.between(0.012, 0.035).all(), rate.to_dict()
    assert 0.015 <= rate.mean() <= 0.03
    b = _clean(extracts["billing"], truth["dirt"], "billing")
    bill = b.total_charge.astype(float)
    assert 0.01 <= (bill > 500).mean() <= 0.10
    assert 0.002 <= (bill > 1000).mean() <= 0.04
    c = _clean(extracts["cdr"], truth["dirt"], "cdr")
    op = c.other_operator[c.other_operator.isin(["own", "other"])]
    onnet = (op == "own").mean()
    assert 0.45 <= onnet <= 0.75


def test_truth_agrees_with_billing_statuses(extracts, truth, world):
    """Churn read from billing by the EXTRACTS definition equals the hidden churn month."""
    raw = extracts["billing"]
    dirty = raw.merge(
        truth["dirt"].query("kind != 'msisdn_format'"),
        left_on=["_file", "_row"],
        right_on=["file", "row_number"],
    )
    b = _clean(raw, truth["dirt"], "billing").copy()
    b["msisdn"] = b.msisdn.str.replace(r"\D", "", regex=True).str[-11:]
    b = b.drop_duplicates(["msisdn", "bill_month"])
    spoiled_months = set(
        zip(
            dirty.msisdn.str.replace(r"\D", "", regex=True).str[-11:], dirty.bill_month, strict=True
        )
    )
    hard = (
        b[b.status.isin(["cancelled", "ported_out"])]
        .sort_values("bill_month")
        .groupby("msisdn")
        .bill_month.first()
    )
    t = truth["subscribers"].set_index("msisdn")
    months = sorted(b.bill_month.unique())
    k = world.churn.prepaid_inactivity_months
    last_confirmable = months[-k]  # a silent churn needs k silent months to be seen
    for m, row in t[t.exit_kind.isin(["cancelled", "ported_out"])].iterrows():
        if (
            (m, row.churn_month.replace("-", "")) in spoiled_months
            or len(spoiled_months)
            and m not in set(b.msisdn)
        ):
            continue  # that row itself was spoiled on purpose
        assert hard.get(m) == row.churn_month.replace("-", ""), m
    silent = t[t.exit_kind == "silent"]
    for m, row in silent.iterrows():
        s = row.churn_month.replace("-", "")
        if s > last_confirmable:
            continue
        if any(mm == m and bm >= s for mm, bm in spoiled_months):
            continue
        rows = b[(b.msisdn == m) & (b.bill_month >= s)].sort_values("bill_month").head(k)
        usage = rows[["voice_minutes", "sms_count"]].astype(float).sum(
            axis=1
        ) + rows.data_mb.astype(float)
        assert (
            len(rows) == k and (usage == 0).all() and (rows.paid_amount.astype(float) == 0).all()
        ), m
    # nobody outside the truth is hard-churned
    assert set(hard.index) <= set(t.index[t.exit_kind.notna()])


def test_each_kind_of_dirt_appears_at_the_configured_rate(world, truth, extracts):
    dirt = truth["dirt"]
    cfg = world.synth.dirt
    for src in ("billing", "cdr"):
        n = len(extracts[src])
        for kind in cfg.kinds:
            k = ((dirt.source == src) & (dirt.kind == kind)).sum()
            expected = n * cfg.rate / len(cfg.kinds)
            assert abs(k - expected) < 4 * np.sqrt(expected) + 2, (src, kind, k, expected)
    fmt = ((dirt.source == "cdr") & (dirt.kind == "msisdn_format")).sum() / len(extracts["cdr"])
    assert abs(fmt - cfg.msisdn_format_rate) < 0.005
    assert (dirt.kind == "truncated_row").sum() == 1
    dups = truth["duplicates"]
    assert len(dups) > 0 and dups.record_id.isin(extracts["cdr"].record_id).all()
    red = world.path("landing") / "redelivery"
    assert len(list(red.glob("billing_*.csv"))) == 2
