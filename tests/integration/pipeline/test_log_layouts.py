"""Installs whose BkLog differs from the packaged defaults, through the whole pipeline over real HTTP:
an operator's query templates file, and documents that hold the line in another field."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app.services import AppOptions, build_services
from bot.core.models import DiagnosisReport
from bot.devtools.evaluate import (
    SANDBOX_APP,
    SANDBOX_INDEX_SET,
    asked_at,
    check,
    request_of,
    sandbox_settings,
)
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bklog import ENGINE_LOG_PATH, create_bklog_app, docs_from_records, recorded_queries
from bot.devtools.sandbox.lucene import TEXT_FIELDS
from bot.devtools.scenarios import Scenario, load_scenarios

SCENARIOS = {s.name: s for s in load_scenarios()}
# log-only scenarios (no bkjob.json) of different stages; the first starts from a traceId
LAYOUT_SCENARIOS = [
    "account_alias_missing",  # parameter_check
    "file_prepare_local_file_missing",  # initialization
    "gse_dispatch_code_nonzero_310",  # dispatch
    "os_user_missing_122",  # execution
]


async def diagnose(
    sc: Scenario,
    docs: list[dict[str, Any]],
    env: Mapping[str, str] | None = None,
    text_fields: Iterable[str] = TEXT_FIELDS,
) -> tuple[DiagnosisReport, list[str]]:
    """The report for `sc` from a sandbox BkLog holding `docs`, with the bot configured by the
    JOB_DOCTOR_* variables `env` (read by Settings as in production); also the query strings the
    sandbox received."""
    code, secret, _user = SANDBOX_APP
    app = create_bklog_app(
        docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET, text_fields=text_fields
    )
    runner, url = await start_site(app)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in (env or {}).items():
                mp.setenv(name, value)
            settings = sandbox_settings(url)
        now, req = asked_at(sc), request_of(sc)
        async with (
            aiohttp.ClientSession() as session,
            build_services(settings, http=session, options=AppOptions(mode="cli", clock=lambda: now)) as svc,
        ):
            report = await svc.analyzer.analyze(req)
        return report, recorded_queries(app)
    finally:
        await runner.cleanup()


async def test_queries_file_replaces_the_step_query_sent_to_bklog(tmp_path: Path) -> None:
    """JOB_DOCTOR_BKLOG__QUERIES_FILE is what BkLog receives: the overridden step query, not the
    packaged one; the templates it does not name stay, and the diagnosis is unchanged."""
    sc = SCENARIOS["gse_dispatch_code_nonzero_310"]
    step = sc.expected.step_instance_id
    mine = tmp_path / "queries.toml"
    mine.write_text(
        f"[queries]\nstep_id = '{{log_field}}: {{step_instance_id}} AND path: \"{ENGINE_LOG_PATH}\"'\n",
        encoding="utf-8",
    )
    report, sent = await diagnose(
        sc, docs_from_records(sc.logs_text), {"JOB_DOCTOR_BKLOG__QUERIES_FILE": str(mine)}
    )
    assert f'log: "{step}" AND path: "{ENGINE_LOG_PATH}"' in sent
    assert f'log: "{step}"' not in sent  # the packaged step_id never ran
    assert f"log: {step}_*" in sent  # step_key: not in the file, still the packaged one
    result = check(sc, report)
    assert result.ok, "\n".join(result.problems)
    assert sc.expected.signature and report.signature == sc.expected.signature


@pytest.mark.parametrize("name", LAYOUT_SCENARIOS)
async def test_line_in_another_field_with_a_trace_field_diagnoses_the_same(name: str) -> None:
    """A collector that puts the line in `message` and the traceId in `traceId`
    (JOB_DOCTOR_BKLOG__LOG_FIELD / __TRACE_FIELD): the same diagnosis as the default layout, and
    every query searches those fields (no `log` field exists to fall back on)."""
    sc = SCENARIOS[name]
    default, _ = await diagnose(sc, docs_from_records(sc.logs_text))
    docs = docs_from_records(sc.logs_text, line_field="message", trace_field="traceId")
    assert docs and all("log" not in d for d in docs)
    env = {"JOB_DOCTOR_BKLOG__LOG_FIELD": "message", "JOB_DOCTOR_BKLOG__TRACE_FIELD": "traceId"}
    report, sent = await diagnose(sc, docs, env, text_fields={"message"})
    result = check(sc, report)
    assert result.ok, "\n".join(result.problems)
    assert report.stage == sc.expected.stage != "unknown"
    assert (report.stage, report.fault_side, report.signature) == (
        default.stage,
        default.fault_side,
        default.signature,
    )
    assert sorted(report.request_ids) == sorted(default.request_ids)
    assert sent and all(q.startswith(("message:", "traceId:")) for q in sent), sent
    if sc.expected.request_ids:
        assert any(q.startswith("traceId:") for q in sent)
