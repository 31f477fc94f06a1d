"""Run scenario folders through the whole pipeline (real BkLog client → sandbox BkLog over HTTP)
and compare each report with the scenario's expected.json.

Each scenario gets its own sandbox BkLog holding only its logs; the analysis clock is set just
after the scenario's last line, so the default look-back window is what finds the logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from bot.app.services import AppOptions, build_services
from bot.core.models import DiagnosisReport
from bot.core.settings import Settings
from bot.delivery.render import render_text
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bkjob import create_bkjob_app
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.sandbox.gse import create_gse_app
from bot.devtools.scenarios import Scenario, ScenarioExpectation, load_scenarios, time_span
from bot.devtools.world import agents_of, job_from
from bot.diagnosis.pipeline import AnalysisRequest

SANDBOX_APP = ("job-doctor-sandbox", "sandbox-secret", "sandbox")
SANDBOX_INDEX_SET = 1


@dataclass
class ScenarioResult:
    name: str
    report: DiagnosisReport | None
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(self.checks.values())


def last_timestamp(text: str, tz: str = "Asia/Shanghai") -> datetime:
    span = time_span(text, tz)
    return span[1] if span else datetime.now(ZoneInfo(tz))


def sandbox_settings(base_url: str, **overrides: object) -> Settings:
    code, secret, user = SANDBOX_APP
    data: dict[str, object] = {
        "bklog": {
            "base_url": base_url,
            "index_set_id": SANDBOX_INDEX_SET,
            "app_code": code,
            "app_secret": secret,
            "username": user,
            "retries": 1,
        },
    }
    data.update(overrides)
    return Settings(**data)  # type: ignore[arg-type]


def _host_problems(exp: ScenarioExpectation, report: DiagnosisReport) -> list[str]:
    problems = []
    if exp.scope is not None and report.scope != exp.scope:
        problems.append(f"scope {report.scope} != {exp.scope}")
    got = report.host_groups
    if exp.host_groups and len(got) != len(exp.host_groups):
        problems.append(f"host groups {[(g.status, g.exit_code, g.count) for g in got]}")
    for want, g in zip(exp.host_groups, got, strict=False):
        if (g.status, g.exit_code, g.count) != (want.status, want.exit_code, want.count):
            problems.append(
                f"host group {(g.status, g.exit_code, g.count)} != {(want.status, want.exit_code, want.count)}"
            )
        if want.output_contains and not any(want.output_contains in line for line in g.output):
            problems.append(f"host group output {g.output} lacks {want.output_contains!r}")
        said = "\n".join([g.why, *g.agents])
        if want.why_contains and want.why_contains not in said:
            problems.append(f"host group why {said!r} lacks {want.why_contains!r}")
    return problems


def check(sc: Scenario, report: DiagnosisReport) -> ScenarioResult:
    exp = sc.expected
    res = ScenarioResult(sc.name, report)
    evidence = "\n".join(e.text for e in report.evidence)
    missing_keys = [k for k in exp.key_lines if k not in evidence]
    host_problems = _host_problems(exp, report)
    dumped = report.model_dump_json()
    leaked = [s for s in exp.absent if s in dumped or s in render_text(report)]
    details = _detail_problems(exp, report)
    res.checks = {
        "stage": report.stage == exp.stage,
        "fault_side": report.fault_side == exp.fault_side,
        "key_lines": not missing_keys,
        "request_ids": set(report.request_ids) == set(exp.request_ids),
        "missing_info": bool(report.missing_info) == exp.expect_missing_info,
        "hosts": not host_problems,
        "secrets": not leaked,
        "details": not details,
    }
    res.problems.extend(host_problems)
    if leaked:
        res.problems.append(f"planted secrets reached the report: {len(leaked)}")
    if not res.checks["stage"]:
        res.problems.append(f"stage {report.stage} != {exp.stage}")
    if not res.checks["fault_side"]:
        res.problems.append(f"fault_side {report.fault_side} != {exp.fault_side}")
    if missing_keys:
        res.problems.append(f"key lines missing from evidence: {missing_keys}")
    if not res.checks["request_ids"]:
        extra = sorted(set(report.request_ids) - set(exp.request_ids))
        lost = sorted(set(exp.request_ids) - set(report.request_ids))
        res.problems.append(f"request_ids extra={extra} missing={lost}")
    if not res.checks["missing_info"]:
        res.problems.append(f"missing_info expected={exp.expect_missing_info} got={report.missing_info}")
    res.problems.extend(details)
    return res


async def bkjob_world(sc: Scenario, runners: list[web.AppRunner]) -> dict[str, object]:
    """Sandbox BK-JOB and GSE answering the scenario's bkjob.json; the settings that reach them."""
    if sc.bkjob is None:
        return {}
    code, secret, user = SANDBOX_APP
    job = job_from(sc.bkjob)
    bkjob = create_bkjob_app([job], app_code=code, app_secret=secret, system_apps=[code])
    gse = create_gse_app(agents_of(sc), app_code=code, app_secret=secret)
    urls = []
    for app in (bkjob, gse):
        runner, url = await start_site(app)
        runners.append(runner)
        urls.append(url)
    creds = {"app_code": code, "app_secret": secret, "username": user}
    return {
        # a bare id: the business is found by trying the configured ones, the wrong one first
        "bkjob": {"base_url": urls[0], "use_system_api": True, "scopes": ["biz:1", sc.bkjob.scope], **creds},
        "gse": {"base_url": urls[1], **creds},
    }


def _detail_problems(exp: ScenarioExpectation, report: DiagnosisReport) -> list[str]:
    """What the report fails of the scenario's optional expectations (primary evidence, mentions,
    confidence); empty when it meets them all or the scenario sets none."""
    problems: list[str] = []
    first = report.evidence[0].text.split("\n", 1)[0] if report.evidence else ""
    if exp.first_evidence is not None and exp.first_evidence not in first:
        problems.append(f"first evidence line does not hold {exp.first_evidence!r}: {first[:200]!r}")
    missing = "\n".join(report.missing_info)
    lost = [m for m in exp.missing_info_mentions if m not in missing]
    if lost:
        problems.append(f"missing_info does not mention {lost}")
    lost = [m for m in exp.root_cause_mentions if m not in report.root_cause]
    if lost:
        problems.append(f"root_cause does not mention {lost}")
    held = [m for m in exp.root_cause_excludes if m in report.root_cause]
    if held:
        problems.append(f"root_cause must not say {held}")
    if exp.max_confidence is not None and report.confidence > exp.max_confidence:
        problems.append(f"confidence {report.confidence} > {exp.max_confidence}")
    return problems


def asked_at(sc: Scenario) -> datetime:
    """When the scenario's user asks: half an hour after its last log line."""
    return last_timestamp(sc.logs_text) + timedelta(minutes=30)


def request_of(sc: Scenario) -> AnalysisRequest:
    """What the scenario's user sends: the step id, or the request id the chain starts from."""
    exp = sc.expected
    return AnalysisRequest(
        step_instance_id=None if exp.start_request_id else exp.step_instance_id,
        request_id=exp.start_request_id,
        use_model=False,
    )


async def run_scenario(
    sc: Scenario,
    session: aiohttp.ClientSession,
    *,
    trace_field: str | None = None,
    bklog: Mapping[str, object] | None = None,
) -> ScenarioResult:
    """`trace_field`: serve the logs as an install whose lines carry no `[app,traceId,spanId]`
    block and whose collector puts the traceId in that field (the bot configured to match).
    `bklog`: BkLog settings to change (page size, query budget, ...).
    A scenario with bkjob.json also gets the sandbox BK-JOB and GSE answering for its job."""
    code, secret, _user = SANDBOX_APP
    docs = docs_from_records(sc.logs_text, trace_field=trace_field)
    app = create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)
    runner, url = await start_site(app)
    runners = [runner]
    try:
        settings = sandbox_settings(url, **await bkjob_world(sc, runners))
        changes = {**(bklog or {}), **({"trace_field": trace_field} if trace_field else {})}
        if changes:
            settings = settings.model_copy(update={"bklog": settings.bklog.model_copy(update=changes)})
        now, req = asked_at(sc), request_of(sc)
        async with build_services(
            settings, http=session, options=AppOptions(mode="cli", clock=lambda: now)
        ) as services:
            report = await services.analyzer.analyze(req)
        return check(sc, report)
    except Exception as exc:  # one broken scenario must not hide the others
        return ScenarioResult(sc.name, None, error=f"{type(exc).__name__}: {exc}")
    finally:
        for r in runners:
            await r.cleanup()


async def run_all(root: Path | None = None) -> list[ScenarioResult]:
    scenarios = load_scenarios(root)
    async with aiohttp.ClientSession() as session:
        return [await run_scenario(sc, session) for sc in scenarios]


def format_results(results: list[ScenarioResult]) -> str:
    lines = []
    names = ["stage", "fault_side", "key_lines", "request_ids", "missing_info", "hosts", "secrets", "details"]
    for r in results:
        if r.error:
            lines.append(f"ERROR {r.name}: {r.error}")
            continue
        marks = " ".join(f"{n}={'ok' if r.checks.get(n) else 'NO'}" for n in names)
        lines.append(f"{'PASS ' if r.ok else 'FAIL '} {r.name:<48} {marks}")
        for p in r.problems:
            lines.append(f"       - {p}")
    passed = sum(1 for r in results if r.ok)
    per_check = {n: sum(1 for r in results if r.checks.get(n)) for n in names}
    lines.append("")
    lines.append("checks: " + ", ".join(f"{n} {v}/{len(results)}" for n, v in per_check.items()))
    lines.append(f"scenarios: {passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)
