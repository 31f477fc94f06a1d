"""Rendering: part limits for WorkTool and the webhook, and the pure-Python trend PNG."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime, timedelta

from bot.delivery.split import utf8_len
from bot.digest.build import BizTotal, Digest, DigestExample, DigestGroup, TrendDay
from bot.digest.render import (
    BAR,
    MISSING,
    TODAY,
    WHITE,
    encode_png,
    markdown_parts,
    render_text,
    text_parts,
    trend_png,
)
from tests.digest.world import TZ


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal reader for what encode_png writes (8-bit RGB, filter 0): checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            width, height, depth, ctype, _c, _f, _i = struct.unpack(">IIBBBBB", body)
            assert (depth, ctype) == (8, 2)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(r[0] == 0 for r in rows)
    return width, height, [r[1:] for r in rows]


def pixel(rows: list[bytes], x: int, y: int) -> tuple[int, int, int]:
    r = rows[y][x * 3 : x * 3 + 3]
    return (r[0], r[1], r[2])


def test_encode_png_roundtrip() -> None:
    rgb = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    w, h, rows = decode_png(encode_png(2, 2, rgb))
    assert (w, h) == (2, 2)
    assert [pixel(rows, x, y) for y in range(2) for x in range(2)] == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (9, 9, 9),
    ]


def column_height(rows: list[bytes], x: int, color: tuple[int, int, int]) -> int:
    return sum(1 for y in range(len(rows)) if pixel(rows, x, y) == color)


def test_trend_png_bars_are_proportional_and_today_highlighted() -> None:
    days = [
        TrendDay(date=f"2025-03-{d:02d}", failed_steps=n)
        for d, n in zip(range(4, 11), [10, None, 5, 0, 20, 10, 40], strict=True)
    ]
    data = trend_png(days, bar_w=40, gap=20, chart_h=160)
    width, height, rows = decode_png(data)
    assert height == 24 + 160 + 28
    assert width == 20 + 7 * 60
    centers = [20 + i * 60 + 20 for i in range(7)]
    heights = [column_height(rows, c + 15, BAR) for c in centers]  # off-centre: clear of the digits
    assert heights[0] == 40 and heights[2] == 20 and heights[4] == 80 and heights[5] == 40
    assert heights[3] == 0  # a zero day has no bar
    assert column_height(rows, centers[1] + 15, MISSING) == 3  # no record: a grey stub
    assert column_height(rows, centers[6] + 15, TODAY) == 160  # the digest day, the peak
    assert pixel(rows, 0, 0) == WHITE


def sample_digest(groups: int, examples: int = 3) -> Digest:
    end = datetime(2025, 3, 10, 9, tzinfo=TZ)
    gs = [
        DigestGroup(
            key=f"sig:s{i}",
            signature=f"s{i}",
            title=f"原因{i}" * 5,
            stage="execution",
            fault_side="user",
            count=groups - i,
            jobs=1,
            action="检查脚本输出并修复后重新执行" * 3,
            examples=[
                DigestExample(
                    bk_biz_id=2,
                    job_instance_id=1000 + j,
                    step_instance_id=2000 + j,
                    name=f"作业{j}" * 4,
                    link=f"https://job.example.com/biz/2/execute/step/{1000 + j}?stepInstanceId={2000 + j}",
                )
                for j in range(examples)
            ],
        )
        for i in range(groups)
    ]
    return Digest(
        date="2025-03-10",
        time_zone="Asia/Shanghai",
        window_start=end - timedelta(hours=24),
        window_end=end,
        total_failed_jobs=groups,
        total_failed_steps=sum(g.count for g in gs),
        groups=gs,
        per_biz=[BizTotal(bk_biz_id=2, failed_jobs=groups, failed_steps=groups)],
        trend=[TrendDay(date="2025-03-10", failed_steps=groups)],
    )


def test_long_digest_splits_within_limits() -> None:
    digest = sample_digest(30)
    parts = text_parts(digest, 600)
    assert len(parts) > 3
    assert all(len(p) <= 600 for p in parts)
    assert parts[0].startswith(f"【job-doctor 失败日报】2025-03-10 (1/{len(parts)})")
    md = markdown_parts(digest)
    assert len(md) > 1 and all(utf8_len(p) <= 4096 for p in md)
    joined = "\n".join(parts)
    for g in digest.groups:  # every group survives the split whole
        assert f"{g.title} ×{g.count}" in joined


def test_single_part_when_short() -> None:
    parts = text_parts(sample_digest(1, 1), 1800)
    assert parts == [render_text(sample_digest(1, 1))]
