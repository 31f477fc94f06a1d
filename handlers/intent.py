"""Tell a message about one concrete failure from a general question or chatter (DESIGN "Ask or answer?")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Intent = Literal["failure_without_id", "question", "chatter"]
CommandName = Literal["help", "cancel", "status", "reanalyze", "detail"]

_COMMANDS: tuple[tuple[re.Pattern[str], CommandName], ...] = (
    (re.compile(r"^(?:帮助|help|菜单|使用说明|\?|？|/help)$", re.I), "help"),
    (re.compile(r"^(?:取消|cancel|算了|不用了|/cancel)$", re.I), "cancel"),
    (re.compile(r"^(?:状态|status|进度|/status)$", re.I), "status"),
    (
        re.compile(r"^(?:重新分析|重新诊断|再分析一次|reanalyze|retry|/reanalyze)(?:\s+|[:：]\s*|$)", re.I),
        "reanalyze",
    ),
    (re.compile(r"^(?:详情|完整报告|全文|detail|details|/detail)(?:\s+|[:：]\s*|$)", re.I), "detail"),
)

# Hello, or "what can you do": answered with the usage. The whole message, addressing words allowed.
_GREETING = re.compile(
    r"^(?:(?:你好|您好|hello|hi|hey|嗨|哈喽|哈啰|在吗|在么|在嘛|在不在|有人吗|早上好|上午好|中午好|下午好|晚上好|"
    r"早安|早|你是谁|你能做什么|你能干什么|你会什么|你会干什么|能做什么|怎么用|如何使用|怎么使用|使用方法|使用说明|"
    r"help|帮助|job-?doctor|机器人|bot|小助手|同学)[\s,，.。!！?？~～、啊呀呢哈啦嘛]*)+$",
    re.I,
)

_FEEDBACK = re.compile(r"^(👍|👎|赞|准确|有用|不准确|不准|错了|不对)(?:\s*[:：,，]?\s*(.*))?$", re.S)

# A concrete incident: the asker points at something that happened.
_CONCRETE = re.compile(
    r"这个|这次|刚才|刚刚|我的|我们的|帮我|帮忙|看看|看下|看一下|瞅瞅|分析下|分析一下|诊断|排查一下|查一下|查下"
    r"|今天|昨天|上午|下午|早上|晚上|线上|生产"
)
_FAILURE = re.compile(
    r"失败|挂了|报错|出错|异常|不成功|没成功|执行不了|跑不起来|卡住|超时|错误|fail|error|挂掉|崩", re.I
)
_OBJECT = re.compile(r"任务|作业|步骤|脚本|分发|执行|job|step|task", re.I)
# General knowledge questions.
_GENERAL = re.compile(
    r"一般|通常|是什么|什么意思|啥意思|含义|意思是|怎么查|如何|怎么看|怎样|哪些|有哪几|区别|是啥|为什么会|原理|介绍|说明一下|解释"
)
# "错误码 1244003": asks what a code means, however few words come with it.
_CODE_QUESTION = re.compile(
    r"(?i)(?:状态码|错误码|错误代码|返回码|error\s*code|status\s*code)\s*[:：是为]?\s*-?\d"
)
_QUESTION = re.compile(r"[?？]|吗|呢|怎么|什么|为啥|为什么|哪|多少|能不能|可以")


@dataclass(frozen=True)
class Command:
    name: CommandName
    arg: str


def parse_command(text: str) -> Command | None:
    t = text.strip()
    for pattern, name in _COMMANDS:
        m = pattern.match(t)
        if m:
            return Command(name, t[m.end() :].strip())
    return None


def parse_feedback(text: str) -> tuple[str, str] | None:
    m = _FEEDBACK.match(text.strip())
    if not m:
        return None
    word = m.group(1)
    verdict = "up" if word in ("👍", "赞", "准确", "有用") else "down"
    return verdict, (m.group(2) or "").strip()


def is_greeting(text: str) -> bool:
    return bool(_GREETING.match(text.strip()))


def classify(text: str) -> Intent:
    t = text.strip()
    if not t:
        return "chatter"
    general = bool(_GENERAL.search(t)) or bool(_CODE_QUESTION.search(t))
    concrete = bool(_CONCRETE.search(t))
    failure = bool(_FAILURE.search(t))
    if general and not concrete:
        return "question"
    if failure and (concrete or _OBJECT.search(t)):
        return "failure_without_id"
    if failure and not _QUESTION.search(t):
        return "failure_without_id"
    if _QUESTION.search(t) or general:
        return "question"
    return "chatter"
