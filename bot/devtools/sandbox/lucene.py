"""Enough of Lucene `query_string` (as BkLog sends it to ES) to serve the sample BkLog.

Supported: `field: "phrase"`, `field: term`, `field: (group)`, bare phrases/terms on the default
field `log`, `AND`/`OR`/`NOT` (also lowercase, `&&`, `||`, `!`, `+`, `-`), parentheses, `*`/`?`
wildcards inside terms, `*` alone = match all. Boolean semantics follow Lucene's classic parser
with default operator OR (ES's default, which BkLog keeps): `a b` means `a OR b`, `a AND b c`
makes `a` and `b` required and `c` optional; a query of only negations matches everything else.

`log` is a text field analysed like ES's `standard` analyzer (Unicode word breaks, lowercased);
other fields are keywords (exact, case-sensitive). The tokenizer reproduces the documented quirk:
a comma or dot between two digits does not split, so in `[job-execute,<traceId ending in a
digit>,<spanId starting with a digit>]` the two ids form one token, the phrase query for the
traceId misses the line and the wildcard `*<traceId>*` matches it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_FIELD = "log"
TEXT_FIELDS = frozenset({"log"})
MAX_TOKEN_LENGTH = 255


class LuceneSyntaxError(ValueError):
    """The query cannot be parsed (BkLog answers with its DSL error)."""


# --------------------------------------------------------------------------- tokenizer

_L, _N, _E, _ML, _MN, _MNL, _SQ, _IDEO, _OTHER = range(9)
_MID_LETTER = frozenset(":\u00b7\u0387\u05f4\u2027\ufe13\ufe55\uff1a")
_MID_NUM = frozenset(",;\u037e\u0589\u060c\u060d\u066c\u07f8\u2044\ufe10\ufe14\ufe50\ufe54\uff0c\uff1b")
_MID_NUM_LET = frozenset(".\u2018\u2019\u2024\ufe52\uff07\uff0e")


def _is_ideographic(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3040 <= cp <= 0x309F  # hiragana
        or 0x3400 <= cp <= 0x4DBF
        or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0x20000 <= cp <= 0x2FA1F
    )


def _cls(ch: str) -> int:
    if ch.isdecimal():
        return _N
    if ch.isalpha():
        return _IDEO if _is_ideographic(ch) else _L
    if ch == "_":
        return _E
    if ch in _MID_LETTER:
        return _ML
    if ch in _MID_NUM:
        return _MN
    if ch in _MID_NUM_LET:
        return _MNL
    if ch == "'":
        return _SQ
    return _OTHER


@lru_cache(maxsize=65536)
def tokenize(text: str) -> tuple[str, ...]:
    """Tokens of `text` as ES's standard analyzer produces them (simplified UAX #29)."""
    out: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        c = _cls(text[i])
        if c == _IDEO:
            out.append(text[i])
            i += 1
            continue
        if c not in (_L, _N, _E):
            i += 1
            continue
        start, prev = i, c
        i += 1
        while i < n:
            c = _cls(text[i])
            if c in (_L, _N, _E):  # WB5, WB8-10, WB13a/b
                prev, i = c, i + 1
                continue
            if i + 1 < n:
                nxt = _cls(text[i + 1])
                if prev == _L and nxt == _L and c in (_ML, _MNL, _SQ):  # WB6/7
                    prev, i = _L, i + 2
                    continue
                if prev == _N and nxt == _N and c in (_MN, _MNL, _SQ):  # WB11/12
                    prev, i = _N, i + 2
                    continue
            break
        word = text[start:i]
        if any(ch.isalnum() for ch in word):
            lowered = word.lower()
            out.extend(lowered[j : j + MAX_TOKEN_LENGTH] for j in range(0, len(lowered), MAX_TOKEN_LENGTH))
    return tuple(out)


def contains_phrase(tokens: Sequence[str], phrase: Sequence[str]) -> bool:
    if not phrase:
        return False
    k = len(phrase)
    first = phrase[0]
    return any(
        tokens[i] == first and tuple(tokens[i : i + k]) == tuple(phrase) for i in range(len(tokens) - k + 1)
    )


# --------------------------------------------------------------------------- query tree


class Query:
    def matches(self, doc: Mapping[str, Any]) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class MatchAll(Query):
    def matches(self, doc: Mapping[str, Any]) -> bool:
        return True


@dataclass(frozen=True)
class Exists(Query):
    field: str

    def matches(self, doc: Mapping[str, Any]) -> bool:
        return _value(doc, self.field) is not None


@dataclass(frozen=True)
class Phrase(Query):
    field: str
    text: str
    text_fields: frozenset[str] = TEXT_FIELDS

    def matches(self, doc: Mapping[str, Any]) -> bool:
        value = _value(doc, self.field)
        if value is None:
            return False
        if self.field in self.text_fields:
            return contains_phrase(tokenize(str(value)), tokenize(self.text))
        return str(value) == self.text


@dataclass(frozen=True)
class Term(Query):
    """Unquoted term: analysed; several tokens combine with the default operator (OR)."""

    field: str
    text: str
    text_fields: frozenset[str] = TEXT_FIELDS

    def matches(self, doc: Mapping[str, Any]) -> bool:
        value = _value(doc, self.field)
        if value is None:
            return False
        if self.field in self.text_fields:
            have = set(tokenize(str(value)))
            return any(t in have for t in tokenize(self.text))
        return str(value) == self.text


@dataclass(frozen=True)
class Wildcard(Query):
    """Term with `*`/`?`: matched against each token (text field) or the whole value (keyword)."""

    field: str
    pattern: str  # regex source, anchored by the matcher
    text_fields: frozenset[str] = TEXT_FIELDS
    _regex: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern, re.DOTALL))

    def matches(self, doc: Mapping[str, Any]) -> bool:
        value = _value(doc, self.field)
        if value is None:
            return False
        if self.field in self.text_fields:
            return any(self._regex.fullmatch(t) for t in tokenize(str(value)))
        return self._regex.fullmatch(str(value)) is not None


@dataclass(frozen=True)
class Bool(Query):
    must: tuple[Query, ...] = ()
    should: tuple[Query, ...] = ()
    must_not: tuple[Query, ...] = ()

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if any(q.matches(doc) for q in self.must_not):
            return False
        if not all(q.matches(doc) for q in self.must):
            return False
        if self.must:
            return True
        if self.should:
            return any(q.matches(doc) for q in self.should)
        return bool(self.must_not)  # pure negation: ES matches everything else


def _value(doc: Mapping[str, Any], name: str) -> Any:
    if name in doc:
        return doc[name]
    cur: Any = doc
    for part in name.split("."):  # nested objects such as __ext.container_name
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


# --------------------------------------------------------------------------- lexer


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # TERM PHRASE FIELD LP RP AND OR NOT PLUS MINUS
    text: str = ""
    regex: str | None = None  # TERM with unescaped wildcards


_STOP = set(' \t\r\n()"')
_KEYWORDS = {"AND": "AND", "OR": "OR", "NOT": "NOT", "&&": "AND", "||": "OR"}


def _lex(q: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(q)
    while i < n:
        ch = q[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "()":
            toks.append(_Tok("LP" if ch == "(" else "RP"))
            i += 1
            continue
        if ch == '"':
            i += 1
            buf: list[str] = []
            while i < n and q[i] != '"':
                if q[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(q[i])
                i += 1
            if i >= n:
                raise LuceneSyntaxError("unterminated phrase")
            i += 1
            toks.append(_Tok("PHRASE", "".join(buf)))
            if i < n and q[i] == "~":  # slop / fuzziness suffix: ignored
                i += 1
                while i < n and q[i].isdigit():
                    i += 1
            continue
        if ch in "+-!" and i + 1 < n and not q[i + 1].isspace() and (not toks or toks[-1].kind != "FIELD"):
            toks.append(_Tok({"+": "PLUS", "-": "MINUS", "!": "NOT"}[ch]))
            i += 1
            continue
        if ch in "[{":
            raise LuceneSyntaxError("range queries are not supported by the sample BkLog")
        literal: list[str] = []
        regex: list[str] = []
        wild = False
        while i < n and q[i] not in _STOP:
            c = q[i]
            if c == "\\" and i + 1 < n:
                literal.append(q[i + 1])
                regex.append(re.escape(q[i + 1]))
                i += 2
                continue
            if c == ":":
                break
            if c in "*?":
                wild = True
                literal.append(c)
                regex.append(".*" if c == "*" else ".")
            else:
                literal.append(c)
                regex.append(re.escape(c))
            i += 1
        text = "".join(literal)
        if i < n and q[i] == ":":
            if not text:
                raise LuceneSyntaxError("empty field name")
            toks.append(_Tok("FIELD", text))
            i += 1
            continue
        if not text:
            raise LuceneSyntaxError(f"unexpected character {q[i]!r}")
        keyword = _KEYWORDS.get(text.upper() if text.isalpha() else text)
        if keyword and not wild:
            toks.append(_Tok(keyword))
        else:
            toks.append(_Tok("TERM", text, "".join(regex) if wild else None))
    return toks


# --------------------------------------------------------------------------- parser


@dataclass
class _Clause:
    query: Query
    required: bool = False
    prohibited: bool = False


class _Parser:
    def __init__(self, toks: list[_Tok], default_field: str, text_fields: frozenset[str]) -> None:
        self.toks = toks
        self.pos = 0
        self.default_field = default_field
        self.text_fields = text_fields

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise LuceneSyntaxError("unexpected end of query")
        self.pos += 1
        return tok

    def query(self, fld: str, depth: int) -> Query:
        clauses: list[_Clause] = []
        while True:
            tok = self.peek()
            if tok is None or tok.kind == "RP":
                break
            conj = None
            if tok.kind in ("AND", "OR"):
                conj = tok.kind
                self.take()
                nxt = self.peek()
                if nxt is None or nxt.kind == "RP":
                    raise LuceneSyntaxError(f"{conj} without a right-hand side")
            mod = None
            nxt = self.peek()
            if nxt is not None and nxt.kind in ("NOT", "PLUS", "MINUS"):
                mod = self.take().kind
            q = self.clause(fld, depth)
            # Lucene classic QueryParser.addClause with default operator OR
            if clauses and conj == "AND" and not clauses[-1].prohibited:
                clauses[-1].required = True
            prohibited = mod in ("NOT", "MINUS")
            required = mod == "PLUS" or (conj == "AND" and not prohibited)
            clauses.append(_Clause(q, required=required, prohibited=prohibited))
        if not clauses:
            raise LuceneSyntaxError("empty query" if depth == 0 else "empty group")
        if len(clauses) == 1 and not clauses[0].required and not clauses[0].prohibited:
            return clauses[0].query
        return Bool(
            must=tuple(c.query for c in clauses if c.required and not c.prohibited),
            should=tuple(c.query for c in clauses if not c.required and not c.prohibited),
            must_not=tuple(c.query for c in clauses if c.prohibited),
        )

    def clause(self, fld: str, depth: int) -> Query:
        tok = self.take()
        if tok.kind == "FIELD":
            fld = tok.text
            tok = self.take()
        if tok.kind == "LP":
            inner = self.query(fld, depth + 1)
            if self.take().kind != "RP":
                raise LuceneSyntaxError("missing ')'")
            return inner
        if tok.kind == "PHRASE":
            return Phrase(fld, tok.text, self.text_fields)
        if tok.kind == "TERM":
            if tok.regex is not None:
                if tok.text == "*":
                    return MatchAll() if fld == "*" else Exists(fld)
                pattern = tok.regex.lower() if fld in self.text_fields else tok.regex
                return Wildcard(fld, pattern, self.text_fields)
            return Term(fld, tok.text, self.text_fields)
        raise LuceneSyntaxError(f"unexpected {tok.kind}")


def parse_query(
    query: str,
    *,
    default_field: str = DEFAULT_FIELD,
    text_fields: frozenset[str] = TEXT_FIELDS,
) -> Query:
    """Parse a BkLog `query_string`; blank and `*` match everything."""
    stripped = query.strip()
    if stripped in ("", "*"):
        return MatchAll()
    toks = _lex(stripped)
    parser = _Parser(toks, default_field, text_fields)
    result = parser.query(default_field, 0)
    if parser.peek() is not None:
        raise LuceneSyntaxError("unbalanced ')'")
    return result


def compile_query(query: str, **kw: Any) -> Callable[[Mapping[str, Any]], bool]:
    return parse_query(query, **kw).matches
