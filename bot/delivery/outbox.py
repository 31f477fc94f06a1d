"""Exactly-once (as far as the platform allows) sending of message parts.

Each outgoing part has a record: absent → "sending:<ms>" → "sent". A part found "sent" is
never sent again. A part found "sending" long after it started means a process died during
the send: the caller checks the channel's history before sending it again (WorkTool), or
sends again when the history cannot be read — a rare duplicate beats a lost report.
"""

from __future__ import annotations

import time
from typing import Literal

from bot.core.store import Store

BeginResult = Literal["send", "skip", "busy", "recover"]

_BEGIN = """
local v = redis.call('get', KEYS[1])
if not v then
  redis.call('set', KEYS[1], 'sending:' .. ARGV[1], 'PX', ARGV[3])
  return 'send'
end
if v == 'sent' then return 'skip' end
local started = tonumber(string.sub(v, 9)) or 0
if tonumber(ARGV[1]) - started < tonumber(ARGV[2]) then return 'busy' end
redis.call('set', KEYS[1], 'sending:' .. ARGV[1], 'PX', ARGV[3])
return 'recover'
"""


# A send cut short (the process is stopping): its outcome is unknown, so whoever sends the part
# next must look at the channel's history first — now, not after `stale_after_s`.
_RELEASE = """
local v = redis.call('get', KEYS[1])
if v and string.sub(v, 1, 8) == 'sending:' then redis.call('set', KEYS[1], 'sending:0', 'KEEPTTL') return 1 end
return 0
"""


class Outbox:
    def __init__(self, store: Store, *, stale_after_s: float = 60.0, keep_s: float = 7 * 86400.0) -> None:
        self.store = store
        self.stale_after_ms = int(stale_after_s * 1000)
        self.keep_ms = int(keep_s * 1000)

    def key(self, delivery_key: str, part: int) -> str:
        return self.store.key("out", delivery_key, part)

    async def begin(self, delivery_key: str, part: int, *, now_ms: int | None = None) -> BeginResult:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        # Replicated before the send starts: after a failover the new master still knows the part
        # may be out, and checks the history instead of sending it twice.
        res = await self.store.eval_replicated(
            _BEGIN, 1, self.key(delivery_key, part), now, self.stale_after_ms, self.keep_ms
        )
        return str(res)  # type: ignore[return-value]

    async def release(self, delivery_key: str, part: int) -> None:
        """The send was cut short: its outcome is unknown, the next sender recovers it at once."""
        await self.store.redis.eval(_RELEASE, 1, self.key(delivery_key, part))

    async def done(self, delivery_key: str, part: int) -> None:
        await self.store.redis.set(self.key(delivery_key, part), "sent", px=self.keep_ms)

    async def abort(self, delivery_key: str, part: int) -> None:
        """The send failed for certain (nothing was delivered): allow a later attempt."""
        await self.store.redis.delete(self.key(delivery_key, part))

    async def state(self, delivery_key: str, part: int) -> str | None:
        raw = await self.store.redis.get(self.key(delivery_key, part))
        return None if raw is None else str(raw)
