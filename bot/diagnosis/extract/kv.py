"""Java toString bodies (`a=1, b='x, y', c=Obj(d=2)`) as raw key/value strings, and their value parsers."""

from __future__ import annotations

import re


def as_int(v: str | None) -> int | None:
    """An int value (quotes stripped); None when absent, `null` or not a number."""
    if v is None:
        return None
    v = v.strip().strip("'\"")
    if not v or v == "null":
        return None
    try:
        return int(v)
    except ValueError:
        return None


def as_str(v: str | None) -> str | None:
    """A string value without its single quotes; None when absent or `null`."""
    if v is None:
        return None
    v = v.strip()
    if v == "null":
        return None
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1]
    return v


# Only these characters matter to the toString scanners; jumping between them keeps the scan cheap.
_SPECIAL_RE = re.compile(r"[\[\](){}',]")
_QUOTE_END = frozenset(",)]}")


def bracket_end(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at `start` (or len(text) when unclosed).

    A single quote opens a quoted value only right after `=`, and closes only before a separator or a
    closing bracket, so messages such as `errorMsg='it's down'` stay whole.
    """
    depth = 0
    quote = False
    n = len(text)
    for m in _SPECIAL_RE.finditer(text, start):
        ch = m.group()
        i = m.start()
        if quote:
            if ch == "'" and (i + 1 == n or text[i + 1] in _QUOTE_END):
                quote = False
        elif ch == "'":
            quote = i > 0 and text[i - 1] == "="
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
            if depth <= 0:
                return i + 1
    return n


def parse_kv(body: str) -> dict[str, str]:
    """Split a Java toString body ``a=1, b='x, y', c=Obj(d=2, e=3)`` into raw string values.

    Nested brackets and single-quoted values are kept whole; the caller converts the values.
    """
    depth = 0
    quote = False
    start = 0
    n = len(body)
    parts: list[str] = []
    for m in _SPECIAL_RE.finditer(body):
        ch = m.group()
        i = m.start()
        if quote:
            if ch == "'" and (i + 1 == n or body[i + 1] in _QUOTE_END):
                quote = False
        elif ch == "'":
            quote = i > 0 and body[i - 1] == "="
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    out: dict[str, str] = {}
    for part in parts:
        k, eq, value = part.partition("=")
        k = k.strip()
        if eq and k:
            out[k] = value
    return out
