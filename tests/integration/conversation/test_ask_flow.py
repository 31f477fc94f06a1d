"""Ask for the id, resume on the follow-up without @, cancel; private chats need no @."""

from __future__ import annotations

import re

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, HEADER, step_searches

STEP = 20031290017  # corpus scenario script_exit_code_1
ASK = "帮我看看这个任务为什么失败"


async def test_group_mention_without_id_asks_then_plain_followup_gets_the_report(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend)
    await rig.say(ASK)
    (question,) = await rig.wait_count(1)
    assert question[0] == GROUP and question[2] == ("张三",)
    assert "stepInstanceId" in question[1]

    # A colleague's plain message is chatter, even when it carries an id.
    await rig.say(str(STEP), sender="李四", at=False)
    await rig.say("今天天气不错", sender="李四", at=False)
    assert await rig.quiet(0.5) == [question]
    assert step_searches(rig.bklog, STEP) == 0

    # The asker answers without @: that resumes the conversation.
    await rig.say(f"stepInstanceId 是 {STEP}", at=False)
    (report,) = await rig.wait_reports(1)
    first = report[0]
    assert first[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert first[2] == ("张三",)
    n = len(report)
    if n > 1:
        for i, part in enumerate(report, 1):
            assert part[1].startswith(f"{HEADER}stepInstanceId={STEP} ({i}/{n})")
            assert part[2] == (("张三",) if i == 1 else ())
    # Exactly this one report arrived (each part once), and nothing else.
    assert await rig.quiet(0.5) == [question, *report]
    assert step_searches(rig.bklog, STEP) == 1

    # The question is closed: another plain id from the asker is ignored.
    before = len(rig.messages())
    await rig.say("20031265375", at=False)
    assert len(await rig.quiet(0.5)) == before


async def test_small_parts_are_numbered_and_only_the_first_mentions(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, worktool={"part_max_chars": 200})
    await rig.say(f"帮忙看下 {STEP}")
    await rig.wait_for(lambda m: len(m) >= 3)
    await rig.quiet(0.4)
    parts = rig.messages()
    n = len(parts)
    assert n >= 3
    numbering = re.compile(rf"^{re.escape(HEADER)}stepInstanceId={STEP} \((\d+)/(\d+)\)")
    seen = []
    for chat, text, at in parts:
        assert chat == GROUP
        assert len(text) <= 200
        m = numbering.match(text)
        assert m, text[:80]
        seen.append((int(m.group(1)), int(m.group(2))))
        assert at == (("张三",) if m.group(1) == "1" else ())
    assert seen == [(i, n) for i in range(1, n + 1)]


async def test_cancel_ends_the_pending_question(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend)
    await rig.say(ASK)
    await rig.wait_count(1)
    await rig.say("取消", at=False)
    msgs = await rig.wait_count(2)
    assert msgs[1] == (GROUP, "好的，已取消。", ("张三",))
    await rig.say(str(STEP), at=False)
    assert len(await rig.quiet(0.6)) == 2
    assert step_searches(rig.bklog, STEP) == 0


async def test_private_chat_needs_no_mention(make_rig: MakeRig, backend: tuple[str, str]) -> None:
    rig = await make_rig(backend)
    await rig.say(ASK, sender="王五", group=None)
    (question,) = await rig.wait_count(1)
    assert question[0] == "王五" and question[2] == ()
    assert "stepInstanceId" in question[1]
    await rig.say(str(STEP), sender="王五", group=None)
    (parts,) = await rig.wait_reports(1)
    report = parts[0]
    assert report[0] == "王五"
    assert report[1].startswith(f"{HEADER}stepInstanceId={STEP}")
    assert report[2] == ()
