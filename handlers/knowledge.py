"""Built-in BK-JOB knowledge for private-chat questions, answered exactly without a model.

Status and error codes come from the code tables (bot.core.codes). General
questions get a short, fixed answer for the common topics; anything else goes to the model
when one is configured (the caller decides), grounded in `knowledge_snippet()`.
"""

from __future__ import annotations

import re

from bot.core.codes import codes

_CODE = re.compile(r"(?<![\d.])(-?\d{1,7})(?![\d.])")

_TOPICS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"下发|dispatch|Sending task to gse", re.I),
        "下发阶段失败通常是作业平台调用 GSE 接口失败：bk-gse 网关/GSE API Server 不可用、作业平台应用没有 bk-gse 的调用权限、"
        "GSE 返回非 0 错误码（日志里是 `[BaseBkApiClient] Response|...uri=/api/v2/task/extensions/async_execute_script|...` "
        "或 `Fail to request api|...` 后跟 `Handling gse task event error`），步骤状态多为 9 状态异常；"
        "另一类是目标主机没有可用 Agent（`Script gse task target agent is empty`）。把失败步骤的 stepInstanceId 发给我可以具体分析。",
    ),
    (
        re.compile(r"agent.*(状态|在线|离线|查)|查.*agent|gse.*状态", re.I),
        '查 GSE Agent 状态：GSE 2.0 调用 bk-gse 网关 `POST /api/v2/cluster/list_agent_state`（body `{"agent_id_list": [...]}`），'
        "`status_code == 2`（运行中）才算正常；旧版 GSE 用 ESB `get_agent_status`（`bk_agent_alive` 1 在线 / 0 离线）；"
        "也可以在节点管理里看主机 Agent 状态，或用作业平台 `query_agent_info`（status 1 正常 / 0 异常）。",
    ),
    (
        re.compile(r"超时|timeout", re.I),
        "脚本超时：GSE 返回 status=3 时主机状态为 102 脚本执行超时；如果 GSE 一直没有结果，作业平台在超时时间 + 300 秒后打印 "
        "`Task execution timeout!`，未完成主机记为 15。常见原因是脚本阻塞（后台进程占着 stdout）。可以调大步骤超时或让脚本不阻塞。",
    ),
    (
        re.compile(r"request.?id|traceid|trace id|请求\s*id", re.I),
        "request_id（即 traceId，32 位十六进制）出现在每行日志的 `[job-execute,<traceId>,<spanId>]` 里，作业平台 API 返回的 "
        "`job_request_id` 也是它。发给我 request_id 或 stepInstanceId 都可以分析。",
    ),
    (
        re.compile(r"退出码|返回码|exit\s*code|非零|非 0", re.I),
        "脚本返回码非零：主机状态 104，原因在用户脚本本身。用 `batch_get_job_instance_ip_log` 或作业平台页面查看该主机的脚本输出；"
        "注意 GSE 可能把 `exit 1` 报成 `exitCode=256`（原始 wait status，需除以 256）。",
    ),
)


def answer_code(question: str) -> str | None:
    """Exact answers for the status/error codes a question names, or None."""
    wants_host = bool(re.search(r"主机|host|ip", question, re.I))
    wants_gse = bool(re.search(r"gse|error_?code|错误码", question, re.I))
    c = codes()
    lines: list[str] = []
    for m in _CODE.finditer(question):
        code = int(m.group(1))
        found: list[str] = []
        if code in c.api_error.zh or code in c.apigw_error.zh:
            name = c.api_error.name.get(code) or c.apigw_error.name.get(code, "")
            text = re.sub(r"\{\d\}", "…", c.api_error_zh(code) or "")
            found.append(f"接口错误码 {code}（{name}）：{text}")
        host_status, run_status = c.host_status, c.run_status
        if code in host_status.zh and (wants_host or code >= 100 or code not in run_status.zh):
            found.append(f"主机执行状态 {code}（{host_status.name.get(code, '')}）：{host_status.zh[code]}")
        if code in run_status.zh and not wants_host and code < 100:
            found.append(f"作业/步骤状态 {code}（{run_status.name.get(code, '')}）：{run_status.zh[code]}")
        if code in c.gse.error_to_host_status and (wants_gse or not found):
            host = c.gse.error_to_host_status[code]
            found.append(f"GSE error_code {code}：对应主机状态 {host} {host_status.zh.get(host, '')}")
        lines.extend(found)
    return "\n".join(dict.fromkeys(lines)) if lines else None


def answer_topic(question: str) -> str | None:
    for pattern, text in _TOPICS:
        if pattern.search(question):
            return text
    return None


def knowledge_snippet() -> str:
    """Compact reference text handed to the model for Q&A grounding."""
    c = codes()
    host = "；".join(f"{k} {v}" for k, v in sorted(c.host_status.zh.items()))
    run = "；".join(f"{k} {v}" for k, v in sorted(c.run_status.zh.items()))
    api = "；".join(f"{k} {v}" for k, v in sorted(c.api_error.zh.items()))
    topics = "\n".join(text for _p, text in _TOPICS)
    return f"作业/步骤状态：{run}\n主机状态：{host}\n接口错误码：{api}\n常见问题：\n{topics}"


FALLBACK = (
    "这个问题我暂时答不好。我擅长分析失败的作业步骤：发送 stepInstanceId 或 BK-JOB 步骤链接即可；"
    "也可以问状态码/错误码的含义，例如「状态码 310 是什么意思」。"
)
