"""Writers of what leaves the building: CSV (UTF-8 with BOM, for Excel), XLSX and Parquet.

A published cell must never run as a formula in a spreadsheet, and free text must not
carry a phone number out: :func:`safe_text` is what every published text goes through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.lake.numbers import mask_text

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MONEY_COLUMNS = ("value", "value_at_risk", "expected_profit")
PERCENT_COLUMNS = ("p_churn", "uplift", "p_leave_next_month")


def neutralise(value):
    """A text a spreadsheet would run as a formula is made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_text(value):
    """Free text as it may leave the building: numbers inside it masked, formulas inert."""
    return neutralise(mask_text(value)) if isinstance(value, str) else value


# column -> (Chinese header, English header, meaning for the legend in zh, in en)
LABELS: dict[str, tuple[str, str, str, str]] = {
    "list_rank": ("序号", "Rank", "本名单内的优先顺序", "priority within this list"),
    "channel_rank": ("序号", "Rank", "本渠道名单内的优先顺序（每个渠道从1开始）",
                     "priority within this channel's list (restarts at 1 per channel)"),
    "msisdn": ("手机号码", "Number", "脱敏号码", "masked number"),
    "value_tier": ("客户等级", "Tier", "会员/贵宾/普通（按近三个月账单）",
                   "member / VIP / ordinary, from the last three bills"),
    "say": ("沟通话术", "What to say", "建议的开场与要点", "suggested opening and talking points"),
    "offer": ("推荐优惠", "Offer", "建议提供的优惠", "the offer to make"),
    "offer_code": ("优惠编码", "Offer code", "办理优惠时填写的编码", "code to enter for the offer"),
    "reasons": ("离网原因", "Why at risk", "模型给出的主要原因（含本人数据）",
                "the model's main reasons, with the subscriber's own numbers"),
    "value": ("客户价值(元)", "Value (CNY)", "近3月月均账单×12", "mean bill of 3 months × 12"),
    "due": ("完成期限", "Due by", "最晚联系日期", "contact no later than"),
    "channel": ("渠道", "Channel", "客户经理/呼叫中心/短信", "account manager / call centre / SMS"),
    "channel_reason": ("渠道原因", "Why this channel", "为何选择该渠道", "why this channel"),
    "p_churn": ("离网概率", "Churn risk", "未来离网的概率", "probability of leaving"),
    "expected_leave_month": ("预计离网月份", "Expected month of leaving",
                             "若离网，最可能在哪个月（离网时间模型给出的中位月份）；回访宜安排在此月之前",
                             "if they leave, the median month of leaving (time-to-churn model); "
                             "plan the revisit before it"),
    "p_leave_next_month": ("下月离网概率", "Risk next month",
                           "在预测窗口第一个月（默认即下月）离网的概率",
                           "probability of leaving in the window's first month (next month by default)"),
    "uplift": ("联系效果", "Contact effect", "联系后离网概率的预计变化（负数为下降，来自uplift模型）",
               "expected change in churn risk if contacted (negative: fewer leave), uplift model"),
    "value_at_risk": ("风险价值(元)", "Value at risk (CNY)", "离网概率×客户价值",
                      "churn risk × value"),
    "expected_profit": ("预期收益(元)", "Expected profit (CNY)", "联系一次的预期收益",
                        "expected profit of one contact"),
    "complaint_callback": ("投诉回访", "Complaint callback", "是否需投诉回访",
                           "a complaint callback is owed"),
    "callback_due": ("原定回访日", "Callback promised", "解决后3日内的原定日期",
                     "3 days after resolution, as promised"),
    "callback_overdue": ("已逾期", "Overdue", "原定回访日早于名单发布日：请今天回访",
                         "promised date before the list was published: call today"),
    "last_complaint": ("最近投诉内容", "Last complaint", "最近一次投诉全文",
                       "the latest complaint in full"),
    "calls_1m": ("本月通话次数", "Calls this month", "快照月的通话次数", "calls in the month"),
    "data_mb_1m": ("本月流量(MB)", "Data this month (MB)", "快照月的流量", "data in the month"),
    "months_to_contract_end": ("合约剩余月数", "Months to contract end", "距合约到期的月数",
                               "months until the contract ends"),
    "reminder": ("提醒事项", "Reminder", "需要提醒客户的事项", "what to remind the subscriber of"),
    "alert_bill": ("预警账单", "Alert bill", "本月账单高于3倍或低于1/3平时水平",
                   "bill above 3× or below 1/3 of usual"),
    "arpu_1m": ("本月账单(元)", "Bill this month (CNY)", "快照月账单", "bill of the month"),
    "arpu_3m": ("近3月月均(元)", "Mean bill 3m (CNY)", "近三个月平均账单", "mean of 3 bills"),
    "points_balance": ("积分余额", "Points", "积分余额", "loyalty points held"),
    "arrears": ("欠费(元)", "Arrears (CNY)", "欠费金额", "amount owed"),
    "snapshot_month": ("数据月份", "Snapshot month", "数据截至月份", "month of the data"),
    "model_version": ("模型版本", "Model version", "打分模型版本", "version of the scoring model"),
    "subscriber_key": ("客户标识", "Subscriber key", "跨月匹配用的加密标识，非号码",
                       "keyed hash joining months; not the number"),
    "published_on": ("发布日期", "Published on", "名单发布日，期限由此计算",
                     "day the lists appeared; due dates count from it"),
}  # fmt: skip
SHEET_NAMES = {
    "retention_account_manager": ("维系-客户经理", "Retention - account manager"),
    "retention_call_centre": ("维系-呼叫中心", "Retention - call centre"),
    "retention_sms_app": ("维系-短信", "Retention - SMS"),
    "callbacks": ("投诉回访", "Complaint callbacks"),
    "winback": ("挽回-沉默用户", "Win-back"),
    "renewal": ("合约续约", "Contract renewal"),
    "reminders": ("提醒服务", "Reminders"),
    "legend": ("说明", "Legend"),
}
YES_NO = {"zh": ("是", "否"), "en": ("yes", "no")}
TIERS = {"zh": {"member": "会员", "vip": "贵宾", "ordinary": "普通"}}  # how agents name the tiers
# widest a column gets (in character units; Chinese counts two): long texts wrap inside
# it, so a sheet printed landscape fits the page width at a readable scale
MAX_WIDTH = {"say": 34, "reasons": 34, "last_complaint": 30, "reminder": 30, "offer": 18,
             "channel_reason": 24}  # fmt: skip
# who the month's workbook is about, not what to do: in the page header and the legend
ABOUT = ("snapshot_month", "model_version", "subscriber_key")
# shown only when the month has them (an uplift model ranked the list, a timing model is champion)
OPTIONAL = ("uplift", "expected_leave_month", "p_leave_next_month")


def header(col: str, lang: str | None) -> str:
    """The header an agent reads; unknown columns (and ``lang=None``) keep the column name."""
    lab = LABELS.get(col)
    return col if lab is None or lang is None else lab[0 if lang == "zh" else 1]


def _units(text) -> int:
    """Width of a line in column units: a Chinese character takes two."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in str(text))


def _width(col: str, values: pd.Series, lang: str | None) -> float:
    """Wide enough for the longest line (first 200 rows) and the header, up to the column's cap."""
    lines = [line for v in values.head(200) for line in str(v).split("\n")]
    longest = max([_units(header(col, lang)), *map(_units, lines)])
    return min(MAX_WIDTH.get(col, 16), longest + 2)


def _lines(text: str, width: float) -> int:
    """Printed lines of a wrapped cell: each line of the text takes ceil(units / width)."""
    per_line = max(int(0.85 * width) - 1, 1)  # renderers wrap before the nominal width
    return sum(max(1, -(-_units(line) // per_line)) for line in text.split("\n"))


def _sheet(wb, fmt: dict, df: pd.DataFrame, name: str, lang: str | None, title: str = "") -> None:
    """One list: header repeated on every printed page, landscape A4, fit to the page width."""
    ws = wb.add_worksheet(name[:31])
    yes, no = YES_NO[lang or "en"]
    tiers = TIERS.get(lang or "en", {})
    widths = []
    for j, c in enumerate(df.columns):
        ws.write_string(0, j, header(c, lang), fmt["head"])
        kind = "pct" if c in PERCENT_COLUMNS else "money" if c in MONEY_COLUMNS else "wrap"
        widths.append(_width(c, df[c], lang))
        ws.set_column(j, j, widths[-1], fmt[kind])
    heads = [_lines(header(c, lang), w) for c, w in zip(df.columns, widths, strict=True)]
    ws.set_row(0, 15 * max(heads, default=1))
    for i, row in enumerate(df.itertuples(index=False), start=1):
        lines = 1
        for j, v in enumerate(row):
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
                continue
            if isinstance(v, bool | np.bool_):
                ws.write_string(i, j, yes if v else no)
            elif isinstance(v, int | float | np.integer | np.floating):
                c = df.columns[j]
                ws.write_number(i, j, round(float(v)) if c in MONEY_COLUMNS else float(v))
            else:
                text = str(v)  # a string cell is never a formula: no apostrophe needed
                if df.columns[j] == "value_tier":
                    text = tiers.get(text, text)
                ws.write_string(i, j, text)
                lines = max(lines, _lines(text, widths[j]))
        if lines > 1:
            ws.set_row(i, 15 * min(lines, 15))
    ws.freeze_panes(1, 2 if len(df.columns) > 4 else 0)
    ws.autofilter(0, 0, max(len(df), 1), max(len(df.columns) - 1, 0))
    ws.set_landscape()
    ws.set_paper(9)  # A4
    ws.set_margins(left=0.3, right=0.3, top=0.6, bottom=0.5)
    ws.fit_to_pages(1, 0)
    ws.repeat_rows(0)
    ws.set_header(f"&L{name}{'  ' + title if title else ''}&R&P / &N")


def _formats(wb) -> dict:
    return {
        "head": wb.add_format({"bold": True, "bg_color": "#1F4E78", "font_color": "#FFFFFF",
                               "border": 1, "text_wrap": True, "valign": "top"}),
        "pct": wb.add_format({"num_format": "0.0%", "valign": "top"}),
        "money": wb.add_format({"num_format": "#,##0", "valign": "top"}),
        "wrap": wb.add_format({"text_wrap": True, "valign": "top"}),
    }  # fmt: skip


def _workbook(path: Path):
    import xlsxwriter

    return xlsxwriter.Workbook(
        str(path),
        {"strings_to_formulas": False, "strings_to_numbers": False, "strings_to_urls": False},
    )


def write_xlsx(df: pd.DataFrame, path: Path, sheet: str, lang: str | None = None) -> None:
    """One list as a styled sheet whose cells are written as typed, never parsed.

    Without ``lang`` the headers are the column names (``all.xlsx``, for systems).
    """
    wb = _workbook(path)
    _sheet(wb, _formats(wb), df, sheet, lang)
    wb.close()


def legend(columns: list[str], lang: str, about: dict[str, str] | None = None) -> pd.DataFrame:
    """What the workbook is about (month, model, publication day), then every column's meaning."""
    rows = [{"col": header(k, lang), "zh": v, "en": v} for k, v in (about or {}).items()]
    for c in dict.fromkeys(columns):
        zh, en, mzh, men = LABELS.get(c, (c, c, "", ""))
        rows.append({"col": zh if lang == "zh" else en, "zh": mzh, "en": men})
    names = ("列名", "含义", "Meaning") if lang == "zh" else ("Column", "含义", "Meaning")
    return pd.DataFrame(rows).set_axis(list(names), axis=1)


def write_workbook(
    lists: dict[str, pd.DataFrame], path: Path, lang: str, about: dict[str, str] | None = None
) -> list[str]:
    """The month's workbook: one sheet per list, then the legend; the sheet names out.

    The columns that say what the workbook is about (month, model version, subscriber
    key) are not repeated on every row: ``about`` goes in each page header and the legend.
    """
    wb = _workbook(path)
    fmt = _formats(wb)
    about = dict(about or {})
    title = "  ".join(f"{header(k, lang)} {v}" for k, v in about.items())
    names = []
    for key, df in lists.items():
        name = SHEET_NAMES.get(key, (key, key))[0 if lang == "zh" else 1]
        empty = [c for c in OPTIONAL if c in df and df[c].isna().all()]
        _sheet(wb, fmt, df.drop(columns=[c for c in ABOUT if c in df] + empty), name, lang, title)
        names.append(name)
    cols = [c for df in lists.values() for c in df.columns
            if c not in ABOUT and not (c in OPTIONAL and df[c].isna().all())]  # fmt: skip
    name = SHEET_NAMES["legend"][0 if lang == "zh" else 1]
    _sheet(wb, fmt, legend(cols, lang, about), name, lang, title)
    wb.close()
    return [*names, name]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """UTF-8 with BOM for Excel; texts that a spreadsheet would run get a leading apostrophe."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object or pd.api.types.is_string_dtype(out[c]):
            out[c] = out[c].map(neutralise)
    out.to_csv(path, index=False, encoding="utf-8-sig")


def write_all_formats(df: pd.DataFrame, folder: Path, stem: str, xlsx: bool = True) -> None:
    """``<stem>.csv``, ``<stem>.parquet`` (and ``<stem>.xlsx``): one list, whichever tool opens it."""
    write_csv(df, folder / f"{stem}.csv")
    if xlsx:
        write_xlsx(df, folder / f"{stem}.xlsx", stem)
    df.to_parquet(folder / f"{stem}.parquet", index=False)
