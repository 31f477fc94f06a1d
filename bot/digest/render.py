"""The digest as chat users read it: WorkTool text, WeCom markdown and a 7-day trend picture.

Text and markdown are built as paragraphs (one per group) so the splitters cut between groups.
The trend PNG is drawn and encoded here in pure Python (zlib + struct): one bar per day, the
digest day highlighted, counts written with a tiny built-in bitmap font — no image library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from datetime import datetime

from bot.core.models import STAGE_ZH
from bot.delivery.split import split_parts, utf8_len
from bot.digest.models import BizTotal, Digest, DigestGroup, TrendDay, short_side

TEXT_TITLE = "【job-doctor 失败日报】"
MD_TITLE = "## job-doctor 失败日报"
EMPTY_DAY = "昨日无失败作业"
WEBHOOK_MARKDOWN_MAX_BYTES = 4096


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def text_header(digest: Digest) -> str:
    return f"{TEXT_TITLE}{digest.date}"


def markdown_header(digest: Digest) -> str:
    return f"{MD_TITLE} {digest.date}"


def _window_line(digest: Digest) -> str:
    return f"统计窗口：{_when(digest.window_start)} ～ {_when(digest.window_end)}（{digest.time_zone}）"


def _novelty(digest: Digest, group: DigestGroup) -> str:
    if digest.history_days == 0:
        return ""
    if group.new:
        return "🆕 新出现"
    return f"近 {digest.history_days} 天中 {group.seen_days} 天出现"


def _trend_line(trend: Sequence[TrendDay]) -> str:
    cells = [f"{t.date[5:]} {'—' if t.failed_steps is None else t.failed_steps}" for t in trend]
    return "近 7 天失败步骤：" + "｜".join(cells)


def _biz_line(b: BizTotal) -> str:
    if not b.readable:
        return f"业务 {b.bk_biz_id}：未能读取"
    return f"业务 {b.bk_biz_id}：作业 {b.failed_jobs} 个，步骤 {b.failed_steps} 个"


def _failure_notes(digest: Digest) -> list[str]:
    lines: list[str] = []
    if digest.problems:
        lines.append("⚠️ 以下内容未能读取，统计可能不全：")
        lines.extend(f"· {p}" for p in digest.problems)
    if digest.analysis_failed:
        lines.append(f"⚠️ {digest.analysis_failed} 个步骤分析失败（日志查询失败或超时），未计入分组")
    return lines


# --------------------------------------------------------------------------- WorkTool text


def render_text(digest: Digest) -> str:
    head = [text_header(digest), _window_line(digest)]
    if digest.empty:
        return "\n".join([*head, f"{EMPTY_DAY} ✅"])
    head.append(f"失败作业 {digest.total_failed_jobs} 个，失败步骤 {digest.total_failed_steps} 个")
    head.extend(f"· {_biz_line(b)}" for b in digest.per_biz)
    paragraphs = ["\n".join(head)]
    notes = _failure_notes(digest)
    if notes:
        paragraphs.append("\n".join(notes))
    if digest.summary:
        paragraphs.append(f"【小结】{digest.summary}")
    if digest.groups:
        new = len(digest.new_groups)
        if digest.history_days:
            tail = f"（新出现 {new} 类）" if new else "（均为近期出现过的原因）"
        else:
            tail = "（暂无历史记录，未区分新旧）"
        paragraphs.append(f"【按原因分组】共 {len(digest.groups)} 类{tail}")
        paragraphs.extend(_text_group(digest, i, g) for i, g in enumerate(digest.groups, 1))
    paragraphs.append(_trend_line(digest.trend))
    return "\n\n".join(paragraphs)


def _text_group(digest: Digest, index: int, g: DigestGroup) -> str:
    novelty = _novelty(digest, g)
    lines = [f"{index}. {g.title} ×{g.count}（{g.jobs} 个作业）" + (f" {novelty}" if novelty else "")]
    facts = [f"阶段：{STAGE_ZH.get(g.stage, g.stage)}", f"责任方：{short_side(g.fault_side)}"]
    if g.signature:
        facts.insert(0, f"特征：{g.signature}")
    lines.append("   " + "｜".join(facts))
    if g.action:
        lines.append(f"   建议：{g.action}")
    for e in g.examples:
        step = f" · {e.step_name}" if e.step_name else ""
        lines.append(
            f"   - {e.name}{step}（业务 {e.bk_biz_id} 作业 {e.job_instance_id} 步骤 {e.step_instance_id}）"
        )
        if e.link:
            lines.append(f"     {e.link}")
    return "\n".join(lines)


def text_parts(digest: Digest, max_chars: int) -> list[str]:
    """WorkTool parts: at most `max_chars` each, numbered `(i/n)` after the header when split."""
    return split_parts(render_text(digest), max_chars, text_header(digest))


# --------------------------------------------------------------------------- WeCom markdown


def _md(s: str) -> str:
    # Keep user text (job names) from opening links, emphasis or font tags.
    table = str.maketrans({"[": "［", "]": "］", "*": "＊", "<": "＜", ">": "＞", "`": "'"})
    return s.translate(table)


def render_markdown(digest: Digest) -> str:
    head = [markdown_header(digest), f"> {_window_line(digest)}"]
    if digest.empty:
        return "\n".join([*head, f'> <font color="info">{EMPTY_DAY}</font>'])
    head.append(f"> 失败作业 **{digest.total_failed_jobs}** 个，失败步骤 **{digest.total_failed_steps}** 个")
    if digest.per_biz:
        head.append("> " + "；".join(_biz_line(b) for b in digest.per_biz))
    paragraphs = ["\n".join(head)]
    notes = _failure_notes(digest)
    if notes:
        paragraphs.append("\n".join(f'<font color="warning">{_md(n)}</font>' for n in notes))
    if digest.summary:
        paragraphs.append(f"**小结**：{_md(digest.summary)}")
    for i, g in enumerate(digest.groups, 1):
        paragraphs.append(_md_group(digest, i, g))
    paragraphs.append(f'<font color="comment">{_trend_line(digest.trend)}</font>')
    return "\n\n".join(paragraphs)


def _md_group(digest: Digest, index: int, g: DigestGroup) -> str:
    novelty = _novelty(digest, g)
    flag = ""
    if novelty:
        flag = (
            f' <font color="warning">{novelty}</font>'
            if g.new
            else f' <font color="comment">{novelty}</font>'
        )
    lines = [f"**{index}. {_md(g.title)}** ×{g.count}（{g.jobs} 个作业）{flag}"]
    facts = f"阶段 {STAGE_ZH.get(g.stage, g.stage)} · 责任方 {short_side(g.fault_side)}"
    if g.signature:
        facts = f"`{g.signature}` · " + facts
    lines.append(f"> {facts}")
    if g.action:
        lines.append(f"> 建议：{_md(g.action)}")
    examples = []
    for e in g.examples:
        label = _md(f"{e.name} #{e.step_instance_id}")
        examples.append(f"[{label}]({e.link})" if e.link else label)
    if examples:
        lines.append("> 示例：" + "、".join(examples))
    return "\n".join(lines)


def markdown_parts(digest: Digest, max_bytes: int = WEBHOOK_MARKDOWN_MAX_BYTES) -> list[str]:
    """Webhook markdown messages of at most `max_bytes` UTF-8 bytes each."""
    return split_parts(render_markdown(digest), max_bytes, markdown_header(digest), measure=utf8_len)


# --------------------------------------------------------------------------- trend PNG

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
    "-": ("000", "000", "111", "000", "000"),
}
Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BAR: Color = (70, 130, 180)
TODAY: Color = (226, 87, 60)
MISSING: Color = (205, 205, 205)
INK: Color = (60, 60, 60)
AXIS: Color = (150, 150, 150)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """8-bit truecolour PNG from row-major RGB bytes (filter type 0 on every row)."""
    stride = width * 3
    if width <= 0 or height <= 0 or len(rgb) != stride * height:
        raise ValueError("rgb must hold width*height*3 bytes")
    raw = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_MAGIC + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


class _Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill [x0, x1) × [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, x0), min(self.width, x1)
        y0, y1 = max(0, y0), min(self.height, y1)
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, s: str, color: Color, scale: int = 2) -> None:
        for ch in s:
            glyph = _GLYPHS.get(ch)
            if glyph is not None:
                for gy, bits in enumerate(glyph):
                    for gx, bit in enumerate(bits):
                        if bit == "1":
                            px, py = x + gx * scale, y + gy * scale
                            self.rect(px, py, px + scale, py + scale, color)
            x += 4 * scale

    def png(self) -> bytes:
        return encode_png(self.width, self.height, self.pixels)


def _text_width(s: str, scale: int) -> int:
    return len(s) * 4 * scale - scale


def trend_png(trend: Sequence[TrendDay], *, bar_w: int = 40, gap: int = 20, chart_h: int = 160) -> bytes:
    """Bars of failed steps per day, oldest left; the last day is the digest day (highlighted).

    Days without a recorded digest get a grey stub; the count is written above each bar and the
    day of month under it.
    """
    if not trend:
        raise ValueError("trend is empty")
    scale = 2
    top, bottom = 24, 28
    width = gap + len(trend) * (bar_w + gap)
    height = top + chart_h + bottom
    canvas = _Canvas(width, height)
    base_y = top + chart_h
    peak = max([t.failed_steps or 0 for t in trend] + [1])
    canvas.rect(gap // 2, base_y, width - gap // 2, base_y + 1, AXIS)
    for i, day in enumerate(trend):
        x0 = gap + i * (bar_w + gap)
        center = x0 + bar_w // 2
        if day.failed_steps is None:
            canvas.rect(x0, base_y - 3, x0 + bar_w, base_y, MISSING)
            label = "-"
        else:
            h = round(chart_h * day.failed_steps / peak)
            color = TODAY if i == len(trend) - 1 else BAR
            canvas.rect(x0, base_y - h, x0 + bar_w, base_y, color)
            label = str(day.failed_steps)
            h_label = max(h, 0)
            canvas.text(center - _text_width(label, scale) // 2, base_y - h_label - 14, label, INK, scale)
            label = ""
        if label:
            canvas.text(center - _text_width(label, scale) // 2, base_y - 18, label, AXIS, scale)
        dom = day.date[-2:]
        canvas.text(center - _text_width(dom, scale) // 2, base_y + 8, dom, INK, scale)
    return canvas.png()
