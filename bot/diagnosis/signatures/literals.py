"""The literal pre-filter: texts every match of a regex must contain, found at load time.

Every regex run over the whole chain must contain a literal of at least `MIN_LITERAL_LEN` UTF-8 bytes
outside non-literal groups (bytes: CJK text is selective). The longest is searched for with
`str.find` in one joined text of the chain; the others (`AnyOf`) are substring tests on the
candidates it finds, so only records passing both reach the regex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_LITERAL_LEN = 5
FLAGS = re.MULTILINE  # `$` ends a line, so stacks do not get in the way

_QUANT_RE = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _skip_class(pattern: str, i: int) -> int:
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern):
        if pattern[j] == "\\":
            j += 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return j


_MAX_ALTERNATIVES = 32


def _group_end(pattern: str, i: int) -> int:
    """Index just after the `)` closing the group that opens at `pattern[i]`."""
    depth = 0
    j = i
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _skip_class(pattern, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def _exact_alternatives(body: str) -> tuple[str, ...] | None:
    """The strings a group body matches when it is only literal text and `|`, else None."""
    alts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and not body[i + 1].isalnum():
            cur.append(body[i + 1])
            i += 2
            continue
        if c == "|":
            alts.append("".join(cur))
            cur = []
        elif c in "\\[](){}.^$*+?":
            return None
        else:
            cur.append(c)
        i += 1
    alts.append("".join(cur))
    return tuple(alts)


def _group_body(pattern: str, start: int, end: int) -> str | None:
    """Body of a capturing or non-capturing group; None for lookarounds and inline flags."""
    inner = pattern[start + 1 : end - 1]
    if not inner.startswith("?"):
        return inner
    if inner.startswith("?:"):
        return inner[2:]
    if inner.startswith("?P<"):
        close = inner.find(">")
        return inner[close + 1 :] if close > 0 else None
    return None


def _quantifier(pattern: str, i: int) -> tuple[int, int]:
    """(minimum repeat, length of the quantifier text) of what follows position i."""
    nxt = pattern[i] if i < len(pattern) else ""
    if nxt in ("*", "?"):
        return 0, 1
    if nxt == "+":
        return 1, 1
    if nxt == "{":
        q = _QUANT_RE.match(pattern, i)
        if q is not None and (q.group(1) or q.group(2)):
            return int(q.group(1) or 0), q.end() - i
    return 1, 0


def literal_runs(pattern: str) -> list[tuple[str, ...]]:
    """Texts every match of `pattern` must contain: each run is a tuple of alternatives, one of which
    appears in any match.

    Conservative scan of the regex source: top-level literal characters and groups that are only
    literal alternatives (`(?:Base|Abstract)`, `(?P<code>117)`) form runs; classes, escapes like
    `\\d`, other groups and optional parts break them. A top-level `|` or a case-insensitive/verbose
    flag means nothing is guaranteed.
    """
    if re.compile(pattern).flags & (re.IGNORECASE | re.VERBOSE):
        return []
    runs: list[tuple[str, ...]] = []
    cur: list[str] = [""]
    i = 0
    n = len(pattern)

    def flush() -> None:
        nonlocal cur
        if cur != [""]:
            runs.append(tuple(cur))
        cur = [""]

    def extend(options: Sequence[str]) -> None:
        nonlocal cur
        grown = [a + o for a in cur for o in options]
        if len(grown) > _MAX_ALTERNATIVES:
            flush()
            grown = list(options)
        cur = grown

    while i < n:
        c = pattern[i]
        options: tuple[str, ...] | None
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < n else ""
            i += 2
            options = (nxt,) if nxt and not nxt.isalnum() else None
        elif c == "[":
            i = _skip_class(pattern, i)
            options = None
        elif c == "(":
            end = _group_end(pattern, i)
            body = _group_body(pattern, i, end)
            options = _exact_alternatives(body) if body is not None else None
            i = end
        elif c == "|":
            return []
        elif c in ".^$*+?)":
            i += 1
            options = None
        elif c == "{" and _quantifier(pattern, i)[1]:
            i += _quantifier(pattern, i)[1]
            options = None
        else:
            i += 1
            options = (c,)
        if options is None or "" in options:
            flush()
            continue
        minimum, qlen = _quantifier(pattern, i)
        if minimum == 0:
            flush()
        elif qlen:
            extend(options)
            flush()
        else:
            extend(options)
        i += qlen
    flush()
    return runs


def _common_affixes(run: tuple[str, ...]) -> list[str]:
    if len(run) == 1:
        return [run[0]]
    return [_common_prefix(run), _common_prefix([a[::-1] for a in run])[::-1]]


def _common_prefix(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def required_literal(pattern: str) -> str:
    """The longest single text every match of `pattern` must contain, or ""."""
    return max((a for r in literal_runs(pattern) for a in _common_affixes(r)), key=len, default="")


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A required text with alternatives (`errorCode=104` | `errorCode=123`), tested cheaply."""

    alternatives: tuple[str, ...]
    prefix: str  # common to all alternatives; found once, then the rest is looked up in a set
    rests: frozenset[str]
    rest_lengths: tuple[int, ...]

    @classmethod
    def of(cls, alternatives: tuple[str, ...]) -> AnyOf:
        prefix = _common_prefix(alternatives)
        rests = frozenset(a[len(prefix) :] for a in alternatives)
        return cls(alternatives, prefix, rests, tuple(sorted({len(r) for r in rests})))

    def found_in(self, text: str) -> bool:
        if len(self.alternatives) == 1:
            return self.alternatives[0] in text
        if len(self.prefix) < 3:
            return any(a in text for a in self.alternatives)
        plen = len(self.prefix)
        pos = text.find(self.prefix)
        while pos >= 0:
            start = pos + plen
            for n in self.rest_lengths:
                if text[start : start + n] in self.rests:
                    return True
            pos = text.find(self.prefix, start)
        return False


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    source: str
    regex: re.Pattern[str]
    literal: str  # scanned for in the whole chain
    filters: tuple[AnyOf, ...] = ()  # further required texts, checked before the regex runs


def scan_literals(pattern: str) -> list[str]:
    """Texts usable as the chain-wide scan for `pattern` (required, long enough), longest first."""
    found = {
        a for r in literal_runs(pattern) for a in _common_affixes(r) if len(a.encode()) >= MIN_LITERAL_LEN
    }
    return sorted(found, key=len, reverse=True)


def compile_pattern(
    pattern: str, *, need_literal: bool, prefer: Mapping[str, int] | None = None
) -> CompiledPattern:
    """Compile one regex with its pre-filter. `prefer` counts how many catalog regexes can use each
    scan literal: a shared literal costs one scan of the chain for all of them."""
    try:
        regex = re.compile(pattern, FLAGS)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
    runs = literal_runs(pattern)
    options = scan_literals(pattern)
    usage = prefer or {}
    literal = max(options, key=lambda lit: (usage.get(lit, 0), len(lit)), default="")
    # longest (most specific) first, so later checks see few candidates
    filters = tuple(
        AnyOf.of(r) for r in sorted((r for r in runs if r != (literal,)), key=lambda r: -min(map(len, r)))
    )
    if need_literal and not literal:
        raise ValueError(
            f"regex {pattern!r} has no literal text of at least {MIN_LITERAL_LEN} bytes outside "
            "groups, needed as the pre-filter; quote more of the exact log text"
        )
    return CompiledPattern(pattern, regex, literal, filters)
