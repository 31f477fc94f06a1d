"""Core types shared by every channel, handler and worker (DESIGN.md "Core types").

Defined once here; channels convert their wire formats into `IncomingMessage` and send a rendered
`Reply`; the worker consumes `AnalysisJob`s and produces `DiagnosisReport`s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal[
    "parameter_check",
    "initialization",
    "dispatch",
    "execution",
    "result_polling",
    "callback",
    "unknown",
]
# Ordered phases of one step run (the timeline walks them in this order).
PHASES: tuple[Stage, ...] = (
    "parameter_check",
    "initialization",
    "dispatch",
    "execution",
    "result_polling",
    "callback",
)
STAGE_ZH: dict[str, str] = {
    "parameter_check": "参数校验",
    "initialization": "初始化",
    "dispatch": "下发",
    "execution": "执行",
    "result_polling": "轮询状态",
    "callback": "回调",
    "unknown": "未知",
}
FaultSide = Literal["user", "environment", "third_party", "system", "unknown"]
FAULT_SIDE_ZH: dict[str, str] = {
    "user": "用户问题（调用方输入或脚本）",
    "environment": "环境问题（目标主机/Agent）",
    "third_party": "第三方系统问题（GSE/CMDB/IAM/文件源）",
    "system": "作业平台自身问题",
    "unknown": "未能确定",
}
PhaseStatus = Literal["ok", "warn", "fail", "skipped", "missing"]
PHASE_STATUS_ICON: dict[str, str] = {"ok": "✅", "warn": "⚠️", "fail": "❌", "skipped": "⏭️", "missing": "❔"}


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- messages


class IncomingMessage(BaseModel):
    """One user message, whatever channel it came from. Handlers see only this."""

    model_config = ConfigDict(frozen=True)

    channel: str  # "worktool" | "wecom_aibot" | "console" | ...
    chat_id: str  # group name/id or the private peer; what the channel needs to answer
    chat_name: str = ""
    is_group: bool
    sender_id: str
    sender_name: str = ""
    text: str  # mention of the bot removed, whitespace normalised
    mentioned: bool = False  # the bot was @-mentioned (always True in private chats)
    received_at: datetime = Field(default_factory=utcnow)
    raw_id: str | None = None  # the channel's own message id when it has one (WeCom msgid)
    # channel-specific routing data the channel needs to answer (e.g. WeCom response_url);
    # handlers must not interpret it.
    reply_context: dict[str, str] = Field(default_factory=dict)
    # "unsupported": an image, file or voice the channel cannot read (text is empty); the
    # conversation answers it like any message, so access rules and rate limits apply.
    content: Literal["text", "unsupported"] = "text"
    truncated: bool = False  # the channel cut `text` to `chat.max_text_chars`
    # Who really sent it, for rate limits and budgets, when `sender_id` is not that (the console's
    # self-chosen display name: there it is the browser session). Empty: `sender_id`.
    sender_key: str = ""

    @property
    def limit_key(self) -> str:
        return self.sender_key or self.sender_id


class ChatTarget(BaseModel):
    """Where a reply goes."""

    model_config = ConfigDict(frozen=True)

    channel: str
    chat_id: str
    chat_name: str = ""
    is_group: bool = True
    reply_context: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, msg: IncomingMessage) -> ChatTarget:
        return cls(
            channel=msg.channel,
            chat_id=msg.chat_id,
            chat_name=msg.chat_name,
            is_group=msg.is_group,
            reply_context=dict(msg.reply_context),
        )


ReplyKind = Literal["report", "progress", "question", "answer", "notice", "error", "digest"]


class Reply(BaseModel):
    """A channel-neutral answer. Channels render `markdown` (or `text`) into their own parts."""

    target: ChatTarget
    kind: ReplyKind = "answer"
    mention: list[str] = Field(default_factory=list)  # sender names/ids to @ (groups)
    title: str = ""
    markdown: str = ""
    text: str = ""  # plain-text fallback (WorkTool)
    parts: list[str] = Field(default_factory=list)  # filled by the channel renderer
    # idempotency: same key + part index is sent at most once
    key: str = ""


class Requester(BaseModel):
    """Someone who asked for an analysis and must get the report."""

    model_config = ConfigDict(frozen=True)

    target: ChatTarget
    sender_id: str
    sender_name: str = ""
    sender_key: str = ""  # `IncomingMessage.sender_key`: whose budget the analysis spends


class AnalysisJob(BaseModel):
    """A durable unit of work on the analysis queue (single-flight per `request_key`)."""

    # "step:<id>" or "req:<hex>", then ":ec<n>" for an execute count and ":w<since>-<until>"
    # (YYYYmmddHHMM, BkLog time zone) for a window the asker named (handlers/service.py)
    request_key: str
    step_instance_id: int | None = None
    request_id: str | None = None
    task_instance_id: int | None = None
    execute_count: int | None = None
    bk_scope_type: str | None = None
    bk_scope_id: int | None = None
    requesters: list[Requester] = Field(default_factory=list)
    attempts: int = 0
    force: bool = False  # bypass the fresh-report cache (重新分析)
    # The BkLog window the asker named ("昨天下午3点"); None: the usual window. Absent in older jobs.
    since: datetime | None = None
    until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------- report


class Evidence(BaseModel):
    time: str | None = None
    level: str | None = None
    logger: str | None = None
    trace_id: str | None = None
    text: str  # the line (or its message) exactly as logged; never shortened
    why: str = ""


class TimelineEvent(BaseModel):
    time: str | None = None
    text: str


MAX_PHASE_EVENTS = 5


class TimelineEntry(BaseModel):
    phase: str
    status: PhaseStatus
    # when the phase ended: its last line. Phases overlap (hosts' results are analysed while the
    # engine polls), so start times would run backwards from execution to result polling.
    time: str | None = None
    note: str = ""
    # what happened in the phase, in time order (at most MAX_PHASE_EVENTS), so the timeline reads
    # like a log of the run
    events: list[TimelineEvent] = Field(default_factory=list)


MAX_GROUP_HOSTS = 10


class HostGroup(BaseModel):
    """Hosts of the step that ended alike (BK-JOB's result group: status and exit code / tag)."""

    status: int
    status_zh: str = ""
    exit_code: int | None = None
    count: int = 0
    hosts: list[str] = Field(default_factory=list)  # "ip" or "cloud:ip", at most MAX_GROUP_HOSTS
    output: list[str] = Field(default_factory=list)  # the decisive output lines, as printed (masked)
    why: str = ""  # what the output (or the status) means
    # hosts whose status points at the agent: "10.0.0.3 异常（有损状态，版本 2.1.5）" (GSE, now)
    agents: list[str] = Field(default_factory=list)


class Window(BaseModel):
    start: str  # ISO 8601 with offset
    end: str


class RunSpan(BaseModel):
    """The diagnosed run from its first to its last log line: times as logged (engine local time)."""

    start: str
    end: str
    seconds: float = Field(default=0.0, ge=0.0)


class Actions(BaseModel):
    immediate: list[str] = Field(default_factory=list)  # 立即措施
    root_fix: list[str] = Field(default_factory=list)  # 根本解决
    improvements: list[str] = Field(default_factory=list)  # 优化建议


class DiagnosisReport(BaseModel):
    """What `job-doctor analyze --json` prints (DESIGN.md contract; extra fields are additive)."""

    step_instance_id: int | None = None
    task_instance_id: int | None = None
    request_ids: list[str] = Field(default_factory=list)
    summary: str = ""
    stage: Stage = "unknown"
    fault_side: FaultSide = "unknown"
    root_cause: str = ""
    signature: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    actions: Actions = Field(default_factory=Actions)
    prevention: list[str] = Field(default_factory=list)
    missing_info: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    source: Literal["llm", "rules"] = "rules"
    links: list[str] = Field(default_factory=list)
    # --- additive extensions (not in the original contract) ---
    execute_count: int | None = None
    queries: list[str] = Field(default_factory=list)  # the BkLog queries that ran, in order
    notices: list[str] = Field(default_factory=list)  # e.g. "未配置模型，以下为规则诊断"
    earlier_runs: list[str] = Field(default_factory=list)  # summaries of earlier executeCounts
    scope: str | None = None  # "biz:2" | "biz_set:ID": the business the step belongs to, when known
    window: Window | None = None  # the BkLog window searched
    span: RunSpan | None = None  # first → last log line of the run diagnosed
    running: bool = False  # BK-JOB says the step has not finished: `stage` is where it is stuck
    host_groups: list[HostGroup] = Field(default_factory=list)
