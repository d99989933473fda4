"""Personal data: nothing published or logged lets anyone recover a phone number.

Tried as an attacker would: a published list shows 7 of 11 digits, so whoever can
compute the subscriber key from anything public recovers the number by trying the
10,000 hidden digits. These tests run that attack, and look for every known number,
in every spelling, in every place a number could escape to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from pipelines import privacy
from pipelines.lake import store as lk
from tests.leaks import known_numbers, leaks_under, numbers_in, read_parts


def _attack(masked: str, key: str, guesses) -> str | None:
    """Try the 10,000 hidden digits against every key recipe an attacker can think of."""
    head, tail = masked[:3], masked[-4:]
    for i in range(10_000):
        m = f"{head}{i:04d}{tail}"
        for recipe in guesses:
            if recipe(m) == key:
                return m
    return None


def _public_recipes(s):
    """Keys computable from the repository and the configuration (strings of the config)."""
    strings = {"", "churn-model", s.model.name, s.model.experiment}

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and len(v) < 64:
            strings.add(v)

    walk(s.model_dump(mode="json"))
    salts = sorted(strings)[:40]
    recipes = [
        lambda m, salt=salt: hashlib.sha256((salt + m).encode()).hexdigest()[:16] for salt in salts
    ]
    recipes += [lambda m, salt=salt: hmac.new(salt.encode(), m.encode(), hashlib.sha256).hexdigest()[:16]
                for salt in salts[:10]]  # fmt: skip
    return recipes


def test_a_stolen_list_and_the_repository_recover_no_number(published):
    s, sc, _, prev = published
    rows = []
    for month in (prev.month, sc.month):
        folder = s.path("outputs") / "retention" / month
        for name in ("all.csv", "diff.csv"):
            df = pd.read_csv(folder / name, dtype=str, encoding="utf-8-sig")
            rows += list(zip(df.msisdn, df.subscriber_key, strict=True))
    assert len(rows) > 100
    # the attack of the issue (SHA-256 of the model name + number) on 200 rows, and every
    # salt the configuration offers (SHA-256 and HMAC) on 10 of them
    issue = [lambda m: hashlib.sha256(("churn-model" + m).encode()).hexdigest()[:16]]
    sample = rows[:: max(1, len(rows) // 200)][:200]
    assert all(_attack(m, k, issue) is None for m, k in sample)
    recipes = _public_recipes(s)
    assert all(_attack(m, k, recipes) is None for m, k in sample[::20])
    # the attack itself works: given the secret, it recovers every sampled number
    secret = privacy.subscriber_secret(s)
    with_secret = [lambda m: privacy.subscriber_keys(pd.Series([m]), secret).iat[0]]
    recovered = [_attack(m, k, with_secret) for m, k in sample[:5]]
    assert all(
        r is not None and r[:3] == m[:3] for r, (m, _) in zip(recovered, sample, strict=False)
    )


def test_the_manifest_names_the_key_not_the_secret(published):
    s, sc, manifest, _ = published
    secret = privacy.subscriber_secret(s)
    assert manifest["subscriber_key"] == {"kind": "HMAC-SHA256", "key_id": privacy.key_id(secret)}
    for p in (s.path("outputs")).rglob("*"):
        if p.is_file():
            assert secret.hex().encode() not in p.read_bytes()


# ------------------------------------------------------------------ where numbers could escape


def test_no_number_in_any_spelling_reaches_outputs_reports_or_mlflow(published):
    s, sc, _, _ = published
    known = known_numbers(s)
    assert len(known) > 1000
    complaints = read_parts(lk.parts(s.path("lake"), "complaints")).to_pandas()
    with_numbers = complaints.description.map(lambda t: bool(numbers_in(t.encode(), known)))
    assert with_numbers.sum() > 10  # the world writes callback numbers into ticket texts
    for folder in ("outputs", "reports", "mlflow"):
        assert leaks_under(s.path(folder), known) == {}, folder
    lst = pd.read_parquet(s.path("outputs") / "retention" / sc.month / "all.parquet")
    masked_in_text = lst.last_complaint.dropna().str.contains(r"1\d\d\*{4}\d{4}")
    assert masked_in_text.any()  # a complaint with a number was exported, masked


def test_folders_with_full_numbers_are_owner_only_and_lists_are_shared(published):
    s, sc, _, _ = published
    for name in ("lake", "quarantine", "features", "scores", "secrets", "mlflow"):
        root = s.path(name)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, name
        files = [p for p in root.rglob("*") if p.is_file()]
        assert files, name
        loose = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077]
        assert not loose, (name, loose[:3])
    out = s.path("outputs") / "retention" / sc.month
    assert stat.S_IMODE((out / "all.xlsx").stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_delivery_without_header_never_shows_its_number(tmp_path):
    """The first data row taken for a header: its number must not reach stderr, the report
    or Prefect's database (logs, artifacts, state messages), through a real flow run."""
    root = tmp_path / "data"
    number = "13912345678"
    landing = root / "landing"
    landing.mkdir(parents=True)
    (landing / "billing_202501.csv").write_text(
        f"{number},2025-01,2020-03-01,postpaid,P58,58,61.5,active,0,0,0,0,0,0\n"
        f"13912345679,2025-01,2020-03-01,postpaid,P58,58,61.5,active,0,0,0,0,0,0\n",
        encoding="utf-8",
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"paths": {"data_dir": str(root)}}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHURN__", "PREFECT_API"))}
    churn = Path(sys.executable).with_name("churn")
    r = subprocess.run(
        [str(churn), "--config", str(cfg), "ingest"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode != 0
    assert "billing_202501.csv" in r.stderr
    assert "Traceback" not in r.stderr
    known = {number, "13912345679"}
    assert not numbers_in((r.stdout + r.stderr).encode(), known), r.stderr[-2000:]
    assert (root / "reports").exists() and (root / "prefect").exists()
    assert leaks_under(root / "reports", known) == {}
    assert leaks_under(root / "prefect", known) == {}
    report = json.loads((root / "reports" / "ingest" / "ingest_latest.json").read_text())
    assert report["files"][0]["status"] == "failed"
