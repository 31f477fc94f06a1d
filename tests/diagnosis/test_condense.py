"""condense(): budget, key lines kept whole, repeats collapsed, runs summarised, cost linear in input."""

from __future__ import annotations

import time

from bot.diagnosis.condense import condense, estimate_tokens
from bot.diagnosis.parser import parse_text
from bot.diagnosis.records import LogRecord
from tests.diagnosis.chains import (
    AGENT,
    GSE_STACK,
    L_API,
    L_START,
    T2,
    Chain,
    J,
    S,
    T,
    dispatch_ok,
    failed_script_chain,
    key,
    polling,
    refresh_and_notify,
    result_line,
    run_prologue,
)


def _records(c: Chain) -> list[LogRecord]:
    return parse_text(c.text())


def test_polling_collapsed_with_count() -> None:
    cd = condense(_records(failed_script_chain(pulls=37)), step_instance_id=S)
    assert f"×37 [{key()}]: Start pull gse task result (times 1..37)" in cd.text
    assert "Start pull gse task result, times: 5" not in cd.text
    pull = next(g for g in cd.collapsed if "Start pull" in g.text)
    assert (
        pull.count == 37
        and pull.first.message.endswith("times: 1")
        and pull.last.message.endswith("times: 37")
    )
    assert cd.counts["total"]["collapsed"] >= 37 + 36
    assert cd.counts["phase"]["result_polling"] >= 37


def test_key_lines_selected_and_kept_whole() -> None:
    cd = condense(_records(failed_script_chain()), step_instance_id=S)
    msgs = [r.message for r in cd.key_lines]
    assert any("ScriptExecuteObjectTaskResult[" in m and "exitCode=256" in m for m in msgs)
    assert any(m.startswith("Finish gse task") and m.endswith("executeResult:2") for m in msgs)
    assert any(m.startswith("Refresh step according") and "gseTaskStatus: FAIL" in m for m in msgs)
    assert not any(m.startswith("Start step") for m in msgs)
    for r in cd.key_lines:
        assert r.message in cd.text
    assert cd.execute_count == 0 and cd.task_instance_id == J and cd.request_ids == [T]
    assert [e.status for e in cd.timeline] == ["ok", "ok", "ok", "fail", "ok", "ok"]


def _noisy_failed_chain(pulls: int = 300) -> Chain:
    """A dispatch that fails after a long noisy prologue; decisive lines are long and carry stacks."""
    c = Chain()
    run_prologue(c)
    th = "gse.task.service.job.execute-4"
    for n in range(120):  # distinct info lines (not collapsible)
        c.add(
            "INFO",
            f"Compute step input variable, stepInputVariables:[var{n}=value-{'x' * (n % 7)}{chr(97 + n % 26)}]",
            thread=th,
        )
    c.add("INFO", f"[{key()}] Sending task to gse server", logger=L_START, thread=th)
    big_resp = (
        '{"code":1210001,"result":false,"message":"GSE server unavailable: '
        + "detail " * 200
        + '","data":null}'
    )
    c.add(
        "INFO",
        "[BaseBkApiClient] Response|tenantId=default|bkApiRequestId=6a1f|method=POST|uri=/api/v2/task/"
        f"extensions/async_execute_script|success=true|costTime=35|resp={big_resp}",
        logger=L_API,
        thread=th,
    )
    deep = (
        GSE_STACK + "\n" + "\n".join(f"\tat com.example.Frame{i}.call(Frame{i}.java:{i})" for i in range(80))
    )
    c.add(
        "ERROR",
        f"Handling gse task event error, event:GseTaskEvent[action=1, actionDesc=START, gseTaskId=30001, "
        f"jobInstanceId={J}, stepInstanceId={S}, executeCount=0, batch=0, requestId='3f2c', source=null, time=x]",
        thread=th,
        stack=deep,
    )
    for n in range(1, pulls + 1):
        c.add("INFO", f"Some repeated heartbeat {n}", thread="execute-scheduler-3")
    refresh_and_notify(c, status="ABNORMAL_STATE")
    return c


def test_budget_respected_and_key_lines_never_cut() -> None:
    recs = _records(_noisy_failed_chain())
    full = condense(recs, step_instance_id=S, token_budget=100_000)
    assert not full.over_budget and "Compute step input variable" in full.text
    for budget in (6000, 3000, 1800):
        cd = condense(recs, step_instance_id=S, token_budget=budget)
        assert estimate_tokens(cd.text) <= budget, budget
        assert cd.tokens == estimate_tokens(cd.text) and not cd.over_budget
        for r in cd.key_lines:
            assert r.message in cd.text  # whole, never truncated
        lines = cd.text.split("\n")
        assert any(line.endswith(r.message) for r in cd.key_lines for line in lines)
        # the first stack line, the first two frames and the Caused-by line survive
        assert "com.tencent.bk.job.common.exception.InternalException: Request bk open api error" in cd.text
        assert "BaseBkApiClient.doRequest(BaseBkApiClient.java:210)" in cd.text
        assert "Caused by: java.net.SocketTimeoutException: Read timed out" in cd.text
    tight = condense(recs, step_instance_id=S, token_budget=1800)
    assert "Frame79" not in tight.text and "行堆栈" in tight.text and "已省略" in tight.text
    assert "Compute step input variable, stepInputVariables:[var0" not in tight.text


def test_drop_order_info_lines_before_groups_before_stack() -> None:
    recs = _records(_noisy_failed_chain())
    full = condense(recs, step_instance_id=S, token_budget=100_000)
    # a budget that forces dropping the info lines but leaves room for the collapsed group and the stack
    budget = full.tokens - 1500
    cd = condense(recs, step_instance_id=S, token_budget=budget)
    assert estimate_tokens(cd.text) <= budget
    assert "×300 Some repeated heartbeat 1（末条：Some repeated heartbeat 300）" in cd.text
    assert "Frame79" in cd.text


def test_over_budget_when_key_lines_alone_do_not_fit() -> None:
    recs = _records(_noisy_failed_chain())
    cd = condense(recs, step_instance_id=S, token_budget=300)
    assert cd.over_budget
    for r in cd.key_lines:
        assert r.message in cd.text


def test_many_failed_hosts_fold_repeats_only_when_needed() -> None:
    c = Chain()
    run_prologue(c)
    dispatch_ok(c)
    agents = [f"0200000000525400798098169675137{n:05d}" for n in range(400)]
    polling(
        c, pulls=2, results=[result_line(agent=a, error_code=117, error_msg="agent offline") for a in agents]
    )
    refresh_and_notify(c)
    recs = _records(c)
    small = condense(recs, step_instance_id=S, token_budget=4000)
    assert agents[0] in small.text and agents[1] in small.text and agents[-1] in small.text
    assert "同类关键行另有 397 条" in small.text
    assert len(small.key_lines) >= 400  # the full list stays available to callers
    roomy = condense(recs, step_instance_id=S, token_budget=200_000)
    assert all(a in roomy.text for a in agents)
    tl = {e.phase: e for e in small.timeline}
    assert tl["execution"].status == "fail" and "310 Agent 异常 ×400" in tl["execution"].note


def test_retried_step_latest_run_and_earlier_summary() -> None:
    c = failed_script_chain()
    c.start = c.start.replace(minute=20)
    c._n = 0
    run_prologue(c, 1, trace=T2, retry=True)
    dispatch_ok(c, 1, trace=T2)
    polling(
        c, 1, trace=T2, results=[result_line(1, error_code=117, error_msg="agent lost")], execute_result=2
    )
    refresh_and_notify(c, 1, trace=T2)
    cd = condense(_records(c), step_instance_id=S)
    assert cd.execute_count == 1 and cd.request_ids == [T2]
    assert [r.execute_count for r in cd.runs] == [0, 1] and [r.diagnosed for r in cd.runs] == [False, True]
    assert len(cd.earlier_runs) == 1
    early = cd.earlier_runs[0]
    assert (
        early.startswith("executeCount=0：2024-05-30 11:09:")
        and "FAIL" in early
        and "104 脚本返回码非零" in early
    )
    assert "errorCode=117" in cd.text and "exitCode=256" not in cd.text.split("## 日志", 1)[1]
    first = condense(_records(c), step_instance_id=S, execute_count=0)
    assert first.execute_count == 0 and first.request_ids == [T]


def test_duplicates_in_input_do_not_change_the_result() -> None:
    recs = _records(failed_script_chain())
    once = condense(recs, step_instance_id=S)
    twice = condense(recs + list(reversed(recs)), step_instance_id=S)
    assert twice.text == once.text and twice.counts == once.counts


def test_counts_and_estimate_tokens() -> None:
    cd = condense(_records(failed_script_chain(pulls=4)), step_instance_id=S)
    assert cd.counts["level"] == {"INFO": cd.counts["total"]["run"]}
    assert sum(cd.counts["phase"].values()) == cd.counts["total"]["run"]
    assert estimate_tokens("abcdef") == 2 and estimate_tokens("执行失败") == 4
    assert estimate_tokens("") == 0


def test_no_records() -> None:
    cd = condense([], step_instance_id=S)
    assert cd.key_lines == [] and cd.request_ids == [] and cd.execute_count is None
    assert cd.timeline[0].status == "missing"
    assert "stepInstanceId=" + str(S) in cd.text


def _big_chain_text(n_runs: int) -> str:
    c = Chain(step_ms=1)
    for _ in range(n_runs):
        run_prologue(c)
        dispatch_ok(c)
        polling(c, pulls=40, results=[result_line(agent=f"{AGENT[:-3]}{k:03d}") for k in range(20)])
    refresh_and_notify(c)
    return c.text()


def test_condense_cost_is_a_small_multiple_of_parsing() -> None:
    text = _big_chain_text(80)  # ~ 9k records in one run's window
    best_parse = best_condense = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        recs = parse_text(text)
        t1 = time.perf_counter()
        condense(recs, step_instance_id=S)
        t2 = time.perf_counter()
        best_parse, best_condense = min(best_parse, t1 - t0), min(best_condense, t2 - t1)
    assert len(recs) > 8_000
    assert best_condense < 8 * best_parse, (best_parse, best_condense)
