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
