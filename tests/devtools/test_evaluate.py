"""`job-doctor eval`'s check of one report against a scenario's expected.json, including the optional
expectations that make a lesson observable (primary evidence, mentions, an unsettled confidence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.models import DiagnosisReport, Evidence
from bot.devtools.evaluate import check, format_results
from bot.devtools.scenarios import Scenario, ScenarioExpectation

ANSWER = "[BaseBkApiClient] Response|tenantId=default|uri=/api/v2/task/extensions/async_transfer_file|success=true|resp={}"
ERROR = "Handling gse task event error, event:GseTaskEvent[action=1]"


def scenario(**expect: object) -> Scenario:
    base: dict[str, object] = {
        "step_instance_id": 1,
        "task_instance_id": 2,
        "stage": "dispatch",
        "fault_side": "third_party",
        "key_lines": ["Handling gse task event error"],
    }
    return Scenario("s", Path("."), "", ScenarioExpectation.model_validate({**base, **expect}))


def report(**fields: object) -> DiagnosisReport:
    base: dict[str, object] = {
        "stage": "dispatch",
        "fault_side": "third_party",
        "root_cause": "GSE 接口返回 code=1640001（网关参数或认证信息无效）",
        "evidence": [Evidence(text=f"[2025-09-16 21:40:03.237]  INFO {ANSWER}"), Evidence(text=ERROR)],
        "missing_info": [],
        "confidence": 0.8,
    }
    return DiagnosisReport.model_validate({**base, **fields})


def test_without_optional_expectations_the_details_check_passes() -> None:
    res = check(scenario(), report())
    assert res.ok and res.checks["details"]


def test_a_report_meeting_every_expectation_passes() -> None:
    res = check(
        scenario(
            first_evidence="|success=true|",
            root_cause_mentions=["code=1640001", "网关参数或认证信息无效"],
            root_cause_excludes=["job-execute 的日志里看不到"],
            max_confidence=0.9,
            expect_missing_info=True,
            missing_info_mentions=["job-file-worker"],
        ),
        report(missing_info=["请收集 job-file-worker 的日志"]),
    )
    assert res.ok, res.problems


@pytest.mark.parametrize(
    ("expect", "problem"),
    [
        ({"first_evidence": "Handling gse task event error"}, "first evidence line does not hold"),
        ({"root_cause_mentions": ["1015012"]}, "root_cause does not mention ['1015012']"),
        ({"root_cause_excludes": ["1640001"]}, "root_cause must not say ['1640001']"),
        ({"missing_info_mentions": ["job-file-worker"]}, "missing_info does not mention ['job-file-worker']"),
        ({"max_confidence": 0.45}, "confidence 0.8 > 0.45"),
    ],
)
def test_each_unmet_expectation_is_named(expect: dict[str, object], problem: str) -> None:
    res = check(scenario(**expect), report())
    assert not res.ok and not res.checks["details"]
    assert any(problem in p for p in res.problems), res.problems
    assert "details=NO" in format_results([res])


def test_blank_mentions_are_refused() -> None:
    with pytest.raises(ValueError):
        scenario(missing_info_mentions=[" "])
    with pytest.raises(ValueError):
        scenario(first_evidence="")
