"""Timeline events: what each phase shows of the run, in time order, at most five, and the run's span."""

from __future__ import annotations

from bot.core.models import MAX_PHASE_EVENTS, TimelineEntry
from bot.devtools.scenarios import load_scenarios
from bot.diagnosis.condense import condense
from bot.diagnosis.parser import dedupe, order, parse_text
from bot.diagnosis.phase_events import MAX_EVENT_CHARS, run_span
from bot.diagnosis.records import LogRecord
from bot.diagnosis.runs import select_run
from bot.diagnosis.timeline import build_timeline
from tests.diagnosis.chains import (
    AGENT,
    L_API,
    L_START,
    T2,
    Chain,
    dispatch_ok,
    failed_script_chain,
    key,
    polling,
    refresh_and_notify,
    result_line,
    run_prologue,
)
from tests.diagnosis.chains import J as JOB
from tests.diagnosis.chains import S as STEP

STEP_ROLLING = 41000871266


def _records(c: Chain) -> list[LogRecord]:
    return order(dedupe(parse_text(c.text())))


def _phase(tl: list[TimelineEntry], phase: str) -> TimelineEntry:
    return next(e for e in tl if e.phase == phase)


def _texts(entry: TimelineEntry) -> list[str]:
    return [e.text for e in entry.events]


def assert_readable(tl: list[TimelineEntry]) -> None:
    """At most five events per phase, in time order; phase times never run backwards."""
    for entry in tl:
        assert len(entry.events) <= MAX_PHASE_EVENTS, entry.phase
        times = [e.time for e in entry.events if e.time]
        assert times == sorted(times), entry.phase
        assert all(len(e.text) <= MAX_EVENT_CHARS + 20 for e in entry.events)
    phase_times = [e.time for e in tl if e.time]
    assert phase_times == sorted(phase_times)


def test_failed_script_chain_reads_like_the_run() -> None:
    recs = _records(failed_script_chain(pulls=12))
    tl = build_timeline(recs, STEP)
    assert_readable(tl)
    assert _texts(_phase(tl, "parameter_check")) == [f"Start task, taskInstanceId={JOB}"]
    assert _texts(_phase(tl, "initialization")) == [f"Start step, stepInstanceId={STEP}"]
    assert _texts(_phase(tl, "dispatch")) == [
        "Sending task to gse server",
        "Start gse task successfully, gseTaskId: GSETASK:20240530110900:1",
    ]
    # the task prefix is stripped, the host's decisive fields kept, its meaning named
    [host] = _texts(_phase(tl, "execution"))
    assert host.startswith("104 脚本返回码非零：Analyse execute object task result: ")
    assert f"agentId={AGENT}" in host and "exitCode=256" in host and "[Job:" not in host
    # twelve pull lines are one event with a count, timed by the first, naming the last
    last_pull = next(r for r in recs if r.message.endswith("Start pull gse task result, times: 12"))
    assert last_pull.time_text is not None
    polling_events = _texts(_phase(tl, "result_polling"))
    assert polling_events[0] == (
        f"Start pull gse task result, times: 1–12（拉取结果 12 次，末次 {last_pull.time_text[11:]}）"
    )
    assert sum("Start pull gse task result" in t for t in polling_events) == 1
    assert any(
        t.startswith("Finish gse task") and t.endswith("executeResult:2（FAILED 失败）")
        for t in polling_events
    )
    assert _texts(_phase(tl, "callback"))[0].startswith("Begin to dispatch notification event:")


def test_phase_time_is_its_last_line_and_never_runs_backwards() -> None:
    recs = _records(failed_script_chain(pulls=5))
    tl = build_timeline(recs, STEP)
    execution, polling_entry = _phase(tl, "execution"), _phase(tl, "result_polling")
    # host results are analysed while the engine polls: the first pull comes before the first result
    assert polling_entry.events[0].time is not None and execution.events[0].time is not None
    assert polling_entry.events[0].time < execution.events[0].time
    # ... yet the phases, timed by their ends, stay in order
    finish = next(r for r in recs if r.message.startswith("Finish gse task"))
    assert execution.time is not None and polling_entry.time is not None
    assert execution.time <= polling_entry.time
    assert finish.time_text is not None and finish.time_text <= polling_entry.time
    assert_readable(tl)


def test_failures_come_before_milestones_when_there_are_more_than_five() -> None:
    c = Chain()
    run_prologue(c)
    dispatch_ok(c)
    codes = [(117, "agent is offline"), (122, "user not exist"), (1326, "logon failure"), (120, "timeout")]
    results = [
        result_line(
            agent=f"0200000000525400798098169675137559{n:02d}", status=5, error_code=code, error_msg=msg
        )
        for n, (code, msg) in enumerate(codes)
    ]
    results += [
        result_line(agent=f"0200000000525400798098169675137560{n:02d}", status=5, exit_code=256)
        for n in range(2)
    ]
    results += [
        result_line(agent=f"0200000000525400798098169675137561{n:02d}", status=2, exit_code=0)
        for n in range(9)
    ]
    polling(c, results=results)
    refresh_and_notify(c)
    tl = build_timeline(_records(c), STEP)
    assert_readable(tl)
    execution = _texts(_phase(tl, "execution"))
    assert len(execution) == MAX_PHASE_EVENTS
    # each failing error code is its own finding; the two exit-code hosts are one event with a count
    for code in (117, 122, 1326, 120):
        assert sum(f"errorCode={code}," in t for t in execution) == 1
    assert any("exitCode=256" in t and "（共 2 条" in t for t in execution)
    assert not any(t.startswith("9 执行成功") for t in execution)  # successes lose to failures


def test_successful_hosts_are_one_event_with_a_count() -> None:
    c = Chain()
    run_prologue(c)
    dispatch_ok(c)
    ok = [
        result_line(agent=f"0200000000525400798098169675137561{n:02d}", status=2, exit_code=0)
        for n in range(7)
    ]
    polling(c, results=[*ok, result_line(status=5, exit_code=256)])
    refresh_and_notify(c)
    tl = build_timeline(_records(c), STEP)
    execution = _texts(_phase(tl, "execution"))
    assert len(execution) == 2
    assert execution[0].startswith("9 执行成功：") and "（共 7 条，至 " in execution[0]
    assert execution[1].startswith("104 脚本返回码非零：")


def test_retried_step_shows_the_latest_run_only() -> None:
    c = failed_script_chain()
    c.start = c.start.replace(minute=20)
    c._n = 0
    run_prologue(c, 1, trace=T2, retry=True)
    dispatch_ok(c, 1, trace=T2)
    polling(c, 1, trace=T2, results=[result_line(1, status=5, error_code=117, error_msg="agent is offline")])
    refresh_and_notify(c, 1, trace=T2)
    recs = _records(c)
    tl = build_timeline(recs, STEP)
    assert_readable(tl)
    events = [e for entry in tl for e in entry.events]
    assert events and all(e.time is not None and e.time >= "2024-05-30 11:20:" for e in events)
    assert _texts(_phase(tl, "initialization"))[0] == f"Retry-fail for step, stepInstanceId={STEP}"
    [host] = _texts(_phase(tl, "execution"))
    assert "errorCode=117" in host and "exitCode=256" not in host  # not the first run's result
    assert _phase(tl, "parameter_check").events == []  # the retry has no creation lines
    # the first run, asked for, has its own events
    first = build_timeline(recs, STEP, execute_count=0)
    assert "exitCode=256" in _texts(_phase(first, "execution"))[0]


def test_missing_phase_keeps_its_finding_and_shows_what_was_seen() -> None:
    c = Chain()
    run_prologue(c)
    c.add(
        "INFO",
        f"[{key()}] Sending task to gse server",
        logger=L_START,
        thread="gse.task.service.job.execute-4",
    )
    c.add(
        "INFO",
        "[BaseBkApiClient] Request|tenantId=default|method=POST|uri=/api/v2/task/extensions/"
        "async_execute_script|reqStr={}",
        logger=L_API,
        thread="gse.task.service.job.execute-4",
    )
    tl = build_timeline(_records(c), STEP)
    dispatch = _phase(tl, "dispatch")
    assert dispatch.status == "missing"
    assert dispatch.note == "未见 `Start gse task successfully`（已有 `Sending task to gse server`）"
    assert _texts(dispatch) == ["Sending task to gse server"]
    for phase in ("execution", "result_polling", "callback"):
        entry = _phase(tl, phase)
        assert entry.status == "skipped" and entry.events == [] and entry.time is None
    assert_readable(tl)


def test_ok_phase_note_leaves_the_lines_to_the_events() -> None:
    tl = build_timeline(_records(failed_script_chain()), STEP)
    dispatch = _phase(tl, "dispatch")
    assert dispatch.status == "ok" and dispatch.note == ""
    polling_entry = _phase(tl, "result_polling")
    assert polling_entry.note == "拉取结果 3 次；GSE 任务结束 executeResult:2（FAILED 失败）"


def test_long_lines_are_cut_between_values_never_inside_one() -> None:
    secret = "S3cr3t-" + "x" * 30
    c = Chain()
    run_prologue(c)
    filler = ", ".join(f"field{n}=value{n}" for n in range(12))
    c.add(
        "ERROR",
        f"[{key()}] Start gse task fail, response: GseTaskResponse(errorCode=1, {filler}, password={secret})",
        logger=L_START,
        thread="gse.task.service.job.execute-4",
    )
    tl = build_timeline(_records(c), STEP)
    [text] = _texts(_phase(tl, "dispatch"))
    assert len(text) <= MAX_EVENT_CHARS and text.endswith("…")
    assert "password=" not in text and "S3cr3t" not in text  # the value crossing the cut is dropped whole


def test_run_span_is_first_to_last_line_of_the_run() -> None:
    c = failed_script_chain()
    recs = _records(c)
    span = run_span(select_run(recs, STEP))
    assert span is not None
    assert span.start == recs[0].time_text and span.end == recs[-1].time_text
    first, last = recs[0].time, recs[-1].time
    assert first is not None and last is not None
    assert span.seconds == round((last - first).total_seconds(), 3) > 0
    assert run_span(select_run([], STEP)) is None


def test_rolling_step_keeps_its_batches_apart() -> None:
    sc = next(s for s in load_scenarios() if s.name == "holdout_rolling_batch2_exit_code")
    cond = condense(parse_text(sc.logs_text), step_instance_id=sc.expected.step_instance_id)
    tl = cond.timeline
    assert_readable(tl)
    assert _texts(_phase(tl, "initialization")) == [
        f"[批次 1] Start rolling step, stepInstanceId={STEP_ROLLING}, batch: 1",
        f"[批次 2] Start rolling step, stepInstanceId={STEP_ROLLING}, batch: 2",
    ]
    dispatch = _texts(_phase(tl, "dispatch"))
    assert [t.split(" ", 2)[:2] for t in dispatch] == [["[批次", "1]"]] * 2 + [["[批次", "2]"]] * 2
    polling_events = _texts(_phase(tl, "result_polling"))
    pulls = [t for t in polling_events if "Start pull gse task result" in t]
    assert len(pulls) == 2 and pulls[0].startswith("[批次 1]") and pulls[1].startswith("[批次 2]")
    assert "（拉取结果 7 次" in pulls[1]
    finishes = [t for t in polling_events if "Finish gse task" in t]
    assert finishes[0].endswith("executeResult:1（SUCCESS 成功）")
    assert finishes[1].endswith("executeResult:2（FAILED 失败）")
    [failed] = [t for t in _texts(_phase(tl, "execution")) if t.startswith("[批次 2] 104")]
    assert "exitCode=2" in failed
    assert cond.span is not None and cond.span.start < cond.span.end
