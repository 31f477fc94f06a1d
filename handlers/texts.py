"""Chinese texts the bot says in chats (one place, so wording stays consistent)."""

from __future__ import annotations

HELP = """我是 job-doctor，专门分析蓝鲸作业平台（BK-JOB）失败的作业步骤。
用法：
1. @我 并附上失败步骤的 stepInstanceId，或直接贴 BK-JOB 的步骤链接，例如：@job-doctor 20031265375
2. 也可以给 request_id / traceId（32 位十六进制）
3. 命令：帮助｜状态｜取消｜重新分析 <id>｜详情 <id>
4. 对报告回复 👍 / 👎 / 不准确 <说明>，帮助我改进
私聊可以直接问问题，例如「状态码 310 是什么意思」。"""

ASK_FOR_ID_GROUP = (
    "请提供失败步骤的 stepInstanceId（或 BK-JOB 步骤链接），我来分析。直接回复即可，不用再 @我。"
)
ASK_FOR_ID_PRIVATE = "请提供失败步骤的 stepInstanceId（或 BK-JOB 步骤链接），我来分析。"
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
ACCEPTED = "收到，开始分析 {what}。"
CHATTER_HINT = "需要我分析失败的作业步骤吗？请附上 stepInstanceId 或 BK-JOB 步骤链接；发送「帮助」查看用法。"
DETAIL_NOT_FOUND = "没有找到 {what} 的近期报告，可以发送「重新分析 {what}」重新生成。"
DETAIL_NEED_ID = "请在「详情」后面附上 stepInstanceId 或 request_id。"
REANALYZE_NEED_ID = "请在「重新分析」后面附上 stepInstanceId 或 request_id。"
FEEDBACK_THANKS = "感谢反馈，已记录。"
FEEDBACK_NO_REPORT = "没有找到你最近收到的报告，反馈未记录。"
UNSUPPORTED_TYPE = "暂时只能处理文字消息，请发送 stepInstanceId 或 BK-JOB 链接。"
RATE_LIMITED = "请求太频繁了，请稍后再试。"
