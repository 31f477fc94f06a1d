"""Report rendering for chat: structure, verbatim evidence, markup safety and byte budgets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.models import (
    Actions,
    DiagnosisReport,
    Evidence,
    HostGroup,
    RunSpan,
    TimelineEntry,
    TimelineEvent,
    Window,
)
from bot.delivery.render import (
    SHORTENED_NOTE,
    render_markdown,
    render_text,
    report_header,
)
from bot.delivery.split import split_parts, utf8_len

HINT = "完整报告：发送 `详情 20000123`"
NASTY = "Execute script failed, output: **not bold** <script>alert(1)</script> `rm -rf /` ```js x``` ~~~ end"


def make_report(**kw: object) -> DiagnosisReport:
    base: dict[str, object] = {
        "step_instance_id": 20000123,
        "task_instance_id": 10000456,
        "request_ids": ["0af3c1d2e4b5a6978877665544332211"],
        "summary": "步骤「分发配置」在 3 台主机上执行失败。",
        "stage": "dispatch",
        "fault_side": "environment",
        "root_cause": "目标主机 GSE Agent 不在线，任务下发失败。",
        "signature": "gse_agent_offline",
        "evidence": [
            Evidence(
                time="2024-05-01 10:00:01.123",
                level="ERROR",
                logger="c.t.b.j.e.GseTaskManager",
                text="Send task to gse failed, agent 0:10.0.0.1 offline, errorCode=1000115",
                why="下发失败",
            ),
            Evidence(time="2024-05-01 10:00:01.500", level="INFO", logger="c.t.b.j.e.Listener", text=NASTY),
        ],
        "timeline": [
            TimelineEntry(
                phase="parameter_check",
                status="ok",
                time="2024-05-01 10:00:00.100",
                events=[
                    TimelineEvent(time="2024-05-01 10:00:00.100", text="Start task, taskInstanceId=10000456")
                ],
            ),
            TimelineEntry(
                phase="initialization", status="warn", time="2024-05-01 10:00:00.500", note="重试 1 次"
            ),
            TimelineEntry(
                phase="dispatch",
                status="fail",
                time="2024-05-01 10:00:01.123",
                note="GSE 返回错误",
                events=[
                    TimelineEvent(time="2024-05-01 10:00:00.900", text="Sending task to gse server"),
                    TimelineEvent(time="2024-05-01 10:00:01.123", text="Start gse task fail, errorCode=1"),
                ],
            ),
            TimelineEntry(phase="execution", status="missing"),
        ],
        "span": RunSpan(start="2024-05-01 10:00:00.100", end="2024-05-01 10:00:05.300", seconds=5.2),
        "window": Window(start="2024-04-28T10:30:00+08:00", end="2024-05-01T10:30:00+08:00"),
        "actions": Actions(
            immediate=["检查 Agent"], root_fix=["重装 Agent"], improvements=["配置 Agent 监控"]
        ),
        "prevention": ["定期巡检 Agent 状态"],
        "missing_info": ["目标主机上的 Agent 日志"],
        "confidence": 0.8,
        "source": "rules",
        "links": ["https://job.example.com/api_execute/10000456"],
        "notices": ["未配置模型，以下为规则诊断"],
    }
    base.update(kw)
    return DiagnosisReport.model_validate(base)


ORDER = [
    "问题概述",
    "根因分析",
    "失败阶段",
    "故障归属",
    "失败原因",
    "相关日志",
    "时间线",
    "解决方案",
    "立即措施",
    "根本解决",
    "优化建议",
    "预防措施",
    "还需要的信息",
]


def assert_in_order(text: str, words: list[str]) -> None:
    positions = [text.index(w) for w in words]
    assert positions == sorted(positions), words


def fenced_blocks(md: str) -> list[tuple[str, str]]:
    """(marker, content) of each fenced block, CommonMark style (closing run at least as long)."""
    blocks: list[tuple[str, str]] = []
    lines = md.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})$", lines[i])
        if m:
            marker = m.group(1)
            j = i + 1
            while not re.fullmatch(f"`{{{len(marker)},}}", lines[j]):
                j += 1
            blocks.append((marker, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def outside_fences(md: str) -> str:
    out = md
    for marker, content in fenced_blocks(md):
        out = out.replace(f"{marker}\n{content}\n{marker}", "")
    return out


@pytest.mark.parametrize("render", [lambda r: render_markdown(r).text, render_text])
def test_headings_in_order_and_header_first(render: object) -> None:
    text = render(make_report())  # type: ignore[operator]
    assert text.split("\n", 1)[0] == "【job-doctor 诊断报告】stepInstanceId=20000123"
    assert_in_order(text, ORDER)
    assert "下发" in text and "环境问题（目标主机/Agent）" in text
    for icon in ("✅", "⚠️", "❌", "❔"):
        assert icon in text
    assert "诊断来源：规则库（规则 gse_agent_offline）" in text and "80%" in text
    assert "未配置模型，以下为规则诊断" in text
    assert "https://job.example.com/api_execute/10000456" in text


def test_header_uses_request_id_without_step_id() -> None:
    report = make_report(step_instance_id=None)
    assert report_header(report) == "【job-doctor 诊断报告】request_id=0af3c1d2e4b5a6978877665544332211"
    assert render_text(report).startswith(report_header(report) + "\n")
    assert render_markdown(report).text.startswith(report_header(report) + "\n")


def test_model_source_named() -> None:
    report = make_report(source="llm", signature=None, confidence=0.55)
    assert "诊断来源：模型；置信度 55%" in render_text(report)


@pytest.mark.parametrize("render", [lambda r: render_markdown(r).text, render_text])
def test_missing_info_section_only_when_needed(render: object) -> None:
    assert "还需要的信息" in render(make_report())  # type: ignore[operator]
    assert "还需要的信息" not in render(make_report(missing_info=[]))  # type: ignore[operator]


def test_unknown_report_without_logs() -> None:
    report = make_report(stage="unknown", fault_side="unknown", evidence=[], request_ids=[], timeline=[])
    text = render_text(report)
    assert "失败阶段：未知" in text and "未找到相关日志" in text
    md = render_markdown(report).text
    assert "未找到相关日志" in md and "相关日志" in md


def test_text_mode_keeps_long_log_line_whole_on_its_own_line() -> None:
    long_line = (
        "Execute failed, hosts=" + ",".join(f"0:10.0.{i // 256}.{i % 256}" for i in range(800)) + " END"
    )
    report = make_report(evidence=[Evidence(time="10:00:01", level="ERROR", text=long_line)])
    lines = render_text(report).split("\n")
    assert long_line in lines
    # the time is given with the quoted line
    assert "10:00:01" in lines[lines.index(long_line) - 1]


def test_markdown_quotes_evidence_verbatim_in_fences() -> None:
    md = render_markdown(make_report()).text
    contents = [content for _, content in fenced_blocks(md)]
    assert contents == [e.text for e in make_report().evidence]
    assert "`2024-05-01 10:00:01.123`" in md  # time with the line


def test_markup_in_log_lines_is_neutralised() -> None:
    md = render_markdown(make_report()).text
    _, (marker, content) = fenced_blocks(md)
    assert content == NASTY
    assert len(marker) > max(len(run) for run in re.findall(r"`+", NASTY))
    rest = outside_fences(md)
    assert "<script>" not in rest and "not bold" not in rest and "rm -rf" not in rest
    assert rest.count("```") == 0


def test_backticks_in_metadata_do_not_break_inline_code() -> None:
    report = make_report(evidence=[Evidence(time="10:00", level="ERROR", logger="a`b**c", text="x")])
    md = render_markdown(report).text
    meta = next(line for line in md.split("\n") if line.startswith("**#1**"))
    assert meta.count("`") % 2 == 0 and "a'b**c" in meta


def cjk_heavy_report(n_evidence: int = 30) -> DiagnosisReport:
    evidence = [
        Evidence(
            time=f"2024-05-01 10:00:{i:02d}.000",
            level="ERROR" if i % 5 == 0 else "INFO",
            text=f"[{i}] 任务执行失败，主机返回错误信息：" + "脚本输出中文内容" * 40 + f" #{i}",
            why="说明" * 10,
        )
        for i in range(n_evidence)
    ]
    return make_report(
        summary="作业步骤执行失败，" * 30,
        evidence=evidence,
        actions=Actions(
            immediate=["立即重试该步骤并观察结果" * 3] * 5,
            root_fix=["修复脚本中的错误处理逻辑" * 3] * 5,
            improvements=["为脚本增加超时与重试配置" * 5] * 8,
        ),
        prevention=["建立发布前检查清单并执行演练" * 5] * 8,
    )


@pytest.mark.parametrize("max_bytes", [2048, 4096, 8000, 20480])
def test_byte_limit_respected_for_cjk_content(max_bytes: int) -> None:
    report = cjk_heavy_report()
    assert utf8_len(render_markdown(report, max_bytes=10**7).text) > 20480
    out = render_markdown(report, max_bytes=max_bytes, detail_hint=HINT)
    assert out.shortened
    assert utf8_len(out.text) <= max_bytes
    assert out.text.startswith(report_header(report) + "\n")
    assert out.text.endswith(SHORTENED_NOTE + "\n" + HINT)
    # evidence is dropped whole, never cut
    texts = {e.text for e in report.evidence}
    assert all(content in texts for _, content in fenced_blocks(out.text))


def test_shortening_keeps_error_lines_before_info_lines() -> None:
    report = cjk_heavy_report()
    out = render_markdown(report, max_bytes=8000, detail_hint=HINT)
    kept = [content for _, content in fenced_blocks(out.text)]
    assert kept, "some evidence fits in 8000 bytes"
    levels = {e.text: e.level for e in report.evidence}
    assert all(levels[k] == "ERROR" for k in kept)
    assert "条相关日志已省略" in out.text


def test_optional_detail_dropped_before_evidence() -> None:
    report = make_report(
        actions=Actions(immediate=["a"], root_fix=["b"], improvements=["建议" * 400]),
        prevention=["预防" * 400],
        timeline=[TimelineEntry(phase="dispatch", status="fail", time="10:00:01.123", note="GSE 返回错误")],
    )
    full = render_markdown(report).text
    out = render_markdown(report, max_bytes=utf8_len(full) - 100)
    assert out.shortened
    assert [c for _, c in fenced_blocks(out.text)] == [e.text for e in report.evidence]
    assert "建议建议" not in out.text
    assert_in_order(out.text, ORDER)  # headings stay even when their content is omitted


def test_no_shortening_when_it_fits() -> None:
    out = render_markdown(make_report(), detail_hint=HINT)
    assert not out.shortened and HINT not in out.text and SHORTENED_NOTE not in out.text


def test_oversized_free_text_is_cut_to_fit() -> None:
    report = make_report(summary="很长的概述" * 5000, root_cause="原因" * 5000, evidence=[])
    out = render_markdown(report, max_bytes=4096, detail_hint=HINT)
    assert out.shortened and utf8_len(out.text) <= 4096 and out.text.endswith(HINT)


# --------------------------------------------------------------------------- header and timeline


@pytest.mark.parametrize("render", [lambda r: render_markdown(r).text, render_text])
def test_header_carries_the_runs_span_and_the_window_searched(render: object) -> None:
    text = render(make_report())  # type: ignore[operator]
    lines = text.split("\n")
    assert lines[0] == "【job-doctor 诊断报告】stepInstanceId=20000123"
    facts = [line for line in lines[1:4] if line]
    assert facts == [
        "日志跨度：2024-05-01 10:00:00.100 → 10:00:05.300（历时 5.2 秒）",
        "检索窗口：2024-04-28 10:30:00 → 2024-05-01 10:30:00（UTC+08:00）",
    ]
    assert text.index("检索窗口") < text.index("未配置模型")  # before the notices


def test_header_without_lines_names_the_window_only() -> None:
    report = make_report(span=None, timeline=[], evidence=[])
    text = render_text(report)
    assert "日志跨度" not in text
    assert text.split("\n")[1] == "检索窗口：2024-04-28 10:30:00 → 2024-05-01 10:30:00（UTC+08:00）"
    assert "检索窗口" not in render_text(make_report(span=None, window=None))


def test_window_names_one_zone_whatever_the_ends_carry() -> None:
    # BK-JOB's millisecond times and a clock in another zone: one zone, whole seconds, named once
    window = Window(start="2024-09-03T08:37:07.558000+00:00", end="2024-09-03T16:57:11.120000+08:00")
    line = next(x for x in render_text(make_report(window=window)).split("\n") if x.startswith("检索窗口"))
    assert line == "检索窗口：2024-09-03 08:37:07 → 2024-09-03 08:57:11（UTC+00:00）"
    west = Window(start="2024-09-03T08:00:00-05:30", end="2024-09-03T09:00:00-05:30")
    assert "（UTC-05:30）" in render_text(make_report(window=west))


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.082, "82 毫秒"), (61.4, "1 分 1 秒"), (3725, "1 小时 2 分"), (90000, "1 天 1 小时")],
)
def test_span_duration_reads_naturally(seconds: float, shown: str) -> None:
    span = RunSpan(start="2024-05-01 10:00:00.100", end="2024-05-02 11:00:00.100", seconds=seconds)
    text = render_text(make_report(span=span))
    # another day: the end keeps its date
    assert f"日志跨度：2024-05-01 10:00:00.100 → 2024-05-02 11:00:00.100（历时 {shown}）" in text


def _timeline_block(text: str) -> list[str]:
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("时间线"))
    end = lines.index("", start)
    return lines[start:end]


def test_text_timeline_lists_each_phases_events_under_it() -> None:
    assert _timeline_block(render_text(make_report())) == [
        "时间线（2024-05-01）：",
        "✅ 参数校验 10:00:00.100",
        "  10:00:00.100 Start task, taskInstanceId=10000456",
        "⚠️ 初始化 10:00:00.500 重试 1 次",
        "❌ 下发 10:00:01.123 GSE 返回错误",
        "  10:00:00.900 Sending task to gse server",
        "  10:00:01.123 Start gse task fail, errorCode=1",
        "❔ 执行",
    ]


def test_timeline_over_several_days_keeps_the_dates() -> None:
    report = make_report()
    report.timeline[2].events[1].time = "2024-05-02 00:00:01.123"
    block = _timeline_block(render_text(report))
    assert block[0] == "时间线："
    assert "  2024-05-02 00:00:01.123 Start gse task fail, errorCode=1" in block
    assert "✅ 参数校验 2024-05-01 10:00:00.100" in block


def test_markdown_timeline_nests_events_as_inline_code() -> None:
    report = make_report()
    report.timeline[2].events[1].text = "Start gse task fail, **not bold** <b>x</b> `rm -rf /`"
    md = render_markdown(report).text
    assert (
        "#### 时间线（2024-05-01）\n"
        "- ✅ 参数校验 `10:00:00.100`\n"
        "  - `10:00:00.100 Start task, taskInstanceId=10000456`\n"
        "- ⚠️ 初始化 `10:00:00.500` 重试 1 次\n"
        "- ❌ 下发 `10:00:01.123` GSE 返回错误\n"
        "  - `10:00:00.900 Sending task to gse server`\n"
        "  - `10:00:01.123 Start gse task fail, **not bold** <b>x</b> 'rm -rf /'`\n"
        "- ❔ 执行"
    ) in md


def eventful_report() -> DiagnosisReport:
    """Every phase with five long events: the timeline outweighs the rest of the report."""
    statuses = ["ok", "ok", "ok", "fail", "ok", "ok"]
    phases = ["parameter_check", "initialization", "dispatch", "execution", "result_polling", "callback"]
    timeline = [
        TimelineEntry(
            phase=phase,
            status=status,  # type: ignore[arg-type]
            time=f"2024-05-01 10:00:0{k}.900",
            events=[
                TimelineEvent(time=f"2024-05-01 10:00:0{k}.{n}00", text=f"{phase} line {n} " + "x" * 140)
                for n in range(5)
            ],
        )
        for k, (phase, status) in enumerate(zip(phases, statuses, strict=True))
    ]
    return make_report(timeline=timeline)


def without_events(report: DiagnosisReport, keep: str | None = None) -> DiagnosisReport:
    """`report` with the events of every phase but those with status `keep` removed."""
    timeline = [
        e.model_copy(update={"events": e.events if e.status == keep else []}) for e in report.timeline
    ]
    return report.model_copy(update={"timeline": timeline})


def test_markdown_drops_events_before_evidence_and_sections() -> None:
    report = eventful_report()
    tail = utf8_len("\n\n" + SHORTENED_NOTE + "\n" + HINT)
    fail_events = [ev.text for ev in report.timeline[3].events]
    ok_events = [ev.text for e in report.timeline if e.status == "ok" for ev in e.events]

    # a little short: the events of phases that went well go first
    budget = utf8_len(render_markdown(without_events(report, keep="fail")).text) + tail
    out = render_markdown(report, max_bytes=budget, detail_hint=HINT)
    assert out.shortened and utf8_len(out.text) <= budget
    assert all(t in out.text for t in fail_events)
    assert not any(t in out.text for t in ok_events)
    # shorter: no events at all, yet every section, note and log line is still there
    budget = utf8_len(render_markdown(without_events(report)).text) + tail
    out = render_markdown(report, max_bytes=budget, detail_hint=HINT)
    assert out.shortened and utf8_len(out.text) <= budget
    assert not any(t in out.text for t in fail_events + ok_events)
    assert [c for _, c in fenced_blocks(out.text)] == [e.text for e in report.evidence]
    assert "配置 Agent 监控" in out.text and "定期巡检 Agent 状态" in out.text  # sections kept
    assert "- ❌ 执行 `10:00:03.900`" in out.text  # the phases and their marks stay
    assert_in_order(out.text, ORDER)


def test_long_text_timeline_splits_into_parts_between_lines() -> None:
    report = eventful_report()
    text = render_text(report)
    parts = split_parts(text, 1500, report_header(report))
    assert len(parts) > 2 and all(len(p) <= 1500 for p in parts)
    lines = {line for p in parts for line in p.split("\n")}
    for entry in report.timeline:
        for ev in entry.events:
            assert ev.time is not None
            assert f"  {ev.time[11:]} {ev.text}" in lines  # each event whole on its line


def test_max_bytes_too_small() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        render_markdown(cjk_heavy_report(), max_bytes=40, detail_hint=HINT)


def test_text_report_splits_into_worktool_parts() -> None:
    report = cjk_heavy_report(10)
    parts = split_parts(render_text(report), 1500, report_header(report))
    n = len(parts)
    assert n > 1
    for i, part in enumerate(parts, 1):
        assert len(part) <= 1500
        assert part.startswith(f"{report_header(report)} ({i}/{n})\n")
    all_lines = {line for p in parts for line in p.split("\n")}
    assert all(e.text in all_lines for e in report.evidence)  # each log line whole in one part


evidence_text = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], include_characters="`*<>#\t\n"), min_size=1, max_size=600
)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(evidence_text, min_size=0, max_size=25),
    summary=st.text(max_size=300),
    max_bytes=st.integers(min_value=1500, max_value=20480),
)
def test_markdown_budget_property(texts: list[str], summary: str, max_bytes: int) -> None:
    report = make_report(summary=summary, evidence=[Evidence(time="t", level="ERROR", text=t) for t in texts])
    out = render_markdown(report, max_bytes=max_bytes, detail_hint=HINT)
    assert utf8_len(out.text) <= max_bytes
    assert out.text.startswith(report_header(report))
    shown = [c for _, c in fenced_blocks(out.text)]
    assert all(c in texts for c in shown)
    if not out.shortened:
        assert shown == texts


def _with_hosts() -> DiagnosisReport:
    return make_report(
        scope="biz:2",
        host_groups=[
            HostGroup(
                status=104,
                status_zh="脚本返回码非零",
                exit_code=1,
                count=12,
                hosts=[f"10.0.0.{i}" for i in range(1, 11)],
                output=[NASTY, "tar: x: Cannot write: No space left on device"],
                why="目标主机磁盘已满",
            ),
            HostGroup(
                status=310,
                status_zh="Agent 异常",
                count=1,
                hosts=["1:10.9.9.9"],
                agents=["1:10.9.9.9 异常（有损状态）"],
            ),
        ],
    )


def test_host_groups_are_a_section_with_the_output_whole() -> None:
    report = _with_hosts()
    text = render_text(report)
    assert (
        "主机结果：" in text
        and "· 12 台 脚本返回码非零 exit_code=1：10.0.0.1、" in text
        and "10.0.0.10等" in text
    )
    assert f"  输出：{NASTY}" in text and "  说明：目标主机磁盘已满" in text
    assert "  GSE：1:10.9.9.9 异常（有损状态）" in text and "业务 biz:2" in text
    md = render_markdown(report).text
    assert "#### 主机结果" in md and "业务 biz:2" in md
    # printed text is fenced whole: its markup never becomes the chat's
    fences = [b for b in re.findall(r"(`{3,})\n(.*?)\n\1", md, re.S) if NASTY in b[1]]
    assert fences and "tar: x: Cannot write: No space left on device" in fences[0][1]
    outside = re.sub(r"(`{3,})\n.*?\n\1", "", md, flags=re.S)
    assert "<script>" not in outside and "**not bold**" not in outside
