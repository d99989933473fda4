"""The synthetic operator answers retention contacts: its CRM extract, the true effects, calibration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import Settings
from pipelines.synth import world as world_module
from pipelines.synth.campaigns import CHANNELS, OFFERS
from pipelines.synth.deliver import Delivery, generate
from pipelines.synth.response import CRM_COLUMNS, best_effect, effect_column, true_effects
from tests.worlds import make_settings

WORLD = {"subscribers": 3000, "months": 8, "seed": 5}
SMALL = {"subscribers": 1200, "months": 5, "seed": 3}
EFFECTS = [effect_column(ch, of) for ch in CHANNELS for of in OFFERS]


def _generate(root: Path, **synth) -> Settings:
    s = make_settings(root, **synth)
    generate(s, s.path("landing"), s.path("truth"), show_progress=False)
    return s


def _crm(s: Settings) -> pd.DataFrame:
    return pd.read_csv(
        s.path("data_dir") / "crm" / "contact_history.csv", dtype=str, keep_default_na=False
    )


def _effects(s: Settings) -> pd.DataFrame:
    months = pd.period_range(s.synth.start_month, periods=s.synth.months, freq="M")[1:]
    return pd.concat([true_effects(s.path("truth"), str(p)) for p in months], ignore_index=True)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _outcomes(s: Settings, crm: pd.DataFrame) -> pd.DataFrame:
    """Each contact row with its churn in the label window (month m, m + 1) and its truth."""
    sub = pd.read_parquet(s.path("truth") / "subscribers.parquet").set_index("msisdn")
    out = crm.copy()
    out["month"] = out["contacted_at"].str[:7]
    m = pd.PeriodIndex(out["month"], freq="M")
    churn = pd.PeriodIndex(out["msisdn"].map(sub["churn_month"]).fillna("2999-01"), freq="M")
    out["churned"] = ((churn >= m) & (churn <= m + 1)).astype(float)
    fx = _effects(s)
    out = out.merge(fx, on=["msisdn", "month"], how="left", validate="many_to_one")
    cols = [effect_column(c, o) for c, o in zip(out["channel"], out["offer"], strict=True)]
    pos = out.columns.get_indexer(cols)
    out["true_effect"] = out.to_numpy()[np.arange(len(out)), pos].astype(float)
    return out


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> Settings:
    """3,000 subscribers x 8 months with the default response and past campaigns."""
    return _generate(tmp_path_factory.mktemp("respworld"), **WORLD)


@pytest.fixture(scope="module")
def effects(default_world) -> pd.DataFrame:
    return _effects(default_world)


@pytest.fixture(scope="module")
def crm(default_world) -> pd.DataFrame:
    return _crm(default_world)


@pytest.fixture(scope="module")
def homogeneous_world(tmp_path_factory) -> Settings:
    """Everyone equally persuadable and a big pilot: the pilot's measured effect must show."""
    response = {
        "heterogeneous": False,
        "homogeneous_save": 0.9,
        "pilot_share": 0.5,
        "targeted_share": 0.0,
    }
    return _generate(tmp_path_factory.mktemp("homworld"), **WORLD, response=response)


def test_crm_extract_conforms(default_world, crm):
    path = default_world.path("data_dir") / "crm" / "contact_history.csv"
    assert path.read_bytes().decode("utf-8").split("\n", 1)[0] == ",".join(CRM_COLUMNS)
    assert list(crm.columns) == CRM_COLUMNS
    assert crm["campaign"].str.fullmatch(r"(pilot|targeted)-\d{4}-\d{2}").all()
    assert crm["msisdn"].str.fullmatch(r"1\d{10}").all()
    assert set(crm["group"]) == {"treated", "control"}
    assert crm["channel"].isin(CHANNELS).all() and crm["offer"].isin(OFFERS).all()
    # contacted within the campaign's month, from the second month on, once a month at most
    assert (crm["contacted_at"].str[:7] == crm["campaign"].str[-7:]).all()
    assert pd.to_datetime(crm["contacted_at"], format="%Y-%m-%d %H:%M:%S").notna().all()
    months = sorted(crm["campaign"].str[-7:].unique())
    assert months == [str(p) for p in pd.period_range("2025-02", "2025-08", freq="M")]
    assert not crm.assign(m=crm["contacted_at"].str[:7]).duplicated(["msisdn", "m"]).any()
    control, treated = crm[crm["group"] == "control"], crm[crm["group"] == "treated"]
    assert (control["reached"] == "").all() and (control["accepted"] == "").all()
    assert treated["reached"].isin(["0", "1"]).all() and treated["accepted"].isin(["0", "1"]).all()
    assert not ((treated["accepted"] == "1") & (treated["reached"] == "0")).any()
    # reach follows the channel; the pilot holds half out, the targeted campaign about 10%
    reach = treated.groupby("channel")["reached"].apply(lambda r: (r == "1").mean())
    for ch, p in default_world.synth.response.reach.items():
        assert abs(reach[ch] - p) < 0.08, ch
    pilot = crm[crm["campaign"].str.startswith("pilot")]
    assert abs((pilot["group"] == "control").mean() - 0.5) < 0.03
    targeted = crm[crm["campaign"].str.startswith("targeted")]
    assert 0.04 < (targeted["group"] == "control").mean() < 0.17
    n_base = WORLD["subscribers"]
    assert 0.6 * 0.05 * n_base < len(pilot) / len(months) < 1.2 * 0.05 * n_base


def test_pilot_is_random_and_the_old_rule_is_not(default_world, crm, effects):
    """Treated and control of the pilot look alike; the targeted campaign picks big bills."""
    sub = pd.read_parquet(default_world.path("truth") / "subscribers.parquet")
    act = pd.PeriodIndex(pd.to_datetime(sub["activation_date"]), freq="M")
    frame = crm.assign(month=crm["contacted_at"].str[:7])
    frame = frame.merge(effects[["msisdn", "month", "p0"]], on=["msisdn", "month"])
    tenure_at = pd.Series(act.to_timestamp(), index=sub["msisdn"])
    m = pd.PeriodIndex(frame["month"], freq="M").to_timestamp()
    frame["tenure_days"] = (m - frame["msisdn"].map(tenure_at).to_numpy()).days
    fee = _plan_fees(default_world)
    frame["fee"] = frame["msisdn"].map(fee)
    pilot = frame[frame["campaign"].str.startswith("pilot")]
    for col in ("tenure_days", "fee", "p0"):
        t, c = pilot.loc[pilot.group == "treated", col], pilot.loc[pilot.group == "control", col]
        smd = (t.mean() - c.mean()) / pilot[col].std()
        assert abs(smd) < 0.12, (col, smd)
    targeted = frame[frame["campaign"].str.startswith("targeted")]
    assert (targeted["fee"].mean() - pilot["fee"].mean()) / pilot["fee"].std() > 0.3


def _plan_fees(s: Settings) -> pd.Series:
    frames = [
        pd.read_csv(p, dtype=str, keep_default_na=False, usecols=["msisdn", "plan_fee"])
        for p in sorted(s.path("landing").glob("billing_*.csv"))
    ]
    b = pd.concat(frames)
    b = b[b["msisdn"].str.fullmatch(r"1\d{10}")]
    return pd.to_numeric(b["plan_fee"], errors="coerce").groupby(b["msisdn"]).median()


def test_true_effects_are_calibrated(effects):
    """At best about 40% of would-be leavers kept; contacting at random helps a little."""
    fx = effects
    assert fx["p0"].between(0, 1).all()
    values = fx[EFFECTS].to_numpy()
    p0 = fx["p0"].to_numpy()[:, None]
    assert (values >= -p0 - 1e-12).all() and (values <= 1 - p0 + 1e-12).all()
    # the committed (fading, decided two months ago or earlier) leave whatever is said
    committed = fx["committed"].to_numpy()
    assert committed.any() and (values[committed] == 0).all()
    best, channel, offer = best_effect(fx)
    open_ = ~committed
    kept = -best[open_].sum() / fx["p0"][open_].sum()
    assert 0.3 <= kept <= 0.5, kept
    assert (best <= 0).all()
    random_effect = 100 * values.mean()
    assert -5 < random_effect < 0, random_effect
    dogs = fx["sleeping_dog"].mean()
    assert 0 < dogs < 0.15, dogs
    # a sleeping dog texted about a data pack is more likely to leave, not less
    dog_sms = fx.loc[fx["sleeping_dog"], effect_column("sms_app", "data_pack")]
    assert (dog_sms >= 0).all() and (dog_sms > 0).any()


def test_matched_offers_and_personal_channels_work_better(effects):
    """The offer that answers the driver beats another; an account manager beats an SMS."""
    fx = effects[(effects["p0"] > 0.01) & ~effects["committed"] & ~effects["sleeping_dog"]]
    contract = fx[fx["driver"] == "contract_end_near"]
    dropped = fx[fx["driver"] == "dropped_calls"]
    assert len(contract) > 10 and len(dropped) > 10
    am = "account_manager"
    for frame, good, other in ((contract, "renewal_24m", "coverage_check"),
                               (dropped, "coverage_check", "renewal_24m")):  # fmt: skip
        assert frame[effect_column(am, good)].mean() < 2 * frame[effect_column(am, other)].mean()
    am_mean = fx[[effect_column(am, o) for o in OFFERS]].to_numpy().mean()
    sms_mean = fx[[effect_column("sms_app", o) for o in OFFERS]].to_numpy().mean()
    assert am_mean < 1.5 * sms_mean < 0
    # within the channels allowed, best_effect picks the minimum and says where it is
    best, channel, offer = best_effect(fx, ["sms_app"])
    assert set(channel) == {"sms_app"}
    picked = fx.to_numpy()[np.arange(len(fx)), fx.columns.get_indexer(
        [effect_column(c, o) for c, o in zip(channel, offer, strict=True)])]  # fmt: skip
    np.testing.assert_allclose(picked.astype(float), best)
    sms_cols = [effect_column("sms_app", o) for o in OFFERS]
    np.testing.assert_allclose(best, fx[sms_cols].min(axis=1))


def test_homogeneous_effects_are_proportional_to_risk(homogeneous_world):
    fx = _effects(homogeneous_world)
    cfg = homogeneous_world.synth.response
    assert not fx["sleeping_dog"].any() and not fx["committed"].any()
    risky = fx[fx["p0"] > 1e-6]
    for ch in CHANNELS:
        ratio = risky[[effect_column(ch, o) for o in OFFERS]].to_numpy() / risky[["p0"]].to_numpy()
        np.testing.assert_allclose(ratio, -cfg.reach[ch] * cfg.homogeneous_save)
    assert (fx.loc[fx["p0"] == 0, EFFECTS].to_numpy() == 0).all()


def test_the_pilot_measures_the_true_effect(homogeneous_world):
    """Treated minus control churn of the pilot has the sign (and size) of the true mean effect."""
    rows = _outcomes(homogeneous_world, _crm(homogeneous_world))
    treated, control = rows[rows["group"] == "treated"], rows[rows["group"] == "control"]
    measured = treated["churned"].mean() - control["churned"].mean()
    true = treated["true_effect"].mean()
    se = np.sqrt(treated["churned"].var() / len(treated) + control["churned"].var() / len(control))
    assert true < -3 * se, (true, se)
    assert np.sign(measured) == np.sign(true)
    assert abs(measured - true) < 3.5 * se, (measured, true, se)
    # the controls churn as p0 says they would
    c_se = control["churned"].std() / np.sqrt(len(control))
    assert abs(control["churned"].mean() - control["p0"].mean()) < 3.5 * c_se


class _NoResponse:
    """The world as it was before subscribers could be contacted."""

    window = (0, 2)
    truth = contacts = None

    def __init__(self, cfg, world) -> None:
        pass

    def begin(self, m, contacts=None) -> None:
        pass

    def after_decide(self, m, active, decision) -> None:
        pass

    def close(self, *args) -> None:
        pass


def test_without_campaigns_the_world_is_the_old_one_byte_for_byte(tmp_path, monkeypatch):
    off = _generate(tmp_path / "off", **SMALL, response={"campaigns": False})
    on = _generate(tmp_path / "on", **SMALL)
    assert _crm(off).empty and len(_crm(on)) > 0
    with monkeypatch.context() as mp:
        mp.setattr(world_module, "Response", _NoResponse)
        old = _generate(tmp_path / "old", **SMALL)
    assert _digests(off.path("landing")) == _digests(old.path("landing"))
    assert _digests(off.path("truth") / "hazard") == _digests(old.path("truth") / "hazard")
    # the contacts do change the world (the same world would make the test above vacuous)
    billing = [k for k in _digests(on.path("landing")) if k.startswith("billing_2025")]
    changed = [
        k for k in billing if _digests(on.path("landing"))[k] != _digests(off.path("landing"))[k]
    ]
    assert changed and "billing_202501.csv" not in changed


def test_deterministic_for_a_seed(tmp_path):
    a = _generate(tmp_path / "a", **SMALL)
    b = _generate(tmp_path / "b", **SMALL)
    for folder in ("landing", "crm", "truth/response"):
        assert _digests(a.path("data_dir") / folder) == _digests(b.path("data_dir") / folder)


def test_the_system_can_drive_the_world(tmp_path):
    """External contacts go through the same mechanism, into the CRM, out of the campaigns."""
    s = make_settings(tmp_path, **SMALL)
    delivery = Delivery(s, s.path("landing"), s.path("truth"))
    world = delivery.world
    ours = pd.DataFrame(
        {
            "msisdn": world.pop.msisdn[:300],
            "channel": "account_manager",
            "offer": "renewal_24m",
            "group": ["treated"] * 250 + ["control"] * 50,
        }
    )
    for m in range(s.synth.months):
        delivery.write_month(world.step(m, contacts=ours if m == 2 else None))
    delivery.finish()
    crm = _crm(s)
    month = str(world.periods[2])
    sys_rows = crm[crm["campaign"] == f"system-{month}"]
    assert len(sys_rows) == 300 and set(sys_rows["msisdn"]) == set(ours["msisdn"])
    assert (sys_rows.loc[sys_rows["group"] == "control", "reached"] == "").all()
    assert sys_rows.loc[sys_rows["group"] == "treated", "reached"].isin(["0", "1"]).all()
    others = crm[crm["contacted_at"].str.startswith(month) & (crm["campaign"] != f"system-{month}")]
    assert len(others) > 0 and not others["msisdn"].isin(ours["msisdn"]).any()
