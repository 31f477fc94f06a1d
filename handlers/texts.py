"""Everything the bot says in a chat, in one place (user-facing text is Chinese).

Report content (summaries, causes, actions) comes from the diagnosis and its data files; this
module holds the conversation around it: questions, notices, hints and channel placeholders.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- usage and asking

HELP = """你好，我是 job-doctor，专门分析蓝鲸作业平台（BK-JOB）失败的作业步骤。
用法：
1. @我 并附上失败步骤的 stepInstanceId，或直接贴 BK-JOB 的步骤链接，例如：@job-doctor 20031265375
2. 也可以给 request_id / traceId（32 位十六进制）；带上失败时间我就查那段时间的日志，例如：20031265375 昨天下午3点
3. 命令：帮助｜状态｜取消｜重新分析 <id>｜详情 <id>
4. 对报告回复 👍 / 👎 / 不准确 <说明>，帮助我改进
私聊可以直接问问题，例如「为什么作业一直在执行中」「怎么查 Agent 状态」「状态码 310 是什么意思」。"""

ASK_FOR_ID_GROUP = (
    "请提供失败步骤的 stepInstanceId（或 BK-JOB 步骤链接），我来分析。直接回复即可，不用再 @我。"
)
ASK_FOR_ID_PRIVATE = "请提供失败步骤的 stepInstanceId（或 BK-JOB 步骤链接），我来分析。"
# private chat, a failure without an id that a common topic covers: ask, and say what usually causes it
ASK_FOR_ID_WITH_TOPIC = "{ask}\n\n先给你常见原因：\n{answer}"
ASK_FOR_ID_MENTION_ONLY = "请 @我 并附上 stepInstanceId（或 BK-JOB 步骤链接），我来分析。"
ASK_STILL_WAITING = (
    "还没看到 stepInstanceId。请发送失败步骤的 stepInstanceId 或 BK-JOB 步骤链接；发送「取消」结束。"
)
ASK_WHICH_STEP = "链接里只有作业实例 {task}，没有步骤。请发送失败步骤的 stepInstanceId（步骤详情页链接里的 stepInstanceId=…）。"
CANCELLED = "好的，已取消。"
NOTHING_TO_CANCEL = "当前没有等待中的请求。"
OVER_LIMIT = "一次最多分析 {limit} 个 id，另外 {more} 个没有分析，请分开发送。"
UUID_HINT = (
    "带横线的 UUID 是 GseTaskEvent 的 requestId，不是 traceId；请提供 stepInstanceId 或 32 位 traceId。"
)
CHATTER_HINT = "需要我分析失败的作业步骤吗？请附上 stepInstanceId 或 BK-JOB 步骤链接；发送「帮助」查看用法。"
UNKNOWN_CODE = (
    "我的码表里没有 {code}（只收录了常见的作业/步骤状态、主机状态、接口错误码和 GSE error_code），"
    "无法确认它的含义；请核对数字，或查阅作业平台的错误码文档。"
    "要诊断一次具体的失败，请发送 stepInstanceId 或 BK-JOB 步骤链接。"
)
QA_FALLBACK = (
    "这个问题我没有现成的答案。不用大模型我也能回答这些常见问题：{topics}；还能解释状态码和错误码，"
    "例如「状态码 310 是什么意思」。要诊断一次具体的失败，请发送 stepInstanceId、BK-JOB 步骤链接或 "
    "request_id（traceId），可以带上失败时间，例如「20031265375 昨天下午3点」。"
)
TEXT_TRUNCATED = "消息太长，我只读取了前 {limit} 个字，其中没有找到 stepInstanceId。请只发送 stepInstanceId 或 BK-JOB 步骤链接。"
UNSUPPORTED_TYPE = "暂时只能处理文字消息，请把 stepInstanceId 或 BK-JOB 链接以文字发给我。"

# --------------------------------------------------------------------------- analyses and reports

PROGRESS = "收到，正在分析 {what}，稍后发出报告。"
WINDOW_NOTE = "（按「{hint}」查 {window} 的日志）"
RETRY_RUN = "（第 {n} 次重试）"
DETAIL_HINT = "完整报告：发送「详情 {ident}」"
ANALYSIS_FAILED = (
    "抱歉，{what} 的分析多次尝试后仍未完成（依赖服务可能暂时不可用）。请稍后发送「重新分析 {what}」。"
)
DETAIL_NOT_FOUND = "没有找到 {what} 的近期报告，可以发送「重新分析 {what}」重新生成。"
DETAIL_NEED_ID = "请在「详情」后面附上 stepInstanceId 或 request_id。"
REANALYZE_LIMITED = "每人每小时最多强制重新分析 {limit} 次，这次先发最近的报告（如有）。"
REANALYZE_NEED_ID = "请在「重新分析」后面附上 stepInstanceId 或 request_id。"

OUT_OF_SCOPE = "{what} 不属于本群的业务（{scope}），不展示报告和日志。"
SCOPE_UNKNOWN = (
    "暂时无法确认 {what} 是否属于本群的业务（{scope}），不展示报告和日志；稍后可发送「详情 {ident}」再试。"
)

# --------------------------------------------------------------------------- status and feedback

STATUS_QUEUE = "分析队列：{depth} 个任务未完成。"
STATUS_WAITING = "我在等你发送 stepInstanceId（发送「取消」结束）。"
STATUS_LATEST = "你最近的报告：{key}（{when} 完成），发送「详情」查看完整内容。"
FEEDBACK_THANKS = "感谢反馈，已记录。"
FEEDBACK_NO_REPORT = "没有找到你最近收到的报告，反馈未记录。"

# --------------------------------------------------------------------------- access and limits

NOT_ALLOWED = "抱歉，你不在 job-doctor 的使用名单中，请联系管理员开通。"
RATE_LIMITED = "请求太频繁了，请稍后再试。"

# --------------------------------------------------------------------------- channel placeholders

# WeCom AI bot: what a stream shows before, around and instead of a reply
AIBOT_WELCOME = "你好，我是 job-doctor。发送失败步骤的 stepInstanceId 或 BK-JOB 步骤链接，我来分析失败原因；发送「帮助」查看用法。"
AIBOT_PLACEHOLDER = "正在分析 …"
AIBOT_STILL_WORKING = "分析仍在进行，完成后会另行发送结果。"
AIBOT_STREAM_GONE = "（该消息的处理状态已过期，请重新发送。）"
TRIMMED = "（内容较长，已截断）"

# The web console: its group, its anonymous user, what it says about a message it cannot take
CONSOLE_GROUP_NAME = "演示群"
CONSOLE_DEFAULT_USER = "访客"
CONSOLE_UNPARSABLE = "无法解析的消息"
CONSOLE_TOO_LONG = "消息太长（最多 {limit} 字）"
CONSOLE_STORE_DOWN = "消息暂时无法送达（存储不可用），稍后会自动重发"
CONSOLE_RECENT_DOWN = "存储暂时不可用"
CONSOLE_STATUS = {"no_logs": "未找到日志", "undetermined": "未能定位", "diagnosed": "已定位"}
