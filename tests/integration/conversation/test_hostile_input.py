"""Crafted and oversized messages: the event loop stays free, the sender gets a short answer."""

from __future__ import annotations

import asyncio
import time

from tests.integration.conversation.conftest import MakeRig
from tests.integration.conversation.harness import GROUP, callback_body

STEP = 20031265375
SIZE = 200 * 1024
# Inputs that were quadratic in the old parsers (id extraction, intent, log extractors) or that
# make the parsers do the most work per character.
CRAFTED = (
    "what is ",
    "what does 1 ",
    "Finish gse task, task:",
    "Callback using json body failed",
    "stepInstanceId=",
    "1 ",
    "https://job.example.com/biz/2/execute/step/",
    "%25",
    "状态码 ",
)


async def test_healthz_stays_prompt_while_200kb_crafted_messages_are_processed(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(
        backend,
        chat={"user_rate_per_min": 100, "group_rate_per_min": 100},
        http={"max_body_bytes": 1024 * 1024},  # `spoken` and `rawSpoken` each carry the 200 KB
    )
    waits: list[float] = []
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            resp = await rig.client.get("/healthz")
            await resp.read()
            waits.append(time.perf_counter() - start)
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    try:
        await asyncio.sleep(0.1)
        for i, unit in enumerate(CRAFTED):
            text = (unit * (SIZE // len(unit) + 1))[:SIZE]
            resp = await rig.post(callback_body(text, sender=f"user{i}"))
            assert resp.status == 200
        # every message gets its answer (the truncation notice or a reply about what was read)
        await rig.wait_count(len(CRAFTED), timeout=60)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await poller
    worst = max(waits)
    print(f"\n/healthz: {len(waits)} polls, max wait {worst * 1000:.1f} ms while {len(CRAFTED)} x 200 KB")
    assert worst < 0.25, f"/healthz waited {worst * 1000:.0f} ms"
    assert all(chat == GROUP for chat, _text, _at in rig.messages())


async def test_a_long_paste_is_read_in_part_and_the_sender_told(
    make_rig: MakeRig, backend: tuple[str, str]
) -> None:
    rig = await make_rig(backend, chat={"max_text_chars": 500})
    # the id sits past the limit: what was read has none
    await rig.say("这个作业失败了，日志如下：" + "x" * 2000 + f" {STEP}")
    (msg,) = await rig.wait_count(1)
    assert msg[0] == GROUP and "只读取了前 500 个字" in msg[1]
    # an id inside the limit is analysed as usual
    await rig.say(f"帮忙看下 {STEP}，报错如下：" + "a" * 2000)
    await rig.wait_reports(1)
