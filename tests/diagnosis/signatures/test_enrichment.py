"""The live GSE agent-state lookup is asked for by the matched entry's `facts`, not guessed from its id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from bot.clients.bklog import QueryTemplates
from bot.clients.gse import AgentState, GseClient
from bot.core.settings import Settings
from bot.diagnosis.pipeline import Analyzer
from bot.diagnosis.signatures import load_catalog
from tests.diagnosis.signatures.chains import AGENT, rec, result_line


class FakeGse:
    api_version = "v2"

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def agent_states(
        self, agent_ids: Iterable[str], *, hosts: Sequence[tuple[int, str]] = ()
    ) -> dict[str, AgentState]:
        ids = list(agent_ids)
        self.asked.append(ids)
        return {a: AgentState(key=a, found=True, alive=True, status_code=2, status_zh="运行中") for a in ids}


def _analyzer(gse: FakeGse) -> Analyzer:
    return Analyzer(
        Settings(),
        bklog=None,
        templates=QueryTemplates(templates={}),
        catalog=load_catalog(),
        gse=cast(GseClient, cast(Any, gse)),
    )


async def test_entry_declaring_the_fact_gets_the_agent_state() -> None:
    gse = FakeGse()
    match = load_catalog().best([rec(result_line(117), "INFO")])
    assert match is not None and match.id == "agent_abnormal" and "gse_agent_state" in match.facts
    notes, gaps = await _analyzer(gse)._agents_from_logs(match, None)
    assert gse.asked == [[AGENT]]
    assert notes == [f"GSE 当前 Agent {AGENT} 状态：正常（运行中）。"] and gaps == []


async def test_entry_without_the_fact_gets_no_lookup() -> None:
    gse = FakeGse()
    match = load_catalog().best([rec(result_line(0, exit_code=2), "INFO")])
    assert (
        match is not None and "gse_agent_state" not in match.facts and match.values.get("agent_id") == AGENT
    )
    assert await _analyzer(gse)._agents_from_logs(match, None) == ([], [])
    assert gse.asked == []
