"""The rule-based DiagnosisReport: from the collected chain, its condensed run and the best
signature match. Used on its own without a model, and as the candidate (and the fallback)
when a model is configured. It never guesses: what the lines cannot settle goes to
`missing_info`, and confidence says how sure the rules are. When no signature matches, the
actions are the generic ones of the failed stage (`config/stages.toml`).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.core.models import STAGE_ZH, Actions, DiagnosisReport, Evidence, Stage, Window
from bot.core.resources import data_file
from bot.diagnosis.collector import Collected
from bot.diagnosis.condense import Condensed
from bot.diagnosis.hosts import StepFacts, hosts_line
from bot.diagnosis.lessons import read_lessons
from bot.diagnosis.records import LogRecord
from bot.diagnosis.signatures import SignatureMatch
from bot.diagnosis.stuck import STUCK_ACTIONS, stage_where_chain_stops, stuck_report, unfinished_chain

MAX_EVIDENCE = 10
CONFIDENT = 0.55  # a match this sure settles the cause: its hints become actions, not missing info

StageText = Annotated[str, Field(min_length=1)]


class StagesError(ValueError):
    """The stage actions file is unreadable or a stage is invalid (the message names it)."""


class _StageActionsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    immediate: list[StageText] = Field(min_length=1)
    root_fix: list[StageText] = Field(min_length=1)
    improvements: list[StageText] = Field(min_length=1)


class _StagesSpec(BaseModel):
    """`config/stages.toml`: generic actions for every stage of the timeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parameter_check: _StageActionsSpec
    initialization: _StageActionsSpec
    dispatch: _StageActionsSpec
    execution: _StageActionsSpec
    result_polling: _StageActionsSpec
    callback: _StageActionsSpec


def load_stage_actions(path: Path | None = None) -> dict[str, Actions]:
    """Read and validate the generic actions per stage (default: the packaged stages.toml)."""
    target = path if path is not None else data_file("config", "stages.toml")
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StagesError(f"{target}: cannot read stage actions: {exc}") from exc
    try:
        spec = _StagesSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            field = f": field {'.'.join(loc[1:])!r}" if len(loc) > 1 else ""
            parts.append(f"stage {loc[0] if loc else '<file>'!r}{field}: {e['msg']}")
        raise StagesError(f"{target}: {'; '.join(parts)}") from None
    return {stage: Actions(**actions.model_dump()) for stage, actions in spec}


@functools.cache
def stage_actions() -> Mapping[str, Actions]:
    """The packaged actions, read on first use; cached for good since packaged data never changes at run time."""
    return load_stage_actions()


@dataclass
class RuleInputs:
    collected: Collected
    condensed: Condensed | None
    match: SignatureMatch | None
    step_instance_id: int | None
    request_id: str | None
    links: list[str] = field(default_factory=list)
    enrichment: list[str] = field(default_factory=list)  # extra facts (agent state from the logs' ids)
    notices: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # lookups that failed: what they would have told
    hosts: StepFacts | None = None  # what BK-JOB says about the step (None: not asked)
    hosts_gap: str = ""  # why BK-JOB was not asked, when its host output would have helped
    scope: str | None = None  # the business the request named, when BK-JOB was not asked
    now: datetime | None = None


def evidence_of(rec: LogRecord, why: str) -> Evidence:
    return Evidence(
        time=rec.time_text, level=rec.level, logger=rec.logger, trace_id=rec.trace_id, text=rec.raw, why=why
    )


def _what(inp: RuleInputs) -> str:
    if inp.step_instance_id is not None:
        return f"步骤 stepInstanceId={inp.step_instance_id}"
    return f"request_id={inp.request_id}"


def _time_advice(inp: RuleInputs) -> str:
    """How to search the time the step ran: chat words first, the CLI's flags after (same report)."""
    ident = inp.step_instance_id if inp.step_instance_id is not None else inp.request_id
    return (
        f"如果步骤不在查询时间段内执行（例如更早），请在消息里带上失败时间，如「{ident} 昨天下午3点」"
        f"或「{ident} 2024-05-30 11:09」；命令行用 analyze --since/--until"
    )


def _no_lines_report(inp: RuleInputs, base: DiagnosisReport) -> DiagnosisReport:
    c = inp.collected
    what = _what(inp)
    missing: list[str]
    if c.config_error:
        summary = f"无法查询 BkLog，{what} 未能分析：{c.config_error}"
        missing = [
            "检查 job-doctor 的 BkLog 网关凭据（JOB_DOCTOR_BKLOG__APP_CODE/APP_SECRET 或 JOB_DOCTOR_BK__*）",
            "确认应用已获授权调用 bk-log-search 的 esquery_search，且用户对该索引集有检索权限",
        ]
    elif c.error:
        summary = f"BkLog 暂时无法访问，未能取得 {what} 的日志：{c.error}"
        missing = ["稍后重试（发送「重新分析」），或检查 BkLog 网关与 ES 集群状态"]
    elif c.engine_lines_in_window:
        summary = f"BkLog 在查询时间段内有作业平台引擎日志，但没有 {what} 的任何日志。"
        missing = [
            "请核对 id 是否正确、是否属于本环境（可直接粘贴 BK-JOB 步骤链接）",
            _time_advice(inp),
        ]
    elif c.engine_lines_in_window == 0:
        summary = f"BkLog 在查询时间段内没有任何作业平台引擎日志，无法分析 {what}。"
        missing = [
            "检查 BkLog 是否在采集 job-execute 日志（/data/logs/job-execute/*.log）",
            "检查 job-doctor 配置的索引集 id（JOB_DOCTOR_BKLOG__INDEX_SET_ID）与时区是否正确",
            _time_advice(inp),
        ]
    else:
        summary = f"没有找到 {what} 的日志。"
        missing = ["请核对 id 是否正确", _time_advice(inp)]
    return base.model_copy(
        update={
            "summary": summary,
            "root_cause": "日志缺失，无法确定失败原因（不做猜测）。",
            "stage": "unknown",
            "fault_side": "unknown",
            "evidence": [],
            "request_ids": [],
            "missing_info": missing,
            "confidence": 0.0,
        }
    )


def _failing_key_lines(cond: Condensed) -> list[Evidence]:
    return [
        evidence_of(r, "同一次执行中的其他错误/告警日志")
        for r in cond.key_lines
        if (r.level or "") in ("ERROR", "WARN") or "code!=0" in r.message
    ]


def _merge_evidence(first: list[Evidence], more: list[Evidence]) -> list[Evidence]:
    out: list[Evidence] = []
    seen: set[str] = set()
    for ev in [*first, *more]:
        if ev.text in seen:
            continue
        seen.add(ev.text)
        out.append(ev)
    return out[:MAX_EVIDENCE]


def _run_tail(cond: Condensed, n: int = 3) -> list[LogRecord]:
    """The diagnosed step's own last lines (lines naming the step or its GSE task)."""
    step = cond.step_instance_id
    own = [r for r in cond.records if step is None or str(step) in r.raw]
    return own[-n:]


def _first_fail_stage(cond: Condensed) -> Stage:
    for entry in cond.timeline:
        if entry.status == "fail" and entry.phase in STAGE_ZH:
            return entry.phase  # type: ignore[return-value]
    for entry in cond.timeline:
        if entry.status == "missing" and entry.phase in STAGE_ZH:
            return entry.phase  # type: ignore[return-value]
    return "unknown"


def _unfinished(cond: Condensed, inp: RuleInputs) -> bool:
    """The chain stops before the step's end with no error and no failed phase, every log line was
    read, and BK-JOB could not say whether the step ended (when it says "running", the stuck report
    speaks; when it says "ended", this is a failure whose lines are missing)."""
    if inp.hosts is not None and inp.hosts.step is not None:
        return False
    c = inp.collected
    return (
        not c.truncated
        and not c.budget_exhausted
        and any(t.status == "missing" for t in cond.timeline)
        and not any(t.status == "fail" for t in cond.timeline)
        and not any((r.level or "") in ("ERROR", "WARN") for r in cond.key_lines)
    )


def build_rule_report(inp: RuleInputs) -> DiagnosisReport:
    c, cond, match = inp.collected, inp.condensed, inp.match
    base = DiagnosisReport(
        step_instance_id=inp.step_instance_id if inp.step_instance_id is not None else c.step_instance_id,
        task_instance_id=(cond.task_instance_id if cond and cond.task_instance_id else c.task_instance_id),
        request_ids=list(cond.request_ids) if cond else [],
        execute_count=cond.execute_count if cond else None,
        timeline=list(cond.timeline) if cond else [],
        earlier_runs=list(cond.earlier_runs) if cond else [],
        queries=[q.describe() for q in c.queries],
        links=list(inp.links),
        notices=list(inp.notices),
        window=(Window(start=c.window[0].isoformat(), end=c.window[1].isoformat()) if c.window else None),
        span=cond.span if cond else None,
        source="rules",
    )
    if c.empty or cond is None or not cond.records:
        return _finish(_no_lines_report(inp, base), inp, wants_output=True)

    missing: list[str] = []
    if c.truncated:
        missing.append("部分查询结果超出 BkLog 分页上限，未全部取回；可缩小时间窗口后重试")
    if c.budget_exhausted:
        missing.append("查询次数达到上限，调用链可能不完整")
    for entry in cond.timeline:
        if entry.status == "missing" and entry.note:
            missing.append(f"{STAGE_ZH.get(entry.phase, entry.phase)}：{entry.note}")

    if match is not None:
        # Lessons (config/components.toml): an API answer that said ok but carried a failure is the
        # decisive evidence; a component that failed without its reason leaves the cause unsettled.
        lessons = read_lessons(cond.records, match.records)
        evidence = _merge_evidence([*lessons.evidence(), *match.evidence()], _failing_key_lines(cond))
        cause = match.cause + lessons.cause_notes()
        # the hints of a host_output entry say how to read the output by hand: moot once read
        hints = [] if "host_output" in match.facts and _output_read(inp) else list(match.missing_info)
        actions = match.actions
        confidence = lessons.confidence(match.confidence)
        if confidence >= CONFIDENT:
            # The lines settle the cause: what the hints suggest is a next step, not a gap.
            actions = actions.model_copy(update={"immediate": [*actions.immediate, *hints]})
            hints, missing = [], [m for m in missing if not m.startswith(tuple(STAGE_ZH.values()))]
        if inp.enrichment:
            cause = cause + "\n" + "\n".join(inp.enrichment)
        report = base.model_copy(
            update={
                "summary": match.summary,
                "stage": match.stage,
                "fault_side": match.fault_side,
                "root_cause": cause,
                "signature": match.id,
                "evidence": evidence,
                "actions": actions,
                "prevention": list(match.prevention),
                "missing_info": [*lessons.missing_info(), *hints, *missing],
                "confidence": confidence,
            }
        )
        return _finish(report, inp, wants_output="host_output" in match.facts)

    # No known signature: report what the timeline shows, with honest low confidence.
    stage = _first_fail_stage(cond)
    failing = [r for r in cond.key_lines if (r.level or "") in ("ERROR", "WARN")] or list(cond.key_lines)
    evidence = [evidence_of(r, "关键日志（未匹配已知故障特征）") for r in failing]
    if any(t.status == "missing" for t in cond.timeline):
        # The chain stops: the last lines before the gap are the evidence of where it stopped.
        tail = [evidence_of(r, "最后的日志（其后未见预期的后续日志）") for r in _run_tail(cond)]
        evidence = _merge_evidence(tail, []) + [e for e in evidence if e.text not in {t.text for t in tail}]
    lessons = read_lessons(cond.records, failing)
    evidence = _merge_evidence(lessons.evidence(), evidence)
    what = _what(inp)
    actions = stage_actions().get(stage, Actions())
    if _unfinished(cond, inp) and not lessons.evidence():
        # Nothing failed and the step's end never came: say where it stops, not that it failed.
        stage = stage_where_chain_stops(cond.timeline)
        last_own = _run_tail(cond, 1)
        summary, cause, gap = unfinished_chain(what, stage, last_own[-1] if last_own else None, inp.now)
        confidence, actions = 0.4, STUCK_ACTIONS
        missing.insert(0, gap)
    elif stage == "unknown":
        summary = f"{what} 的日志中没有找到明确的失败点。"
        cause = "日志没有给出失败原因；可能需要更完整的日志或主机侧信息。"
        confidence = 0.1
        missing.append("请确认该步骤确实失败，并提供失败主机的执行日志或更大的时间窗口")
    else:
        summary = f"{what} 在{STAGE_ZH[stage]}阶段失败，未匹配到已知的故障特征。"
        first = failing[0].message if failing else ""
        cause = (
            f"{STAGE_ZH[stage]}阶段出现异常"
            + (f"：{first}" if first else "")
            + "。具体原因需结合下方日志判断。"
        )
        confidence = 0.3
        missing.append("未匹配到已知故障特征：请结合相关日志与主机执行日志人工确认")
    cause += lessons.cause_notes()
    missing = [*lessons.missing_info(), *missing]
    confidence = lessons.confidence(confidence)
    if inp.enrichment:
        cause = cause + "\n" + "\n".join(inp.enrichment)
    report = base.model_copy(
        update={
            "summary": summary,
            "stage": stage,
            "fault_side": "unknown",
            "root_cause": cause,
            "signature": None,
            "evidence": evidence,
            "actions": actions,
            "prevention": ["为作业关键步骤配置失败告警，并保留 job_request_id 以便排查"],
            "missing_info": missing,
            "confidence": confidence,
        }
    )
    return _finish(report, inp, wants_output=stage in ("execution", "unknown"))


def _output_read(inp: RuleInputs) -> bool:
    return inp.hosts is not None and inp.hosts.output_read and bool(inp.hosts.primary_line)


def _finish(report: DiagnosisReport, inp: RuleInputs, *, wants_output: bool) -> DiagnosisReport:
    """What BK-JOB said about the step (scope, host groups, what the hosts printed) and what the
    lookups could not learn; a step that has not finished becomes a report of where it is stuck."""
    facts = inp.hosts
    cause, missing = report.root_cause, list(report.missing_info)
    update: dict[str, object] = {}
    scope = facts.scope if facts is not None and facts.scope is not None else None
    update["scope"] = str(scope) if scope is not None else inp.scope
    if facts is not None:
        update["host_groups"] = list(facts.groups)
        if line := hosts_line(facts.groups):
            cause += f"\n主机结果：{line}"
    if wants_output and facts is not None and facts.output_read and facts.primary_line:
        primary = facts.primary
        if primary is not None:
            cause += f"\n失败主机的输出说明了原因：{primary.meaning}"
            actions = report.actions
            update["actions"] = actions.model_copy(
                update={"immediate": [*primary.actions, *actions.immediate]}
            )
            if report.stage == "execution":
                update["fault_side"] = primary.fault_side
            update["confidence"] = max(report.confidence, CONFIDENT)
    elif facts is not None and facts.output_read and facts.primary is not None:
        # the cause is another one (an agent down, say), but other hosts failed on their own
        primary = facts.primary
        cause += f"\n另有失败主机的输出说明：{primary.meaning}"
        actions = report.actions
        update["actions"] = actions.model_copy(update={"immediate": [*actions.immediate, *primary.actions]})
    elif wants_output and facts is not None and facts.output_read and facts.failing:
        cause += "\n失败主机没有输出任何内容（脚本在打印之前就失败了，或输出被重定向）。"
    elif (
        wants_output
        and facts is not None
        and facts.step is not None
        and not facts.failing
        and not facts.running
    ):
        missing.append(
            "BK-JOB 中该步骤这次执行没有失败的主机结果（可能已重试成功，或日志中的执行次数与 BK-JOB 不一致）"
        )
    elif wants_output and inp.hosts_gap:
        missing.append(inp.hosts_gap)
    gaps = [*inp.gaps, *(facts.gaps if facts is not None else [])]
    for gap in gaps:
        if wants_output and gap.startswith("BK-JOB 暂时无法访问"):
            gap += "，报告仅依据引擎日志；失败主机的输出（脚本打印的错误行）可稍后发送「重新分析」取得"
        if gap not in missing:
            missing.append(gap)
    update["root_cause"], update["missing_info"] = cause, missing
    report = report.model_copy(update=update)
    if facts is not None and facts.running:
        report = stuck_report(report, facts, inp.now)
    return report
