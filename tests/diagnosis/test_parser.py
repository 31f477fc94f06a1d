"""Parser: every line variant of bk-job.md §1.1, multi-line records, dirty input, dedupe and ordering."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.diagnosis.parser import dedupe, order, parse_documents, parse_record, parse_text, split_records
from tests.diagnosis.chains import GSE_STACK, L_JOB, T, console_line, file_line

# the two verbatim samples of §1.1
REAL_1 = (
    "[2024-07-19 19:00:00.001]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
    "[execute-scheduler-3] e.e.r.h.ResultHandleTaskKeepaliveManager : Refresh task keepalive info start..."
)
REAL_2 = (
    "[2024-05-30 11:09:00.240]  INFO [job-execute,9f8db07dd48f9515d284a0c3e0146e14,49cf5d493601969c] 6 --- "
    "[agentStatusQuery-thread-15] c.t.bk.job.common.gse.v1.GseV1ApiClient  : BatchGetAgentStatus 12 agentIds, "
    "cost: 14ms"
)


def test_real_file_pattern_samples() -> None:
    r = parse_record(REAL_1)
    assert r.parsed
    assert r.time == datetime(2024, 7, 19, 19, 0, 0, 1000)
    assert r.time_text == "2024-07-19 19:00:00.001"
    assert (r.level, r.app, r.pid) == ("INFO", "job-execute", "6")
    assert r.trace_id == "84a2e275a062728b9b54aab16dea4289"
    assert r.span_id == "4f786ec86329458a"
    assert r.thread == "execute-scheduler-3"
    assert r.logger == "e.e.r.h.ResultHandleTaskKeepaliveManager"
    assert r.message == "Refresh task keepalive info start..."
    assert r.stack == ""
    r2 = parse_record(REAL_2)
    assert r2.parsed and r2.logger == "c.t.bk.job.common.gse.v1.GseV1ApiClient"
    assert r2.message == "BatchGetAgentStatus 12 agentIds, cost: 14ms"


def test_right_aligned_levels() -> None:
    for level in ("INFO", "WARN", "ERROR", "DEBUG", "TRACE"):
        line = file_line("2024-05-30 11:09:00.240", level, "x: y")
        assert f"] {level:>5} [" in line
        r = parse_record(line)
        assert r.parsed and r.level == level and r.message == "x: y"


def test_empty_mdc_trace_and_span() -> None:
    line = "[2024-05-30 11:09:00.240] ERROR [job-execute,,] 6 --- [main] c.t.b.j.e.engine.listener.JobListener    : boom"
    r = parse_record(line)
    assert r.parsed and r.trace_id is None and r.span_id is None and r.app == "job-execute"
    assert r.level == "ERROR" and r.message == "boom"


def test_lite_deployment_app_name() -> None:
    r = parse_record(
        file_line("2024-05-30 11:09:00.240", "INFO", "Start step, stepInstanceId=1", app="job-assemble")
    )
    assert r.parsed and r.app == "job-assemble" and r.message == "Start step, stepInstanceId=1"


def test_console_pattern_without_brackets_and_padded_thread() -> None:
    line = console_line(
        "2024-05-30 11:09:00.240",
        "WARN",
        "Evict job, taskInstanceId: 1, gseTask: 2",
        thread="step.service.job.execute-3",
    )
    assert line.startswith("2024-05-30 11:09:00.240  WARN [")
    r = parse_record(line)
    assert r.parsed and r.level == "WARN"
    assert r.thread == "step.service.job.execute-3"[-15:]
    assert r.message == "Evict job, taskInstanceId: 1, gseTask: 2"
    short = console_line("2024-05-30 11:09:00.240", "INFO", "hello", thread="main")
    assert "[           main]" in short
    r2 = parse_record(short)
    assert r2.parsed and r2.thread == "main" and r2.message == "hello"


def test_master_console_pattern_with_brackets() -> None:
    line = f"[2024-05-30 11:09:00.240]  INFO [job-execute,{T},4f786ec86329458a] 6 --- [step.service.job.execute-3] {L_JOB:<40} : hi"
    r = parse_record(line)
    assert r.parsed and r.thread == "step.service.job.execute-3" and r.message == "hi"


def test_plain_console_without_trace_block_and_comma_millis() -> None:
    r = parse_record(
        "2024-05-30 11:09:00,240 ERROR 6 --- [main] o.s.boot.SpringApplication : Application run failed"
    )
    assert (
        r.parsed
        and r.trace_id is None
        and r.app is None
        and r.time == datetime(2024, 5, 30, 11, 9, 0, 240000)
    )
    assert r.message == "Application run failed"


def test_message_with_colons_and_empty_message() -> None:
    r = parse_record(
        file_line(
            "2024-05-30 11:09:00.240", "INFO", "[Job:1-GseTask:2:3:0]: Start pull gse task result, times: 1"
        )
    )
    assert r.message == "[Job:1-GseTask:2:3:0]: Start pull gse task result, times: 1"
    empty = file_line("2024-05-30 11:09:00.240", "INFO", "").rstrip()
    r2 = parse_record(empty)
    assert r2.parsed and r2.message == ""


def test_stack_trace_goes_to_stack() -> None:
    text = file_line(
        "2024-05-30 11:09:00.240", "ERROR", "Handling gse task event error, event:GseTaskEvent[...]"
    )
    r = parse_record(text + "\n" + GSE_STACK)
    assert r.parsed and r.message == "Handling gse task event error, event:GseTaskEvent[...]"
    assert r.stack == GSE_STACK
    assert r.first_line == text
    assert r.raw == text + "\n" + GSE_STACK


def test_unparsed_records_are_kept() -> None:
    text = "some random line\nanother\n" + REAL_1 + "\n2024-05-30 11:09:01 garbage without level\n" + REAL_2
    recs = parse_text(text)
    assert len(recs) == 4
    assert not recs[0].parsed and recs[0].message == "some random line" and recs[0].stack == "another"
    assert recs[1].parsed
    assert not recs[2].parsed and recs[2].message == "2024-05-30 11:09:01 garbage without level"
    assert recs[2].time == datetime(2024, 5, 30, 11, 9, 1)  # still orderable
    assert recs[3].parsed


def test_crlf_ansi_and_non_utf8_bytes() -> None:
    raw = (
        b"\x1b[2m[2024-05-30 11:09:00.240]\x1b[0m \x1b[32m INFO\x1b[0m [job-execute,"
        + T.encode()
        + b",4f786ec86329458a] "
        b"6 --- [main] c.t.b.j.e.engine.listener.JobListener    : caf\xe9 \xff name=\xe4\xbd\xa0\xe5\xa5\xbd\r\n"
        b"\tat x.Y.z(Y.java:1)\r\n"
    )
    recs = parse_text(raw)
    assert len(recs) == 1
    r = recs[0]
    assert r.parsed and r.trace_id == T
    assert "\x1b" not in r.raw and "\r" not in r.raw
    assert r.message == "caf\ufffd \ufffd name=你好"
    assert r.stack == "\tat x.Y.z(Y.java:1)"


def test_split_records_on_timestamp_led_lines() -> None:
    text = REAL_1 + "\n" + "java.lang.IllegalStateException: x\n\tat a.b(C.java:1)\n\n" + REAL_2 + "\n"
    parts = split_records(text)
    assert parts == [REAL_1 + "\njava.lang.IllegalStateException: x\n\tat a.b(C.java:1)", REAL_2]


def test_parse_documents_keeps_source_and_splits_multi_record_logs() -> None:
    docs: list[dict[str, Any]] = [
        {
            "log": REAL_1,
            "path": "/data/logs/job-execute/execute.log",
            "serverIp": "10.0.0.1",
            "dtEventTimeStamp": "1721386800001",
            "gseIndex": 1,
            "iterationIndex": 0,
        },
        {"log": REAL_2 + "\n" + REAL_1, "path": "/data/logs/job-execute/execute.log", "serverIp": "10.0.0.1"},
        {"path": "/x"},  # no log field
    ]
    recs = parse_documents(docs)
    assert len(recs) == 3
    assert recs[0].source["path"] == "/data/logs/job-execute/execute.log"
    assert "log" not in recs[0].source and recs[0].source["gseIndex"] == 1
    assert recs[1].message.startswith("BatchGetAgentStatus") and recs[2].message.startswith("Refresh task")


def _doc(log: str, path: str, **kw: object) -> dict[str, object]:
    return {"log": log, "path": path, "serverIp": "10.0.0.1", **kw}


def test_dedupe_same_record_from_three_sources_prefers_file() -> None:
    msg = "Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId=2]"
    f = (
        file_line("2024-05-30 11:09:00.240", "ERROR", msg, thread="gse.task.service.job.execute-4")
        + "\n"
        + GSE_STACK
    )
    c = (
        console_line("2024-05-30 11:09:00.240", "ERROR", msg, thread="gse.task.service.job.execute-4")
        + "\n"
        + GSE_STACK
    )
    other = file_line("2024-05-30 11:09:00.241", "INFO", "Start step, stepInstanceId=3")
    docs = [
        _doc(c, "/var/log/containers/job-execute-0_default_job-execute-abc.log", gseIndex=9),
        _doc(f, "/data/logs/job-execute/error.log", gseIndex=5),
        _doc(other, "/data/logs/job-execute/execute.log", gseIndex=1),
        _doc(f, "/data/logs/job-execute/execute.log", gseIndex=2),
    ]
    recs = dedupe(parse_documents(docs))
    assert len(recs) == 2
    assert recs[0].source["path"] == "/data/logs/job-execute/execute.log"  # preferred copy, first position
    assert recs[0].thread == "gse.task.service.job.execute-4"  # the full thread of the file copy
    assert recs[0].stack == GSE_STACK
    assert recs[1].message == "Start step, stepInstanceId=3"


def test_dedupe_keeps_genuine_repeats_and_whitespace_variants_merge() -> None:
    line = file_line("2024-05-30 11:09:00.240", "INFO", "Analyse gse task result, result is empty!")
    docs = [
        _doc(line, "/data/logs/job-execute/execute.log", gseIndex=1, iterationIndex=0),
        _doc(
            line, "/data/logs/job-execute/execute.log", gseIndex=1, iterationIndex=1
        ),  # logged twice in 1 ms
        _doc(line, "/data/logs/job-execute/execute.log", gseIndex=1, iterationIndex=0),  # the same doc again
    ]
    assert len(dedupe(parse_documents(docs))) == 2
    a = parse_record(file_line("2024-05-30 11:09:00.240", "INFO", "a  b"))
    b = parse_record(console_line("2024-05-30 11:09:00.240", "INFO", "a b"))
    assert len(dedupe([a, b])) == 1
    # identical timeless lines without document identity are not merged
    assert len(dedupe(parse_text("\tat x\n") + parse_text("\tat x\n"))) == 2


def test_order_is_stable_and_places_timeless_records() -> None:
    a = parse_record(file_line("2024-05-30 11:09:00.300", "INFO", "a"))
    b = parse_record(file_line("2024-05-30 11:09:00.100", "INFO", "b"))
    b2 = parse_record(file_line("2024-05-30 11:09:00.100", "INFO", "b2"))
    orphan = parse_record("orphan continuation")
    got = order([a, orphan, b, b2])
    assert [r.message for r in got] == ["b", "b2", "a", "orphan continuation"]
    lead = parse_record("leading orphan")
    assert [r.message for r in order([lead, a, b])] == ["b", "leading orphan", "a"]


def test_order_uses_dt_event_timestamp_with_learnt_offset() -> None:
    # engine local time is UTC+8; BkLog's dtEventTimeStamp is epoch ms
    a = parse_documents(
        [{"log": file_line("2024-05-30 11:09:00.100", "INFO", "a"), "dtEventTimeStamp": "1717038540100"}]
    )
    c = parse_documents(
        [{"log": file_line("2024-05-30 11:09:00.900", "INFO", "c"), "dtEventTimeStamp": 1717038540900}]
    )
    b = parse_documents([{"log": "unparsable middle line", "dtEventTimeStamp": "1717038540500"}])
    got = order([*c, *b, *a])
    assert [r.message for r in got] == ["a", "unparsable middle line", "c"]
