"""Make text the bot did not write inert in a chat.

Model output and text quoted from log lines go into WeCom markdown. There `<@userid>` and `@all`
mention people, `[x](url)` hides a link behind any words, `<font>` and headings restyle the report,
and a backtick run can swallow the rest of it. `defuse` keeps such text readable but inert: `@` and
angle brackets become their full-width forms, a link loses its `](`, backticks become quotes and a
line cannot open a heading.

Usage::

    md = f"**失败原因**：{defuse(report.root_cause)}"
"""

from __future__ import annotations

import re

_LINK = re.compile(r"\]\s*\(")
_HEADING = re.compile(r"(?m)^(\s{0,3})#")
_TABLE = str.maketrans({"@": "＠", "<": "＜", ">": "＞", "`": "'"})


def defuse(text: str) -> str:
    """`text` with mentions, tags, links, code and headings neutralised (everything else as it was)."""
    if not text:
        return text
    out = _LINK.sub("] (", text.translate(_TABLE))
    return _HEADING.sub(r"\1＃", out)


def defuse_mentions(text: str) -> str:
    """Only the mentions neutralised (plain-text channels: `@all` must not reach anyone)."""
    return text.replace("@", "＠") if text else text
