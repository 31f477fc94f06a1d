"""Matcher behaviour: negatives, priority, code translation, ranking, placeholders, evidence."""

from __future__ import annotations

import pytest

from bot.diagnosis.parser import parse_text
from bot.diagnosis.signatures import (
    Catalog,
    derive_values,
    literal_runs,
    load_catalog,
    render,
    required_literal,
)
from tests.diagnosis.signatures.chains import (
    AGENT,
    AGENT2,
    FINISH_FAIL,
    GSE,
    REFRESH_FAIL,
    STARTED,
    S,
    chain,
    rec,
    result_line,
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_successful_run_matches_nothing(catalog: Catalog) -> None:
    records = chain(
        ("INFO", "Refresh task keepalive info start..."),
        STARTED,
        ("INFO", f"[{GSE}]: Start pull gse task result, times: 1"),
        ("INFO", result_line(0, exit_code=0, status=2)),
        ("INFO", result_line(0, exit_code=0, status=5)),
        ("INFO", f"Finish gse task, task:{GSE}, executeResult:1"),
        (
            "INFO",
            f"Refresh step according to gse task status, stepInstanceId: {S}, gseTaskStatus: SUCCESS, batch: 0",
        ),
        ("INFO", "BatchGetAgentStatus 12 agentIds, cost: 14ms"),
    )
    assert catalog.match(records) == []
    assert catalog.best(records) is None
    assert catalog.match([]) == []


def test_keepalive_line_alone_matches_nothing(catalog: Catalog) -> None:
    assert catalog.match([rec("Refresh task keepalive info start...")]) == []


def test_specific_code_beats_generic_fail(catalog: Catalog) -> None:
    records = chain(STARTED, ("INFO", result_line(117)), FINISH_FAIL, REFRESH_FAIL)
    ids = [m.id for m in catalog.match(records)]
    assert ids[0] == "agent_abnormal"
    assert "step_failed_unexplained" in ids  # fires too, but ranks last
    assert (
        ids.index("agent_abnormal")
        < ids.index("gse_unknown_error_code")
        < ids.index("step_failed_unexplained")
    )
    best = catalog.best(records)
    assert best is not None
    assert best.values["host_status"] == "310"
    assert best.values["host_status_zh"] == "Agent 异常"
    assert "310" in best.cause and "Agent 异常" in best.cause and AGENT in best.cause


def test_exit_code_normalised_and_quoted(catalog: Catalog) -> None:
    records = chain(STARTED, ("INFO", result_line(0, exit_code=256)), FINISH_FAIL, REFRESH_FAIL)
    best = catalog.best(records)
    assert best is not None and best.id == "script_exit_nonzero"
    assert best.values["exit_code"] == "1"
    assert "exit code 1" in best.cause and "exitCode=256" in best.cause
    assert best.values["execute_result_zh"] == "失败"
    # the decisive line is quoted whole
    assert best.records[0].raw == records[1].raw


def test_exit_code_signature_needs_error_code_zero(catalog: Catalog) -> None:
    # GSE failed the host (agent error) and the exit code is a leftover: not a script failure
    records = chain(STARTED, ("INFO", result_line(117, exit_code=1)), REFRESH_FAIL)
    ids = {m.id for m in catalog.match(records)}
    assert "script_exit_nonzero" not in ids
    assert "agent_abnormal" in ids
    # exit 0 with status 5 is a plain script failure (101), not a non-zero exit
    ids = {m.id for m in catalog.match(chain(("INFO", result_line(0, exit_code=0, status=5))))}
    assert "script_exit_nonzero" not in ids


def test_hosts_are_aggregated(catalog: Catalog) -> None:
    records = chain(
        STARTED,
        ("INFO", result_line(117, agent=AGENT)),
        ("INFO", result_line(117, agent=AGENT2)),
        FINISH_FAIL,
        REFRESH_FAIL,
    )
    best = catalog.best(records)
    assert best is not None and best.id == "agent_abnormal"
    assert best.hit_count == 2 and len(best.records) == 2
    assert best.values["host_count"] == "2"
    assert AGENT in best.cause and AGENT2 in best.cause


def test_same_priority_latest_failure_wins(catalog: Catalog) -> None:
    early_agent = chain(STARTED, ("INFO", result_line(117)), ("INFO", result_line(122, agent=AGENT2)))
    assert [m.id for m in catalog.match(early_agent)][:2] == ["os_user_not_exist", "agent_abnormal"]
    early_user = chain(STARTED, ("INFO", result_line(122, agent=AGENT2)), ("INFO", result_line(117)))
    best = catalog.best(early_user)
    assert best is not None and best.id == "agent_abnormal"


def test_ids_borrowed_from_neighbours_and_caller(catalog: Catalog) -> None:
    records = chain(
        ("INFO", f"Start step, stepInstanceId={S}"), ("ERROR", "Start gse task fail, account is null!")
    )
    best = catalog.best(records)
    assert best is not None and best.id == "file_account_null"
    assert S in best.summary
    # nothing around it: the caller's id fills the gap, never a raw placeholder
    alone = [rec("Start gse task fail, account is null!", "ERROR")]
    best = catalog.best(alone, known={"step_instance_id": "42"})
    assert best is not None and "42" in best.summary
    best = catalog.best(alone)
    assert best is not None and "{" not in best.summary and "未知" in best.summary


def test_require_level_and_stack_matching(catalog: Catalog) -> None:
    msg = f"Handling step event error,stepInstanceId:{S}"
    assert catalog.match([rec(msg, "INFO")]) == []
    stack = "com.tencent.bk.job.common.exception.ServiceException: null\n\tat a.b.C.d(C.java:1)"
    best = catalog.best([rec(msg, "ERROR", stack=stack)])
    assert best is not None and best.id == "step_event_error"
    assert "ServiceException: null" in best.cause
    assert best.evidence()[0].text.endswith("(C.java:1)")  # kept whole, stack included


def test_long_line_kept_whole(catalog: Catalog) -> None:
    tail = "x" * 5000
    line = result_line(117, msg="agent down") + " " + tail
    best = catalog.best([rec(line)])
    assert best is not None and best.id == "agent_abnormal"
    assert best.evidence()[0].text.endswith(tail)


def test_parsed_raw_text_end_to_end(catalog: Catalog) -> None:
    raw = "\n".join(
        [
            f"[2024-05-30 11:09:01.001]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
            f"[gse-1] c.t.b.j.e.e.executor.GseTaskManager    : [{GSE}] Sending task to gse server",
            "[2024-05-30 11:09:01.050]  WARN [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
            "[gse-1] c.t.b.j.common.esb.sdk.BaseBkApiClient  : Fail to request api|method=POST|"
            "uri=/api/v2/task/extensions/async_execute_script",
            "java.net.SocketTimeoutException: Read timed out",
            "\tat java.base/java.net.SocketInputStream.socketRead0(Native Method)",
            f"[2024-05-30 11:09:01.060] ERROR [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
            f"[gse-1] c.t.b.j.e.e.listener.GseTaskListener    : Handling gse task event error, "
            f"event:GseTaskEvent[action=1, actionDesc=START, gseTaskId=30000123, stepInstanceId={S}]",
            "com.tencent.bk.job.common.exception.InternalException: null",
            f"[2024-05-30 11:09:01.090]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
            f"[step-1] c.t.b.j.e.e.l.GseStepEventHandler      : Refresh step according to gse task status, "
            f"stepInstanceId: {S}, gseTaskStatus: ABNORMAL_STATE, batch: 0",
        ]
    )
    records = parse_text(raw)
    best = catalog.best(records)
    assert best is not None
    assert (best.id, best.stage, best.fault_side) == ("gse_dispatch_api_failure", "dispatch", "third_party")
    assert "/api/v2/task/extensions/async_execute_script" in best.cause
    assert best.records[0].trace_id == "84a2e275a062728b9b54aab16dea4289"
    assert best.values["trace_id"] == "84a2e275a062728b9b54aab16dea4289"


def test_derive_values_translations() -> None:
    v = derive_values({"error_code": ["117", "122"], "exit_code": ["256", "2"], "api_code": ["1244003"]})
    assert v["host_status"] == "310、311"
    assert v["host_status_zh"] == "Agent 异常、用户名不存在"
    assert v["exit_code"] == "1、2" and v["exit_code_raw"] == "256、2"
    assert "exitCode=256" in v["exit_code_note"]
    assert v["api_error_zh"] == "账号[…]不存在"
    v = derive_values(
        {"error_code": ["4242"], "gse_task_status": ["ABNORMAL_STATE"], "run_duration": ["3900123"]}
    )
    assert (v["host_status"], v["host_status_zh"]) == ("0", "未知错误")
    assert v["gse_task_status_zh"] == "状态异常"
    assert v["run_duration_s"] == "3900"
    many = derive_values({"agent_id": [f"a{i}" for i in range(15)]})
    assert many["host_count"] == "15" and many["hosts"].endswith("等 15 个") and many["host"] == "a0"


def test_render_never_leaks_placeholders() -> None:
    out = render("主机 {host} 返回码 {exit_code}{exit_code_note}，{nothing}", {"exit_code": "1"})
    assert out == "主机 <主机> 返回码 1，未知"


def test_literal_extraction() -> None:
    assert (
        required_literal(r"Found hosts not in target app: (?P<n>\d+)!") == "Found hosts not in target app: "
    )
    assert required_literal(r"\[(?:Base|Abstract)BkApiClient\] Response\|") == "BkApiClient] Response|"
    assert required_literal(r"ab?cdef{2}gh+ij") == "cdef"
    assert required_literal(r"one|two") == ""
    assert required_literal(r"(?i)case insensitive text") == ""
    runs = literal_runs(r"result: [^\n]*?\berrorCode=(?P<c>104|123)\b(?:, errorMsg='x')?")
    assert runs == [("result: ",), ("errorCode=104", "errorCode=123")]
    # lookarounds are not required text
    assert ("abc",) not in literal_runs(r"xyzxyz(?!abc)")


def test_none_of_blocks_when_the_chain_goes_on(catalog: Catalog) -> None:
    sending = (  # the decisive line of `dispatch_no_response`
        "INFO",
        f"[{GSE}] Sending task to gse server",
    )
    ids = {m.id for m in catalog.match(chain(sending, STARTED, ("INFO", result_line(117))))}
    assert "dispatch_no_response" not in ids
    best = catalog.best(chain(sending))
    assert best is not None and best.id == "dispatch_no_response" and best.fault_side == "unknown"
    assert best.missing_info  # says what would settle it
