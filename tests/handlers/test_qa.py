"""Private-chat questions as on-call engineers phrase them, answered without a model."""

from __future__ import annotations

import re

import pytest

from bot.core.models import IncomingMessage
from handlers.intent import classify, is_greeting
from handlers.knowledge import knowledge_snippet, offline_titles
from handlers.qa import Answers

MSG = IncomingMessage(channel="console", chat_id="张三", is_group=False, sender_id="张三", text="")


async def ask(question: str, answers: Answers | None = None) -> str:
    return await (answers or Answers()).answer(MSG, question)


# (phrasing, what the answer must say): each row names a fact only its topic's answer holds.
PHRASINGS = [
    # stuck jobs
    ("为什么一直在执行中", "Execution result log always empty!"),
    ("作业卡住了怎么办", "Execution result log always empty!"),
    ("任务一直running不结束", "轮询 GSE"),
    ("步骤执行了好几个小时还没完", "步骤超时 + 300 秒"),
    ("job stuck", "15 滚动等待"),
    ("一直在跑，停不下来", "7 等待确认"),
    # timeouts
    ("脚本超时怎么办", "102 脚本执行超时"),
    ("timeout", "102 脚本执行超时"),
    ("步骤 Timed out 了", "102 脚本执行超时"),
    ("执行时间太长被杀了", "调大步骤超时"),
    ("5分钟超时怎么办", "102 脚本执行超时"),  # "5" is not status 5 跳过 here
    # accounts
    ("执行账号不存在", "1244003"),
    ("账号[root]不存在是什么原因", "账号管理"),
    ("用户名不存在", "GSE error_code 122"),
    ("windows 密码错误", "312 用户密码不正确"),
    ("account not exist", "account_alias"),
    # permissions
    ("IAM 权限怎么申请", "1238001"),
    ("权限不足", "权限中心"),
    ("permission denied", "1238001"),
    ("没权限执行作业", "1238001"),
    ("调接口报 APP_NO_PERMISSION", "1640301"),
    # file distribution
    ("文件分发失败", "320 文件获取失败"),
    ("源文件不存在", "`Detail:`"),
    ("传文件失败了怎么办", "329 文件传输错误"),
    ("file transfer failed", "320 文件获取失败"),
    ("本地文件过期了", "1244023"),
    ("文件源接入点报错", "1260005"),
    # agents
    ("agent 异常", "GSE 返回 error_code 117"),
    ("Agent 未安装怎么办", "18 Agent 未安装"),
    ("agent 离线了", "310 Agent 异常"),
    ("怎么查 GSE agent 状态", "list_agent_state"),
    ("agent 无数据", "cannot find agent state by agentId"),
    ("节点管理里看 agent 正常吗", "status_code == 2"),
    ("310 怎么办", "重启或重装 Agent"),  # a code with "what to do": the topic, not the table
    # retries
    ("怎么重试", "RETRY_FAIL"),
    ("怎么重做失败的主机", "RETRY_FAIL"),
    ("忽略错误怎么设置", "6 忽略错误"),
    ("retry failed hosts", "RETRY_ALL"),
    ("失败了能不能重跑", "executeCount 加 1"),
    ("能跳过这一步吗", "5 跳过"),
    # other common ones
    ("下发阶段失败一般是什么原因", "async_execute_script"),
    ("状态异常是什么原因", "Handling step event error"),
    ("主机无效", "主机白名单"),
    ("IP 不在业务下", "主机白名单"),
    ("exit code 1 是什么意思", "exitCode=256"),  # the script's exit code, not status 1
    ("脚本返回码非零", "exitCode=256"),
    ("request id 是什么", "job_request_id"),
    ("日志在哪看", "batch_get_job_instance_ip_log"),
    ("回调失败", "Callback using form data failed"),
    ("作业数量超过配额", "1244032"),
    # codes: what a code means comes from the code tables
    ("状态码 310 是什么意思", "主机执行状态 310（GSE_AGENT_ERROR）：Agent 异常"),
    ("错误码 1244003", "接口错误码 1244003（ACCOUNT_NOT_EXIST）"),
    ("312 是什么", "用户密码不正确"),
    ("状态码有哪些", "9 状态异常"),
]


@pytest.mark.parametrize(("question", "expected"), PHRASINGS)
async def test_common_questions_get_their_topic(question: str, expected: str) -> None:
    answer = await ask(question)
    assert expected in answer, answer
    assert "没有现成的答案" not in answer


async def test_a_question_on_two_topics_gets_both() -> None:
    answer = await ask("agent 异常导致脚本超时")
    assert answer.startswith("【超时】\n")
    assert "\n\n【Agent 状态（异常/未安装/查不到）】\n" in answer
    assert "102 脚本执行超时" in answer and "error_code 117" in answer
    both = await ask("没有账号权限")
    assert "【执行账号】" in both and "【权限（权限中心/IAM）】" in both


async def test_unmatched_question_without_model_says_what_it_can_do() -> None:
    answer = await ask("作业平台的滚动执行是怎么分批的")
    assert answer.startswith("这个问题我没有现成的答案。")
    for title in offline_titles():
        assert title in answer
    assert "状态码 310 是什么意思" in answer
    assert "stepInstanceId" in answer and "BK-JOB 步骤链接" in answer and "request_id" in answer
    assert "20031265375 昨天下午3点" in answer


class GroundedModel:
    """An OpenAI-like answerer: it answers from the knowledge it was handed, or not at all."""

    def __init__(self, reply: bool = True) -> None:
        self.reply = reply
        self.questions: list[str] = []

    async def __call__(
        self, question: str, knowledge: str, *, budget_key: str, budget_user: str = ""
    ) -> str | None:
        self.questions.append(question)
        if not self.reply:
            return None  # timed out, budget spent
        grounded = "list_agent_state" in knowledge and "作业一直在执行/卡住" in knowledge
        return f"（{budget_key}）按资料回答：{question}" if grounded else "没有资料"


async def test_with_a_model_open_questions_go_to_it_grounded_in_the_topics() -> None:
    model = GroundedModel()
    answers = Answers(model)
    assert await ask("作业平台的滚动执行是怎么分批的", answers) == (
        "（console:张三）按资料回答：作业平台的滚动执行是怎么分批的"
    )
    # Questions the knowledge answers exactly never reach the model.
    assert "Execution result log always empty!" in await ask("为什么一直在执行中", answers)
    assert "Agent 异常" in await ask("状态码 310 是什么意思", answers)
    assert model.questions == ["作业平台的滚动执行是怎么分批的"]
    # A model that gives nothing: the offline fallback.
    assert (await ask("滚动执行怎么分批", Answers(GroundedModel(reply=False)))).startswith(
        "这个问题我没有现成的答案"
    )


@pytest.mark.parametrize(
    "question", ["状态码 313 是什么意思", "错误码 1299999 代表什么", "code 777?", "GSE 错误码 1150008 是什么"]
)
async def test_a_code_no_table_knows_is_said_to_be_unknown_not_guessed(question: str) -> None:
    model = GroundedModel()
    answer = await ask(question, Answers(model))
    code = re.search(r"\d+", question)
    assert code is not None and answer.startswith(f"我的码表里没有 {code.group()}（")
    assert model.questions == []  # never handed to the model to invent a meaning
    # a known code beside it, or an exit code, is not an unknown code
    assert "Agent 异常" in await ask("状态码 310 是什么意思")
    assert "我的码表里没有" not in await ask("exit code 313 是什么意思")  # the script's own code


def test_knowledge_for_the_model_holds_every_topic() -> None:
    snippet = knowledge_snippet()
    for title in offline_titles():
        assert f"【{title}】" in snippet
    assert "310 Agent 异常" in snippet


@pytest.mark.parametrize(
    "text",
    [
        "你好",
        "您好~",
        "hi",
        "Hi!",
        "hello bot",
        "在吗",
        "在吗？",
        "有人吗",
        "你能做什么",
        "早上好呀",
        "你好，job-doctor",
    ],
)
def test_greetings(text: str) -> None:
    assert is_greeting(text)


@pytest.mark.parametrize(
    "text", ["你好，帮我看看这个任务为什么失败", "hi 20031265375", "在吗 作业挂了", "你好慢", "hive 任务"]
)
def test_not_greetings(text: str) -> None:
    assert not is_greeting(text)


def test_a_code_with_its_label_is_a_question() -> None:
    assert classify("错误码 1244003") == "question"
    assert classify("状态码：310") == "question"
