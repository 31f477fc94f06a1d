"""What a stream shows: cumulative replies within WeCom's 20480-byte limit, and message parsing."""

from __future__ import annotations

from bot.channels.wecom.aibot import (
    StreamPart,
    StreamView,
    classify_callback,
    compose,
)
from bot.delivery.render import HEADER_PREFIX
from bot.delivery.split import utf8_len
from handlers.texts import AIBOT_PLACEHOLDER as PLACEHOLDER
from handlers.texts import AIBOT_STILL_WORKING as STILL_WORKING
from tests.support.fakes.wecom_aibot import WeComAibotSide


def view(*parts: StreamPart, timed_out: bool = False) -> StreamView:
    return StreamView(list(parts), closed=timed_out, timed_out=timed_out, meta={})


def test_placeholder_progress_and_final() -> None:
    assert compose(view(), 20480) == PLACEHOLDER
    progress = StreamPart("progress", "收到，正在分析 stepInstanceId=1，稍后发出报告。")
    assert compose(view(progress), 20480) == progress.text
    report = StreamPart("report", f"{HEADER_PREFIX}stepInstanceId=1\n\n### 问题概述\n脚本失败")
    assert compose(view(progress, report), 20480) == report.text  # the progress note goes
    assert compose(view(progress, timed_out=True), 20480).endswith(STILL_WORKING)


def test_long_content_is_trimmed_with_a_detail_hint() -> None:
    question = StreamPart("question", "请提供失败步骤的 stepInstanceId。")
    lines = "\n".join(f"- 第 {i} 行：下发失败，agent 不在线，主机 10.0.0.{i % 255}" for i in range(2000))
    report = StreamPart("report", f"{HEADER_PREFIX}stepInstanceId=987654\n\n```\n{lines}\n```")
    content = compose(view(question, report), 20480)
    assert utf8_len(content) <= 20480
    assert content.startswith(f"{HEADER_PREFIX}stepInstanceId=987654")  # older replies go first
    assert content.endswith("完整报告：发送「详情 987654」")
    assert content.count("```") % 2 == 0  # no code fence left open


def test_group_text_loses_the_mention_and_mixed_items_are_joined() -> None:
    side = WeComAibotSide()
    group = classify_callback(
        side.text("@job-doctor  帮我看看\u3000 20031265375", chattype="group", chatid="g1")
    )
    assert group.kind == "message" and group.text == "帮我看看 20031265375"
    named = classify_callback(side.text("看下 @小助手 123", chattype="group", chatid="g1"), bot_name="小助手")
    assert named.text == "看下 123"
    mixed = classify_callback(side.mixed(["帮我看看", "20031265375"]))
    assert mixed.kind == "message" and mixed.text == "帮我看看\n20031265375"
    assert classify_callback(side.image()).kind == "unsupported"
    assert classify_callback(side.refresh("s1")).stream_id == "s1"
