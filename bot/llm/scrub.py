"""Scrub everything that leaves for the model, then prove it is clean.

`Redactor` (shared with logging and rendering) masks the configured secrets and the usual
credential shapes. On top of that this module handles JSON that is itself escaped inside a log
line (`reqStr={\\"bk_app_secret\\":\\"...\\"}`, common in BK-JOB API-client dumps), and
`assert_clean` is a last pass over the serialized request: if any configured secret survived
anywhere (messages, tool results), the request is not sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.core.redact import MASK, Redactor

_KEYS = (
    r"password|passwd|pwd|app_?secret|bk_app_secret|secret_?key|secret|api_?key|access_?token|bk_token|token|"
    r"encoding_?aes_?key|aes_?key|private_?key|credential|authorization|x-bkapi-authorization"
)
# \"key\":\"value\" (one or more backslashes before each quote)
# (starts only at the first backslash of a run: a run of N backslashes is otherwise tried N times)
_ESCAPED_JSON = re.compile(rf'(?i)((?<!\\)\\+"(?:{_KEYS})s?\\+"\s*:\s*\\+")(.*?)(\\+")')
_MAX_PASSES = 4


class SecretLeak(RuntimeError):
    """A configured secret survived scrubbing; the request was not sent."""


class Scrubber:
    """Masks secrets in text bound for the model. Cheap to share; holds no I/O."""

    def __init__(self, secrets: Iterable[str] = (), redactor: Redactor | None = None) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._redactor = redactor if redactor is not None else Redactor(self._secrets)

    def text(self, text: str) -> str:
        """Masked `text`. Idempotent: the prompt is scrubbed more than once on its way out (rendering,
        then the whole request), and quotes are verified against lines scrubbed once, so both must
        agree (one pass of the patterns is not a fixed point, e.g. `X-Bkapi-Authorization: ******,`
        loses its comma to a second pass)."""
        for _ in range(_MAX_PASSES):
            if not text:
                return text
            once = self._redactor.redact(_ESCAPED_JSON.sub(lambda m: m.group(1) + MASK + m.group(3), text))
            if once == text:
                break
            text = once
        return text

    def obj(self, obj: Any) -> Any:
        """Recursively scrub the strings of a JSON-like structure (messages, tool arguments)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: self.obj(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.obj(v) for v in obj]
        return obj

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [dict(self.obj(m)) for m in messages]

    def assert_clean(self, payload: Any) -> None:
        """Raise SecretLeak if any configured secret appears in `payload` (raw or JSON-escaped)."""
        if not self._secrets:
            return
        strings: list[str] = []

        def walk(o: Any) -> None:
            if isinstance(o, str):
                strings.append(o)
            elif isinstance(o, Mapping):
                for k, v in o.items():
                    walk(k)
                    walk(v)
            elif isinstance(o, list | tuple):
                for v in o:
                    walk(v)

        walk(payload)
        blob = "\n".join(strings)
        dumped = json.dumps(payload, ensure_ascii=False, default=str)
        for secret in self._secrets:
            if secret in blob or secret in dumped or json.dumps(secret)[1:-1] in dumped:
                # Never put the secret (or a hint of it) into the message.
                raise SecretLeak("a configured secret survived scrubbing; model request blocked")
