"""What BK-JOB knows about the step: its business, state and times, its hosts grouped by result,
what the failing hosts printed, and the agent state of hosts whose status points at the agent.

Usage::

    facts = await StepFacts.gather(bkjob, gse, settings.bkjob, scope=..., task=T, step=S, ...)
    facts.scope, facts.groups, facts.primary, facts.gaps

Every BK-JOB or GSE failure becomes a `gap` (what the report could not learn, and how to get it);
nothing here raises for an unreachable or refusing service.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bot.clients.bkjob import BkJobClient
from bot.clients.bkjob_models import (
    FileHostLog,
    HostResult,
    IpLogs,
    JobInstanceStatus,
    ScriptHostLog,
    StepDetail,
    StepInstance,
    StepInstanceStatus,
)
from bot.clients.gateway import ApiError, GatewayError
from bot.clients.gse import GseClient
from bot.core.codes import codes, normalise_exit_code
from bot.core.models import MAX_GROUP_HOSTS, HostGroup
from bot.core.scope import Scope
from bot.core.settings import BkJobSettings
from bot.diagnosis.agents import AgentTarget, agent_facts
from bot.diagnosis.output import Decisive, OutputCatalog, OutputEntry, tail

log = structlog.get_logger(__name__)

TASK_INSTANCE_NOT_EXIST = 1244006
MAX_LOG_HOSTS_PER_CALL = 500  # batch_get_job_instance_ip_log
MAX_OUTPUT_LINES = 3  # distinct decisive lines quoted per group
RUNNING_STEP = {1, 2, 7}  # RunStatus: 未执行, 正在执行, 等待用户
SCRIPT_STEP, FILE_STEP = 1, 2
FILE_FAILED = 5  # file_log status: 5 = failed

Mask = Callable[[str], str]


def host_label(h: HostResult) -> str:
    ip = h.ip or h.ipv6
    if not ip:
        return f"host:{h.bk_host_id}"
    return ip if not h.bk_cloud_id else f"{h.bk_cloud_id}:{ip}"


@dataclass(slots=True)
class Output:
    """The decisive output of one group: the lines quoted and the entry that explains them."""

    lines: list[str] = field(default_factory=list)
    entry: OutputEntry | None = None


@dataclass(slots=True)
class StepFacts:
    scope: Scope | None = None
    job: JobInstanceStatus | None = None
    step: StepInstance | None = None
    detail: StepDetail | None = None  # read only for a step that has not finished
    groups: list[HostGroup] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # what could not be learnt, and how to get it
    primary: OutputEntry | None = None  # what the largest failing group's output means
    primary_line: str = ""
    output_read: bool = False  # host output was asked for and answered

    @property
    def running(self) -> bool:
        return self.step is not None and self.step.status in RUNNING_STEP

    @property
    def failing(self) -> list[HostGroup]:
        table = codes().host_status
        return [g for g in self.groups if g.status not in table.ok | table.pending]

    @property
    def pending(self) -> list[HostGroup]:
        return [g for g in self.groups if g.status in codes().host_status.pending]


# --------------------------------------------------------------------------- scope


async def find_job(
    bkjob: BkJobClient, task: int, candidates: Sequence[Scope]
) -> tuple[Scope | None, JobInstanceStatus | None, str]:
    """The first scope that knows job instance `task`, its status, or ("", reason) for the report.

    Each try is one `get_job_instance_status` call; a 1244006 (not in that business) moves on to
    the next scope, anything else stops the search (the service is down or refuses us).
    """
    refused: list[str] = []
    for scope in candidates:
        try:
            status = await bkjob.get_job_instance_status(
                scope.id, task, bk_scope_type=scope.type, return_ip_result=False
            )
        except ApiError as exc:
            if exc.code == TASK_INSTANCE_NOT_EXIST:
                refused.append(str(scope))
                continue
            return None, None, f"查询 BK-JOB 作业实例失败：{exc.zh}"
        except GatewayError as exc:
            return None, None, f"BK-JOB 暂时无法访问（{exc.zh}）"
        return scope, status, ""
    if refused:
        return None, None, f"作业实例 {task} 不在业务 {'、'.join(refused)} 中"
    return None, None, ""


# --------------------------------------------------------------------------- hosts


def _group_key(h: HostResult) -> tuple[int, int | None]:
    status = h.status if h.status is not None else 500
    table = codes().host_status
    code = normalise_exit_code(h.exit_code)
    failed = status not in table.ok | table.pending
    return status, (code if failed and code not in (None, 0) else None)


GroupKey = tuple[int, int | None]


def _regroup(status: StepInstanceStatus) -> tuple[dict[GroupKey, list[HostResult]], dict[GroupKey, int]]:
    """BK-JOB groups by status and tag; the report groups by status and exit code.

    Returns the hosts per group and each group's size (a group BK-JOB answered with fewer hosts
    than its `host_size` counts the rest under its status)."""
    hosts: dict[GroupKey, list[HostResult]] = defaultdict(list)
    sizes: dict[GroupKey, int] = defaultdict(int)
    for g in status.groups:
        for h in g.hosts:
            key = _group_key(h)
            hosts[key].append(h)
            sizes[key] += 1
        rest = g.host_size - len(g.hosts)
        if rest > 0:
            key = (g.result_type if g.result_type is not None else 500, None)
            hosts.setdefault(key, [])
            sizes[key] += rest
    return dict(hosts), dict(sizes)


def _order(keys: Sequence[GroupKey], sizes: dict[GroupKey, int]) -> list[GroupKey]:
    table = codes().host_status

    def rank(key: GroupKey) -> tuple[int, int, int]:
        st = key[0]
        tier = 2 if st in table.ok else 1 if st in table.pending else 0
        return tier, -sizes[key], st

    return sorted(keys, key=rank)


def _texts(logs: IpLogs) -> dict[tuple[int | None, str], str]:
    """Output per host, keyed by (host id, label); file steps: the failed transfers' log lines."""
    out: dict[tuple[int | None, str], str] = {}
    for s in logs.script_logs:
        label = host_label(
            HostResult(bk_host_id=s.bk_host_id, ip=s.ip, ipv6=s.ipv6, bk_cloud_id=s.bk_cloud_id)
        )
        out[(s.bk_host_id, label)] = s.log_content
    for f in logs.file_logs:
        label = host_label(HostResult(bk_host_id=f.bk_host_id, ip=f.ip, bk_cloud_id=f.bk_cloud_id))
        failed = [e.log_content for e in f.file_logs if e.status == FILE_FAILED] or [
            e.log_content for e in f.file_logs
        ]
        out[(f.bk_host_id, label)] = "\n".join(failed)
    return out


def _text_of(texts: dict[tuple[int | None, str], str], h: HostResult) -> str | None:
    label = host_label(h)
    for (host_id, lbl), text in texts.items():
        if (h.bk_host_id is not None and host_id == h.bk_host_id) or lbl == label:
            return text
    return None


@dataclass
class _Reader:
    bkjob: BkJobClient
    gse: GseClient | None
    cfg: BkJobSettings
    catalog: OutputCatalog
    mask: Mask

    async def logs(self, scope: Scope, task: int, step: int, hosts: list[HostResult]) -> IpLogs | str:
        script: list[ScriptHostLog] = []
        files: list[FileHostLog] = []
        log_type: int | None = None
        ids = [h.bk_host_id for h in hosts if h.bk_host_id is not None]
        ips = [(h.bk_cloud_id or 0, h.ip) for h in hosts if h.bk_host_id is None and h.ip]
        # the client asks by id and by ip in separate calls (BK-JOB ignores ip_list beside ids)
        for i in range(0, max(len(ids), len(ips)), MAX_LOG_HOSTS_PER_CALL):
            try:
                part = await self.bkjob.batch_get_job_instance_ip_log(
                    scope.id,
                    task,
                    step,
                    host_ids=ids[i : i + MAX_LOG_HOSTS_PER_CALL],
                    ips=ips[i : i + MAX_LOG_HOSTS_PER_CALL],
                    bk_scope_type=scope.type,
                )
            except GatewayError as exc:
                return f"读取主机执行输出失败：{exc.zh}"
            log_type = part.log_type
            script.extend(part.script_logs)
            files.extend(part.file_logs)
        return IpLogs(log_type=log_type, script_logs=script, file_logs=files)

    def output(self, hosts: list[HostResult], texts: dict[tuple[int | None, str], str]) -> Output:
        out = Output()
        for h in hosts:
            text = _text_of(texts, h)
            if not text:
                continue
            n = self.cfg.host_log_tail_lines
            # mask only what is read: outputs can be megabytes, the tail is what matters
            shown = self.mask("\n".join(tail(text[-n * 2000 :], n)))
            found: Decisive | None = self.catalog.decisive(shown, tail_lines=n)
            if found is None:
                continue
            if found.line not in out.lines and len(out.lines) < MAX_OUTPUT_LINES:
                out.lines.append(found.line)
            if out.entry is None and found.entry is not None:
                out.entry = found.entry
        return out

    def why(self, status: int, exit_code: int | None, out: Output) -> str:
        if out.entry is not None:
            return out.entry.meaning
        by_exit = self.catalog.by_exit_code(exit_code)
        if by_exit is not None:
            return by_exit.meaning
        base = self.catalog.status_why.get(status) or codes().host_status.zh.get(status, f"状态 {status}")
        if exit_code is not None:
            base += f"（exit code {exit_code}）"
        return base


async def gather(
    bkjob: BkJobClient,
    gse: GseClient | None,
    cfg: BkJobSettings,
    catalog: OutputCatalog,
    *,
    scope: Scope | None,
    candidates: Sequence[Scope],
    task: int | None,
    step: int | None,
    execute_count: int | None,
    mask: Mask,
    job: JobInstanceStatus | None = None,
) -> StepFacts:
    facts = StepFacts(scope=scope, job=job)
    if task is None or step is None:
        return facts
    if facts.job is None:
        tries = [scope] if scope is not None else list(candidates)
        found, status, why = await find_job(bkjob, task, tries)
        if found is None:
            if why:
                facts.gaps.append(why)
            return facts
        facts.scope, facts.job = found, status
    assert facts.scope is not None and facts.job is not None
    facts.step = facts.job.step(step)
    if facts.step is None:
        facts.gaps.append(f"BK-JOB 作业实例 {task} 中没有步骤 {step}")
        return facts
    reader = _Reader(bkjob, gse, cfg, catalog, mask)
    try:
        hosts = await bkjob.get_step_instance_status(
            facts.scope.id, task, step, bk_scope_type=facts.scope.type, execute_count=execute_count
        )
    except GatewayError as exc:
        facts.gaps.append(f"查询 BK-JOB 步骤主机结果失败：{exc.zh}")
        return facts
    if facts.running:
        try:
            facts.detail = await bkjob.get_step_instance_detail(
                facts.scope.id, task, step, bk_scope_type=facts.scope.type
            )
        except GatewayError as exc:
            log.info("step_detail_failed", error=exc.zh)
    await _fill_groups(facts, reader, hosts, task, step)
    return facts


async def _fill_groups(
    facts: StepFacts, reader: _Reader, status: StepInstanceStatus, task: int, step: int
) -> None:
    assert facts.scope is not None
    grouped, sizes = _regroup(status)
    keys = _order(list(grouped), sizes)
    table = codes().host_status
    failing = [k for k in keys if k[0] not in table.ok | table.pending]
    per_group = reader.cfg.host_logs
    sample = {k: [h for h in grouped[k] if h.bk_host_id is not None or h.ip][:per_group] for k in failing}
    texts: dict[tuple[int | None, str], str] = {}
    wanted = [h for hosts in sample.values() for h in hosts]
    if wanted:
        got = await reader.logs(facts.scope, task, step, wanted)
        if isinstance(got, str):
            facts.gaps.append(got)
        else:
            facts.output_read = True
            texts = _texts(got)
    agent_keys = [k for k in failing if k[0] in reader.catalog.agent_statuses]
    targets = [
        AgentTarget(host_label(h), h.bk_agent_id, (h.bk_cloud_id or 0, h.ip) if h.ip else None)
        for k in agent_keys
        for h in grouped[k][:MAX_GROUP_HOSTS]
        if h.ip or h.bk_agent_id
    ]
    agents = await agent_facts(reader.gse, targets) if targets else None
    if agents is not None and agents.gap:
        facts.gaps.append(agents.gap)
    for key in keys:
        st, exit_code = key
        hosts = grouped[key]
        labels = [host_label(h) for h in hosts[:MAX_GROUP_HOSTS] if h.ip or h.ipv6 or h.bk_host_id]
        out = reader.output(sample.get(key, []), texts) if key in sample else Output()
        why = reader.why(st, exit_code, out) if key in sample else ""
        states = agents.describe(labels) if agents is not None and key in agent_keys else []
        facts.groups.append(
            HostGroup(
                status=st,
                status_zh=table.zh.get(st, f"状态 {st}"),
                exit_code=exit_code,
                count=sizes[key],
                hosts=labels,
                output=out.lines,
                why=why,
                agents=states,
            )
        )
        if facts.primary is None and out.entry is not None:
            facts.primary, facts.primary_line = out.entry, out.lines[0]
        if not facts.primary_line and out.lines:
            facts.primary_line = out.lines[0]


def hosts_line(groups: Sequence[HostGroup]) -> str:
    """'2 台 exit_code=1（10.0.0.1、10.0.0.2）；1 台 Agent 异常（10.0.0.3）' — the failing groups in one
    line (what they printed is quoted in the report's host section, never inside prose)."""
    table = codes().host_status
    parts = []
    for g in groups:
        if g.status in table.ok | table.pending:
            continue
        what = f"exit_code={g.exit_code}" if g.exit_code is not None else g.status_zh
        who = "、".join(g.hosts[:3]) + ("等" if g.count > 3 else "")
        gse = f"，GSE 当前状态：{'；'.join(g.agents)}" if g.agents else ""
        parts.append(f"{g.count} 台 {what}" + (f"（{who}）" if who else "") + gse)
    return "；".join(parts)


def waited(facts: StepFacts, now: datetime) -> tuple[float | None, int | None]:
    """How long the unfinished step has run, and its timeout, in seconds (None when unknown)."""
    start = facts.step.start_time if facts.step else None
    ran = (now - start).total_seconds() if start is not None else None
    timeout = facts.detail.timeout_s if facts.detail else None
    return ran, timeout
