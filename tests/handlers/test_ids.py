"""extract_ids on what on-call engineers actually paste."""

from __future__ import annotations

import pytest

from handlers.ids import ExtractedIds, IdRef, extract_ids

STEP = 20031265375
TASK = 20026160406
TRACE = "84a2e275a062728b9b54aab16dea4289"


def keys(text: str, max_ids: int = 5) -> list[str]:
    return [r.key for r in extract_ids(text, max_ids=max_ids).refs]


def one(text: str) -> IdRef:
    refs = extract_ids(text, max_ids=5).refs
    assert len(refs) == 1, refs
    return refs[0]


# --------------------------------------------------------------------------- bare and labelled ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@job-doctor 帮忙看下 20031265375 为啥失败", [f"step:{STEP}"]),
        ("20031265375", [f"step:{STEP}"]),
        ("帮忙看下20031265375为啥失败", [f"step:{STEP}"]),
        ("stepInstanceId 20031265375", [f"step:{STEP}"]),
        ("stepInstanceId=20031265375", [f"step:{STEP}"]),
        ("stepInstanceId：20031265375 失败了", [f"step:{STEP}"]),
        ("step_instance_id: 20031265375", [f"step:{STEP}"]),
        ('{"stepInstanceId": "20031265375"}', [f"step:{STEP}"]),
        ("步骤 20031265375 执行失败", [f"step:{STEP}"]),
        ("步骤ID：20031265375", [f"step:{STEP}"]),
        ("步骤ID是20031265375", [f"step:{STEP}"]),
        ("step 20031265375 failed", [f"step:{STEP}"]),
        ("帮忙看下执行 20031265375 失败原因", [f"step:{STEP}"]),
        ("20031265375 步骤失败了", [f"step:{STEP}"]),
        ("20031265375 分析一下", [f"step:{STEP}"]),
        ("步骤ID20031265375", [f"step:{STEP}"]),
        ("报错 20031265375 了", [f"step:{STEP}"]),  # too long for an error code
        ("stepInstanceId=20031265375, retryCount=2", [f"step:{STEP}"]),
        # community installs have small ids; labelled they are always accepted
        ("stepInstanceId: 7", ["step:7"]),
        ("步骤 123 失败了", ["step:123"]),
        ("帮忙看下 100 为啥失败", ["step:100"]),
        ("100", ["step:100"]),  # the answer to "请提供 stepInstanceId"
        ("１２３４５６７", ["step:1234567"]),  # fullwidth digits
        # the same id twice is one ref
        ("20031265375 20031265375", [f"step:{STEP}"]),
    ],
)
def test_step_ids_are_found(text: str, expected: list[str]) -> None:
    assert keys(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "状态码 310 是什么意思",
        "310 是什么意思",
        "错误码 1240002 是什么错误",
        "1240002 是什么错误",
        "exit code 127 是什么原因",
        "返回码 -1 代表什么",
        "第2步失败了",
        "步骤2失败了",
        "step 3 failed",
        "有3台机器失败",
        "100 台机器执行超时",
        "11:09 的时候失败了",
        "2024-05-01 10:00:00 开始报错",
        "20240501 那天的任务",
        "5月1日 报错",
        "10.0.0.1 上执行失败",
        "agent 10.0.0.1:48668 连不上",
        "升级到 v3.10 之后失败",
        "升级到 3.12.1 之后失败",
        "HTTP 500 了",
        "业务 2 下的作业挂了",
        "端口 48668 不通",
        "执行了 300 秒超时",
        "等了 30 分钟还在执行",
        "runTime 1666238534935",
        "耗时 1500 ms",
        "50% 的主机失败",
        "下发阶段失败一般是什么原因",
        "怎么查 GSE agent 状态",
        "gseTaskId=30000000001",
        "bk_host_id: 123456",
        "spanId a1b2c3d4e5f6a7b8",
        "我们有 500 多台机器",  # a quantity without failure words
        "",
        "👍",
    ],
)
def test_numbers_that_are_not_ids(text: str) -> None:
    assert keys(text) == []


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("link", "step", "task", "execute_count", "batch", "scope"),
    [
        (
            f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId={STEP}&retryCount=1&from=historyTask",
            STEP,
            TASK,
            1,
            None,
            ("biz", 2),
        ),
        (
            f"http://job.example.com/biz_set/9991001/execute/step/{TASK}?stepInstanceId={STEP}&executeCount=2&batch=0",
            STEP,
            TASK,
            2,
            0,
            ("biz_set", 9991001),
        ),
        (
            f"https://paas.example.com/o/bk_job/biz/5/execute/task/{TASK}?stepInstanceId={STEP}",
            STEP,
            TASK,
            None,
            None,
            ("biz", 5),
        ),
        (
            f"https://job.example.com/api_execute/{TASK}?stepInstanceId={STEP}&retryCount=0&batch=3",
            STEP,
            TASK,
            0,
            3,
            None,
        ),
        (
            f"https://job.example.com/api_execute_step/{TASK}/{STEP}?retryCount=2&batch=1",
            STEP,
            TASK,
            2,
            1,
            None,
        ),
        (f"https://job.example.com/api_execute_step/{TASK}/{STEP}", STEP, TASK, None, None, None),
        # URL-encoded query, and a link encoded inside a login redirect
        (
            f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId%3D{STEP}%26retryCount%3D1",
            STEP,
            TASK,
            1,
            None,
            ("biz", 2),
        ),
        (
            "https://login.example.com/?c_url=https%3A%2F%2Fjob.example.com%2Fbiz%2F2%2Fexecute%2Fstep%2F"
            f"{TASK}%3FstepInstanceId%3D{STEP}%26retryCount%3D1",
            STEP,
            TASK,
            1,
            None,
            ("biz", 2),
        ),
        (
            f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId={STEP}&amp;retryCount=3",
            STEP,
            TASK,
            3,
            None,
            ("biz", 2),
        ),
        # scheme-less, as copied from the address bar
        (
            f"job.example.com/biz/2/execute/step/{TASK}?stepInstanceId={STEP}",
            STEP,
            TASK,
            None,
            None,
            ("biz", 2),
        ),
    ],
)
def test_step_links(
    link: str,
    step: int,
    task: int,
    execute_count: int | None,
    batch: int | None,
    scope: tuple[str, int] | None,
) -> None:
    ref = one(f"帮忙看下 {link} 为啥失败")
    assert ref.kind == "step"
    assert (ref.step_instance_id, ref.task_instance_id, ref.execute_count, ref.batch) == (
        step,
        task,
        execute_count,
        batch,
    )
    assert (ref.bk_scope_type, ref.bk_scope_id) == (scope or (None, None))
    assert str(STEP) in ref.source or "%" in ref.source


@pytest.mark.parametrize(
    ("link", "scope"),
    [
        (f"https://job.example.com/biz/2/execute/task/{TASK}", ("biz", 2)),
        (f"https://job.example.com/biz/2/execute/step/{TASK}", ("biz", 2)),  # step page without a step id
        (f"https://job.example.com/biz_set/8/execute/quick-launch/{TASK}", ("biz_set", 8)),
        (f"https://job.example.com/api_execute/{TASK}", None),
        (f"https://paas.example.com/o/bk_job/3/execute/step/{TASK}", None),  # legacy appId link
        (f"http://10.0.0.5:8080/job/biz/2/execute/task/{TASK}", ("biz", 2)),  # site root with a sub-path
    ],
)
def test_job_instance_links_ask_for_the_step(link: str, scope: tuple[str, int] | None) -> None:
    ref = one(link)
    assert ref.kind == "task_only"
    assert ref.task_instance_id == TASK and ref.step_instance_id is None
    assert (ref.bk_scope_type, ref.bk_scope_id) == (scope or (None, None))


LINK = f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId={STEP}&retryCount=1"


@pytest.mark.parametrize(
    "text",
    [
        f"看下（{LINK}）",
        f"看下({LINK})",
        f"【{LINK}】",
        f"「{LINK}」谢谢",
        f"《{LINK}》",
        f"“{LINK}”",
        f"链接：{LINK}，帮忙看看。",
        f"看下{LINK}谢谢",
        f"{LINK}。",
        f"[作业链接]({LINK})",
        f"[{LINK}]({LINK})",
        f"<{LINK}>",
        f"**{LINK}**",
        f"`{LINK}`",
    ],
)
def test_links_wrapped_in_punctuation_or_markdown(text: str) -> None:
    ref = one(text)
    assert (ref.kind, ref.step_instance_id, ref.task_instance_id, ref.execute_count) == (
        "step",
        STEP,
        TASK,
        1,
    )


def test_link_digits_are_not_read_as_bare_ids() -> None:
    # the host port, scope id and job instance id inside the link are not steps
    assert keys(f"http://10.0.0.5:8080/biz/123456/execute/step/{TASK}?stepInstanceId={STEP}") == [
        f"step:{STEP}"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://job.example.com/biz/2/execute/step/2002616…", []),
        ("https://job.example.com/biz/2/execute/step/2002616...", []),
        (
            f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId={STEP}&retryCount=1&from=hist…",
            [f"step:{STEP}"],
        ),
        (f"https://job.example.com/biz/2/execute/step/{TASK}?stepInstanceId=200312…", [f"task:{TASK}"]),
    ],
)
def test_links_shortened_for_display_do_not_yield_cut_ids(text: str, expected: list[str]) -> None:
    assert keys(text) == expected


def test_unrelated_links_are_ignored() -> None:
    assert keys("文档 https://bk.tencent.com/docs/markdown/JOB/UserGuide/123456789.md 里有") == []


def test_trace_id_inside_a_log_search_link() -> None:
    ref = one(f"https://bklog.example.com/#/retrieve/7?traceId={TRACE}&spaceUid=bkcc__2")
    assert ref.kind == "request" and ref.request_id == TRACE


# --------------------------------------------------------------------------- request ids


@pytest.mark.parametrize(
    "text",
    [
        f"request_id: {TRACE}",
        f"traceId={TRACE}",
        f"job_request_id {TRACE} 这个请求失败了",
        f"{TRACE.upper()}",
        f"看下{TRACE}怎么回事",
        f'{{"job_request_id": "{TRACE}", "result": false}}',
    ],
)
def test_request_ids_are_normalised_lowercase(text: str) -> None:
    ref = one(text)
    assert ref.kind == "request" and ref.request_id == TRACE
    assert ref.key == f"req:{TRACE}"


def test_dashed_uuid_is_flagged_not_taken() -> None:
    result = extract_ids("requestId='4f0c2b7e-9a51-4d8e-b1c3-7f2a6d5e8c90' 这个失败了", max_ids=5)
    assert result.refs == [] and result.uuid_seen


def test_no_uuid_flag_without_uuid() -> None:
    assert not extract_ids(f"traceId={TRACE}", max_ids=5).uuid_seen


@pytest.mark.parametrize(
    "text",
    [
        "84a2e275a062728b9b54aab16dea428",  # 31 hex
        "84a2e275a062728b9b54aab16dea42891",  # 33 hex
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # sha1
        "84a2E275a062728b9B54aab16dea4289",  # mixed case: a random token
    ],
)
def test_not_request_ids(text: str) -> None:
    assert [r for r in extract_ids(text, max_ids=5).refs if r.kind == "request"] == []


# --------------------------------------------------------------------------- several ids, limits


def test_several_ids_in_order_deduplicated() -> None:
    text = (
        f"这几个都失败了：20031265376、{LINK}，还有 traceId {TRACE}，"
        f"以及 20031265376 和 api_execute_step/{TASK}/20031265999"
    )
    assert keys(text) == ["step:20031265376", f"step:{STEP}", f"req:{TRACE}", "step:20031265999"]


def test_duplicate_bare_id_takes_details_from_the_link() -> None:
    ref = one(f"{STEP} 失败了，链接 {LINK}")
    assert (ref.step_instance_id, ref.task_instance_id, ref.execute_count, ref.bk_scope_id) == (
        STEP,
        TASK,
        1,
        2,
    )


def test_over_limit_is_counted() -> None:
    text = " ".join(str(STEP + i) for i in range(7))
    result = extract_ids(text, max_ids=3)
    assert [r.step_instance_id for r in result.refs] == [STEP, STEP + 1, STEP + 2]
    assert result.over_limit == 4


def test_max_ids_zero_counts_everything_as_over_limit() -> None:
    result = extract_ids(f"{STEP} {TRACE}", max_ids=0)
    assert result.refs == [] and result.over_limit == 2


def test_job_and_step_written_out() -> None:
    ref = one(f"作业实例 {TASK} 步骤 {STEP} 失败了")
    assert (ref.kind, ref.step_instance_id, ref.task_instance_id) == ("step", STEP, TASK)


def test_job_instance_only_in_prose() -> None:
    ref = one(f"作业实例ID：{TASK} 失败了")
    assert ref.kind == "task_only" and ref.task_instance_id == TASK


def test_execute_count_next_to_a_bare_id() -> None:
    ref = one(f'{{"stepInstanceId": {STEP}, "executeCount": 2, "batch": 1}}')
    assert (ref.step_instance_id, ref.execute_count, ref.batch) == (STEP, 2, 1)


def test_pasted_engine_log_line() -> None:
    line = (
        f"[2024-05-01 10:00:00.123][job-execute,{TRACE},a1b2c3d4e5f6a7b8] INFO  [pool-1-thread-3] "
        f"c.t.b.j.e.e.l.JobListener : Handle job event, event: JobEvent(action=START, "
        f"jobInstanceId={TASK}, stepInstanceId={STEP}, gseTaskId=30000000001)"
    )
    result = extract_ids(line, max_ids=5)
    assert [r.key for r in result.refs] == [f"req:{TRACE}", f"step:{STEP}"]
    assert result.steps[0].task_instance_id == TASK


def test_id_beyond_java_long_is_ignored() -> None:
    assert keys("stepInstanceId=9999999999999999999") == []


def test_negative_max_ids_is_an_error() -> None:
    with pytest.raises(ValueError):
        extract_ids("1", max_ids=-1)


def test_result_helpers() -> None:
    result = extract_ids(f"{STEP} {TRACE} https://job.example.com/api_execute/{TASK}", max_ids=5)
    assert isinstance(result, ExtractedIds)
    assert [len(result.steps), len(result.requests), len(result.task_only)] == [1, 1, 1]


# --------------------------------------------------------------------------- crafted input


def test_crafted_repetitions_stay_linear() -> None:
    """`what is ` * N was quadratic (3.9 s at 64 KB); every input now costs time in proportion."""
    import time

    for unit in ("what is ", "what does x ", "stepInstanceId=", "1 ", "https://a/", "%", "步骤ID："):
        text = unit * (64 * 1024 // len(unit))
        start = time.perf_counter()
        extract_ids(text, max_ids=3)
        assert time.perf_counter() - start < 1.0, unit


def test_what_does_mean_still_marks_a_code_question() -> None:
    assert extract_ids("what does 310 mean", max_ids=3).refs == []
    assert extract_ids("what does 123456 mean", max_ids=3).refs == []
