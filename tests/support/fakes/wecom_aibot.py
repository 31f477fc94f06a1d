"""The WeCom side of the AI bot (智能机器人) for tests (wecom-channels.md §2, §5).

* `WeComAibotSide`: produces URL-verification queries and encrypted, signed callbacks exactly like
  WeCom (its own AES implementation on pycryptodome, independent of `bot.channels.wecom.crypto`),
  and opens the bot's encrypted passive replies (checking ``msgsignature``) for assertions.
* `FakeResponseUrl`: the one-shot ``response_url`` endpoint (``POST /cgi-bin/aibot/response
  ?response_code=…``, markdown JSON), recording every post; a second post to the same code fails.
* `FakeAibotWsServer`: the long-connection endpoint speaking the documented frames. It checks that
  the first frame is ``aibot_subscribe`` with the right bot id + secret, acks pings, pushes
  ``aibot_msg_callback`` / ``aibot_event_callback`` frames, records the bot's respond / send frames,
  and can drop the connection or stall it (stop answering). A newer subscription kicks the older
  connection (``disconnected_event``), as WeCom does. ``req_id``s are valid on the connection that
  issued them only.

Error codes: ``846605`` (invalid req_id) and ``846608`` (stream update expired) are from the
reference. Chosen here (not documented): ``40001`` for a wrong bot id / secret, ``600039`` for a
used or unknown ``response_code``, ``40008`` for a malformed body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from Crypto.Cipher import AES

TOKEN = "QDG6eK"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
BOT_ID = "aib-test-bot"
SECRET = "ws-secret-0123456789"
RESPONSE_PATH = "/cgi-bin/aibot/response"

ERR_INVALID_REQ_ID = 846605
ERR_STREAM_EXPIRED = 846608
ERR_AUTH = 40001
ERR_RESPONSE_CODE = 600039
ERR_BAD_BODY = 40008


# --------------------------------------------------------------------------- HTTP mode: crypto


class WeComAibotSide:
    """Encrypt/sign like WeCom (receive id "" for internal AI bots)."""

    def __init__(self, token: str = TOKEN, encoding_aes_key: str = AES_KEY, aibotid: str = BOT_ID) -> None:
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.aibotid = aibotid

    def signature(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return hashlib.sha1("".join(sorted([self.token, timestamp, nonce, encrypted])).encode()).hexdigest()

    def encrypt(self, plaintext: str) -> str:
        msg = plaintext.encode()
        body = os.urandom(16) + struct.pack(">I", len(msg)) + msg
        pad = 32 - len(body) % 32
        body += bytes([pad]) * pad
        return base64.b64encode(AES.new(self.key, AES.MODE_CBC, self.key[:16]).encrypt(body)).decode()

    def decrypt(self, encrypted: str) -> str:
        plain = AES.new(self.key, AES.MODE_CBC, self.key[:16]).decrypt(base64.b64decode(encrypted))
        plain = plain[: -plain[-1]]
        (n,) = struct.unpack(">I", plain[16:20])
        assert plain[20 + n :] == b"", "receive id must be empty for an internal AI bot"
        return plain[20 : 20 + n].decode()

    def verify_query(self, echo: str, *, timestamp: int | None = None) -> dict[str, str]:
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        echostr = self.encrypt(echo)
        return {
            "msg_signature": self.signature(ts, nonce, echostr),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echostr,
        }

    def callback(
        self, payload: dict[str, Any], *, timestamp: int | None = None, nonce: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Query parameters and body of one encrypted callback POST."""
        ts, nonce = str(timestamp or int(time.time())), nonce or secrets.token_hex(5)
        encrypted = self.encrypt(json.dumps(payload, ensure_ascii=False))
        params = {"msg_signature": self.signature(ts, nonce, encrypted), "timestamp": ts, "nonce": nonce}
        return params, json.dumps({"encrypt": encrypted}).encode()

    def open_reply(self, body: str, *, nonce: str | None = None) -> dict[str, Any]:
        """Verify and decrypt a passive reply envelope (§2.4)."""
        env = json.loads(body)
        assert set(env) == {"encrypt", "msgsignature", "timestamp", "nonce"}, env.keys()
        if nonce is not None:
            assert env["nonce"] == nonce
        expected = self.signature(str(env["timestamp"]), env["nonce"], env["encrypt"])
        assert env["msgsignature"] == expected, "bad msgsignature on the passive reply"
        data: dict[str, Any] = json.loads(self.decrypt(env["encrypt"]))
        return data

    # ---- callback bodies (decrypted JSON, §2.3)

    @staticmethod
    def new_msgid() -> str:
        return base64.b64encode(uuid.uuid4().bytes).decode()

    def _base(
        self, user: str, chattype: str, chatid: str, response_url: str, msgid: str | None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "msgid": msgid or self.new_msgid(),
            "aibotid": self.aibotid,
            "chattype": chattype,
            "from": {"userid": user},
        }
        if chattype == "group":
            data["chatid"] = chatid
        if response_url:
            data["response_url"] = response_url
        return data

    def text(
        self,
        content: str,
        *,
        user: str = "zhangsan",
        chattype: str = "single",
        chatid: str = "",
        response_url: str = "",
        msgid: str | None = None,
    ) -> dict[str, Any]:
        data = self._base(user, chattype, chatid, response_url, msgid)
        data.update({"msgtype": "text", "text": {"content": content}})
        return data

    def mixed(self, texts: list[str], *, user: str = "zhangsan", response_url: str = "") -> dict[str, Any]:
        data = self._base(user, "single", "", response_url, None)
        items: list[dict[str, Any]] = []
        for t in texts:
            items.append({"msgtype": "text", "text": {"content": t}})
            items.append({"msgtype": "image", "image": {"url": "https://example.invalid/img"}})
        data.update({"msgtype": "mixed", "mixed": {"msg_item": items}})
        return data

    def image(self, *, user: str = "zhangsan") -> dict[str, Any]:
        data = self._base(user, "single", "", "", None)
        data.update({"msgtype": "image", "image": {"url": "https://example.invalid/img"}})
        return data

    def refresh(
        self, stream_id: str, *, user: str = "zhangsan", chattype: str = "single", chatid: str = ""
    ) -> dict[str, Any]:
        data = self._base(user, chattype, chatid, "", None)
        data.update({"msgtype": "stream", "stream": {"id": stream_id}})
        return data

    def event(self, eventtype: str, *, user: str = "zhangsan") -> dict[str, Any]:
        data = self._base(user, "single", "", "", None)
        data.update({"msgtype": "event", "create_time": int(time.time()), "event": {"eventtype": eventtype}})
        return data


# --------------------------------------------------------------------------- response_url


@dataclass
class ResponsePost:
    code: str
    body: dict[str, Any]

    @property
    def content(self) -> str:
        return str((self.body.get("markdown") or {}).get("content", ""))


class FakeResponseUrl:
    def __init__(self) -> None:
        self.posts: list[ResponsePost] = []  # accepted posts
        self.refused: list[str] = []  # codes posted to again (or unknown)
        self.issued: set[str] = set()
        self.base = ""

    def url(self) -> str:
        """A fresh one-shot response_url (the server must be started and `base` set)."""
        code = secrets.token_hex(8)
        self.issued.add(code)
        return f"{self.base}{RESPONSE_PATH}?response_code={code}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(RESPONSE_PATH, self._post)
        return app

    async def _post(self, request: web.Request) -> web.Response:
        code = request.query.get("response_code", "")
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": ERR_BAD_BODY, "errmsg": "invalid json"})
        if code not in self.issued:
            self.refused.append(code)
            return web.json_response({"errcode": ERR_RESPONSE_CODE, "errmsg": "invalid response_code"})
        md = body.get("markdown") if isinstance(body, dict) else None
        if body.get("msgtype") != "markdown" or not isinstance(md, dict) or not md.get("content"):
            return web.json_response({"errcode": ERR_BAD_BODY, "errmsg": "invalid body"})
        if len(str(md["content"]).encode()) > 20480:
            return web.json_response({"errcode": 45002, "errmsg": "content size out of limit"})
        self.issued.discard(code)  # one call per response_url
        self.posts.append(ResponsePost(code, body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


# --------------------------------------------------------------------------- WebSocket mode


@dataclass
class Frame:
    conn: int  # connection number (1, 2, …)
    data: dict[str, Any]

    @property
    def cmd(self) -> str:
        return str(self.data.get("cmd", ""))

    @property
    def req_id(self) -> str:
        return str((self.data.get("headers") or {}).get("req_id", ""))

    @property
    def body(self) -> dict[str, Any]:
        body = self.data.get("body")
        return body if isinstance(body, dict) else {}


@dataclass
class _WsConn:
    number: int
    ws: web.WebSocketResponse
    subscribed: bool = False
    stalled: bool = False
    issued: set[str] = field(default_factory=set)  # req_ids pushed on this connection
    finished_streams: set[str] = field(default_factory=set)


class FakeAibotWsServer:
    def __init__(self, bot_id: str = BOT_ID, secret: str = SECRET) -> None:
        self.bot_id = bot_id
        self.secret = secret
        self.url = ""  # set by the test once the server runs
        self.frames: list[Frame] = []  # everything the bot sent, in order
        self.connections: list[_WsConn] = []
        self.subscriptions = 0
        self.auth_failures = 0
        self.pings = 0
        self.kicked = 0  # live connections replaced by a newer subscription (two clients at once)
        self._changed = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._handler)
        return app

    # ---- inspection

    @property
    def live(self) -> _WsConn | None:
        for conn in reversed(self.connections):
            if conn.subscribed and not conn.ws.closed:
                return conn
        return None

    def live_count(self) -> int:
        return sum(1 for c in self.connections if c.subscribed and not c.ws.closed)

    def sent(self, cmd: str) -> list[Frame]:
        return [f for f in self.frames if f.cmd == cmd]

    def stream_frames(self, req_id: str | None = None) -> list[dict[str, Any]]:
        """``stream`` objects of every aibot_respond_msg (optionally for one req_id)."""
        return [
            f.body.get("stream", {})
            for f in self.sent("aibot_respond_msg")
            if (req_id is None or f.req_id == req_id) and f.body.get("msgtype") == "stream"
        ]

    def delivered(self) -> list[str]:
        """What users finally see: each finished stream's content and each aibot_send_msg."""
        out = [s.get("content", "") for s in self.stream_frames() if s.get("finish")]
        out += [str((f.body.get("markdown") or {}).get("content", "")) for f in self.sent("aibot_send_msg")]
        return out

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    # ---- control

    async def push_message(self, body: dict[str, Any]) -> str:
        return await self._push("aibot_msg_callback", body)

    async def push_event(self, body: dict[str, Any]) -> str:
        return await self._push("aibot_event_callback", body)

    async def _push(self, cmd: str, body: dict[str, Any]) -> str:
        conn = self.live
        assert conn is not None, "no subscribed connection"
        rid = f"{cmd}_{uuid.uuid4().hex[:12]}"
        conn.issued.add(rid)
        await conn.ws.send_str(
            json.dumps({"cmd": cmd, "headers": {"req_id": rid}, "body": body}, ensure_ascii=False)
        )
        return rid

    async def drop(self) -> None:
        """Close the live connection abruptly (network trouble, server restart)."""
        conn = self.live
        assert conn is not None
        await conn.ws.close()
        self._notify()

    def stall(self) -> None:
        """The live connection stops answering anything (acks, pings), like a half-open socket."""
        conn = self.live
        assert conn is not None
        conn.stalled = True

    # ---- the endpoint

    def _notify(self) -> None:
        self._changed.set()

    async def _ack(self, conn: _WsConn, req_id: str, errcode: int = 0, errmsg: str = "ok") -> None:
        if not conn.stalled and not conn.ws.closed:
            await conn.ws.send_str(
                json.dumps({"headers": {"req_id": req_id}, "errcode": errcode, "errmsg": errmsg})
            )

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _WsConn(len(self.connections) + 1, ws)
        self.connections.append(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = Frame(conn.number, json.loads(msg.data))
                self.frames.append(frame)
                await self._on_frame(conn, frame)
                self._notify()
        finally:
            self._notify()
        return ws

    async def _on_frame(self, conn: _WsConn, frame: Frame) -> None:
        if frame.cmd == "aibot_subscribe":
            if frame.body.get("bot_id") != self.bot_id or frame.body.get("secret") != self.secret:
                self.auth_failures += 1
                await self._ack(conn, frame.req_id, ERR_AUTH, "invalid bot_id or secret")
                await conn.ws.close()
                return
            for old in self.connections:  # one live connection per bot: the newer one wins
                if old is not conn and old.subscribed and not old.ws.closed:
                    self.kicked += 1
                    event = {"msgtype": "event", "event": {"eventtype": "disconnected_event"}}
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await old.ws.send_str(
                            json.dumps(
                                {"cmd": "aibot_event_callback", "headers": {"req_id": "kick"}, "body": event}
                            )
                        )
                        await old.ws.close()
            conn.subscribed = True
            self.subscriptions += 1
            await self._ack(conn, frame.req_id)
            return
        if not conn.subscribed:
            await self._ack(conn, frame.req_id, ERR_AUTH, "not subscribed")
            await conn.ws.close()
            return
        if frame.cmd == "ping":
            self.pings += 1
            await self._ack(conn, frame.req_id)
        elif frame.cmd in ("aibot_respond_msg", "aibot_respond_welcome_msg"):
            if frame.req_id not in conn.issued:
                await self._ack(conn, frame.req_id, ERR_INVALID_REQ_ID, "invalid req_id")
                return
            stream = frame.body.get("stream") if frame.body.get("msgtype") == "stream" else None
            if isinstance(stream, dict):
                sid = str(stream.get("id", ""))
                if sid in conn.finished_streams:
                    await self._ack(conn, frame.req_id, ERR_STREAM_EXPIRED, "stream message update expired")
                    return
                if len(str(stream.get("content", "")).encode()) > 20480:
                    await self._ack(conn, frame.req_id, 45002, "content size out of limit")
                    return
                if stream.get("finish"):
                    conn.finished_streams.add(sid)
            await self._ack(conn, frame.req_id)
        elif frame.cmd == "aibot_send_msg":
            md = frame.body.get("markdown") or {}
            ok = frame.body.get("chatid") and frame.body.get("msgtype") == "markdown" and md.get("content")
            await self._ack(conn, frame.req_id, 0 if ok else ERR_BAD_BODY, "ok" if ok else "invalid body")
        else:
            await self._ack(conn, frame.req_id, ERR_BAD_BODY, "unknown cmd")
