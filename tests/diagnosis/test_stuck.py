"""A step that has not finished: the report says where the chain stops and how long it has waited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.clients.bkjob_models import JobInstance, JobInstanceStatus, StepDetail, StepInstance
from bot.core.models import DiagnosisReport, HostGroup, TimelineEntry
from bot.delivery.render import render_text
from bot.diagnosis.hosts import StepFacts
from bot.diagnosis.records import LogRecord
from bot.diagnosis.stuck import stuck_report, unfinished_chain

START = datetime(2024, 8, 14, 2, 30, tzinfo=UTC)


def facts(timeout_s: int | None, pending: int = 2) -> StepFacts:
    step = StepInstance(step_instance_id=7, status=2, start_time=START)
    return StepFacts(
        job=JobInstanceStatus(finished=False, job_instance=JobInstance(job_instance_id=1), steps=[step]),
        step=step,
        detail=StepDetail(step_instance_id=7, timeout_s=timeout_s) if timeout_s else None,
        groups=[
            HostGroup(status=7, status_zh="正在执行", count=pending, hosts=["10.0.0.1", "10.0.0.2"][:pending])
        ],
    )


def report(*phases: tuple[str, str]) -> DiagnosisReport:
    return DiagnosisReport(
        step_instance_id=7,
        timeline=[TimelineEntry(phase=p, status=s) for p, s in phases],  # type: ignore[arg-type]
        missing_info=["未匹配到已知故障特征：请结合相关日志与主机执行日志人工确认"],
    )


def test_stuck_in_the_first_phase_whose_lines_never_came() -> None:
    base = report(
        ("initialization", "ok"), ("dispatch", "ok"), ("execution", "missing"), ("result_polling", "missing")
    )
    out = stuck_report(base, facts(3600), START + timedelta(minutes=30))
    assert out.running and out.stage == "execution"
    assert "已运行 30 分 0 秒，步骤超时时间 1 小时 0 分（已用 50%）" in out.root_cause
    assert "2 台主机还没有结果（正在执行）：10.0.0.1、10.0.0.2" in out.root_cause
    assert not any(m.startswith("未匹配到已知故障特征") for m in out.missing_info)
    text = render_text(out)
    assert "卡住的阶段：执行" in text and "现状：" in text and "失败阶段" not in text


def test_past_the_engine_safety_net_the_report_says_the_handler_may_be_gone() -> None:
    base = report(("dispatch", "ok"), ("result_polling", "missing"))
    out = stuck_report(base, facts(600), START + timedelta(seconds=600 + 301))
    assert out.stage == "result_polling"
    assert "结果处理任务可能已中断" in out.root_cause
    assert any("job-execute" in m for m in out.missing_info)


def test_without_times_it_says_what_it_cannot_tell() -> None:
    f = facts(None, pending=0)
    f.step = StepInstance(step_instance_id=7, status=2)
    out = stuck_report(report(("dispatch", "ok")), f, START)
    assert out.stage == "dispatch" and "已运行" not in out.root_cause
    assert any("开始时间" in m for m in out.missing_info)


def test_a_chain_silent_for_hours_is_not_called_still_running() -> None:
    last = LogRecord(
        raw="x",
        message="Start pull gse task result, times: 8",
        time=datetime(2024, 8, 14, 2, 30, 19),
        time_text="2024-08-14 02:30:19.377",
    )
    tz = UTC
    fresh, cause, _gap = unfinished_chain("步骤 7", "execution", last, datetime(2024, 8, 14, 3, 0, tzinfo=tz))
    assert "可能仍在执行中" in fresh and "距今 29 分 41 秒" in cause
    old, _cause, _gap = unfinished_chain("步骤 7", "execution", last, datetime(2024, 8, 17, 2, 30, tzinfo=tz))
    assert "可能仍在执行中" not in old and "已中断 71 小时 59 分" in old
