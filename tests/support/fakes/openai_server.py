"""An OpenAI-compatible chat-completions server for tests (real HTTP, scripted per test).

    fake = FakeOpenAI(api_key="sk-test")
    fake.push(answer_json({...}), rate_limited(retry_after="1"))
    server = await aiohttp_server(fake.app())
    client = LlmClient(base_url=str(server.make_url("/v1")), api_key="sk-test", ...)

Each request pops the next behaviour from the queue (or uses `fake.default` when the queue is
empty; with neither it answers 500). Every request body is recorded verbatim in `fake.requests`
so a test can assert what reached the model and what did not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    """An assistant message with text content (a structured JSON answer is just its text)."""

    content: str
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCalls:
    """An assistant message that calls tools: [(name, arguments-dict-or-raw-string), ...]."""

    calls: tuple[tuple[str, dict[str, Any] | str], ...]
    content: str | None = None


@dataclass(frozen=True)
class Status:
    """A non-200 answer with an OpenAI error envelope (429 + Retry-After, 500, 400 ...)."""

    status: int
    message: str = "error"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Hang:
    """Sleep (past the client's timeout) before answering 500; released when the server stops."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Garbage:
    """HTTP 200 with a body that is not a chat completion."""

    body: str = "<html><body>502 Bad Gateway</body></html>"
    content_type: str = "text/html"


Behaviour = Answer | ToolCalls | Status | Hang | Garbage
# A behaviour can also be chosen from the request body (e.g. "always call a tool while tools are offered").
Dynamic = Callable[[dict[str, Any]], Behaviour]


def answer_json(obj: Any) -> Answer:
    return Answer(json.dumps(obj, ensure_ascii=False))


def tool_call(name: str, arguments: dict[str, Any] | str) -> ToolCalls:
    return ToolCalls(((name, arguments),))


def rate_limited(retry_after: str | None = "1") -> Status:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return Status(429, "Rate limit reached for requests", headers)


def server_error() -> Status:
    return Status(500, "The server had an error while processing your request")


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    raw: str
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    behaviour: str = ""


@dataclass
class FakeOpenAI:
    api_key: str = "sk-test-key"
    model: str = "fake-model"
    queue: deque[Behaviour | Dynamic] = field(default_factory=deque)
    default: Behaviour | Dynamic | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    _release: asyncio.Event | None = None

    def push(self, *behaviours: Behaviour | Dynamic) -> None:
        self.queue.extend(behaviours)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    # ------------------------------------------------------------------ helpers for tests

    def raw_bodies(self) -> str:
        return "\n".join(r.raw for r in self.requests)

    # ------------------------------------------------------------------ server

    async def _on_startup(self, app: web.Application) -> None:
        self._release = asyncio.Event()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._release is not None:
            self._release.set()  # let hanging handlers finish so the test server stops at once

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_request_error")
        raw = await request.text()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error")

        chosen: Behaviour | Dynamic | None = self.queue.popleft() if self.queue else self.default
        behaviour = chosen(body) if callable(chosen) else chosen
        self.requests.append(
            RecordedRequest(body, raw, dict(request.headers), time.monotonic(), type(behaviour).__name__)
        )
        if behaviour is None:
            return _error(500, "fake server: no behaviour scripted", "server_error")
        if isinstance(behaviour, Status):
            resp = _error(
                behaviour.status, behaviour.message, "rate_limit_error" if behaviour.status == 429 else ""
            )
            for k, v in behaviour.headers:
                resp.headers[k] = v
            return resp
        if isinstance(behaviour, Hang):
            if self._release is not None:
                try:
                    await asyncio.wait_for(self._release.wait(), behaviour.seconds)
                except TimeoutError:
                    pass
            return _error(500, "fake server: hang over", "server_error")
        if isinstance(behaviour, Garbage):
            return web.Response(text=behaviour.body, content_type=behaviour.content_type)

        message, finish = _message(behaviour)
        prompt_tokens = max(1, len(raw) // 4)
        completion_tokens = max(1, len(json.dumps(message, ensure_ascii=False)) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        model = str(body.get("model") or self.model)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await _stream(request, model, message, finish, usage if include_usage else None)
        return web.json_response(
            {
                "id": f"chatcmpl-fake{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            }
        )


def _message(behaviour: Answer | ToolCalls) -> tuple[dict[str, Any], str]:
    if isinstance(behaviour, Answer):
        return {"role": "assistant", "content": behaviour.content}, behaviour.finish_reason
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
            },
        }
        for i, (name, args) in enumerate(behaviour.calls)
    ]
    return {"role": "assistant", "content": behaviour.content, "tool_calls": calls}, "tool_calls"


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind or "server_error", "param": None, "code": None}},
        status=status,
    )


async def _stream(
    request: web.Request,
    model: str,
    message: dict[str, Any],
    finish: str,
    usage: dict[str, int] | None,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    created = int(time.time())

    async def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
        chunk = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        await resp.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    content = message.get("content") or ""
    for i in range(0, len(content), 16):
        await send({"content": content[i : i + 16]})
    for i, call in enumerate(message.get("tool_calls") or []):
        await send({"tool_calls": [{"index": i, **call}]})
    await send({}, finish)
    if usage is not None:
        chunk = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
