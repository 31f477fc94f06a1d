"""The rate limit counts the last 60 seconds, not the clock minute (on both stores)."""

from __future__ import annotations

from bot.core.models import IncomingMessage
from bot.core.settings import ChatSettings
from bot.core.store import Store
from handlers import texts
from handlers.policy import SILENT, AccessPolicy


def _msg(sender: str = "alice") -> IncomingMessage:
    return IncomingMessage(channel="worktool", chat_id="ops", is_group=True, sender_id=sender, text="hi")


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_burst_across_a_minute_boundary_is_still_one_burst(store: Store) -> None:
    clock = _Clock(1_800_000_058.5)  # 1.5 s before a minute ends
    policy = AccessPolicy(ChatSettings(user_rate_per_min=2), store, clock=clock)
    verdicts = []
    for _ in range(4):
        verdicts.append(await policy.check(_msg()))
        clock.now += 0.8  # two before the boundary, two after
    # a clock-minute counter started again at zero after the boundary and let all four through;
    # the refusal is said once, not once per clock minute
    assert verdicts == [None, None, texts.RATE_LIMITED, SILENT]


async def test_two_bursts_a_minute_boundary_apart_are_one_minute(store: Store) -> None:
    clock = _Clock(1_800_000_059.0)  # the last second of a clock minute
    policy = AccessPolicy(ChatSettings(user_rate_per_min=10, group_rate_per_min=1000), store, clock=clock)
    assert [await policy.check(_msg()) for _ in range(10)] == [None] * 10
    clock.now += 59.0  # 59 s later, near the end of the next minute: all ten still inside 60 s
    assert await policy.check(_msg()) == texts.RATE_LIMITED
    assert [await policy.check(_msg()) for _ in range(8)] == [SILENT] * 8


async def test_the_limit_frees_up_as_the_minute_slides(store: Store) -> None:
    clock = _Clock(1_800_000_010.0)
    policy = AccessPolicy(ChatSettings(user_rate_per_min=2, group_rate_per_min=100), store, clock=clock)
    assert [await policy.check(_msg()) for _ in range(3)] == [None, None, texts.RATE_LIMITED]
    clock.now += 55.0  # the three are 55 s old: still inside the last minute
    assert await policy.check(_msg()) is not None
    clock.now += 61.0  # everything above has left the last minute
    assert await policy.check(_msg()) is None
    assert await policy.check(_msg("bob")) is None  # another sender never shared the count
