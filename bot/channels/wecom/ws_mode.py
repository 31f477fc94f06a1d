"""WeCom AI bot, WebSocket long-connection mode (wecom-channels.md §2.7).

Why aiohttp's own WebSocket client and not the official ``wecom-aibot-python-sdk``
----------------------------------------------------------------------------------
The SDK (WecomTeam, 1.0.x, 2026) is the reference for the protocol and handles media upload and
download, but for this bot it costs more than it gives:

* it cannot be assumed installable (offline builds, pinned mirrors), while aiohttp is already our
  HTTP stack — the SDK would add a second WebSocket stack (``websockets``) plus ``pyee``;
* it owns the connection lifecycle (its own reconnect loop, heartbeat and in-memory reply queue).
  We need that lifecycle under our control: exactly one replica may hold the connection (a Redis
  lease; WeCom keeps only one live connection per bot and kicks the older one), replies produced on
  any replica must reach the holder (a Redis relay list), every loop must stop with the app
  (TaskTracker), and every timeout must be ours;
* the protocol we use is small and documented: six JSON frame types (``aibot_subscribe``,
  ``ping``, ``aibot_msg_callback``, ``aibot_event_callback``, ``aibot_respond_msg`` /
  ``aibot_respond_welcome_msg``, ``aibot_send_msg``) with ``{cmd, headers: {req_id}, body}`` and
  acks ``{headers: {req_id}, errcode, errmsg}``. About 300 lines here, tested against a fake server
  speaking those frames.

Revisit if we need media replies (chunked upload) or if WeCom changes the protocol in a way the
SDK absorbs.

How it runs
-----------
The app starts `AibotWsClient.run` as one daemon loop per process. It tries to take the lease
``aibot-ws:<bot_id>`` (retrying every ``lease_retry_s``); the holder renews it while it runs and
drops the connection at once when renewal fails, so a dead holder is replaced within one lease
TTL. The holder connects, subscribes with bot id + secret, pings every ``ping_interval_s`` (two
unanswered pings = dead connection) and reconnects with exponential backoff and jitter.

Inbound messages are parsed like HTTP callbacks, written to the inbox (deduplicated on ``msgid``)
and get a first stream frame ("正在分析 …"). Replies are appended to the shared stream state by the
channel on any replica and relayed here; the holder pushes the whole content so far as
``aibot_respond_msg`` with the message's ``req_id`` (``finish`` once a final reply is there). When
that ``req_id`` is gone — the connection it came on was replaced, or WeCom refuses it — or the
stream window has passed, final replies go out once each as ``aibot_send_msg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bot.channels.base import Ingress, IngressUnavailable, Loop
from bot.channels.wecom.aibot import (
    AibotChannel,
    AibotOptions,
    Relay,
    classify_callback,
    compose,
    inbox_fingerprint,
    stream_id_for,
    to_incoming,
)
from bot.core.store import Store
from handlers import texts

log = structlog.get_logger(__name__)

CMD_SUBSCRIBE = "aibot_subscribe"
CMD_PING = "ping"
CMD_MSG = "aibot_msg_callback"
CMD_EVENT = "aibot_event_callback"
CMD_RESPOND = "aibot_respond_msg"
CMD_WELCOME = "aibot_respond_welcome_msg"
CMD_SEND = "aibot_send_msg"


class ConnectionLost(Exception):
    pass


class LeaseLost(Exception):
    pass


class SubscribeRejected(Exception):
    pass


@dataclass
class _Conn:
    ws: aiohttp.ClientWebSocketResponse
    conn_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ping_ids: set[str] = field(default_factory=set)
    pings_out: int = 0

    def fail_pending(self, reason: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(reason))
        self.pending.clear()


def _req_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class AibotWsClient:
    """The lease-holding, reconnecting WebSocket client of one bot (`bot.channels.base.Endpoint`)."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        store: Store,
        channel: AibotChannel,
        relay: Relay,
        ingress: Ingress,
        bot_id: str,
        secret: str,
        url: str,
    ) -> None:
        self.session = session
        self.store = store
        self.channel = channel
        self.relay = relay
        self.ingress = ingress
        self.bot_id = bot_id
        self._secret = secret
        self.url = url
        self.options: AibotOptions = channel.options
        self.lease_name = f"aibot-ws:{bot_id}"
        self.holding = False  # this process holds the lease
        self.conn: _Conn | None = None  # the subscribed connection, if any

    def routes(self) -> Sequence[web.RouteDef]:
        return ()

    def loops(self) -> Sequence[Loop]:
        return [self.run]

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ lease

    async def run(self) -> None:
        opts = self.options
        while True:
            try:
                token = await self.store.acquire_lock(self.lease_name, opts.lease_ttl_s)
            except RedisError as exc:
                log.warning("aibot_ws_lease_unavailable", error=type(exc).__name__)
                token = None
            if token is None:
                await asyncio.sleep(opts.lease_retry_s * random.uniform(0.8, 1.2))
                continue
            log.info("aibot_ws_lease_acquired", bot_id=self.bot_id)
            self.holding = True
            try:
                await self._hold(token)
            except LeaseLost:
                log.warning("aibot_ws_lease_lost", bot_id=self.bot_id)
            except Exception as exc:  # never let the daemon die; the lease is released below
                log.error("aibot_ws_holder_failed", error=repr(exc)[:300])
                await asyncio.sleep(opts.lease_retry_s)
            finally:
                self.holding = False
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(2):
                        await self.store.release_lock(self.lease_name, token)

    async def _hold(self, token: str) -> None:
        renew = asyncio.create_task(self._renew(token), name="aibot-ws-lease")
        conn = asyncio.create_task(self._connect_loop(), name="aibot-ws-connect")
        try:
            done, _ = await asyncio.wait({renew, conn}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (renew, conn):
                task.cancel()
            await asyncio.gather(renew, conn, return_exceptions=True)

    async def _renew(self, token: str) -> None:
        ttl = self.options.lease_ttl_s
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                ok: bool | None = await self.store.extend_lock(self.lease_name, token, ttl)
            except RedisError:
                ok = None  # unknown: keep going while the lease surely has not expired
            if ok:
                last_ok = time.monotonic()
            elif ok is False or time.monotonic() - last_ok > ttl * 0.8:
                raise LeaseLost()

    # ------------------------------------------------------------------ connection

    async def _connect_loop(self) -> None:
        opts = self.options
        delay = opts.backoff_initial_s
        while True:
            subscribed = False
            try:
                subscribed = await self._connect_once()
            except SubscribeRejected as exc:
                log.error("aibot_ws_subscribe_rejected", detail=str(exc)[:200])
            except (ConnectionLost, aiohttp.ClientError, OSError, TimeoutError, RedisError) as exc:
                log.warning("aibot_ws_disconnected", error=f"{type(exc).__name__}: {str(exc)[:120]}")
            except Exception as exc:  # a bug must not end the loop: log it and reconnect
                log.error("aibot_ws_connection_failed", error=repr(exc)[:300])
            if subscribed:
                delay = opts.backoff_initial_s  # it worked for a while: come back quickly
            wait = delay + random.uniform(0, delay / 2)
            await asyncio.sleep(wait)
            delay = min(delay * 2, opts.backoff_max_s)

    async def _connect_once(self) -> bool:
        """One connection until it ends (always by an exception). True if it got subscribed."""
        opts = self.options
        async with asyncio.timeout(opts.connect_timeout_s):
            ws = await self.session.ws_connect(
                self.url, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=2.0), max_msg_size=8 << 20
            )
        conn = _Conn(ws)
        reader = asyncio.create_task(self._read(conn), name="aibot-ws-read")
        loops: list[asyncio.Task[None]] = [reader]
        subscribed = False
        try:
            await self._subscribe(conn)
            subscribed = True
            self.conn = conn
            log.info("aibot_ws_subscribed", bot_id=self.bot_id, conn=conn.conn_id)
            loops += [
                asyncio.create_task(self._heartbeat(conn), name="aibot-ws-ping"),
                asyncio.create_task(self._send_loop(conn), name="aibot-ws-send"),
            ]
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise ConnectionLost("connection ended")
        except ConnectionLost:
            if not subscribed:
                raise
            return True  # the caller reconnects quickly
        finally:
            self.conn = None
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            conn.fail_pending("connection closed")
            with contextlib.suppress(Exception):
                await ws.close()

    async def _subscribe(self, conn: _Conn) -> None:
        ack = await self._request(conn, CMD_SUBSCRIBE, {"bot_id": self.bot_id, "secret": self._secret})
        if ack.get("errcode", 0) != 0:
            raise SubscribeRejected(f"errcode {ack.get('errcode')}: {ack.get('errmsg', '')}")

    async def _request(
        self, conn: _Conn, cmd: str, body: dict[str, Any] | None, *, req_id: str | None = None
    ) -> dict[str, Any]:
        """Send one frame and wait for its ack (frames of one req_id go out one at a time)."""
        rid = req_id or _req_id(cmd)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        conn.pending[rid] = fut
        frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": rid}}
        if body is not None:
            frame["body"] = body
        try:
            await conn.ws.send_str(json.dumps(frame, ensure_ascii=False))
            async with asyncio.timeout(self.options.ack_timeout_s):
                return await fut
        except TimeoutError:
            raise ConnectionLost(f"no ack for {cmd}") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ConnectionLost(f"send failed: {type(exc).__name__}") from None
        finally:
            if conn.pending.get(rid) is fut:
                del conn.pending[rid]

    async def _heartbeat(self, conn: _Conn) -> None:
        while True:
            await asyncio.sleep(self.options.ping_interval_s)
            if conn.pings_out >= self.options.missed_pings:
                raise ConnectionLost("heartbeat not answered")
            rid = _req_id(CMD_PING)
            conn.ping_ids.add(rid)
            conn.pings_out += 1
            try:
                await conn.ws.send_str(json.dumps({"cmd": CMD_PING, "headers": {"req_id": rid}}))
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise ConnectionLost(f"ping failed: {type(exc).__name__}") from None

    async def _read(self, conn: _Conn) -> None:
        try:
            async for msg in conn.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except (ValueError, RecursionError):
                    continue
                if isinstance(frame, dict):
                    await self._on_frame(conn, frame)
        finally:
            conn.fail_pending("connection closed")
        raise ConnectionLost("closed by server")

    async def _on_frame(self, conn: _Conn, frame: dict[str, Any]) -> None:
        headers = frame.get("headers") if isinstance(frame.get("headers"), dict) else {}
        rid = str((headers or {}).get("req_id") or "")
        cmd = frame.get("cmd")
        body = frame.get("body") if isinstance(frame.get("body"), dict) else {}
        if not cmd:  # an ack
            if rid in conn.ping_ids:
                conn.ping_ids.discard(rid)
                conn.pings_out = 0
            fut = conn.pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(frame)
            return
        try:
            if cmd == CMD_MSG:
                await self._on_message(conn, rid, body or {})
            elif cmd == CMD_EVENT:
                await self._on_event(conn, rid, body or {})
        except RedisError as exc:
            self.ingress.reject(self.channel.name, "store_unavailable")
            log.error("aibot_ws_message_lost", error=type(exc).__name__)
        except IngressUnavailable as exc:  # counted by the ingress
            log.error("aibot_ws_message_lost", error=str(exc))

    async def _on_message(self, conn: _Conn, rid: str, body: dict[str, Any]) -> None:
        cb = classify_callback(body, bot_name=self.options.bot_name)
        if cb.kind == "unsupported":
            stream = {"id": stream_id_for(cb.msgid), "finish": True, "content": texts.UNSUPPORTED_TYPE}
            await self._push_raw(conn, CMD_RESPOND, rid, {"msgtype": "stream", "stream": stream})
            return
        if cb.kind != "message":
            log.info("aibot_callback_ignored", msgtype=str(body.get("msgtype")))
            return
        msg = to_incoming(cb, mode="ws", extra={"req_id": rid, "conn": conn.conn_id})
        sid = msg.reply_context["stream_id"]
        meta = {"mode": "ws", "msgid": cb.msgid, "chat": msg.chat_id, "req_id": rid, "conn": conn.conn_id}
        await self.channel.streams.open(sid, meta)
        fingerprint = inbox_fingerprint(msg.raw_id or "")
        if await self.ingress.accept(msg, fingerprint=fingerprint, window_s=self.options.msgid_dedup_s):
            log.info("aibot_message_accepted", msgid=cb.msgid, group=msg.is_group, mode="ws")
            await self.relay.push({"t": "stream", "sid": sid})  # the first frame: "正在分析 …"

    async def _on_event(self, conn: _Conn, rid: str, body: dict[str, Any]) -> None:
        cb = classify_callback(body)
        if cb.event == "enter_chat":
            await self._push_raw(
                conn, CMD_WELCOME, rid, {"msgtype": "text", "text": {"content": texts.AIBOT_WELCOME}}
            )
        elif cb.event == "disconnected_event":
            raise ConnectionLost("replaced by a newer connection")
        else:
            log.info("aibot_event_ignored", eventtype=cb.event)

    async def _push_raw(self, conn: _Conn, cmd: str, rid: str, body: dict[str, Any]) -> None:
        item = {"t": "raw", "cmd": cmd, "req_id": rid, "conn": conn.conn_id, "body": json.dumps(body)}
        await self.relay.push(item)

    # ------------------------------------------------------------------ outgoing

    async def _send_loop(self, conn: _Conn) -> None:
        while True:
            self.relay.wake.clear()
            item = await self.relay.peek()
            if item is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.relay_poll_s):
                        await self.relay.wake.wait()
                continue
            if item is not False:
                try:
                    await self._deliver(conn, item)
                except (ConnectionLost, RedisError):
                    raise  # transient: the item stays for the next connection
                except Exception as exc:  # a malformed item must not block the queue
                    log.error("aibot_ws_item_dropped", kind=item.get("t"), error=repr(exc)[:200])
            await self.relay.pop()

    async def _deliver(self, conn: _Conn, item: dict[str, str]) -> None:
        kind = item.get("t")
        if kind == "stream":
            await self._deliver_stream(conn, item.get("sid", ""))
        elif kind == "send":
            await self._send_msg(conn, item.get("chatid", ""), item.get("content", ""))
        elif kind == "raw" and item.get("conn") == conn.conn_id:  # a req_id lives on its connection
            ack = await self._request(conn, item["cmd"], json.loads(item["body"]), req_id=item["req_id"])
            if ack.get("errcode", 0) != 0:
                log.warning("aibot_ws_reply_refused", cmd=item["cmd"], errcode=ack.get("errcode"))

    async def _deliver_stream(self, conn: _Conn, sid: str) -> None:
        streams = self.channel.streams
        view = await streams.view(sid, finish=True)  # closes the stream if this frame finishes it
        if view is None:
            return
        meta = view.meta
        acked = int(meta.get("acked") or 0)
        if meta.get("conn") == conn.conn_id and meta.get("respond_done") != "1":
            content = compose(view, self.options.content_max_bytes)
            body = {"msgtype": "stream", "stream": {"id": sid, "finish": view.closed, "content": content}}
            ack = await self._request(conn, CMD_RESPOND, body, req_id=meta.get("req_id", ""))
            if ack.get("errcode", 0) == 0:
                fields = {"acked": str(len(view.parts))}
                if view.closed:
                    fields["respond_done"] = "1"
                await streams.update(sid, **fields)
                return
            log.warning(
                "aibot_ws_stream_refused", errcode=ack.get("errcode"), errmsg=str(ack.get("errmsg"))[:80]
            )
        # The req_id is gone (another connection, or refused): final replies go out on their own.
        await streams.update(sid, closed="1", respond_done="1")
        view = await streams.view(sid, finish=False)
        if view is None:
            return
        start = max(acked, int(view.meta.get("fallback_sent") or 0))
        for i in range(start, len(view.parts)):
            part = view.parts[i]
            if part.final:
                await self._send_msg(conn, view.meta.get("chat", ""), part.text)
            await streams.update(sid, fallback_sent=str(i + 1))

    async def _send_msg(self, conn: _Conn, chatid: str, content: str) -> None:
        if not chatid or not content:
            return
        body = {"chatid": chatid, "msgtype": "markdown", "markdown": {"content": content}}
        ack = await self._request(conn, CMD_SEND, body)
        if ack.get("errcode", 0) != 0:
            log.error("aibot_ws_send_refused", errcode=ack.get("errcode"), errmsg=str(ack.get("errmsg"))[:80])
