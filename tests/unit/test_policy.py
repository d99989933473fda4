"""Outreach policy on hand-made cases: every DOMAIN rule, one at a time."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.publish import policy

AS_OF = pd.Timestamp("2025-06-30 23:59:59")


def _cfg(capacity_share: float = 1.0, **over):
    """The publish settings with ``over`` applied, and the economics with that capacity."""
    s = load_config(environ={})
    cfg = s.publish.model_copy(deep=True)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg, s.economics.model_copy(update={"capacity_share": capacity_share})


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = dict(
        p_churn=0.5,
        arpu_3m=100.0,
        value_tier="ordinary",
        days_since_complaint_resolved=None,
        payment_type="prepaid",
    )
    return pd.DataFrame([base | {"msisdn": f"138000000{i:02d}"} | r for i, r in enumerate(rows)])


def _run(rows, cfg=None, **kw):
    cfg, eco = cfg or _cfg(capacity_share=1.0, control_share=0.0)
    ranked = policy.rank(policy.expected_values(_frame(rows), eco))
    return policy.apply_policy(ranked, cfg, economics=eco, as_of=AS_OF, **kw).set_index("msisdn")


def test_ranking_follows_expected_value_at_risk():
    df = policy.rank(policy.expected_values(_frame([
        {"p_churn": 0.9, "arpu_3m": 10}, {"p_churn": 0.2, "arpu_3m": 1000}, {"p_churn": 0.5, "arpu_3m": 100},
    ]), _cfg()[1]))  # fmt: skip
    assert list(df.value_at_risk) == sorted(df.value_at_risk, reverse=True)
    assert df.value_at_risk.iloc[0] == pytest.approx(0.2 * 1000 * 12)


def test_tier_decides_the_channel():
    d = _run([{"value_tier": "member"}, {"value_tier": "vip"}, {"value_tier": "ordinary"}])
    assert d.channel.tolist() == ["account_manager", "call_centre", "sms_app"]


def test_high_value_complaint_resolved_recently_gets_a_callback_within_three_days():
    d = _run([
        {"value_tier": "vip", "days_since_complaint_resolved": 2.0, "p_churn": 0.001},  # unprofitable, still called
        {"value_tier": "ordinary", "days_since_complaint_resolved": 1.0},
        {"value_tier": "member", "days_since_complaint_resolved": 9.0},
    ])  # fmt: skip
    vip, ordinary, member = (d.loc[f"1380000000{i}"] for i in range(3))
    assert bool(vip.complaint_callback) and bool(vip.selected)
    assert str(vip.callback_due) == "2025-07-01"  # resolved 2 days before month end, + 3 days
    assert not ordinary.complaint_callback and not member.complaint_callback


def test_revisit_cycles_use_the_contact_history():
    rows = [{"value_tier": "vip"}, {"value_tier": "vip"}, {"value_tier": "member"}]
    hist = pd.DataFrame({"msisdn": ["13800000000", "13800000001", "13800000002"],
                         "contacted_at": pd.to_datetime(["2025-05-10", "2025-02-10", "2025-05-10"])})  # fmt: skip
    d = _run(rows, contact_history=hist)
    assert d.loc["13800000000", "exclusion"] == "contacted_within_cycle"  # VIP: 3-month cycle
    assert bool(d.loc["13800000001", "selected"])  # VIP called 4 months ago: due again
    assert bool(d.loc["13800000002", "selected"])  # member: monthly cycle


def test_do_not_contact_is_honoured():
    d = _run([{}, {}], do_not_contact={"13800000001"})
    assert (
        d.loc["13800000001", "exclusion"] == "do_not_contact"
        and not d.loc["13800000001", "selected"]
    )
    assert bool(d.loc["13800000000", "selected"])


def test_overall_and_channel_capacity():
    rows = [{"p_churn": 0.9 - i * 0.01} for i in range(10)] + [
        {"value_tier": "vip", "p_churn": 0.95} for _ in range(5)
    ]
    d = _run(
        rows,
        cfg=_cfg(
            capacity_share=0.4,
            control_share=0.0,
            capacity_per_channel={"call_centre": 2, "sms_app": 100},
        ),
    )
    assert d.selected.sum() == 6
    assert (d[d.selected].channel == "call_centre").sum() == 2
    assert set(d[~d.selected].exclusion) == {"over_capacity"}


def test_a_full_channel_overflows_to_the_next_and_says_why():
    rows = [{"value_tier": "member", "p_churn": 0.9 - i * 0.01} for i in range(4)]
    cap = {"account_manager": 1, "call_centre": 1, "sms_app": 1}
    d = _run(rows, cfg=_cfg(control_share=0.0, capacity_per_channel=cap))
    assert d.channel.tolist()[:3] == ["account_manager", "call_centre", "sms_app"]
    assert d.selected.tolist() == [True, True, True, False]
    assert d.exclusion.iat[3] == "over_capacity"
    assert "客户经理本月名额（1）已满，改由呼叫中心联系" in d.channel_reason_zh.iat[1]
    assert "account_manager full (1 this month): sms_app" not in d.channel_reason_en.iat[1]
    assert "account_manager full (1 this month): sms_app instead" in d.channel_reason_en.iat[2]
    no_overflow = _cfg(control_share=0.0, capacity_per_channel=cap, overflow_order=[])
    assert _run(rows, cfg=no_overflow).selected.sum() == 1


def test_unprofitable_tail_is_cut():
    d = _run([{"p_churn": 0.5}, {"p_churn": 0.01, "arpu_3m": 1.0}])
    assert (
        d.loc["13800000001"].exclusion == "not_profitable"
        and d.loc["13800000001"].expected_profit <= 0
    )


def test_control_group_share_is_drawn_from_the_selected_and_seeded():
    rows = [{"p_churn": 0.9} for _ in range(200)]
    cfg = _cfg(capacity_share=1.0, control_share=0.1)
    a = _run(rows, cfg=cfg, seed=7)
    b = _run(rows, cfg=cfg, seed=7)
    assert a.control_group.sum() == 20 and a[a.control_group].selected.all()
    assert a.control_group.equals(b.control_group)


# ------------------------------------------------------------------ channel reasons, silent lines


def test_a_high_value_ordinary_subscriber_is_called_and_told_why():
    d = _run([{"value_tier": "ordinary", "arpu_3m": 1321.2}, {"value_tier": "ordinary"}])
    rich, plain = d.loc["13800000000"], d.loc["13800000001"]
    assert rich.channel == "call_centre" and plain.channel == "sms_app"
    assert "15,854" in rich.channel_reason_en and "ordinary tier" in rich.channel_reason_en
    assert "15,854" in rich.channel_reason_zh and "普通" in rich.channel_reason_zh
    assert "by tier" in plain.channel_reason_en


def test_silent_lines_are_kept_off_the_retention_list():
    d = _run([
        {"p_churn": 0.99, "calls_change_vs_prev3m": -1.0, "data_mb_change_vs_prev3m": -1.0},
        {"p_churn": 0.99, "calls_1m": 0, "data_mb_1m": 0.0},
        {"p_churn": 0.9, "calls_1m": 0, "data_mb_1m": 12.0},  # data still used: reachable
    ])  # fmt: skip
    assert d.loc["13800000000", "exclusion"] == "silent_winback"
    assert d.loc["13800000001", "exclusion"] == "silent_winback"
    assert not d.loc[["13800000000", "13800000001"], "selected"].any()
    assert bool(d.loc["13800000002", "selected"])


def test_scores_without_usage_columns_still_publish():
    assert not policy.is_silent(_frame([{}, {}])).any()


# ------------------------------------------------------------------ the month's lists, by hand

PUBLISHED = pd.Timestamp("2025-07-03").date()


def _decided(n: int = 60, control_share: float = 0.2) -> pd.DataFrame:
    """A scored base with every kind of row: tiers, a callback, silent lines, contracts, reminders."""
    rows = [
        {"p_churn": 0.9 - i * 0.005, "value_tier": ("member", "vip", "ordinary")[i % 3]}
        for i in range(n)
    ]
    rows[1] |= {"days_since_complaint_resolved": 2.0}  # vip: due 2025-07-01, before publication
    rows[4] |= {"days_since_complaint_resolved": 0.0}  # vip: due 2025-07-03, the publication day
    rows[5] |= {"calls_1m": 0, "data_mb_1m": 0.0}  # silent
    rows[6] |= {"has_contract": 1, "months_to_contract_end": 1.0}
    rows[7] |= {"has_contract": 1, "months_to_contract_end": 5.0}
    rows[8] |= {"alert_bill": 1, "arpu_1m": 900.0, "arrears": 35.0}
    cfg, eco = _cfg(capacity_share=1.0, control_share=control_share)
    ranked = policy.rank(policy.expected_values(_frame(rows), eco))
    d = policy.apply_policy(ranked, cfg, economics=eco, as_of=AS_OF, seed=3)
    d["say_zh"], d["offer_zh"], d["offer_code"] = "您好", "流量包", "OF1"
    d["reason_1_zh"], d["reason_2_zh"], d["reason_3_zh"] = "原因一", "原因二", None
    d["last_complaint"] = "第一行\n第二行"
    return d, cfg


def test_the_control_group_is_on_no_contact_list():
    from pipelines.publish import lists

    d, cfg = _decided()
    rows, named, control = lists.split(d, cfg, PUBLISHED)
    held = set(d.loc[d.control_group, "msisdn"])
    assert len(held) > 0 and set(control.msisdn) == held
    assert not held & set(rows.msisdn)
    for name, part in named.items():
        assert not held & set(part.msisdn), name


def test_ranks_restart_per_channel_and_callbacks_have_their_own_list():
    from pipelines.publish import lists

    d, cfg = _decided(control_share=0.0)
    rows, named, _ = lists.split(d, cfg, PUBLISHED)
    assert {"retention_account_manager", "retention_call_centre", "retention_sms_app",
            "callbacks", "winback", "renewal", "reminders"} <= set(named)  # fmt: skip
    for ch in ("account_manager", "call_centre", "sms_app"):
        part = named[f"retention_{ch}"]
        assert part.channel_rank.tolist() == list(range(1, len(part) + 1))
        assert not part.complaint_callback.any()
    cb = named["callbacks"].set_index("msisdn")
    assert set(cb.index) == {"13800000001", "13800000004"}
    late, today = cb.loc["13800000001"], cb.loc["13800000004"]
    assert late.callback_overdue and late.callback_due == "2025-07-01" and late.due == "2025-07-03"
    assert not today.callback_overdue and today.due == "2025-07-03"
    assert (pd.to_datetime(cb.due) >= pd.Timestamp(PUBLISHED)).all()
    assert named["retention_call_centre"].say.eq("您好").all()
    assert named["retention_call_centre"].reasons.iat[0] == "原因一\n原因二"


def test_winback_renewal_and_reminders():
    from pipelines.publish import lists

    d, cfg = _decided(control_share=0.0)
    off = d.msisdn.isin(["13800000006", "13800000007", "13800000008"])
    d.loc[off, "selected"], d.loc[off, "exclusion"] = False, "not_profitable"
    rows, named, _ = lists.split(d, cfg, PUBLISHED)
    assert named["winback"].msisdn.tolist() == ["13800000005"]
    assert "13800000005" not in set(rows.msisdn)
    assert named["renewal"].msisdn.tolist() == ["13800000006"]  # 5 months: outside the window
    assert "24" in named["renewal"].offer.iat[0]
    rem = named["reminders"].set_index("msisdn").reminder
    assert rem.index.tolist() == ["13800000008"]
    assert "账单" in rem.iat[0] and "欠费35元" in rem.iat[0]
    en = lists.split(d, cfg, PUBLISHED, lang="en")[1]["reminders"].reminder.iat[0]
    assert "over-spend" in en and "arrears 35 CNY" in en


def test_one_contact_a_month_and_the_reminder_rides_along():
    from pipelines.publish import lists

    d, cfg = _decided(control_share=0.0)  # everyone is on a call or SMS list
    rows, named, _ = lists.split(d, cfg, PUBLISHED)
    assert named["renewal"].empty and named["reminders"].empty
    seen = [m for k, part in named.items() if k != "winback" for m in part.msisdn]
    assert len(seen) == len(set(seen))  # nobody is on two lists
    said = pd.concat([p for k, p in named.items() if k.startswith("retention_")])
    said = said.set_index("msisdn").say
    assert said["13800000008"].startswith("您好\n另请提醒：") and "欠费35元" in said["13800000008"]
    assert said["13800000009"] == "您好"


def test_list_capacity_keeps_the_most_valuable():
    from pipelines.publish import lists

    d, cfg = _decided(control_share=0.0)
    d.loc[:, "selected"], d.loc[:, "exclusion"] = False, "not_profitable"
    d["has_contract"], d["months_to_contract_end"] = 1, 1.0
    cfg = cfg.model_copy(update={"list_capacity": {"renewal": 5}})
    renewal = lists.split(d, cfg, PUBLISHED)[1]["renewal"]
    assert len(renewal) == 5
    top = d[~d.silent].sort_values("value_at_risk", ascending=False).msisdn.head(5)
    assert set(renewal.msisdn) == set(top)


def test_the_workbook_agents_open(tmp_path):
    import openpyxl

    from pipelines.publish import exports, lists

    d, cfg = _decided()
    d["last_complaint"] = '=HYPERLINK("x")\n+86 second line'
    _, named, _ = lists.split(d, cfg, PUBLISHED)
    sheets = {k: v.reindex(columns=lists.SHEETS[k.split("_")[0]]) for k, v in named.items()}
    names = exports.write_workbook(sheets, tmp_path / "w.xlsx", "zh")
    wb = openpyxl.load_workbook(tmp_path / "w.xlsx")
    assert wb.sheetnames == names and names[-1] == "说明"
    legend = [r[0].value for r in wb["说明"].iter_rows(min_row=2)]
    for ws in wb.worksheets:
        assert ws.page_setup.orientation == "landscape" and ws.print_title_rows == "$1:$1"
        assert ws.page_setup.fitToHeight == 0 and ws.sheet_properties.pageSetUpPr.fitToPage
        head = [c.value for c in ws[1]]
        if ws.title != "说明":
            assert set(head) <= set(legend)
            assert all(re.search(r"[\u4e00-\u9fff]", h) for h in head), head
        for row in ws.iter_rows(min_row=2):
            for c in row:
                assert c.data_type != "f"
                assert not (isinstance(c.value, str) and c.value.startswith("'"))
                assert c.data_type != "b"
    ws = wb["维系-客户经理"]
    head = [c.value for c in ws[1]]
    assert head[:8] == ["序号", "手机号码", "客户等级", "沟通话术", "推荐优惠", "离网原因",
                        "客户价值(元)", "完成期限"]  # fmt: skip

    def column(ws, name):
        j = [c.value for c in ws[1]].index(name) + 1
        return [ws.cell(r, j).value for r in range(2, ws.max_row + 1)]

    texts = column(ws, "最近投诉内容")
    assert '=HYPERLINK("x")\n+86 second line' in texts
    cb = wb["投诉回访"]
    overdue = column(cb, "已逾期")
    assert set(overdue) == {"是", "否"}
    money = column(ws, "客户价值(元)")
    assert all(float(v).is_integer() for v in money)


def test_csv_neutralises_formulas_and_keeps_lines(tmp_path):
    from pipelines.publish import exports

    df = pd.DataFrame({"last_complaint": ["=1+1\nline two", "ok"]})
    exports.write_csv(df, tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv", encoding="utf-8-sig")
    assert back.last_complaint.tolist() == ["'=1+1\nline two", "ok"]
