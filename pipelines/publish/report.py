"""The month's report for a manager: whom to contact, what it should bring, who was left out, why.

Written in Chinese by default (``publish.language``), as plain sentences and small
tables. The model's quality is one sentence plus two charts from its MLflow run,
opened on the project's store (the tracking URI is passed in, so no stray
``./mlflow.db`` appears where it is run); the raw SHAP table stays in MLflow.
"""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pandas as pd
from jinja2 import Template

from models import registry
from models.config import Economics

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)

CHARTS = ("evaluation/gains_lift.png", "evaluation/calibration.png")

# every word the report shows, per language; codes that have no entry are shown as they are
TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "{month} 挽留名单",
        "summary": (
            "本月对 {scored:,} 名用户评分，建议联系 {contact:,} 人；另有 {control:,} 人随机留作对照组，"
            "不联系，用来事后衡量挽留的真实效果。其中 {callbacks:,} 人有未处理的投诉，需要回电。"
        ),
        "saves": (
            "如果按名单联系（不含对照组），预计可留住约 {saves:,.0f} 名本会流失的用户，"
            "保住的价值约 {saved:,.0f} 元；扣除优惠和联系成本后，预计净收益约 {profit:,.0f} 元。"
        ),
        "h_channels": "按渠道需要联系的人数",
        "channel": "渠道",
        "people": "人数",
        "value_at_risk": "面临流失的价值（元）",
        "h_excluded": "没有进入名单的用户及原因",
        "reason": "原因",
        "no_excluded": "本月没有用户被排除。",
        "h_model": "模型有多准",
        "model": (
            "模型 {model} 第 {version} 版在 {test_period} 的数据上检验：这是最近一个已经知道谁流失了的月份，"
            "训练时没有用过，所以检验结果接近实际使用的效果。"
            "AUC {auc}, top-decile lift {lift}，即名单前 10% 用户的流失率是平均水平的 {lift} 倍。"
        ),
        "monitor_stable": "本月的用户数据与模型训练时相比没有明显变化；在真实结果出来之前，"
        "按模型的概率估计本月 AUC 约为 {est}（检验时为 {test}）。",
        "monitor_moved": "本月的用户数据与模型训练时相比有变化：{n} 个指标明显偏移（如 {features}）{extra}。"
        "按模型的概率估计本月 AUC 约为 {est}（检验时为 {test}）。",
        "h_reasons": "名单上最常见的流失原因（每人最多三条）",
        "ranking_risk": "排序方式：按面临流失的价值（离网概率×客户价值）。{why}",
        "ranking_uplift": "排序方式：按联系带来的预期增量价值（uplift模型估计每位用户被各渠道联系后离网概率的变化，"
        "选收益最高的渠道，联系无益或有害的用户不联系）。{why}",
        "saves_uplift": (
            "按uplift模型估计，联系名单上的用户（不含对照组）预计可多留住约 {saves:,.1f} 人，"
            "保住的价值约 {saved:,.0f} 元；扣除优惠和联系成本后预计净收益约 {profit:,.0f} 元。"
        ),
        "h_campaigns": "以往挽留活动的实测效果（联系组与随机对照组的离网率之差）",
        "campaign": "活动",
        "contact_month": "联系月份",
        "n_treated": "联系组人数",
        "n_control": "对照组人数",
        "churn_treated": "联系组离网率",
        "churn_control": "对照组离网率",
        "difference": "差值（95%区间）",
        "saved": "多留住（人）",
        "no_campaigns": "还没有结果已知的活动：名单发布后，联系月份的观察期结束才能衡量。",
        "power": (
            "按本月名单的规模（联系 {n_t:,} 人、对照 {n_c:,} 人），预期效果 {effect:+.1%} "
            "约需 {months:.0f} 个月的累计数据才能在统计上确认。"
        ),
        "h_diff": "与上月名单相比",
        "change": "变化",
        "why": "说明",
        "no_diff": "没有上月名单可以比较。",
        "footer": "每位用户的详细原因在名单文件里；模型的特征重要性（SHAP）记录在 MLflow 运行 {run_id} 中。",
    },
    "en": {
        "title": "Retention list {month}",
        "summary": (
            "{scored:,} subscribers were scored this month; {contact:,} should be contacted. "
            "Another {control:,} were set aside at random as a control group and are not "
            "contacted, so the real effect of retention can be measured. {callbacks:,} have an "
            "open complaint and need a call back."
        ),
        "saves": (
            "Working the list (control group excluded) should keep about {saves:,.0f} subscribers "
            "who would otherwise leave, worth about {saved:,.0f} CNY; after offers and contact "
            "costs the expected net gain is about {profit:,.0f} CNY."
        ),
        "h_channels": "Whom to contact, per channel",
        "channel": "channel",
        "people": "subscribers",
        "value_at_risk": "value at risk (CNY)",
        "h_excluded": "Who is not on the list, and why",
        "reason": "reason",
        "no_excluded": "Nobody was excluded this month.",
        "h_model": "How good the model is",
        "model": (
            "Model {model} v{version} was tested on {test_period}: the latest month for which "
            "we already know who left, never used in training, so the test shows how it does "
            "in real use. AUC {auc}, top-decile lift {lift}: the top 10% of the list leave "
            "{lift} times as often as the average subscriber."
        ),
        "monitor_stable": "This month's data look like the months the model was trained on; "
        "before the outcomes are known, its probabilities put this month's AUC at about {est} "
        "(tested: {test}).",
        "monitor_moved": "This month's data have moved from the training months: {n} feature(s) "
        "shifted (e.g. {features}){extra}. Its probabilities put this month's AUC at about {est} "
        "(tested: {test}).",
        "h_reasons": "Most common reasons on the list (up to three each)",
        "ranking_risk": "Ranked by value at risk (churn risk × value). {why}",
        "ranking_uplift": "Ranked by the expected incremental value of contact: the uplift model "
        "estimates how each channel would change each subscriber's churn risk; the best channel "
        "is chosen, and nobody a contact would not help is contacted. {why}",
        "saves_uplift": (
            "By the uplift model, working the list (control group excluded) should keep about "
            "{saves:,.1f} more subscribers, worth about {saved:,.0f} CNY; after offers and "
            "contact costs the expected net gain is about {profit:,.0f} CNY."
        ),
        "h_campaigns": "Measured effect of past campaigns (churn of the contacted minus the random control group)",
        "campaign": "campaign",
        "contact_month": "contact month",
        "n_treated": "contacted",
        "n_control": "control",
        "churn_treated": "churn, contacted",
        "churn_control": "churn, control",
        "difference": "difference (95% interval)",
        "saved": "kept (subscribers)",
        "no_campaigns": "No campaign has a known outcome yet: a list is measured once its contact month's window has passed.",
        "power": (
            "At this month's size ({n_t:,} contacted, {n_c:,} control) an effect of {effect:+.1%} "
            "needs about {months:.0f} month(s) of pooled lists to be told from zero."
        ),
        "h_diff": "Against last month's list",
        "change": "change",
        "why": "why",
        "no_diff": "No earlier list to compare with.",
        "footer": "Each subscriber's reasons are in the list files; the model's SHAP importances are in MLflow run {run_id}.",
    },
}
LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "account_manager": "客户经理",
        "call_centre": "呼叫中心",
        "sms_app": "短信/APP",
        "control_group": "随机对照组（衡量效果，不联系）",
        "do_not_contact": "本人要求不被联系",
        "contacted_within_cycle": "最近已联系过，未到再次联系的时间",
        "silent_winback": "号码已停止使用，转入赢回名单",
        "not_profitable": "联系的成本高于预期收益",
        "over_capacity": "超出渠道本月的处理能力",
        "contact_would_harm": "模型估计联系反而会促使离网，不联系",
        "new": "新进入",
        "still_on_list": "仍在名单上",
        "dropped": "移出名单",
        "first list": "第一份名单",
        "newly at risk": "新出现流失风险",
        "still at risk": "仍有流失风险",
        "left the base (churned or no longer active)": "已离网或不再活跃",
        "no longer profitable to contact": "联系已不划算",
        "below the capacity cut": "超出渠道本月的处理能力",
    },
    "en": {
        "account_manager": "account manager",
        "call_centre": "call centre",
        "sms_app": "SMS / app",
        "control_group": "random control group (measures the effect; not contacted)",
        "do_not_contact": "asked not to be contacted",
        "contacted_within_cycle": "contacted recently; not due again yet",
        "silent_winback": "line gone silent: on the win-back list",
        "not_profitable": "a contact would cost more than it brings",
        "over_capacity": "beyond the channel's capacity this month",
        "contact_would_harm": "a contact is expected to push them out: not contacted",
        "new": "new",
        "still_on_list": "still on the list",
        "dropped": "dropped",
    },
}

REPORT = Template(
    """<!doctype html><html lang="{{ lang }}"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1000px;line-height:1.5}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}
th{background:#1F4E78;color:#fff;text-align:left}td.n{text-align:right}
img{max-width:480px;margin:0 1em 1em 0}</style></head><body>
<h1>{{ title }}</h1>
<p>{{ summary }}</p>
<p>{{ saves }}</p>
<p>{{ ranking }}</p>
{% for section in sections %}<h2>{{ section.title }}</h2>
{% if section.rows %}<table><tr>{% for h in section.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in section.rows %}<tr>{% for cell in row %}<td{% if cell[:1].isdigit() %} class="n"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>{% else %}<p>{{ section.empty }}</p>{% endif %}
{% if section.note %}<p>{{ section.note }}</p>{% endif %}
{% endfor %}<h2>{{ t.h_model }}</h2>
<p>{{ model }}</p>
{% if monitoring %}<p>{{ monitoring }}</p>{% endif %}
{% for img in images %}<img src="data:image/png;base64,{{ img }}">{% endfor %}
<p><small>{{ footer }}</small></p>
</body></html>"""
)


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _images(tracking_uri: str, run_id: str) -> list[str]:
    """The model's charts from its MLflow run; a report without a chart is still a report."""
    images = []
    with tempfile.TemporaryDirectory() as d:
        for name in CHARTS:
            try:
                p = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=d, tracking_uri=tracking_uri
                )
                images.append(base64.b64encode(Path(p).read_bytes()).decode())
            except Exception as e:
                log.warning("chart %s not available: %s", name, e)
    return images


def _why(rank: dict, lang: str) -> str:
    """The manifest's reason for the ranking, in the report's language (codes kept as they are)."""
    why = rank.get("why", "")
    if lang == "zh" and rank.get("method") == "risk" and why.startswith("no uplift model"):
        edge = re.search(r"edge over risk ([-+.\d]+)\.\.([-+.\d]+)", why)
        if edge:
            return (f"尚无通过检验的uplift模型：测试月份上其Qini减去按风险排序的Qini，区间为"
                    f"{edge[1]}至{edge[2]}，未确定高于0（可能只是噪声），故仍按风险价值排序。")  # fmt: skip
        return "尚无通过检验的uplift模型（随机活动的历史太少，或未胜过按风险排序）。"
    if lang == "zh" and rank.get("method") == "uplift":
        return "模型：" + why.split("uplift model ", 1)[-1].split(" (arms")[0] + "。"
    return why


def _campaigns_section(settings: Settings, t: dict) -> dict:
    """The latest measured campaigns (from ``churn campaigns``), newest first, and the power note."""
    import json

    from pipelines.campaigns.measure import RESULT_COLUMNS

    folder = settings.path("campaigns")
    try:
        table = pd.read_parquet(folder / "results.parquet")
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        table, summary = pd.DataFrame(columns=RESULT_COLUMNS), {}
    overall = table[table["by"] == "all"].sort_values("contact_month", ascending=False).head(8)

    def pct(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.1%}"

    rows = [
        [r.campaign, r.contact_month, _n(r.n_treated), _n(r.n_control), pct(r.churn_treated),
         pct(r.churn_control),
         "—" if pd.isna(r.difference) else f"{r.difference:+.1%} [{r.low:+.1%}, {r.high:+.1%}]",
         "—" if pd.isna(r.saved) else f"{r.saved:,.1f}"]
        for r in overall.itertuples()
    ]  # fmt: skip
    p = summary.get("power") or {}
    note = (
        t["power"].format(n_t=p["n_treated"], n_c=p["n_control"], effect=p["expected_difference"],
                          months=min(p["months_to_detect"], 999))
        if p and p.get("months_to_detect") not in (None, float("inf")) else ""
    )  # fmt: skip
    return {
        "title": t["h_campaigns"],
        "header": [t[k] for k in ("campaign", "contact_month", "n_treated", "n_control",
                                  "churn_treated", "churn_control", "difference", "saved")],
        "rows": rows, "empty": t["no_campaigns"], "note": note,
    }  # fmt: skip


def _monitoring(settings: Settings | None, month: str, t: dict) -> str:
    """One line from the month's monitoring report: stable, or what moved (empty when unmonitored)."""
    from models.monitor import read_report

    rep = read_report(settings.path("reports"), month) if settings is not None else None
    if not rep:
        return ""
    moved = [f["feature"] for f in rep["features"] if f["status"] == "alarm"]
    q = [r for r in rep["quarantine"] if r["status"] == "alarm" and r["month"] == month]
    score_psi = rep["score"]["psi"] or 0.0
    est = {"est": f"{rep['estimated']['auc']:.3f}", "test": f"{rep['test_auc']:.3f}"}
    if not moved and not q and score_psi < 0.1:
        return t["monitor_stable"].format(**est)
    extra = f"; score PSI {score_psi:.2f}" if score_psi >= 0.1 else ""
    extra += "".join(f"; {r['source']} quarantine {r['rate']:.1%}" for r in q)
    return t["monitor_moved"].format(n=len(moved), features=", ".join(moved[:3]) or "-",
                                     extra=extra, **est)  # fmt: skip


def render(
    tracking_uri: str,
    month: str,
    lst: pd.DataFrame,
    diff: pd.DataFrame,
    scored: pd.DataFrame,
    manifest: dict,
    settings: Settings | None = None,
) -> str:
    """The report of a published month, in ``settings.publish.language`` (Chinese without settings).

    ``lst`` is the contact list; rows of the control group, if present, are left out of
    every number a manager acts on. Exclusions come from the manifest's counts.
    """
    lang = settings.publish.language if settings is not None else "zh"
    t, label = TEXT[lang], dict(LABELS[lang])
    if settings is not None:  # reason codes by the names the reason config gives them
        label |= {g: getattr(rg, lang) for g, rg in settings.reasons.groups.items()}
    economics = settings.economics if settings is not None else Economics()
    if "control_group" in lst.columns:
        lst = lst[~lst["control_group"].astype(bool)]
    counts = manifest.get("counts", {})
    run_id = manifest["run_id"]
    run = registry.connect(tracking_uri).get_run(run_id)
    metrics = {
        k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")
    }

    p = lst["p_churn"].astype(float)
    rank = manifest.get("ranking") or {"method": "risk", "why": ""}
    if rank["method"] == "uplift" and "uplift" in lst:
        eff = -pd.to_numeric(lst["uplift"], errors="coerce").fillna(0.0)
        saves, saved = float(eff.sum()), float((eff * lst["value"].astype(float)).sum())
        saves_key = "saves_uplift"
    else:
        saves = float((p * economics.acceptance_rate).sum())
        saved = float(economics.acceptance_rate * lst["value_at_risk"].astype(float).sum())
        saves_key = "saves"
    control = int(counts.get("control_group", 0))
    summary = t["summary"].format(
        scored=len(scored), contact=len(lst), control=control,
        callbacks=int(lst["complaint_callback"].sum()) if "complaint_callback" in lst else 0,
    )  # fmt: skip
    saves_text = t[saves_key].format(
        saves=saves, saved=saved, profit=float(lst["expected_profit"].sum())
    )

    by_channel = lst.groupby("channel", sort=False).agg(
        n=("p_churn", "size"), var=("value_at_risk", "sum")
    )
    by_channel = by_channel.sort_values("n", ascending=False)
    excluded = {k: int(v) for k, v in (counts.get("excluded") or {}).items() if v}
    if control:
        excluded = {"control_group": control} | excluded
    reasons = pd.concat(
        [lst[c] for c in ("reason_1", "reason_2", "reason_3") if c in lst.columns]
    ).dropna()
    changes = diff.groupby(["change", "why"]).size() if len(diff) else pd.Series(dtype=int)
    sections = [
        {
            "title": t["h_channels"],
            "header": [t["channel"], t["people"], t["value_at_risk"]],
            "rows": [[label.get(ch, ch), _n(n), _n(v)] for ch, n, v in by_channel.itertuples()],
        },
        {
            "title": t["h_excluded"],
            "header": [t["reason"], t["people"]],
            "rows": [[label.get(k, k), _n(v)] for k, v in excluded.items()],
            "empty": t["no_excluded"],
        },
        {
            "title": t["h_reasons"],
            "header": [t["reason"], t["people"]],
            "rows": [[label.get(k, k), _n(v)] for k, v in reasons.value_counts().head(10).items()],
        },
        {
            "title": t["h_diff"],
            "header": [t["change"], t["why"], t["people"]],
            "rows": [[label.get(c, c), label.get(w, w), _n(n)] for (c, w), n in changes.items()],
            "empty": t["no_diff"],
        },
    ]
    if settings is not None:
        sections.append(_campaigns_section(settings, t))
    model = t["model"].format(
        model=manifest.get("model", ""), version=manifest.get("model_version", ""),
        test_period=run.data.params.get("test_period", "?"),
        auc=f"{metrics.get('roc_auc', float('nan')):.3f}",
        lift=f"{metrics.get('top_decile_lift', float('nan')):.2f}",
    )  # fmt: skip
    return REPORT.render(
        lang=lang, t=t, monitoring=_monitoring(settings, month, t), title=t["title"].format(month=month), summary=summary, saves=saves_text,
        ranking=t[f"ranking_{rank['method']}"].format(why=_why(rank, lang)), sections=sections, model=model,
        images=_images(tracking_uri, run_id), footer=t["footer"].format(run_id=run_id),
    )  # fmt: skip
