"""Every scenario folder runs through the whole pipeline: real BkLog client → sandbox BkLog over HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from bot.devtools.evaluate import run_scenario
from bot.devtools.scenarios import load_scenarios

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
