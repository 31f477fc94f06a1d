"""The rule report applies the two lessons on top of whatever signature matched: an answer that said ok
but carried a failure is the primary evidence and explained; a component that failed without its
reason leaves the cause unsettled and asks for the component's own log."""

from __future__ import annotations

from bot.core.models import DiagnosisReport
from bot.diagnosis.collector import Collected
from bot.diagnosis.components import components
from bot.diagnosis.condense import condense
from bot.diagnosis.records import LogRecord
from bot.diagnosis.rules import CONFIDENT, RuleInputs, build_rule_report
from bot.diagnosis.signatures import load_catalog
from tests.diagnosis.api_lines import AUTH_FAILED, EVENT, GOOD, NPE, response
from tests.diagnosis.signatures.chains import GSE, REFRESH_ABNORMAL, SENDING, S, chain


def report_of(records: list[LogRecord]) -> DiagnosisReport:
    cond = condense(records, step_instance_id=int(S))
    match = load_catalog().best(cond.records)
    return build_rule_report(
        RuleInputs(
            collected=Collected(records=records, step_instance_id=int(S)),
            condensed=cond,
            match=match,
            step_instance_id=int(S),
            request_id=None,
        )
    )


def test_the_answer_is_the_primary_evidence_and_the_cause_says_what_its_code_means() -> None:
    records = chain(
        SENDING,
        ("INFO", response(AUTH_FAILED)),
        ("ERROR", f"Handling gse task event error, event:{EVENT}", NPE),
        REFRESH_ABNORMAL,
    )
    report = report_of(records)
    assert report.evidence[0].text == records[1].raw
    assert "success=true" in report.evidence[0].why and "code=1640001" in report.evidence[0].why
    assert "code=1640001（网关参数或认证信息无效" in report.root_cause
    assert "message：`bk_app_code or bk_app_secret is incorrect`" in report.root_cause
    assert "java.lang.NullPointerException" in report.root_cause  # named as the consequence
    assert report.confidence >= CONFIDENT  # the answer settles the cause


def test_a_good_answer_before_an_engine_error_is_left_alone() -> None:
    records = chain(
        SENDING,
        ("INFO", response(GOOD)),
        ("INFO", f"[{GSE}] Start gse task successfully, gseTaskId: GSETASK:20250916214003:1"),
        (
            "ERROR",
            f"Handling gse task event error, event:{EVENT}",
            "org.jooq.exception.DataAccessException: SQL [update `gse_task`]; Communications link failure",
        ),
        REFRESH_ABNORMAL,
    )
    report = report_of(records)
    assert report.signature == "gse_task_event_error"
    assert report.evidence[0].text == records[3].raw
    assert "success=true" not in report.root_cause and "决定性证据" not in report.root_cause


def test_a_component_that_failed_silently_leaves_any_matched_cause_unsettled() -> None:
    # only the engine's own line: the generic file-source entry matches, the access point's reason is nowhere
    records = chain(
        ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
        ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
    )
    report = report_of(records)
    texts = components().texts
    assert report.signature == "third_file_prepare_failed"
    assert report.confidence <= texts.unsettled_confidence < CONFIDENT
    assert "原因在文件源接入点一侧" in report.root_cause
    assert any("job-file-worker" in m for m in report.missing_info)
    # the entry's own hint stays a gap to fill, not an action
    assert any("job-file-gateway / job-file-worker 在同一时间的日志" in m for m in report.missing_info)
    assert not any(
        "job-file-gateway / job-file-worker 在同一时间的日志" in a for a in report.actions.immediate
    )


def test_the_lesson_holds_without_a_matching_signature() -> None:
    records = chain(
        ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
        ("WARN", f"stepInstanceId={S},ThirdFilePrepareTask failed"),
    )
    report = report_of(records)
    assert report.signature is None
    assert "原因在文件源接入点一侧" in report.root_cause
    assert report.missing_info[0].startswith("文件源接入点失败的原因不在引擎日志中")
    assert report.evidence[0].text == records[1].raw


def test_a_component_that_said_why_keeps_the_cause_settled() -> None:
    records = chain(
        ("INFO", f"Begin to prepare source files for step, stepInstance: {S}"),
        (
            "INFO",
            f"[{S}_0]: fileSourceTaskId=9f2c41ab07d34e58a1c6b7e0d5f31a29,status=FAILED,"
            "message=release/app.tgz|0|Access Denied. (Status Code: 403; Error Code: AccessDenied)",
        ),
        ("WARN", f"[{S}_0]: ThirdFilePrepareTask failed"),
    )
    report = report_of(records)
    assert report.signature == "third_file_task_failed"
    assert "Access Denied" in report.root_cause and "引擎日志只显示" not in report.root_cause
    assert report.confidence >= CONFIDENT and report.missing_info == []
