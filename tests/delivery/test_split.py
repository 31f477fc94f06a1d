"""split_parts: paragraph, then line, then (last resort) character boundaries; numbered parts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.delivery.render import fence
from bot.delivery.split import split_parts, utf8_len

HEADER = "【job-doctor 诊断报告】stepInstanceId=42"


def body_of(part: str) -> str:
    return part.split("\n", 1)[1]


def test_short_text_is_one_part_with_header_once() -> None:
    text = f"{HEADER}\n\n概述\n\n原因"
    assert split_parts(text, 1500, HEADER) == [text]


def test_header_added_when_text_lacks_it() -> None:
    assert split_parts("概述", 100, HEADER) == [f"{HEADER}\n概述"]
    parts = split_parts("\n\n".join(["段落" * 20] * 5), 100, HEADER)
    assert parts[0].startswith(f"{HEADER} (1/")


def test_parts_numbered_and_split_at_paragraphs() -> None:
    paragraphs = [f"第{i}段" + "内容" * 30 for i in range(9)]  # 63 chars each
    text = HEADER + "\n\n" + "\n\n".join(paragraphs)
    parts = split_parts(text, 200, HEADER)
    n = len(parts)
    assert n > 1
    for i, part in enumerate(parts, 1):
        assert len(part) <= 200
        assert part.split("\n", 1)[0] == f"{HEADER} ({i}/{n})"
    # every paragraph whole, in order, none cut between parts
    got = [p for part in parts for p in body_of(part).split("\n\n")]
    assert got == paragraphs


def test_long_paragraph_split_at_lines_not_inside_them() -> None:
    lines = [f"- 主机 10.0.0.{i} 执行失败，退出码 {i}" for i in range(60)]
    text = "时间线：\n" + "\n".join(lines)
    parts = split_parts(text, 300, HEADER)
    assert len(parts) > 1
    assert all(len(p) <= 300 for p in parts)
    got = [line for part in parts for line in body_of(part).split("\n")]
    assert got == ["时间线：", *lines]


def test_single_overlong_line_split_only_as_last_resort() -> None:
    line = "a" * 1000
    text = f"短段落\n\n{line}\n\n另一个短段落"
    parts = split_parts(text, 300, "")
    assert all(len(p) <= 300 for p in parts)
    bodies = [body_of(p) for p in parts]
    assert bodies[0] == "短段落"  # the short paragraph is not glued to a piece of the long line
    assert "".join(bodies[1:-1]) + bodies[-1].split("\n\n")[0] == line
    assert bodies[-1].endswith("另一个短段落")


def test_overlong_line_prefers_word_boundaries() -> None:
    line = " ".join(f"word{i:03d}" for i in range(200))
    parts = split_parts(line, 200, "")
    bodies = [body_of(p) for p in parts]
    assert "".join(bodies) == line
    assert all(b.endswith(" ") for b in bodies[:-1])


def test_without_header_parts_start_with_number() -> None:
    parts = split_parts("\n\n".join(["x" * 50] * 4), 70, "")
    n = len(parts)
    assert [p.split("\n", 1)[0] for p in parts] == [f"({i}/{n})" for i in range(1, n + 1)]


def test_two_digit_part_counts_still_fit() -> None:
    text = "\n\n".join(f"段落{i:02d}" + "字" * 40 for i in range(30))
    parts = split_parts(text, 80, HEADER)
    n = len(parts)
    assert n >= 10
    assert all(len(p) <= 80 for p in parts)
    assert parts[-1].startswith(f"{HEADER} ({n}/{n})\n")


def test_byte_measure_never_cuts_a_character() -> None:
    text = "诊断🙂结果" * 500
    parts = split_parts(text, 1000, "", measure=utf8_len)
    assert all(utf8_len(p) <= 1000 for p in parts)
    assert "".join(body_of(p) for p in parts) == text


def test_fence_closed_and_reopened_across_parts() -> None:
    log = "\n".join(f"line {i} **bold** <b>" for i in range(40))
    text = "日志：\n" + fence(log) + "\n\n结论"
    parts = split_parts(text, 250, HEADER)
    assert len(parts) > 2
    for part in parts:
        assert len(part) <= 250
        assert len(re.findall(r"^```$", part, flags=re.M)) % 2 == 0  # every part's fences balance
    inner = [
        line
        for p in parts
        for line in body_of(p).split("\n")
        if line.startswith("line ") and not line.startswith("```")
    ]
    assert inner == log.split("\n")


def test_blank_line_inside_fence_is_not_a_paragraph_break() -> None:
    block = fence("first\n\nsecond")
    text = "a" * 40 + "\n\n" + block
    parts = split_parts(text, 60, "")
    assert any(block in body_of(p) for p in parts)


def test_limit_too_small_for_header() -> None:
    with pytest.raises(ValueError):
        split_parts("x" * 100, 20, HEADER)


@settings(max_examples=100, deadline=None)
@given(
    paragraphs=st.lists(
        st.lists(
            st.text(st.characters(exclude_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=40),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=30,
    ),
    limit=st.integers(min_value=60, max_value=400),
    bytes_mode=st.booleans(),
)
def test_split_property(paragraphs: list[list[str]], limit: int, bytes_mode: bool) -> None:
    # lines that are blank or look like fences would be reformatted; keep plain prose lines
    paragraphs = [
        [ln for ln in p if ln.strip() and not ln.lstrip().startswith(("```", "~~~"))] for p in paragraphs
    ]
    paragraphs = [p for p in paragraphs if p]
    text = "\n\n".join("\n".join(p) for p in paragraphs)
    measure = utf8_len if bytes_mode else len
    parts = split_parts(text, limit, "", measure=measure)
    assert all(measure(p) <= limit for p in parts)
    if len(parts) == 1:
        assert parts == [text]
        return
    # lines no longer than 40 chars (<= 160 bytes) are never cut when the budget allows them
    got = [line for part in parts for line in body_of(part).split("\n") if line]
    if limit >= 200:
        assert got == [line for p in paragraphs for line in p]
