"""A BK-JOB resource scope: a business (`biz:2`) or a business set (`biz_set:9991001`).

Every BK-JOB call names one (`bk_scope_type` + `bk_scope_id`); settings, links, the CLI and
reports spell it `<type>:<id>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ScopeType = Literal["biz", "biz_set"]

_SCOPE = re.compile(r"^\s*(biz|biz_set)\s*[:/]\s*(\d{1,19})\s*$")


@dataclass(frozen=True, slots=True)
class Scope:
    type: ScopeType
    id: int

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


def parse_scope(text: str) -> Scope:
    """`"biz:2"` → Scope("biz", 2); a bare number means a business. ValueError names the format."""
    raw = str(text).strip()
    if raw.isdigit() and 0 < len(raw) <= 19:
        return Scope("biz", int(raw))
    m = _SCOPE.match(raw)
    if m is None or int(m.group(2)) == 0:
        raise ValueError(f"scope {raw[:40]!r} must look like biz:ID or biz_set:ID")
    kind: ScopeType = "biz" if m.group(1) == "biz" else "biz_set"
    return Scope(kind, int(m.group(2)))


def scope_of(scope_type: str | None, scope_id: int | str | None) -> Scope | None:
    """The scope named by a (type, id) pair as jobs and links carry it; None when incomplete."""
    if scope_id in (None, "", 0):
        return None
    try:
        return parse_scope(f"{scope_type or 'biz'}:{scope_id}")
    except ValueError:
        return None
