"""An API answer logged as ok whose body carries a non-zero code and no data is found as the
decisive answer; good answers, failures visible as such and superseded answers are not."""

from __future__ import annotations

from bot.diagnosis.api_answers import failed_answers
from bot.diagnosis.extract import parse_api_call
from tests.diagnosis.api_lines import AUTH_FAILED, EVENT, GOOD, NPE, TRANSFER, response
from tests.diagnosis.signatures.chains import GSE, chain, rec


def test_answer_said_ok_with_a_code_and_no_data_is_found_with_its_consequence() -> None:
    records = chain(
        ("INFO", f"[{GSE}] Sending task to gse server"),
        ("INFO", response(AUTH_FAILED)),
        ("ERROR", f"Handling gse task event error, event:{EVENT}", NPE),
    )
    [answer] = failed_answers(records)
    assert answer.record is records[1]
    assert answer.consequence is records[2]
    assert (answer.call.code, answer.call.uri, answer.call.api_message) == (
        1640001,
        TRANSFER,
        "bk_app_code or bk_app_secret is incorrect",
    )
    assert answer.meaning() == "网关参数或认证信息无效（bk_app_code/bk_app_secret 或用户认证）"


def test_a_code_the_tables_do_not_know_has_no_meaning() -> None:
    records = chain(
        ("INFO", response('{"result":false,"code":1015012,"message":"task server is busy","data":null}')),
        ("ERROR", f"Handling gse task event error, event:{EVENT}", NPE),
    )
    [answer] = failed_answers(records)
    assert answer.call.code == 1015012 and answer.meaning() is None


def test_a_good_answer_is_not_blamed_for_the_error_after_it() -> None:
    records = chain(
        ("INFO", response(GOOD)),
        ("INFO", f"[{GSE}] Start gse task successfully, gseTaskId: GSETASK:20250916214003:1"),
        (
            "ERROR",
            f"Handling gse task event error, event:{EVENT}",
            "org.jooq.exception.DataAccessException: x",
        ),
    )
    assert failed_answers(records) == []


def test_an_answer_with_data_or_a_failed_http_call_is_not_this_lesson() -> None:
    with_data = '{"result":true,"code":1015012,"message":"partial","data":{"result":{"task_id":"GSETASK:1"}}}'
    http_failed = (
        '{"code_name":"BAD_GATEWAY","data":null,"code":1650200,"message":"Bad Gateway","result":false}'
    )
    for line in (response(with_data), response(http_failed, success="false")):
        records = chain(("INFO", line), ("ERROR", f"Handling gse task event error, event:{EVENT}", NPE))
        assert failed_answers(records) == []


def test_an_answer_without_an_error_after_it_or_superseded_by_a_good_one_decides_nothing() -> None:
    alone = chain(("INFO", response(AUTH_FAILED)), ("INFO", f"[{GSE}] Sending task to gse server"))
    assert failed_answers(alone) == []
    warned = chain(
        ("INFO", response(AUTH_FAILED)), ("WARN", "GseTaskManager-> start gse task is slow, statistics:{}")
    )
    assert failed_answers(warned) == []
    retried = chain(
        ("INFO", response(AUTH_FAILED, request_id="first")),
        ("WARN", "GseTaskManager-> start gse task is slow, statistics:{}"),
        ("INFO", response(GOOD, request_id="second")),
    )
    assert failed_answers(retried) == []
    other_trace = [
        rec(response(AUTH_FAILED), at=0.0),
        rec(f"Handling gse task event error, event:{EVENT}", "ERROR", stack=NPE, at=1.0, trace_id="0" * 32),
    ]
    assert failed_answers(other_trace) == []


def test_the_310_warning_and_response_of_one_request_are_one_answer_quoted_by_its_response_line() -> None:
    body = '{"result":false,"code":1015012,"message":"task server is busy, please retry later","data":null}'
    uri = "/api/v2/task/extensions/async_execute_script"
    warn = (
        f"[AbstractBkApiClient] fail:response code!=0|bkApiRequestId=2d2c4026|code=1015012|message=task server "
        f"is busy, please retry later|method=POST|uri={uri}|reqStr={{}}|respStr={body}"
    )
    resp = f"[AbstractBkApiClient] Response|bkApiRequestId=2d2c4026|method=POST|uri={uri}|success=true|costTime=212|resp={body}"
    records = chain(
        ("WARN", warn), ("INFO", resp), ("ERROR", f"Handling gse task event error, event:{EVENT}", NPE)
    )
    [answer] = failed_answers(records)
    assert answer.record is records[1]


def test_data_missing_is_read_from_the_reply() -> None:
    def missing(resp: str) -> bool | None:
        call = parse_api_call(response(resp))
        assert call is not None
        return call.data_missing

    assert missing('{"result":true,"code":1,"data":null}') is True
    assert missing('{"result":true,"code":1}') is True
    assert missing('{"result":false,"code":1,"data":{"result":{}}}') is True
    assert missing('{"result":true,"code":0,"data":{"result":{"task_id":"x"}}}') is False
    assert missing('{"result":true,"code":1,"data":null,"message":"cut') is True  # cut JSON: read by regex
    assert missing('{"result":true,"code":1,"message":"cut') is None
