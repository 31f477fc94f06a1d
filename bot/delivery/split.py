"""Split a long chat message into numbered parts that each fit a channel's limit.

Cuts at paragraph, then line boundaries; a code fence cut in two is closed at the end of one part
and reopened at the start of the next, so no part renders log lines as markdown.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Measure = Callable[[str], int]


def utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _fence_open(line: str) -> str | None:
    m = _FENCE_OPEN.match(line)
    if m is None or (m.group(1)[0] == "`" and "`" in line[m.end() :]):
        return None
    return m.group(1)


def _fence_closes(line: str, marker: str) -> bool:
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3
        and len(stripped) >= len(marker)
        and stripped == marker[0] * len(stripped)
    )


def _paragraphs(body: str) -> list[list[str]]:
    """Lines grouped at blank lines; a blank line inside a code fence does not end a paragraph."""
    paras: list[list[str]] = []
    cur: list[str] = []
    marker: str | None = None
    for line in body.split("\n"):
        if marker is None:
            if not line.strip():
                if cur:
                    paras.append(cur)
                    cur = []
                continue
            marker = _fence_open(line)
        elif _fence_closes(line, marker):
            marker = None
        cur.append(line)
    if cur:
        paras.append(cur)
    return paras


def prefix_within(s: str, room: int, measure: Measure) -> str:
    """Longest prefix of ``s`` with ``measure <= room`` (measure must be additive per character)."""
    lo, hi = 0, len(s)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(s[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return s[:lo]


class _Packer:
    """Greedy packing of paragraphs, then lines, then pieces of a line into chunks of ``limit``.

    A chunk cut inside a code fence is closed with the fence marker and the next chunk reopens it,
    so every part renders on its own.
    """

    def __init__(self, limit: int, measure: Measure) -> None:
        self.limit = limit
        self.measure = measure
        self.chunks: list[str] = []
        self.cur: list[str] = []

    def _fits(self, lines: list[str]) -> bool:
        return self.measure("\n".join(lines)) <= self.limit

    def _flush(self, close: str | None = None, reopen: str | None = None) -> None:
        if self.cur and self.cur != [reopen]:
            self.chunks.append("\n".join(self.cur + ([close] if close else [])))
        self.cur = [reopen] if reopen else []

    def add_paragraph(self, para: list[str]) -> None:
        candidate = [*self.cur, "", *para] if self.cur else list(para)
        if self._fits(candidate):
            self.cur = candidate
            return
        self._flush()
        if self._fits(para):
            self.cur = list(para)
        else:
            self._add_lines(para)

    def _add_lines(self, lines: list[str]) -> None:
        marker: str | None = None  # open fence marker and its opening line, for reopening
        opener: str | None = None
        for line in lines:
            if marker is None:
                next_marker = _fence_open(line)
                next_opener = line if next_marker else None
            elif _fence_closes(line, marker):
                next_marker = next_opener = None
            else:
                next_marker, next_opener = marker, opener
            tail = [next_marker] if next_marker else []
            if not self._fits([*self.cur, line, *tail]):
                self._flush(marker, opener)
                if not self._fits([*self.cur, line, *tail]):
                    self._hard_split(line, tail, marker, opener)
                    marker, opener = next_marker, next_opener
                    continue
            self.cur.append(line)
            marker, opener = next_marker, next_opener

    def _hard_split(self, line: str, tail: list[str], marker: str | None, opener: str | None) -> None:
        # last resort: one line longer than a whole part; prefer a space near the end of the window
        while line:
            room = self.limit - self.measure("\n".join([*self.cur, "", *tail]))
            piece = prefix_within(line, room, self.measure)
            if not piece:
                raise ValueError(f"limit {self.limit} is too small to hold any text")
            if len(piece) < len(line):
                space = piece.rfind(" ")
                if space > len(piece) // 2:
                    piece = piece[: space + 1]
            self.cur.append(piece)
            line = line[len(piece) :]
            if line:
                self._flush(marker, opener)

    def finish(self) -> list[str]:
        self._flush()
        return self.chunks


def _numbered(header: str, i: int, n: int) -> str:
    return f"{header} ({i}/{n})" if header else f"({i}/{n})"


def split_parts(text: str, max_chars: int, header: str = "", *, measure: Measure = len) -> list[str]:
    """Split ``text`` into parts of at most ``max_chars`` (as counted by ``measure``).

    Splits at paragraph boundaries, then at line boundaries; a single over-long line is cut only
    as a last resort. With more than one part each starts with ``header (i/n)`` (or ``(i/n)`` when
    there is no header); a single part is the text itself, starting with ``header``. When ``text``
    already starts with the header line it is not repeated. Pass ``measure=utf8_len`` for byte limits.
    """
    body = whole = text
    if header:
        first, _, rest = text.partition("\n")
        if first == header:
            body = rest.lstrip("\n")
        else:
            whole = f"{header}\n{text}" if text else header
    if measure(whole) <= max_chars:
        return [whole]
    digits = 1
    while True:
        widest = 10**digits - 1
        packer = _Packer(max_chars - measure(_numbered(header, widest, widest) + "\n"), measure)
        if packer.limit <= 0:
            raise ValueError(f"max_chars={max_chars} cannot hold the part header")
        for para in _paragraphs(body):
            packer.add_paragraph(para)
        chunks = packer.finish()
        if len(chunks) <= widest:
            break
        digits += 1
    if len(chunks) == 1:  # blank-line runs collapsed, so the body now fits in one part
        return [f"{header}\n{chunks[0]}" if header else chunks[0]]
    n = len(chunks)
    return [f"{_numbered(header, i, n)}\n{chunk}" for i, chunk in enumerate(chunks, 1)]
