"""The GSE agent state of failing hosts, every state named the way operators say it.

正常 (GSE 2.0 `status_code` 2 / legacy alive), 异常 (GSE knows the agent, it is not running:
the GSE state and version say how), 未安装 (no agent registered for the host), 无数据 (GSE has
no data for the agent id) and 未知 (not asked: GSE not configured, or the lookup failed — then
the report's missing_info says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.clients.gateway import GatewayError
from bot.clients.gse import AgentState, GseClient

MAX_AGENTS = 200  # one lookup per analysis; more hosts than this are summarised by their groups

NORMAL, ABNORMAL, NOT_INSTALLED, NO_DATA, UNKNOWN = "正常", "异常", "未安装", "无数据", "未知"


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """A host to ask about: its label in the report and the key GSE knows it by."""

    label: str  # "10.0.0.1" / "1:10.0.0.1"
    agent_id: str | None  # GSE 2.0 agent id when the host has one
    cloud_ip: tuple[int, str] | None = None  # legacy key when it does not

    @property
    def key(self) -> str | None:
        if self.agent_id:
            return self.agent_id
        return self.legacy_key

    @property
    def legacy_key(self) -> str | None:
        return f"{self.cloud_ip[0]}:{self.cloud_ip[1]}" if self.cloud_ip else None

    def key_for(self, api_version: str) -> str | None:
        # the legacy API answers only by host
        return (self.legacy_key or self.key) if api_version == "v1" else self.key


@dataclass(slots=True)
class AgentFacts:
    states: dict[str, str] = field(default_factory=dict)  # label → "异常（有损状态，版本 2.1.5）"
    gap: str = ""  # why some states are 未知, for missing_info

    def describe(self, labels: Sequence[str]) -> list[str]:
        return [f"{label} {self.states[label]}" for label in labels if label in self.states]


def _named(state: AgentState | None, target: AgentTarget) -> str:
    if state is None:
        return UNKNOWN
    version = f"，版本 {state.version}" if state.version else ""
    if state.found and state.alive:
        return f"{NORMAL}（{state.status_zh or '运行中'}{version}）"
    if state.found:
        return f"{ABNORMAL}（{state.status_zh or '离线'}{version}）"
    if not target.agent_id:
        return f"{NOT_INSTALLED}（主机没有 Agent ID，GSE 无记录）"
    return f"{NO_DATA}（GSE 查不到该 Agent ID 的状态，可能未安装、已卸载或 ID 不匹配）"


async def agent_facts(gse: GseClient | None, targets: Sequence[AgentTarget]) -> AgentFacts:
    """Ask GSE once for every target; a failure becomes `gap`, never an exception."""
    facts = AgentFacts()
    asked = [t for t in targets if t.key][:MAX_AGENTS]
    for t in targets:
        if not t.key:
            facts.states[t.label] = f"{NOT_INSTALLED}（主机没有 Agent ID）"
    if not asked:
        return facts
    if gse is None:  # not asked: the report says nothing it does not know
        return facts
    keys = {t.label: t.key_for(gse.api_version) or "" for t in asked}
    try:
        states = await gse.agent_states(list(dict.fromkeys(keys.values())))
    except GatewayError as exc:
        for t in asked:
            facts.states[t.label] = UNKNOWN
        facts.gap = f"查询 GSE Agent 状态失败（{exc.zh}），失败主机 Agent 的当前状态未知；可在节点管理中查看"
        return facts
    for t in asked:
        facts.states[t.label] = _named(states.get(keys[t.label]), t)
    return facts
