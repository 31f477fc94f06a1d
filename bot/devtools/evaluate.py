"""Run scenario folders through the whole pipeline (real BkLog client → sandbox BkLog over HTTP)
and compare each report with the scenario's expected.json.

Each scenario gets its own sandbox BkLog holding only its logs; the analysis clock is set just
after the scenario's last line, so the default look-back window is what finds the logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

from bot.app.services import AppOptions, build_services
from bot.core.models import DiagnosisReport
from bot.core.settings import Settings
from bot.devtools.sandbox import start_site
from bot.devtools.sandbox.bklog import create_bklog_app, docs_from_records
from bot.devtools.scenarios import Scenario, ScenarioExpectation, load_scenarios, time_span
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


def check(sc: Scenario, report: DiagnosisReport) -> ScenarioResult:
    exp = sc.expected
    res = ScenarioResult(sc.name, report)
    evidence = "\n".join(e.text for e in report.evidence)
    missing_keys = [k for k in exp.key_lines if k not in evidence]
    details = _detail_problems(exp, report)
    res.checks = {
        "stage": report.stage == exp.stage,
        "fault_side": report.fault_side == exp.fault_side,
        "key_lines": not missing_keys,
        "request_ids": set(report.request_ids) == set(exp.request_ids),
        "missing_info": bool(report.missing_info) == exp.expect_missing_info,
        "details": not details,
    }
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


async def run_scenario(
    sc: Scenario, session: aiohttp.ClientSession, *, trace_field: str | None = None
) -> ScenarioResult:
    """`trace_field`: serve the logs as an install whose lines carry no `[app,traceId,spanId]`
    block and whose collector puts the traceId in that field (the bot configured to match)."""
    code, secret, _user = SANDBOX_APP
    docs = docs_from_records(sc.logs_text, trace_field=trace_field)
    app = create_bklog_app(docs, app_code=code, app_secret=secret, index_set_id=SANDBOX_INDEX_SET)
    runner, url = await start_site(app)
    try:
        settings = sandbox_settings(url)
        if trace_field:
            bklog = settings.bklog.model_copy(update={"trace_field": trace_field})
            settings = settings.model_copy(update={"bklog": bklog})
        now = last_timestamp(sc.logs_text) + timedelta(minutes=30)
        exp = sc.expected
        req = AnalysisRequest(
            step_instance_id=None if exp.start_request_id else exp.step_instance_id,
            request_id=exp.start_request_id,
            use_model=False,
        )
        async with build_services(
            settings, http=session, options=AppOptions(mode="cli", clock=lambda: now)
        ) as services:
            report = await services.analyzer.analyze(req)
        return check(sc, report)
    except Exception as exc:  # one broken scenario must not hide the others
        return ScenarioResult(sc.name, None, error=f"{type(exc).__name__}: {exc}")
    finally:
        await runner.cleanup()


async def run_all(root: Path | None = None) -> list[ScenarioResult]:
    scenarios = load_scenarios(root)
    async with aiohttp.ClientSession() as session:
        return [await run_scenario(sc, session) for sc in scenarios]


def format_results(results: list[ScenarioResult]) -> str:
    lines = []
    names = ["stage", "fault_side", "key_lines", "request_ids", "missing_info", "details"]
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
