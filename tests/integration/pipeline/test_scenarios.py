"""Every scenario folder runs through the whole pipeline: real BkLog client → sandbox BkLog over HTTP."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import aiohttp
import pytest

from bot.core.models import MAX_PHASE_EVENTS, PHASE_STATUS_ICON, STAGE_ZH, DiagnosisReport
from bot.delivery.render import render_text
from bot.devtools.evaluate import run_scenario
from bot.devtools.scenarios import Scenario, load_scenarios

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario_through_pipeline(scenario: object) -> None:
    async with aiohttp.ClientSession() as session:
        result = await run_scenario(scenario, session)  # type: ignore[arg-type]
    assert not result.error, result.error
    assert result.ok, "\n".join(result.problems)
    report = result.report
    assert report is not None
    # every evidence line is a collected line, never shortened
    text = scenario.logs_text  # type: ignore[attr-defined]
    for ev in report.evidence:
        assert ev.text.split("\n", 1)[0] in text
    if report.stage != "unknown":
        assert report.summary and report.root_cause
        assert report.timeline


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario_without_trace_header_but_a_trace_field(scenario: object) -> None:
    """An install whose logging pattern has no `[job-execute,traceId,spanId]` block and whose
    collector extracts `traceId` into a field: the same diagnosis comes out."""
    async with aiohttp.ClientSession() as session:
        with_header = await run_scenario(scenario, session)  # type: ignore[arg-type]
        with_field = await run_scenario(scenario, session, trace_field="traceId")  # type: ignore[arg-type]
    assert not with_field.error, with_field.error
    assert with_field.ok, "\n".join(with_field.problems)
    a, b = with_header.report, with_field.report
    assert a is not None and b is not None
    assert (b.stage, b.fault_side, b.signature) == (a.stage, a.fault_side, a.signature)
    assert sorted(b.request_ids) == sorted(a.request_ids)
    assert [t.status for t in b.timeline] == [t.status for t in a.timeline]
    # traces are searched by the field only (exact): never by the line's header or a wildcard
    assert not any(q.startswith(("[trace_id]", "[trace_wildcard]")) for q in b.queries)
    assert any(q.startswith("[trace_field] traceId:") for q in b.queries) == bool(a.request_ids)


def _logged(time: str, like: datetime) -> datetime:
    """A logged (engine local) time in the zone of `like` (the window's)."""
    return datetime.strptime(time, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=like.tzinfo)


def assert_timeline_reads_like_the_run(report: DiagnosisReport) -> None:
    for entry in report.timeline:
        assert len(entry.events) <= MAX_PHASE_EVENTS, entry.phase
        times = [e.time for e in entry.events if e.time]
        assert times == sorted(times), f"{entry.phase} events out of time order"
        assert all(e.text.strip() for e in entry.events)
        if entry.status == "skipped":
            assert entry.events == []
    phase_times = [e.time for e in report.timeline if e.time]
    assert phase_times == sorted(phase_times), "phase times run backwards"
    if any(e.events for e in report.timeline):
        assert report.span is not None
        span = report.span
        assert span.start <= min(t for e in report.timeline for ev in e.events if (t := ev.time))
        assert span.end >= max(t for e in report.timeline for ev in e.events if (t := ev.time))
        assert report.window is not None
        start, end = datetime.fromisoformat(report.window.start), datetime.fromisoformat(report.window.end)
        assert start <= _logged(span.start, start) <= _logged(span.end, start) <= end


def assert_chat_text_lists_events_under_phases(report: DiagnosisReport) -> None:
    text = render_text(report)
    lines = text.split("\n")
    assert report.window is not None and lines[1 + (report.span is not None)].startswith("检索窗口：")
    if report.span is not None:
        assert lines[1].startswith(f"日志跨度：{report.span.start} → ")
    if not report.timeline:
        return
    at = next(i for i, line in enumerate(lines) if line.startswith("时间线"))
    for entry in report.timeline:
        at += 1
        assert lines[at].startswith(f"{PHASE_STATUS_ICON[entry.status]} {STAGE_ZH[entry.phase]}"), lines[at]
        for ev in entry.events:
            at += 1
            assert ev.time is not None
            assert lines[at].startswith("  ") and lines[at].endswith(f"{ev.time[11:]} {ev.text}"), lines[at]
    assert lines[at + 1] == ""  # nothing else in the timeline block


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario_timeline_reads_like_the_run(scenario: Scenario) -> None:
    async with aiohttp.ClientSession() as session:
        result = await run_scenario(scenario, session)
    report = result.report
    assert report is not None, result.error
    assert_timeline_reads_like_the_run(report)
    assert_chat_text_lists_events_under_phases(report)
    if scenario.expected.request_ids:
        # the run's failure is among the events of the phase that failed
        failed = [e for e in report.timeline if e.status == "fail"]
        assert all(e.events for e in failed)


async def test_a_chain_that_stops_without_failing_is_not_called_a_failure() -> None:
    """Asked while the step runs, with no BK-JOB to say so: where the chain stops, no invented failure."""
    stuck = next(s for s in SCENARIOS if s.name == "stuck_gse_results_pending")
    async with aiohttp.ClientSession() as session:
        result = await run_scenario(replace(stuck, bkjob=None), session)
    report = result.report
    assert report is not None and report.signature is None and not report.running
    assert report.stage == "execution" and report.fault_side == "unknown"
    assert "可能仍在执行中" in report.summary and "阶段失败" not in report.summary
    assert "出现异常" not in report.root_cause
    assert "notFinishedTargetExecuteObjectGseKeys" in report.root_cause  # the line where it stops
    assert report.missing_info[0].startswith("无法确认该步骤是否仍在执行")
    assert "强制终止" in " ".join(report.actions.immediate)


async def test_a_chain_cut_short_by_the_query_budget_is_not_called_unfinished() -> None:
    """Lines not fetched may hold the error: no "maybe still running" on incomplete evidence."""
    stuck = next(s for s in SCENARIOS if s.name == "stuck_gse_results_pending")
    async with aiohttp.ClientSession() as session:
        result = await run_scenario(replace(stuck, bkjob=None), session, bklog={"max_queries": 1})
    report = result.report
    assert report is not None and "可能仍在执行中" not in report.summary
    assert "查询次数达到上限，调用链可能不完整" in report.missing_info


async def test_when_bk_job_says_running_the_report_does_not_doubt_it() -> None:
    stuck = next(s for s in SCENARIOS if s.name == "stuck_gse_results_pending")
    async with aiohttp.ClientSession() as session:
        result = await run_scenario(stuck, session)
    report = result.report
    assert report is not None and report.running and "仍为「正在执行」" in report.root_cause
    assert not any(m.startswith("无法确认该步骤是否仍在执行") for m in report.missing_info)
