"""The shared ingress: a full inbox refuses (503 in every channel) and counts it; nothing is trimmed."""

from __future__ import annotations

import pytest

from bot.channels.base import Ingress, IngressUnavailable
from bot.core.metrics import Metrics
from bot.core.models import IncomingMessage
from bot.core.store import Store
from bot.delivery.queue import Inbox


def _msg(text: str) -> IncomingMessage:
    return IncomingMessage(channel="worktool", chat_id="ops", is_group=True, sender_id="alice", text=text)


async def test_a_full_inbox_refuses_and_counts_the_refusal(store: Store) -> None:
    metrics = Metrics()
    inbox = Inbox(store, max_entries=2)
    ingress = Ingress(inbox, metrics)
    assert await ingress.accept(_msg("a"), fingerprint="a", window_s=60)
    assert await ingress.accept(_msg("b"), fingerprint="b", window_s=60)
    with pytest.raises(IngressUnavailable):
        await ingress.accept(_msg("c"), fingerprint="c", window_s=60)
    refused = metrics.registry.get_sample_value(
        "job_doctor_messages_rejected_total", {"channel": "worktool", "reason": "inbox_full"}
    )
    assert refused == 1
    assert await inbox.length() == 2  # the two accepted ones are still there
