"""Render a `DiagnosisReport` for chat (analysis-method.md "The report").

* `render_markdown` — WeCom markdown (AI bot stream / ``response_url`` / webhook ``markdown_v2``),
  shortened to a byte budget (UTF-8 bytes, a CJK character is 3) with an optional detail hint.
* `render_text` — the plain-text version (WorkTool, CLI), never shortened.

Log lines are quoted exactly (``Evidence.text`` is never cut). In markdown they sit in a code fence
longer than any backtick run they contain, so ``**``, ``<script>`` or backticks in a log line cannot
change the formatting of the report. Free text the bot did not write itself (the model's narrative,
causes filled from log values, notes) is `defuse`d: no mention, tag, link, code span or heading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from bot.core.markup import defuse
from bot.core.models import (
    FAULT_SIDE_ZH,
    PHASE_STATUS_ICON,
    STAGE_ZH,
    DiagnosisReport,
    Evidence,
    HostGroup,
    TimelineEntry,
    Window,
)
from bot.delivery.split import Measure, prefix_within, utf8_len

HEADER_PREFIX = "【job-doctor 诊断报告】"
MARKDOWN_MAX_BYTES = 20480  # AI bot stream content / response_url markdown (wecom-channels.md §2)

SECTION_OVERVIEW = "问题概述"
SECTION_ROOT_CAUSE = "根因分析"
SECTION_SOLUTION = "解决方案"
SECTION_PREVENTION = "预防措施"
SECTION_MISSING = "还需要的信息"

SHORTENED_NOTE = "（报告较长，已精简显示）"
_OMITTED = "（已省略）"
_NONE = "（暂无）"
_ERROR_LEVELS = frozenset({"ERROR", "FATAL", "CRITICAL", "SEVERE"})
_WARN_LEVELS = frozenset({"WARN", "WARNING"})


def report_header(report: DiagnosisReport) -> str:
    """First line of every report: the id the user asked about (DESIGN.md "Channel rules")."""
    if report.step_instance_id is not None:
        return f"{HEADER_PREFIX}stepInstanceId={report.step_instance_id}"
    if report.request_ids:
        return f"{HEADER_PREFIX}request_id={report.request_ids[0]}"
    return HEADER_PREFIX


@dataclass(frozen=True)
class RenderedMarkdown:
    text: str
    shortened: bool


# --------------------------------------------------------------------------- shared pieces


@dataclass(frozen=True)
class _View:
    """What to include; `render_markdown` narrows it step by step until the text fits."""

    evidence: tuple[int, ...]
    events: Literal["all", "problems", "none"] = "all"  # timeline events: every phase's, or not ok ones'
    improvements: bool = True
    prevention: bool = True
    details: bool = True  # timeline notes and evidence "why"
    list_cap: int | None = None  # max items per action / missing-info list
    text_cap: int | None = None  # max characters of free text (summary, root cause, ...)


def _cap(s: str, cap: int | None) -> str:
    return s if cap is None or len(s) <= cap else s[: max(cap - 1, 0)] + "…"


def _items(items: Sequence[str], view: _View) -> tuple[list[str], int]:
    shown = list(items) if view.list_cap is None else list(items[: view.list_cap])
    return [_cap(i, view.text_cap) for i in shown], len(items) - len(shown)


def _source_line(report: DiagnosisReport) -> str:
    source = "模型" if report.source == "llm" else "规则库"
    if report.signature:
        source += f"（规则 {report.signature}）"
    return f"诊断来源：{source}；置信度 {round(report.confidence * 100)}%"


def _run_line(report: DiagnosisReport) -> str:
    bits = []
    if report.scope:
        bits.append(f"业务 {report.scope}")
    if report.task_instance_id is not None:
        bits.append(f"作业实例 taskInstanceId={report.task_instance_id}")
    if report.execute_count is not None:
        bits.append(f"第 {report.execute_count} 次执行")
    return "，".join(bits)


def _evidence_rank(ev: Evidence) -> int:
    level = (ev.level or "").upper()
    return 0 if level in _ERROR_LEVELS else 1 if level in _WARN_LEVELS else 2


def _drop_order(evidence: Sequence[Evidence]) -> list[int]:
    """Indices in the order they are dropped when shortening: info before warn before error, later first."""
    return sorted(range(len(evidence)), key=lambda i: (-_evidence_rank(evidence[i]), -i))


def _stage_label(report: DiagnosisReport) -> str:
    return "卡住的阶段" if report.running else "失败阶段"


def _cause_label(report: DiagnosisReport) -> str:
    return "现状" if report.running else "失败原因"


def _phase_name(phase: str) -> str:
    return STAGE_ZH.get(phase, phase)


# --------------------------------------------------------------------------- host groups

HOSTS_TITLE = "主机结果"
MAX_SHOWN_GROUPS = 6


def _group_head(g: HostGroup) -> str:
    what = g.status_zh or f"状态 {g.status}"
    if g.exit_code is not None:
        what += f" exit_code={g.exit_code}"
    hosts = "、".join(g.hosts) + ("等" if g.count > len(g.hosts) else "")
    return f"{g.count} 台 {what}" + (f"：{hosts}" if hosts else "")


def _md_hosts(groups: Sequence[HostGroup], view: _View) -> str:
    """Each group: head line, its decisive output fenced (printed text is never markdown), what it means."""
    parts = [f"#### {HOSTS_TITLE}"]
    for g in groups[:MAX_SHOWN_GROUPS]:
        parts.append(f"- {_cap(_group_head(g), view.text_cap)}")
        lines = g.output if view.details else g.output[:1]
        if lines:
            parts.append(fence("\n".join(lines)))
        notes = [g.why] if g.why else []
        notes += [f"GSE：{a}" for a in g.agents] if view.details else []
        parts += [f"  {_cap(n, view.text_cap)}" for n in notes]
    if len(groups) > MAX_SHOWN_GROUPS:
        parts.append(f"- （另有 {len(groups) - MAX_SHOWN_GROUPS} 组，已省略）")
    return "\n".join(parts)


def _text_hosts(groups: Sequence[HostGroup]) -> str:
    parts = [f"{HOSTS_TITLE}："]
    for g in groups:
        parts.append(f"· {_group_head(g)}")
        parts += [f"  输出：{line}" for line in g.output]
        if g.why:
            parts.append(f"  说明：{g.why}")
        parts += [f"  GSE：{a}" for a in g.agents]
    return "\n".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)} 毫秒"
    if seconds < 60:
        return f"{seconds:.1f} 秒"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} 分 {s % 60} 秒"
    if s < 86400:
        return f"{s // 3600} 小时 {s % 3600 // 60} 分"
    return f"{s // 86400} 天 {s % 86400 // 3600} 小时"


def _same_day_end(start: str, end: str) -> str:
    """`end` without its date when it is `start`'s date (both ``YYYY-MM-DD hh:mm:ss…``)."""
    return end[11:] if len(end) > 11 and end[:11] == start[:11] else end


def _window_text(window: Window) -> str:
    try:
        start, end = datetime.fromisoformat(window.start), datetime.fromisoformat(window.end)
    except ValueError:
        return f"{window.start} → {window.end}"
    offset = start.utcoffset()
    if offset is not None and end.utcoffset() is not None:
        end = end.astimezone(start.tzinfo)  # one zone for both ends, named once
    else:
        offset = None  # an end without a zone: no label rather than a wrong one
    a, b = f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"
    if offset is None:
        return f"{a} → {b}"
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    return f"{a} → {b}（UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}）"


def _header_facts(report: DiagnosisReport) -> list[str]:
    """When the run happened (first → last log line) and which BkLog window was searched."""
    lines = []
    if report.span is not None:
        span = report.span
        lines.append(
            f"日志跨度：{span.start} → {_same_day_end(span.start, span.end)}（历时 {_duration(span.seconds)}）"
        )
    if report.window is not None:
        lines.append(f"检索窗口：{_window_text(report.window)}")
    return lines


def _timeline_day(timeline: Sequence[TimelineEntry]) -> str | None:
    """The one date of every time in the timeline, so the lines can show the clock only."""
    times = [t for e in timeline for t in (e.time, *(ev.time for ev in e.events)) if t]
    days = {t[:10] for t in times if len(t) > 11 and t[10] == " "}
    return days.pop() if len(days) == 1 and all(len(t) > 11 and t[10] == " " for t in times) else None


def _clock(time: str | None, day: str | None) -> str:
    if not time:
        return "?"
    return time[11:] if day is not None else time


def _timeline_title(timeline: Sequence[TimelineEntry]) -> tuple[str, str | None]:
    day = _timeline_day(timeline)
    return ("时间线" + (f"（{day}）" if day else "")), day


# --------------------------------------------------------------------------- markdown


def _inline_code(s: str) -> str:
    # backticks cannot be escaped inside inline code on every client; they are not meaningful in
    # times, levels or logger names, so they are replaced
    return "`" + s.replace("`", "'").replace("\n", " ") + "`"


def fence(text: str) -> str:
    """Code block whose fence is longer than any backtick run in ``text`` (text kept verbatim)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    marker = "`" * max(3, longest + 1)
    return f"{marker}\n{text}\n{marker}"


def _md_list(items: Sequence[str], more: int, ordered: bool = True) -> str:
    lines = [f"{i}. {item}" if ordered else f"- {item}" for i, item in enumerate(items, 1)]
    if more:
        lines.append(f"- （另有 {more} 条，已省略）")
    return "\n".join(lines) if lines else _NONE


def _md_evidence(n: int, ev: Evidence, details: bool) -> str:
    meta = [f"**#{n}**"]
    meta += [_inline_code(v) for v in (ev.time, ev.level, ev.logger) if v]
    line = " ".join(meta)
    if details and ev.why:
        line += f" — {defuse(ev.why)}"
    return f"{line}\n{fence(ev.text)}"


def _markdown_paragraphs(report: DiagnosisReport, view: _View) -> list[str]:
    cap = view.text_cap
    paras = [report_header(report)]
    if facts := _header_facts(report):
        paras.append("\n".join(facts))
    paras += [f"> {defuse(_cap(n, cap))}" for n in report.notices]

    overview = defuse(_cap(report.summary, cap)) or _NONE
    if run := _run_line(report):
        overview += f"\n\n{run}"
    paras.append(f"### {SECTION_OVERVIEW}\n{overview}")
    if report.earlier_runs:
        earlier, more = _items([defuse(e) for e in report.earlier_runs], view)
        paras.append("#### 此前的执行\n" + _md_list(earlier, more, ordered=False))

    paras.append(
        f"### {SECTION_ROOT_CAUSE}\n"
        f"- **{_stage_label(report)}**：{_phase_name(report.stage)}\n"
        f"- **故障归属**：{FAULT_SIDE_ZH.get(report.fault_side, report.fault_side)}\n"
        f"- **{_cause_label(report)}**：{defuse(_cap(report.root_cause, cap)) or '未能确定'}"
    )
    if report.host_groups:
        paras.append(_md_hosts(report.host_groups, view))
    shown = [i for i in range(len(report.evidence)) if i in view.evidence]
    hidden = len(report.evidence) - len(shown)
    title = "#### 相关日志"
    if not report.evidence:
        paras.append(f"{title}\n（未找到相关日志）")
    elif not shown:
        paras.append(f"{title}\n（共 {len(report.evidence)} 条，已省略）")
    else:
        for n, i in enumerate(shown, 1):
            item = _md_evidence(n, report.evidence[i], view.details)
            paras.append(f"{title}\n{item}" if n == 1 else item)
        if hidden:
            paras.append(f"（另有 {hidden} 条相关日志已省略）")
    if report.timeline:
        paras.append(_md_timeline(report.timeline, view))

    immediate, more_i = _items([defuse(a) for a in report.actions.immediate], view)
    root_fix, more_r = _items([defuse(a) for a in report.actions.root_fix], view)
    solution = [
        f"### {SECTION_SOLUTION}\n#### 立即措施\n{_md_list(immediate, more_i)}",
        f"#### 根本解决\n{_md_list(root_fix, more_r)}",
    ]
    if view.improvements:
        improvements, more_o = _items([defuse(a) for a in report.actions.improvements], view)
        solution.append(f"#### 优化建议\n{_md_list(improvements, more_o)}")
    else:
        solution.append(f"#### 优化建议\n{_OMITTED if report.actions.improvements else _NONE}")
    paras += solution

    if view.prevention:
        prevention, more_p = _items([defuse(p) for p in report.prevention], view)
        paras.append(f"### {SECTION_PREVENTION}\n{_md_list(prevention, more_p, ordered=False)}")
    else:
        paras.append(f"### {SECTION_PREVENTION}\n{_OMITTED if report.prevention else _NONE}")

    if report.missing_info:
        missing, more_m = _items([defuse(m) for m in report.missing_info], view)
        paras.append(f"### {SECTION_MISSING}\n{_md_list(missing, more_m, ordered=False)}")

    footer = [_source_line(report)]
    if report.request_ids:
        footer.append("request_id：" + "，".join(_inline_code(r) for r in report.request_ids))
    links = report.links if view.list_cap is None else report.links[:1]
    footer += [f"[作业平台链接{'' if len(links) == 1 else f' {i}'}]({url})" for i, url in enumerate(links, 1)]
    # separate paragraphs: a list here would merge with the list of the section above
    paras.append("\n\n".join(footer))
    return paras


def _md_timeline(timeline: Sequence[TimelineEntry], view: _View) -> str:
    """Each phase with its mark (and note), its timed events nested under it."""
    title, day = _timeline_title(timeline)
    lines = [f"#### {title}"]
    for entry in timeline:
        line = f"- {PHASE_STATUS_ICON.get(entry.status, '❔')} {_phase_name(entry.phase)}"
        if entry.time:
            line += f" {_inline_code(_clock(entry.time, day))}"
        if view.details and entry.note:
            line += f" {defuse(_cap(entry.note, view.text_cap))}"
        lines.append(line)
        if view.events == "all" or (view.events == "problems" and entry.status != "ok"):
            lines += [f"  - {_inline_code(f'{_clock(ev.time, day)} {ev.text}')}" for ev in entry.events]
    return "\n".join(lines)


def _detail_views(report: DiagnosisReport) -> list[_View]:
    """Ever shorter views before any evidence is dropped: timeline events (of phases that went
    well first), optional sections, then details."""
    full = _View(evidence=tuple(range(len(report.evidence))))
    views = [full, replace(full, events="problems"), replace(full, events="none")]
    views.append(replace(views[-1], improvements=False))
    views.append(replace(views[-1], prevention=False))
    views.append(replace(views[-1], details=False))
    return views


def _without_evidence(view: _View, drop: Sequence[int]) -> _View:
    gone = set(drop)
    return replace(view, evidence=tuple(i for i in view.evidence if i not in gone))


def _hard_trim(text: str, budget: int, measure: Measure) -> str:
    """Last resort: whole lines up to ``budget``, the last one cut at a character boundary."""
    out: list[str] = []
    used = 0
    for line in text.split("\n"):
        cost = measure(line) + (1 if out else 0)
        if used + cost <= budget:
            out.append(line)
            used += cost
            continue
        room = budget - used - (1 if out else 0) - measure("…")
        if room > 0:
            out.append(prefix_within(line, room, measure) + "…")
        break
    return "\n".join(out)


def render_markdown(
    report: DiagnosisReport, *, max_bytes: int = MARKDOWN_MAX_BYTES, detail_hint: str | None = None
) -> RenderedMarkdown:
    """WeCom markdown of ``report`` in at most ``max_bytes`` UTF-8 bytes.

    When the full report does not fit it is shortened (optional sections, then evidence items
    whole, never part of a log line) and ends with `SHORTENED_NOTE` and ``detail_hint``.
    """
    views = _detail_views(report)
    full = "\n\n".join(_markdown_paragraphs(report, views[0]))
    if utf8_len(full) <= max_bytes:
        return RenderedMarkdown(full, False)
    tail = "\n\n" + SHORTENED_NOTE + (f"\n{detail_hint}" if detail_hint else "")
    budget = max_bytes - utf8_len(tail)
    if budget < utf8_len(report_header(report)):
        raise ValueError(f"max_bytes={max_bytes} cannot hold the header and the detail hint")

    def fitting(view: _View) -> str | None:
        text = "\n\n".join(_markdown_paragraphs(report, view))
        return text if utf8_len(text) <= budget else None

    for view in views[1:]:
        if (text := fitting(view)) is not None:
            return RenderedMarkdown(text + tail, True)
    # drop the fewest evidence items that makes it fit (binary search: reports can carry many)
    order = _drop_order(report.evidence)
    lo, hi, best = 1, len(order), None
    while lo <= hi:
        mid = (lo + hi) // 2
        if (text := fitting(_without_evidence(views[-1], order[:mid]))) is not None:
            best, hi = text, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return RenderedMarkdown(best + tail, True)
    last = _without_evidence(views[-1], order)
    for view in (
        replace(last, list_cap=3),
        replace(last, list_cap=3, text_cap=500),
        replace(last, list_cap=1, text_cap=120),
    ):
        if (text := fitting(view)) is not None:
            return RenderedMarkdown(text + tail, True)
    # only short free text is left (no fences): cut it
    text = "\n\n".join(_markdown_paragraphs(report, replace(last, list_cap=1, text_cap=120)))
    return RenderedMarkdown(_hard_trim(text, budget, utf8_len) + tail, True)


# --------------------------------------------------------------------------- plain text


def _text_list(items: Sequence[str]) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)) if items else _NONE


def render_text(report: DiagnosisReport) -> str:
    """Plain-text report: the same structure without markdown; each log line on its own line."""
    paras = ["\n".join([report_header(report), *_header_facts(report)])]
    if report.notices:
        paras.append("\n".join(f"※ {n}" for n in report.notices))

    overview = report.summary or _NONE
    if run := _run_line(report):
        overview += f"\n{run}"
    paras.append(f"【{SECTION_OVERVIEW}】\n{overview}")
    if report.earlier_runs:
        paras.append("此前的执行：\n" + _text_list(report.earlier_runs))

    paras.append(
        f"【{SECTION_ROOT_CAUSE}】\n"
        f"{_stage_label(report)}：{_phase_name(report.stage)}\n"
        f"故障归属：{FAULT_SIDE_ZH.get(report.fault_side, report.fault_side)}\n"
        f"{_cause_label(report)}：{report.root_cause or '未能确定'}"
    )
    if report.host_groups:
        paras.append(_text_hosts(report.host_groups))
    if not report.evidence:
        paras.append("相关日志：\n（未找到相关日志）")
    for n, ev in enumerate(report.evidence, 1):
        meta = " ".join([f"#{n}", *(v for v in (ev.time, ev.level, ev.logger) if v)])
        if ev.why:
            meta += f" — {ev.why}"
        item = f"{meta}\n{ev.text}"
        paras.append(f"相关日志（{len(report.evidence)} 条）：\n{item}" if n == 1 else item)
    if report.timeline:
        title, day = _timeline_title(report.timeline)
        lines = [f"{title}："]
        for entry in report.timeline:
            bits = [PHASE_STATUS_ICON.get(entry.status, "❔"), _phase_name(entry.phase)]
            bits += [v for v in (entry.time and _clock(entry.time, day), entry.note) if v]
            lines.append(" ".join(bits))
            lines += [f"  {_clock(ev.time, day)} {ev.text}" for ev in entry.events]
        paras.append("\n".join(lines))

    paras.append(f"【{SECTION_SOLUTION}】\n立即措施：\n{_text_list(report.actions.immediate)}")
    paras.append(f"根本解决：\n{_text_list(report.actions.root_fix)}")
    paras.append(f"优化建议：\n{_text_list(report.actions.improvements)}")
    paras.append(f"【{SECTION_PREVENTION}】\n{_text_list(report.prevention)}")
    if report.missing_info:
        paras.append(f"【{SECTION_MISSING}】\n{_text_list(report.missing_info)}")

    footer = [_source_line(report)]
    if report.request_ids:
        footer.append("request_id：" + "，".join(report.request_ids))
    footer += [f"链接：{url}" for url in report.links]
    paras.append("\n".join(footer))
    return "\n\n".join(paras)
