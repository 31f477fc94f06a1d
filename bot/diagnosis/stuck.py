"""A step that has not finished: where the chain stops, what it waits for, and for how long.

"为什么一直在执行中" gets the same report as a failure, with `stage` the phase the run is stuck in:
the first phase whose expected lines never came (else the last phase that logged anything), the
hosts that have not answered, and the time the step has run against its timeout.
"""

from __future__ import annotations

from datetime import datetime

from bot.core.codes import codes
from bot.core.models import STAGE_ZH, Actions, DiagnosisReport, Stage, TimelineEntry
from bot.diagnosis.hosts import StepFacts, waited
from bot.diagnosis.records import LogRecord

SAFETY_NET_S = 300  # the engine ends result polling at timeout + 300 s (bk-job.md, "Script timeout")

_WAITING_FOR: dict[str, str] = {
    "parameter_check": "作业还没有通过参数校验/创建，步骤尚未开始",
    "initialization": "步骤尚未下发：可能在排队（作业并发配额）或在准备源文件",
    "dispatch": "等待 GSE 接收任务（未见 GSE 任务启动成功的日志）",
    "execution": "等待主机执行完成并由 GSE 返回结果",
    "result_polling": "作业平台在轮询 GSE 的执行结果，但结果迟迟没有返回",
    "callback": "步骤已执行完，等待回调/通知完成",
}


STUCK_ACTIONS = Actions(
    immediate=[
        "确认脚本是否在等待输入、死循环或被后台进程占用了标准输出（nohup 启动的进程要重定向输出）",
        "确实卡住时在 BK-JOB 中「强制终止」该作业，处理后重新执行",
    ],
    root_fix=["让脚本在超时时间内结束：网络调用设置超时、避免交互式命令、后台进程重定向输出"],
    improvements=["为长任务设置合理的步骤超时，避免一直占用执行配额"],
)


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} 秒"
    if s < 3600:
        return f"{s // 60} 分 {s % 60} 秒"
    return f"{s // 3600} 小时 {s % 3600 // 60} 分"


def stage_where_chain_stops(timeline: list[TimelineEntry]) -> Stage:
    for entry in timeline:
        if entry.status == "missing" and entry.phase in STAGE_ZH:
            return entry.phase  # type: ignore[return-value]
    reached = [e.phase for e in timeline if e.status in ("ok", "warn", "fail") and e.phase in STAGE_ZH]
    if reached:
        return reached[-1]  # type: ignore[return-value]
    return "execution"


def stuck_report(report: DiagnosisReport, facts: StepFacts, now: datetime | None) -> DiagnosisReport:
    stage = stage_where_chain_stops(report.timeline)
    pending = facts.pending
    waiting = sum(g.count for g in pending)
    status_zh = codes().run_status.zh.get(facts.step.status or 0, "执行中") if facts.step else "执行中"
    ran, timeout = waited(facts, now) if now is not None else (None, None)
    what = f"步骤 stepInstanceId={report.step_instance_id}"
    lines = [f"BK-JOB 显示{what} 仍为「{status_zh}」，尚未结束。"]
    lines.append(f"调用链停在「{STAGE_ZH[stage]}」阶段：{_WAITING_FOR.get(stage, '等待后续处理')}。")
    if waiting:
        hosts = "、".join(h for g in pending for h in g.hosts[:5])
        lines.append(f"{waiting} 台主机还没有结果（{'/'.join(g.status_zh for g in pending)}）：{hosts}。")
    missing: list[str] = []
    late = False
    if ran is not None:
        line = f"已运行 {_duration(ran)}"
        if timeout:
            line += f"，步骤超时时间 {_duration(timeout)}（已用 {round(ran * 100 / timeout)}%）"
            late = ran > timeout + SAFETY_NET_S
        lines.append(line + "。")
    if late:
        lines.append(
            "运行时间已超过超时时间加 300 秒的兜底，引擎本应结束该步骤；仍在执行中说明结果处理任务可能已中断。"
        )
        missing.append("查看 job-execute 在该时间段是否重启，以及 ResultHandleManager 是否仍持有该任务")
    elif timeout and ran is not None:
        missing.append(f"步骤还在超时时间内；若到超时（{_duration(timeout)}）后仍未结束，再次发送 id 复查")
    if waiting:
        missing.append(
            "在未返回结果的主机上确认脚本进程是否还在（ps -ef | grep bk_job），以及 GSE Agent 是否在线"
        )
    if ran is None:
        missing.append("BK-JOB 没有给出步骤的开始时间，无法计算已等待的时长")
    summary = f"{what} 仍在执行中：停在{STAGE_ZH[stage]}阶段"
    if ran is not None:
        summary += f"，已运行 {_duration(ran)}" + (f"（超时 {_duration(timeout)}）" if timeout else "")
    summary += "。"
    earlier = report.root_cause
    cause = "\n".join(lines)
    if report.signature and earlier:
        cause += f"\n日志中已出现的异常：{earlier}"
    return report.model_copy(
        update={
            "summary": summary,
            "stage": stage,
            "running": True,
            "fault_side": "unknown" if not late else report.fault_side,
            "root_cause": cause,
            "actions": STUCK_ACTIONS,
            # "no known signature" is no gap here: a run that has not ended matches none
            "missing_info": [
                *missing,
                *[
                    m
                    for m in report.missing_info
                    if m not in missing and not m.startswith("未匹配到已知故障特征")
                ],
            ],
            "confidence": max(report.confidence, 0.6) if waiting or ran is not None else report.confidence,
        }
    )


LONG_SILENCE_S = 6 * 3600  # logs silent this long: more likely lost or cut off than still running


def unfinished_chain(
    what: str, stage: Stage, last: LogRecord | None, now: datetime | None
) -> tuple[str, str, str]:
    """Summary, cause and the gap for a chain that neither failed nor ended, with BK-JOB not saying
    whether the step still runs: where it stops and for how long, not an invented failure."""
    silent: float | None = None
    if last is not None and last.time is not None and now is not None:
        logged = last.time if last.time.tzinfo is not None else last.time.replace(tzinfo=now.tzinfo)
        silent = (now - logged).total_seconds()
    where = f"{what} 的日志停在{STAGE_ZH[stage]}阶段，既没有失败记录也没有结束记录"
    if silent is not None and silent > LONG_SILENCE_S:
        summary = f"{where}，且已中断 {_duration(silent)}。"
    else:
        summary = f"{where}：步骤可能仍在执行中。"
    cause = f"调用链停在「{STAGE_ZH[stage]}」阶段：{_WAITING_FOR.get(stage, '等待后续处理')}。"
    if last is not None:
        ago = f"，距今 {_duration(silent)}" if silent is not None and silent >= 0 else ""
        cause += f"\n该步骤最后一条日志（{last.time_text or '时间未知'}{ago}）：{last.message[:300]}"
    cause += "\n日志中没有错误或失败的记录：这更像一个还没结束、或结果迟迟没有返回的步骤，而不是一次已知原因的失败。"
    gap = (
        "无法确认该步骤是否仍在执行：请在 BK-JOB 页面查看步骤状态；若已经结束，其后的日志可能没有采集到，"
        "可稍后再发一次 id（可带上大致时间）"
    )
    return summary, cause, gap
