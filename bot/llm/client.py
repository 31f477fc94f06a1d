"""A thin async wrapper around the openai SDK for OpenAI-compatible chat endpoints.

Why a wrapper: the SDK's own timeouts (minutes) and retries (exponential, ignoring our deadline)
do not fit a chat bot. Here every request gets `min(timeout_s, time left)`, retries happen only on
429/5xx/connection errors/garbage bodies, `Retry-After` is honoured but never past the analysis
deadline, and every HTTP attempt is reported to an optional observer (metrics), not to a global.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai
import structlog
from openai.types.chat import ChatCompletion

from bot.clients.gateway import parse_retry_after as parse_retry_after_value
from bot.core.settings import LlmSettings

log = structlog.get_logger(__name__)

# Below this much time left a new attempt cannot finish anyway.
_MIN_ATTEMPT_S = 0.2


class LlmError(Exception):
    """A model call failed for good. `kind` is a short metrics label."""

    kind = "error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LlmTimeout(LlmError):
    kind = "timeout"


class LlmRateLimited(LlmError):
    kind = "rate_limited"


class LlmUnavailable(LlmError):
    """5xx, connection errors or garbage bodies that outlasted the retries."""

    kind = "unavailable"


class LlmRejected(LlmError):
    """A 4xx other than 429: the request itself is wrong (or the endpoint lacks a feature)."""

    kind = "rejected"


@dataclass(frozen=True)
class CallEvent:
    """One HTTP attempt, for metrics. `outcome`: ok | timeout | rate_limited | server_error |
    connection_error | bad_response | rejected."""

    purpose: str
    outcome: str
    status: int | None
    duration_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempt: int = 1


class CallObserver(Protocol):
    def __call__(self, event: CallEvent) -> None: ...


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model produced it


@dataclass(frozen=True)
class Completion:
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def assistant_message(self) -> dict[str, Any]:
        """The message to append to the conversation before answering tool calls or repairing."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return msg


@dataclass
class Capabilities:
    """What the endpoint turned out to accept; learned once per client (a 400 downgrades it)."""

    json_schema: bool = True
    tools: bool = True


@dataclass
class Usage:
    calls: int = 0  # HTTP attempts
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or HTTP date) or `retry-after-ms`."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after_value(headers.get("retry-after"), now=now)


class LlmClient:
    """Owns one `openai.AsyncOpenAI`; close it with `aclose()` (or use `async with`)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        observer: CallObserver | None = None,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.observer = observer
        self.capabilities = Capabilities()
        self.usage = Usage()
        self._sdk = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @classmethod
    def from_settings(cls, settings: LlmSettings, observer: CallObserver | None = None) -> LlmClient:
        if not settings.enabled or settings.api_key is None:
            raise ValueError("model is not configured (JOB_DOCTOR_LLM__API_KEY is empty)")
        base_url = str(settings.base_url) if settings.base_url is not None else "https://api.openai.com/v1"
        return cls(
            base_url=base_url,
            api_key=settings.api_key.get_secret_value(),
            model=settings.model,
            timeout_s=settings.timeout_s,
            observer=observer,
        )

    async def aclose(self) -> None:
        await self._sdk.close()

    async def __aenter__(self) -> LlmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        deadline: float,
        tools: Sequence[Mapping[str, Any]] | None = None,
        response_format: Mapping[str, Any] | None = None,
        temperature: float = 0.2,
        max_tokens: int | None = None,
        purpose: str = "diagnose",
        usage: Usage | None = None,
    ) -> Completion:
        """One chat completion with our retries. `deadline` is an absolute `loop.time()`.

        `usage`, when given, is updated alongside the client's lifetime totals (per-analysis
        accounting while several analyses share one client).
        """
        counters = [self.usage] if usage is None else [self.usage, usage]
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": temperature}
        if tools:
            kwargs["tools"] = list(tools)
        if response_format is not None:
            kwargs["response_format"] = dict(response_format)
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens

        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining < _MIN_ATTEMPT_S:
                raise LlmTimeout("analysis deadline reached before the model answered")
            per_request = min(self.timeout_s, remaining)
            started = loop.time()
            for u in counters:
                u.calls += 1
            wait: float | None
            try:
                # asyncio.timeout is the hard bound: the SDK's timeout is per read, not per request.
                async with asyncio.timeout(per_request):
                    raw = await self._sdk.chat.completions.create(**kwargs, timeout=per_request)
            except (TimeoutError, openai.APITimeoutError):
                self._emit(purpose, "timeout", None, loop.time() - started, attempt)
                if loop.time() + _MIN_ATTEMPT_S >= deadline or attempt >= self.max_attempts:
                    raise LlmTimeout(f"model request timed out after {per_request:.1f}s") from None
                continue
            except openai.APIStatusError as exc:
                status = exc.status_code
                retryable = status == 429 or status >= 500
                outcome = "rate_limited" if status == 429 else "server_error" if status >= 500 else "rejected"
                self._emit(purpose, outcome, status, loop.time() - started, attempt)
                if not retryable:
                    raise LlmRejected(
                        f"model endpoint rejected the request: HTTP {status}", status=status
                    ) from None
                wait = parse_retry_after(exc.response.headers)
                err_cls: type[LlmError] = LlmRateLimited if status == 429 else LlmUnavailable
                self._retry_or_raise(err_cls, f"HTTP {status}", status, attempt, wait, deadline, loop.time())
                await asyncio.sleep(self._delay(wait, attempt))
                continue
            except openai.APIConnectionError as exc:
                self._emit(purpose, "connection_error", None, loop.time() - started, attempt)
                self._retry_or_raise(
                    LlmUnavailable, type(exc).__name__, None, attempt, None, deadline, loop.time()
                )
                await asyncio.sleep(self._delay(None, attempt))
                continue

            completion = self._parse(raw, attempt)
            if completion is None:
                self._emit(purpose, "bad_response", 200, loop.time() - started, attempt)
                self._retry_or_raise(
                    LlmUnavailable, "unparseable response body", 200, attempt, None, deadline, loop.time()
                )
                await asyncio.sleep(self._delay(None, attempt))
                continue
            for u in counters:
                u.prompt_tokens += completion.prompt_tokens
                u.completion_tokens += completion.completion_tokens
            self._emit(
                purpose,
                "ok",
                200,
                loop.time() - started,
                attempt,
                completion.prompt_tokens,
                completion.completion_tokens,
            )
            return completion

    # ------------------------------------------------------------------ internals

    def _delay(self, retry_after: float | None, attempt: int) -> float:
        if retry_after is not None:
            return retry_after
        return float(self.backoff_s * (2 ** (attempt - 1)))

    def _retry_or_raise(
        self,
        err_cls: type[LlmError],
        what: str,
        status: int | None,
        attempt: int,
        retry_after: float | None,
        deadline: float,
        now: float,
    ) -> None:
        if attempt >= self.max_attempts:
            raise err_cls(f"model call failed after {attempt} attempts: {what}", status=status)
        if now + self._delay(retry_after, attempt) + _MIN_ATTEMPT_S >= deadline:
            # Waiting as asked would overrun the analysis deadline: give up now, the caller uses rules.
            raise err_cls(f"model call failed ({what}); no time left to retry", status=status)
        log.info(
            "llm_retry", reason=what, attempt=attempt, wait_s=round(self._delay(retry_after, attempt), 3)
        )

    def _parse(self, raw: object, attempt: int) -> Completion | None:
        # Proxies sometimes answer 200 with HTML or an unrelated JSON; the SDK then hands back a
        # str or an empty model instead of raising.
        if not isinstance(raw, ChatCompletion) or not raw.choices:
            return None
        choice = raw.choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            return None
        calls: list[ToolCall] = []
        for call in message.tool_calls or []:
            function = getattr(call, "function", None)
            if function is None:
                continue
            calls.append(ToolCall(id=call.id, name=function.name, arguments=function.arguments or ""))
        usage = raw.usage
        return Completion(
            content=message.content,
            tool_calls=tuple(calls),
            finish_reason=choice.finish_reason,
            prompt_tokens=(usage.prompt_tokens or 0) if usage else 0,
            completion_tokens=(usage.completion_tokens or 0) if usage else 0,
            attempts=attempt,
        )

    def _emit(
        self,
        purpose: str,
        outcome: str,
        status: int | None,
        duration_s: float,
        attempt: int,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        if self.observer is None:
            return
        try:
            self.observer(
                CallEvent(purpose, outcome, status, duration_s, prompt_tokens, completion_tokens, attempt)
            )
        except Exception:  # a metrics bug must never break a diagnosis
            log.exception("llm_observer_failed")


@dataclass
class RecordingObserver:
    """An observer that keeps the events (handy for tests and the `check` command)."""

    events: list[CallEvent] = field(default_factory=list)

    def __call__(self, event: CallEvent) -> None:
        self.events.append(event)
