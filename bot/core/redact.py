"""Secret masking shared by the log processor, the model scrubber and chat rendering.

Two layers: the exact configured secrets (app secrets, tokens, keys from Settings) and
patterns for credentials that show up inside BK-JOB log lines and HTTP dumps (passwords,
app secrets, bearer tokens, X-Bkapi-Authorization JSON, private keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "******"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole block
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )?PRIVATE KEY-----|$)",
            re.S,
        ),
        "-----PRIVATE KEY " + MASK + "-----",
    ),
    # X-Bkapi-Authorization: {...json...} (header dumps); mask the whole JSON value
    (
        re.compile(r"(?i)(x-bkapi-authorization[\"']?\s*[:=]\s*)(\{[^{}]*\}|\"[^\"]*\"|'[^']*'|\S+)"),
        r"\1" + MASK,
    ),
    # Authorization: Bearer xxx / Basic xxx
    (
        re.compile(
            r"(?i)\b((?:authorization|proxy-authorization)[\"']?\s*[:=]\s*[\"']?)([A-Za-z]+\s+)?[^\s\"',;]+"
        ),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*"), r"\1" + MASK),
    # key=value / "key": "value" style secrets
    (
        re.compile(
            r"(?i)(\\?\"?\b(?:password|passwd|pwd|app_?secret|bk_app_secret|secret_?key|secret|api_?key|access_?token|"
            r"bk_token|token|encoding_?aes_?key|aes_?key|private_?key|credential)s?\b\\?\"?\s*[:=]\s*)"
            # the value: quoted, escaped-quoted (JSON inside a logged string) or a bare word
            r"(\\\"(?:[^\\]|\\(?!\"))*\\\"|\"[^\"]*\"|'[^']*'|[^\s,;&|}\])]+)"
        ),
        r"\1" + MASK,
    ),
    # URL userinfo: scheme://user:password@host
    # (bounded parts: an unbounded scheme is re-scanned from every letter of a long word)
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://[^\s:/@]{0,256}:)([^\s@/]{1,1024})(@)"),
        r"\1" + MASK + r"\3",
    ),
    # OpenAI-style keys
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}\b"), MASK),
)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://)[^\s/@]{1,1024}@")


def mask_url_credentials(text: str) -> str:
    """Every `scheme://user:password@` (or `scheme://token@`) in `text` with its userinfo masked."""
    return _URL_USERINFO.sub(r"\1" + MASK + "@", text)


# Mapping keys whose values are secrets whatever they look like.
_SECRET_KEY = re.compile(
    r"(?i)(password|passwd|secret|token|api_?key|aes_?key|authorization|credential|private_?key)"
)


class Redactor:
    """Masks configured secret values and credential patterns. Immutable, cheap to share."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        if not text:
            return text
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def redact_obj(self, obj: object) -> object:
        """Recursively mask strings inside dicts/lists/tuples (structlog event dicts)."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {
                k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) and obj[k] else self.redact_obj(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list | tuple):
            return type(obj)(self.redact_obj(v) for v in obj)
        return obj
