"""The console channel's own rules: parsing what a page sends, rendering and remembering replies."""

from __future__ import annotations

import time

from bot.channels.console import (
    ConsoleChannel,
    fingerprint,
    is_loopback,
    normalize_text,
    to_incoming,
)
from bot.core.models import ChatTarget, Reply
from bot.delivery.port import Part

GROUP = ChatTarget(channel="console", chat_id="console-group", chat_name="演示群", is_group=True)
PRIVATE = ChatTarget(channel="console", chat_id="console-private:王五", chat_name="王五", is_group=False)


def test_mention_is_stripped_and_whitespace_normalised() -> None:
    assert normalize_text("@job-doctor  帮我看看\u2005这个任务") == ("帮我看看 这个任务", True)
    assert normalize_text("@bot，20031265375") == ("20031265375", True)
    assert normalize_text("@Job-Doctor:看下 20031265375") == ("看下 20031265375", True)
    assert normalize_text("看下 @job-doctor 20031265375") == ("看下 20031265375", True)
    assert normalize_text("20031265375") == ("20031265375", False)
    # other people's mentions and look-alikes stay
    assert normalize_text("@张三 你看下") == ("@张三 你看下", False)
    assert normalize_text("mail@bot.example") == ("mail@bot.example", False)
    assert normalize_text("@job-doctorx hi") == ("@job-doctorx hi", False)
    assert normalize_text("第一行\r\n\r\n\r\n\r\n  第二行  ") == ("第一行\n\n第二行", False)


def test_incoming_message_for_group_and_private() -> None:
    msg = to_incoming("group", "张三", "@job-doctor 帮我看看这个任务为什么失败", "c1")
    assert (msg.channel, msg.chat_id, msg.chat_name, msg.is_group) == (
        "console",
        "console-group",
        "演示群",
        True,
    )
    assert (msg.sender_id, msg.sender_name, msg.mentioned) == ("张三", "张三", True)
    assert msg.text == "帮我看看这个任务为什么失败" and msg.raw_id == "c1"
    follow_up = to_incoming("group", "张三", "20031265375", "c2")
    assert follow_up.mentioned is False
    private = to_incoming("private", "王五", "帮我看看", "c3")
    assert (private.chat_id, private.chat_name, private.is_group) == ("console-private:王五", "王五", False)
    assert private.mentioned is True  # private chats are always addressed to the bot


def test_fingerprint_separates_messages_not_resends() -> None:
    a = fingerprint("console-group", "张三", "帮我看看", "id-1")
    assert a == fingerprint("console-group", "张三", "帮我看看", "id-1")
    assert a != fingerprint("console-group", "张三", "帮我看看", "id-2")
    assert a != fingerprint("console-group", "李四", "帮我看看", "id-1")
    assert a != fingerprint("console-private:张三", "张三", "帮我看看", "id-1")


def test_loopback_names() -> None:
    for host in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com", ""):
        assert not is_loopback(host), host


async def test_render_mentions_the_asker_in_groups_only() -> None:
    ch = ConsoleChannel()
    reply = Reply(target=GROUP, kind="question", mention=["张三"], text="请提供 id", markdown="请提供 **id**")
    assert ch.render(reply) == ["@张三 请提供 **id**"]
    private = Reply(target=PRIVATE, kind="answer", text="纯文本")
    assert ch.render(private) == ["纯文本"]  # no markdown: the text fallback


async def test_parts_go_to_history_with_their_kind_and_are_found_again() -> None:
    ch = ConsoleChannel(history=3)
    since = int(time.time() * 1000) - 1000
    reply = Reply(target=GROUP, kind="question", mention=["张三"], text="请提供 id", markdown="请提供 **id**")
    [text] = ch.render(reply)
    part = Part(reply, text)
    assert await ch.already_sent(part, since_ms=since) is False
    await ch.send_part(part)
    [frame] = ch.messages("console-group")
    assert frame == {
        **frame,
        "from": "bot",
        "kind": "question",
        "markdown": "@张三 请提供 **id**",
        "text": "@张三 请提供 id",
        "chat": "console-group",
        "seq": 1,
    }
    assert await ch.already_sent(part, since_ms=since) is True
    assert await ch.already_sent(part, since_ms=frame["ts"] + 1) is False
    elsewhere = Part(reply.model_copy(update={"target": PRIVATE}), text)
    assert await ch.already_sent(elsewhere, since_ms=since) is False
    # a part rendered before (reply.parts prefilled) keeps its reply's kind
    header = "【job-doctor 诊断报告】stepInstanceId=1"
    prefilled = Reply(target=GROUP, kind="report", parts=[header])
    await ch.send_part(Part(prefilled, header))
    assert ch.messages("console-group")[-1]["kind"] == "report"
    # bounded history
    for i in range(5):
        await ch.send_part(Part(Reply(target=GROUP, text=f"第 {i} 条"), f"第 {i} 条"))
    assert [m["markdown"] for m in ch.messages("console-group")] == ["第 2 条", "第 3 条", "第 4 条"]


async def test_reserved_echo_keeps_its_place_before_the_answer() -> None:
    ch = ConsoleChannel()
    seq = ch.reserve_echo("console-group", "演示群", "张三", "@job-doctor 20031265375", "c1")
    assert ch.messages("console-group") == []  # not shown before the inbox accepted it
    await ch.send_part(Part(Reply(target=GROUP, text="答复"), "答复"))  # the answer overtakes the echo
    ch.confirm_echo("console-group", seq)
    assert [m["from"] for m in ch.messages("console-group")] == ["张三", "bot"]
    assert ch.has_client_message("console-group", "c1")
    dropped = ch.reserve_echo("console-group", "演示群", "张三", "again", "c1")
    ch.drop_echo("console-group", dropped)
    assert len(ch.messages("console-group")) == 2
