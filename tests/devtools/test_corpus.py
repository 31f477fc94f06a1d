"""The scenario corpus: every folder is well-formed, faithful to the log format and self-consistent."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.core.models import PHASES
from bot.devtools.scenarios import (
    CORPUS,
    Scenario,
    ScenarioExpectation,
    decode_log_bytes,
    load_scenario,
    load_scenarios,
    split_records,
    write_scenario,
)

# bk-job.md §1.1 suggested parser (file pattern) and its ≤3.12 console variant.
FILE_LINE = re.compile(
    r"^\[(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})\]\s+(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+"
    r"\[(?P<app>[^,\]]*),(?P<trace_id>[0-9a-f]*),(?P<span_id>[0-9a-f]*)\]\s+(?P<pid>\S+)\s+---\s+"
    r"\[(?P<thread>[^\]]*)\]\s+(?P<logger>\S+)\s*:\s(?P<msg>.*)"
)
CONSOLE_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})\s+(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\s+"
    r"\[(?P<app>[^,\]]*),(?P<trace_id>[0-9a-f]*),(?P<span_id>[0-9a-f]*)\]\s+(?P<pid>\S+)\s+---\s+"
    r"\[(?P<thread>[^\]]{15})\]\s+(?P<logger>\S+)\s*:\s(?P<msg>.*)"
)
STACK_LINE = re.compile(
    r"^(\tat |\t\.\.\. \d+ (common )?frames omitted$|Caused by: |[\w$.]+(Exception|Error)\b)"
)

SCENARIOS = load_scenarios()
IDS = [s.name for s in SCENARIOS]


def parse_first_line(record: str) -> re.Match[str]:
    first = record.split("\n", 1)[0]
    match = FILE_LINE.match(first) or CONSOLE_LINE.match(first)
    assert match is not None, f"record does not match the engine log pattern: {first[:200]}"
    return match


def records_with_trace(scenario: Scenario) -> list[tuple[str, str]]:
    return [(parse_first_line(r).group("trace_id"), r) for r in scenario.records]


def test_default_root_is_the_packaged_corpus() -> None:
    root = CORPUS
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == IDS
    assert all((root / name / "logs.txt").is_file() for name in folders)


def test_corpus_size_and_unique_step_ids() -> None:
    assert len(SCENARIOS) >= 20
    step_ids = [s.expected.step_instance_id for s in SCENARIOS if s.expected.step_instance_id is not None]
    assert len(step_ids) == len(set(step_ids))
    task_ids = [s.expected.task_instance_id for s in SCENARIOS if s.expected.task_instance_id is not None]
    assert len(task_ids) == len(set(task_ids))


def test_coverage_of_stages_fault_sides_and_shapes() -> None:
    stages = {s.expected.stage for s in SCENARIOS}
    assert set(PHASES) <= stages
    sides = {s.expected.fault_side for s in SCENARIOS}
    assert {"user", "environment", "third_party", "system"} <= sides
    assert any(len(s.expected.request_ids) >= 2 for s in SCENARIOS)
    assert any(s.expected.start_request_id for s in SCENARIOS)
    assert any(s.expected.expect_missing_info and s.expected.step_instance_id for s in SCENARIOS)
    # both engine versions, both line patterns
    assert any("[AbstractBkApiClient]" in s.logs_text for s in SCENARIOS)
    assert any("[BaseBkApiClient]" in s.logs_text for s in SCENARIOS)
    assert any(CONSOLE_LINE.match(s.logs_text) for s in SCENARIOS)
    assert any(FILE_LINE.match(s.logs_text) for s in SCENARIOS)
    # the same record twice in a row (execute.log + error.log)
    assert any(
        any(a == b and "ERROR" in a.split("\n", 1)[0] for a, b in zip(s.records, s.records[1:], strict=False))
        for s in SCENARIOS
    )
    # a traceId ending in a digit whose spanId starts with a digit (glued by the BkLog tokenizer)
    glued = re.compile(r"\[job-execute,([0-9a-f]{31}[0-9]),[0-9]")
    assert any(
        any((m := glued.search(r)) and m.group(1) in s.expected.request_ids for r in s.records)
        for s in SCENARIOS
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_every_record_is_a_well_formed_engine_record(scenario: Scenario) -> None:
    records = scenario.records
    assert records, "empty logs.txt"
    console = CONSOLE_LINE.match(records[0]) is not None
    last_ts = ""
    for record in records:
        match = parse_first_line(record)
        assert (CONSOLE_LINE.match(record) is not None) == console, "patterns mixed within one file"
        assert match.group("app") == "job-execute"
        assert re.fullmatch(r"[0-9a-f]{32}", match.group("trace_id"))
        assert re.fullmatch(r"[0-9a-f]{16}", match.group("span_id"))
        assert match.group("pid") == "6"
        assert match.group("ts") >= last_ts, "records out of time order"
        last_ts = match.group("ts")
        for continuation in record.split("\n")[1:]:
            assert STACK_LINE.match(continuation), f"unexpected continuation line: {continuation[:120]}"
    assert scenario.logs_text.endswith("\n")
    assert "\r" not in scenario.logs_text


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_expected_ids_and_traces_occur_in_logs(scenario: Scenario) -> None:
    exp = scenario.expected
    traces = {trace for trace, _ in records_with_trace(scenario)}
    for request_id in exp.request_ids:
        assert request_id in traces, f"request id {request_id} is not the traceId of any record"
    assert len(set(exp.request_ids)) == len(exp.request_ids)
    if exp.start_request_id is not None:
        assert exp.start_request_id in exp.request_ids
    if exp.step_instance_id is not None and exp.request_ids:
        assert re.search(rf"(?<!\d){exp.step_instance_id}(?!\d)", scenario.logs_text)
    if exp.task_instance_id is not None:
        assert str(exp.task_instance_id) in scenario.logs_text
    # every trace of the run carries at least one line naming the job or the step, except a
    # start_request_id run (no instance) - so the collector can reach each trace from the ids
    for request_id in exp.request_ids:
        if exp.start_request_id:
            continue
        own = [r for t, r in records_with_trace(scenario) if t == request_id]
        assert any(str(exp.step_instance_id) in r or str(exp.task_instance_id) in r for r in own)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_key_lines_occur_only_in_the_diagnosed_run(scenario: Scenario) -> None:
    exp = scenario.expected
    for key in exp.key_lines:
        holders = [(t, r) for t, r in records_with_trace(scenario) if key in r.split("\n", 1)[0]]
        assert holders, f"key line {key!r} is not on any record's first line"
        for trace, record in holders:
            assert trace in exp.request_ids, (
                f"key line {key!r} also matches an unrelated record: {record[:160]}"
            )


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.expected.first_evidence], ids=lambda s: s.name
)
def test_first_evidence_is_a_line_of_the_diagnosed_run(scenario: Scenario) -> None:
    exp = scenario.expected
    holders = [(t, r) for t, r in records_with_trace(scenario) if exp.first_evidence in r.split("\n", 1)[0]]
    assert holders, f"first_evidence {exp.first_evidence!r} is not on any record's first line"
    assert any(trace in exp.request_ids for trace, _ in holders)


def test_each_lesson_has_a_scenario_and_a_near_miss() -> None:
    """The report-content expectations come in pairs: a scenario that shows a lesson and one that
    must not trigger it (so neither can pass by always or never applying the lesson)."""
    unsettled = [s for s in SCENARIOS if s.expected.missing_info_mentions and s.expected.max_confidence]
    settled = [s for s in SCENARIOS if s.expected.root_cause_excludes and not s.expected.expect_missing_info]
    answered = [
        s for s in SCENARIOS if s.expected.first_evidence and "success=true" in s.expected.first_evidence
    ]
    unblamed = [s for s in SCENARIOS if "success=true" in s.expected.root_cause_excludes]
    assert unsettled and settled and answered and unblamed


def test_missing_logs_scenario_has_no_lines_for_its_step() -> None:
    missing = [s for s in SCENARIOS if s.expected.stage == "unknown" and s.expected.fault_side == "unknown"]
    assert missing
    for scenario in missing:
        exp = scenario.expected
        assert exp.step_instance_id is not None
        assert str(exp.step_instance_id) not in scenario.logs_text
        assert exp.key_lines == [] and exp.request_ids == [] and exp.expect_missing_info
        assert scenario.records  # other jobs' lines are there


def test_retried_step_expects_only_the_latest_run() -> None:
    retried = [s for s in SCENARIOS if "Retry-fail for step" in s.logs_text]
    assert retried
    for scenario in retried:
        step = scenario.expected.step_instance_id
        prefixes = set(re.findall(rf"GseTask:\d+:{step}:(\d+)\]", scenario.logs_text))
        assert prefixes >= {"0", "1"}
        run0_traces = {t for t, r in records_with_trace(scenario) if f":{step}:0]" in r.split("\n", 1)[0]}
        assert run0_traces and not run0_traces & set(scenario.expected.request_ids)


def test_split_records_file_pattern_with_stack() -> None:
    text = (
        "[2024-05-30 11:09:00.240]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
        "[step.service.job.execute-3] c.t.b.j.e.engine.listener.StepListener   : Start step, stepInstanceId=1\n"
        "[2024-05-30 11:09:00.241] ERROR [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
        "[step.service.job.execute-3] c.t.b.j.e.engine.listener.StepListener   : Handling step event error,"
        "stepInstanceId:1\n"
        "com.tencent.bk.job.common.exception.ServiceException: null\n"
        "\tat com.tencent.bk.job.execute.engine.listener.StepListener.handleEvent(StepListener.java:96)\n"
        "\t... 24 common frames omitted\n"
        "[2024-05-30 11:09:00.242]  INFO [job-execute,,] 6 --- [main] c.t.b.j.e.engine.listener.JobListener    : x\n"
    )
    records = split_records(text)
    assert len(records) == 3
    assert records[1].splitlines()[1] == "com.tencent.bk.job.common.exception.ServiceException: null"
    assert records[1].endswith("\t... 24 common frames omitted")
    assert records[2].endswith(": x")


def test_split_records_console_pattern_crlf_bom_and_trailing_space() -> None:
    text = (
        "\ufeff2024-05-30 11:09:00.240  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
        "[e.job.execute-3] c.t.b.j.e.engine.listener.StepListener   : Start step, stepInstanceId=1   \r\n"
        "2024-05-30 11:09:00.241 ERROR [job-execute,84a2e275a062728b9b54aab16dea4289,4f786ec86329458a] 6 --- "
        "[e.job.execute-3] c.t.b.j.e.e.listener.GseTaskListener     : Handling gse task event error, event:x\r\n"
        "java.lang.NullPointerException: null\r\n"
        "\tat com.tencent.bk.job.common.gse.v2.GseV2ApiClient.asyncExecuteScript(GseV2ApiClient.java:131)\r\n"
        "\r\n"
    )
    records = split_records(text)
    assert len(records) == 2
    assert records[0].startswith("2024-05-30 11:09:00.240")
    assert records[0].endswith("stepInstanceId=1")
    assert records[1].splitlines() == [
        records[1].splitlines()[0],
        "java.lang.NullPointerException: null",
        "\tat com.tencent.bk.job.common.gse.v2.GseV2ApiClient.asyncExecuteScript(GseV2ApiClient.java:131)",
    ]


def test_split_records_keeps_leading_orphan_lines() -> None:
    records = split_records(
        "\tat a.b.C.d(C.java:1)\n[2024-05-30 11:09:00.240]  INFO [job-execute,,] 6 --- [t] l : m\n"
    )
    assert records == [
        "\tat a.b.C.d(C.java:1)",
        "[2024-05-30 11:09:00.240]  INFO [job-execute,,] 6 --- [t] l : m",
    ]


def test_non_utf8_bytes_are_replaced_when_loading(tmp_path: Path) -> None:
    folder = tmp_path / "broken_bytes"
    folder.mkdir()
    raw = (
        b"\xef\xbb\xbf[2024-05-30 11:09:00.240]  INFO [job-execute,84a2e275a062728b9b54aab16dea4289,"
        b"4f786ec86329458a] 6 --- [t] c.t.b.j.e.engine.listener.JobListener    : bad \xff\xfe bytes\r\n"
    )
    (folder / "logs.txt").write_bytes(raw)
    (folder / "expected.json").write_text(
        json.dumps(
            {"step_instance_id": 1, "task_instance_id": None, "stage": "unknown", "fault_side": "unknown"}
        ),
        encoding="utf-8",
    )
    scenario = load_scenario(folder)
    assert "\ufffd" in scenario.logs_text
    assert not scenario.logs_text.startswith("\ufeff")
    assert decode_log_bytes(b"\xff") == "\ufffd"
    assert len(scenario.records) == 1
    assert scenario.records[0].endswith("bytes")


def test_write_scenario_round_trip(tmp_path: Path) -> None:
    source = SCENARIOS[0]
    folder = write_scenario(
        tmp_path, "exported.case-1", source.logs_text.replace("\n", "\r\n"), source.expected
    )
    assert folder == tmp_path / "exported.case-1"
    loaded = load_scenarios(tmp_path)
    assert [s.name for s in loaded] == ["exported.case-1"]
    assert loaded[0].expected == source.expected
    assert loaded[0].records == source.records
    raw = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    if source.expected.signature is None:
        assert "signature" not in raw
    assert not {"first_evidence", "missing_info_mentions", "max_confidence"} & set(raw)


def test_write_scenario_validates(tmp_path: Path) -> None:
    good = {"step_instance_id": 5, "task_instance_id": 4, "stage": "execution", "fault_side": "user"}
    with pytest.raises(ValueError):
        write_scenario(tmp_path, "../escape", "x\n", good)
    with pytest.raises(ValidationError):
        write_scenario(tmp_path, "bad_stage", "x\n", {**good, "stage": "running"})
    with pytest.raises(ValidationError):
        write_scenario(tmp_path, "bad_trace", "x\n", {**good, "request_ids": ["NOT-A-TRACE"]})
    with pytest.raises(ValidationError):
        ScenarioExpectation.model_validate({**good, "unexpected": 1})
    assert not any(tmp_path.iterdir())


def test_signature_hints_are_plain_ids() -> None:
    sigs = Counter(s.expected.signature for s in SCENARIOS if s.expected.signature)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", sig) for sig in sigs)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_one_engine_version_per_scenario(scenario: Scenario) -> None:
    text = scenario.logs_text
    v310 = "[AbstractBkApiClient]" in text or re.search(
        r"StepEvent\[action=\d+, actionDesc=\w+, stepInstanceId=", text
    )
    master = "[BaseBkApiClient]" in text or re.search(
        r"StepEvent\[action=\d+, actionDesc=\w+, jobInstanceId=", text
    )
    assert not (v310 and master), "3.10.x and 3.12+ formats mixed in one scenario"
    if v310:
        assert "tenantId=" not in text
        assert not re.search(r"GseTaskEvent\[[^\]]*jobInstanceId=", text)


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.expected.task_instance_id], ids=lambda s: s.name
)
def test_engine_scenarios_have_job_event_lines_for_their_job(scenario: Scenario) -> None:
    job = scenario.expected.task_instance_id
    assert (
        f"Handle job event, event: JobEvent[action=1, actionDesc=START, jobInstanceId={job},"
        in scenario.logs_text
    )


def test_readme_lists_every_scenario_with_its_stage_and_fault_side() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    for scenario in SCENARIOS:
        row = f"| `{scenario.name}` | {scenario.expected.stage} | {scenario.expected.fault_side} |"
        assert row in readme, f"README.md has no row for {scenario.name}"
