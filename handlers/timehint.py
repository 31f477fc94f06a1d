"""When did it fail? Read a time hint from chat text ("昨天下午3点", "2024-05-30 11:09", "10分钟前").

A hint narrows the BkLog window of an analysis instead of the fixed look-back (README "Telling
the bot when it failed"). Times are read in the BkLog time zone, relative to when the message was
received. What the words name becomes a span — a minute, an hour, a part of the day, a whole day —
and the span widened by the chat's padding (`chat.time_hint_before_s` / `_after_s`) is the window
searched, never past the receive time. A time in the future, an impossible date or anything
unclear gives no hint, never an error: the analysis then uses its usual window.

What is read (hours, minutes and counts in digits or Chinese numerals):

- days: 今天/今日, 昨天/昨日, 前天/前日, 大前天, 今早, 今晚/今夜, 昨早, 昨晚/昨夜, 前晚; 周五 / 星期五 /
  礼拜五 (the latest such day, today included), 上周五; N天前
- dates: 2024-05-30, 2024/5/30, 2024年5月30日, 5月30日 / 5月30号 (the latest past one, so across a
  year end it is last year's); 05-30 and 5/30 only when a clock time follows
- parts of the day: 凌晨 0–6, 早上/早晨/清晨 5–10, 上午 6–12, 中午 11–14, 下午 12–18, 傍晚 17–20,
  晚上/夜里/夜间 18–24, 半夜/深夜/午夜 22–03 (into the next day)
- clock: 11:09 and 11:09:30 (24-hour); 3点, 3点钟, 3点多, 3时 (the hour 3:00–4:00); 3点20(分), 3点半,
  3点一刻, 15时20分. With a part of the day: 下午3点 = 15:00, 下午12点 = 中午12点 = 12:00,
  晚上12点 = midnight at the end of that day, 凌晨12点 = 0:00, 晚上1点 = 1:00 the next day.
  A bare 1–12点 without a day is its latest past reading (3:00 or 15:00); with a day (昨天3点) the
  span covers both readings. A clock time without a day is its latest past occurrence (today,
  else yesterday); with 今天 a time still to come is ignored.
- relative: 刚才/刚刚 (the last 30 minutes), 几分钟前, N分钟前, 半小时前, N小时前, 几个小时前,
  "10 min ago", "2 hours ago"

Numbers that belong to an id (20031265375), a link or a version are never read as a time.

Usage::

    window = time_window(text, now=received_at.astimezone(tz), before=timedelta(hours=2),
                         after=timedelta(hours=1))
    if window is not None:
        since, until = window.since, window.until
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

_CN_DIGITS = {ch: n for n, ch in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_CN = "零〇一二两三四五六七八九十"

# A number of one or two digits that is not a slice of a longer number, a decimal or a version.
_NUM_A = r"(?<![\d.])\d{1,2}(?![\d.])"
_NUM_C = rf"[{_CN}]{{1,3}}"

_DAYWORDS: dict[str, tuple[int, str | None]] = {  # word → (days back, part of the day it implies)
    "今天": (0, None),
    "今日": (0, None),
    "今早": (0, "早上"),
    "今晚": (0, "晚上"),
    "今夜": (0, "晚上"),
    "昨天": (1, None),
    "昨日": (1, None),
    "昨早": (1, "早上"),
    "昨晚": (1, "晚上"),
    "昨夜": (1, "晚上"),
    "前天": (2, None),
    "前日": (2, None),
    "前晚": (2, "晚上"),
    "大前天": (3, None),
}
_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "7": 6}
_WEEKDAYS.update({str(n): n - 1 for n in range(1, 7)})

# Part of the day → (first hour, end hour; past 24 is the next morning). `_readings` turns an hour said
# with it into hours of the day.
_PERIODS: dict[str, tuple[int, int]] = {
    "凌晨": (0, 6),
    "早上": (5, 10),
    "早晨": (5, 10),
    "清晨": (5, 10),
    "上午": (6, 12),
    "中午": (11, 14),
    "下午": (12, 18),
    "傍晚": (17, 20),
    "晚上": (18, 24),
    "夜里": (18, 24),
    "夜间": (18, 24),
    "半夜": (22, 27),
    "深夜": (22, 27),
    "午夜": (22, 27),
}
_AFTERNOON = frozenset({"下午", "傍晚"})
_NIGHT = frozenset({"晚上", "夜里", "夜间", "半夜", "深夜", "午夜"})

_DATE = (
    r"(?P<dayword>大前天|前天|前日|前晚|昨天|昨日|昨早|昨晚|昨夜|今天|今日|今早|今晚|今夜)"
    r"|(?P<week>(?P<last>上个?)?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天1-7]))"
    r"|(?<![\d.])(?P<y>(?:19|20)\d\d)\s*(?:[-/]|年)\s*(?P<mo>\d{1,2})\s*(?:[-/]|月)\s*(?P<d>\d{1,2})(?!\d)\s*[日号]?"
    rf"|(?P<mo2>{_NUM_A}|{_NUM_C})\s*月\s*(?P<d2>\d{{1,2}}(?!\d)|[{_CN}]{{1,3}})\s*(?:[日号]|(?=\s*\d{{1,2}}[:点时]))"
    r"|(?<![\d.:/-])(?P<mo3>\d{1,2})[-/](?P<d3>\d{1,2})(?=[T\s]*\d{1,2}:\d\d)"
    rf"|(?P<daysago>{_NUM_A}|{_NUM_C})\s*天\s*(?:之?前|以前)"
)
_PERIOD = "|".join(sorted(_PERIODS, key=len, reverse=True))
_CLOCK = (
    r"(?<![\d.:])(?P<hh>\d{1,2}):(?P<mm>\d\d)(?::\d\d(?:[.,]\d{1,6})?)?(?![\d:])"
    rf"|(?<![第有几])(?P<h>{_NUM_A}|{_NUM_C})\s*(?:点钟|点|时)(?![击开进赞评名数位间候段])"
    r"(?:\s*(?:(?P<half>半)|(?P<quarter>[一三])刻"
    rf"|(?P<m>\d{{1,2}}(?![\d.])|[{_CN}]{{1,3}})(?:\s*分)?(?!\s*钟|\s*[天小个])|(?P<more>多|左右|前后|许|整)))?"
)
_RELATIVE = (
    rf"(?P<ago>{_NUM_A}|[{_CN}]{{1,3}}|半|几)\s*个?\s*(?P<unit>分钟|分|小时|钟头)\s*(?:之?前|以前)"
    r"|(?<![\d.])(?P<en>\d{1,3})\s*(?P<enunit>minutes?|mins?|hours?|hrs?|h)\s+ago\b"
    r"|(?P<just>刚才|刚刚|just now)"
)
_HINT_RE = re.compile(
    rf"(?:{_RELATIVE})"
    rf"|(?:(?P<date>{_DATE})[T\s]*(?:的\s*)?)?(?:(?P<period>{_PERIOD})\s*)?(?P<clock>{_CLOCK})?",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(r"\S+")
# Where a hint can begin: the regex is tried only there, so long chatter costs next to nothing.
_STARTS_RE = re.compile(
    rf"(?<![\d.])\d|(?<![{_CN}])[{_CN}]|[半几刚今昨前大上周星礼凌清早中下傍晚夜深午]|just", re.IGNORECASE
)
_JUST_NOW = timedelta(minutes=30)
_FEW_MINUTES = timedelta(minutes=10)
_FEW_HOURS = (timedelta(hours=6), timedelta(hours=1))
_MAX_TRIES = 200
_JOIN_CHARS = 8  # how far after a day a time of day still belongs to it


@dataclass(frozen=True, slots=True)
class TimeSpan:
    """What the words name: `start` == `end` for a moment, else [start, end)."""

    start: datetime
    end: datetime
    text: str  # the words it was read from


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The BkLog window a hint asks for (whole minutes, in the time zone of `now`)."""

    since: datetime
    until: datetime
    text: str

    @property
    def key(self) -> str:
        """Part of the analysis request key: one window, one analysis and one cached report."""
        return f"w{self.since:%Y%m%d%H%M}-{self.until:%Y%m%d%H%M}"

    def describe(self, now: datetime) -> str:
        fmt = "%m-%d %H:%M" if self.since.year == now.year else "%Y-%m-%d %H:%M"
        return f"{self.since:{fmt}} 至 {self.until:{fmt}}"


def _number(text: str) -> int | None:
    """Digits, or a Chinese numeral below 100 (三, 十一, 二十, 三十一, 零五)."""
    if text.isascii():
        return int(text) if text.isdigit() else None
    if "十" in text:
        head, _, tail = text.partition("十")
        tens = 1 if not head else _CN_DIGITS.get(head) if len(head) == 1 else None
        ones = 0 if not tail else _CN_DIGITS.get(tail) if len(tail) == 1 else None
        return None if tens is None or ones is None else tens * 10 + ones
    if len(text) == 2 and text[0] in "零〇":
        return _CN_DIGITS.get(text[1])
    return _CN_DIGITS.get(text) if len(text) == 1 else None


def _midnight(day: date, now: datetime) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=now.tzinfo)


def _latest_past(month: int, day: int, now: datetime) -> date | None:
    """This year's date, or last year's when this year's is still to come."""
    for year in (now.year, now.year - 1):
        try:
            found = date(year, month, day)
        except ValueError:
            continue
        if found <= now.date():
            return found
    return None


def _day(m: re.Match[str], now: datetime) -> tuple[date, str | None] | None:
    """The day named and the part of the day it implies (昨晚 → 晚上)."""
    today = now.date()
    if word := m.group("dayword"):
        back, implied = _DAYWORDS[word]
        return today - timedelta(days=back), implied
    if m.group("week"):
        wd = _WEEKDAYS[m.group("wd")]
        if m.group("last"):
            return today - timedelta(days=today.weekday() + 7 - wd), None
        return today - timedelta(days=(today.weekday() - wd) % 7), None
    if m.group("y"):
        try:
            return date(int(m.group("y")), int(m.group("mo")), int(m.group("d"))), None
        except ValueError:
            return None
    for mo, d in (("mo2", "d2"), ("mo3", "d3")):
        if m.group(mo):
            month, day = _number(m.group(mo)), _number(m.group(d))
            found = None if month is None or day is None else _latest_past(month, day, now)
            return None if found is None else (found, None)
    if m.group("daysago"):
        days = _number(m.group("daysago"))
        return None if days is None else (today - timedelta(days=days), None)
    return None


def _readings(hour: int, period: str | None) -> list[int] | None:
    """Hours from the day's midnight (may pass 24) that `hour` can mean with `period`."""
    if hour > 24:
        return None
    if period is None:
        return [hour % 12, hour % 12 + 12] if 1 <= hour <= 12 else [hour]
    if period == "凌晨":
        return [0 if hour == 12 else hour] if hour <= 12 else None
    if period in _AFTERNOON:
        return [hour + 12 if hour < 12 else hour]
    if period in _NIGHT:
        if hour < 6:
            return [hour + 24]  # 晚上1点: past midnight, the next day
        return [hour + 12 if hour < 12 else 24 if hour == 12 else hour]
    if period == "中午":
        return [hour + 12 if hour < 6 else hour]
    return [hour] if hour <= 12 else None  # 早上 / 上午


def _minutes(m: re.Match[str]) -> int | None:
    if m.group("half"):
        return 30
    if q := m.group("quarter"):
        return 15 if q == "一" else 45
    if m.group("m"):
        return _number(m.group("m"))
    return None


def _clock(m: re.Match[str], period: str | None) -> tuple[list[int], int | None] | None:
    """(hour readings, minute or None for "the whole hour")."""
    if m.group("hh"):
        hour, minute = int(m.group("hh")), int(m.group("mm"))
        if hour > 24 or minute > 59:
            return None
        # A colon time is 24-hour; a part of the day still turns 3:20 into 15:20.
        readings = _readings(hour, period) if period and hour <= 12 else [hour]
        return (readings, minute) if readings else None
    said = _number(m.group("h"))
    minutes = _minutes(m)
    if said is None or (minutes is not None and minutes > 59):
        return None
    readings = _readings(said, period)
    return (readings, minutes) if readings else None


def _relative(m: re.Match[str], now: datetime) -> TimeSpan | None:
    text = m.group(0)
    if m.group("just"):
        return TimeSpan(now - _JUST_NOW, now, text)
    if m.group("en"):
        count, unit = int(m.group("en")), m.group("enunit").lower()
        delta = timedelta(hours=count) if unit.startswith("h") else timedelta(minutes=count)
        return TimeSpan(now - delta, now - delta, text)
    word, unit = m.group("ago"), m.group("unit")
    hours = unit in ("小时", "钟头")
    if word == "几":
        if hours:
            return TimeSpan(now - _FEW_HOURS[0], now - _FEW_HOURS[1], text)
        return TimeSpan(now - _FEW_MINUTES, now, text)
    if word == "半":
        delta = timedelta(minutes=30) if hours else timedelta(seconds=30)
    else:
        n = _number(word)
        if n is None:
            return None
        delta = timedelta(hours=n) if hours else timedelta(minutes=n)
    return TimeSpan(now - delta, now - delta, text)


def _day_span(day: date | None, period: str | None, now: datetime, text: str) -> TimeSpan:
    """A whole day, or a part of one; without a day, the latest part of the day already begun."""
    first, end = _PERIODS[period] if period else (0, 24)
    if day is None:
        today = _midnight(now.date(), now)
        day = now.date() if today + timedelta(hours=first) <= now else now.date() - timedelta(days=1)
    base = _midnight(day, now)
    return TimeSpan(base + timedelta(hours=first), base + timedelta(hours=end), text)


def _clock_span(
    day: date | None, readings: list[int], minute: int | None, now: datetime, text: str
) -> TimeSpan | None:
    length = timedelta(hours=1) if minute is None else timedelta(0)  # "3点": the hour 3:00-4:00
    offset = timedelta(minutes=minute or 0)
    if day is None:
        # No day: the latest past reading, today's or yesterday's.
        moments = [
            _midnight(now.date() - timedelta(days=back), now) + timedelta(hours=h) + offset
            for back in (0, 1)
            for h in readings
        ]
        past = [t for t in moments if t <= now]
        return TimeSpan(max(past), max(past) + length, text) if past else None
    base = _midnight(day, now) + offset
    starts = [base + timedelta(hours=h) for h in readings]
    past = [t for t in starts if t <= now] or starts  # all to come: the caller drops it
    return TimeSpan(min(past), max(past) + length, text)


def _is_relative(m: re.Match[str]) -> bool:
    return bool(m.group("ago") or m.group("en") or m.group("just"))


def _span(m: re.Match[str], now: datetime, named: tuple[date, str | None] | None = None) -> TimeSpan | None:
    """The span one match names; `named` is a day read just before it ("昨天的作业 下午3点")."""
    if _is_relative(m):
        return _relative(m, now)
    text = m.group(0).strip()
    if m.group("date"):
        named = _day(m, now)
        if named is None:
            return None  # an impossible date
    found = _from_day(m, now, named, text)
    if (
        found is not None
        and found.start > now
        and named is not None
        and m.group("wd")
        and not m.group("last")
    ):
        # "周三晚上" said on a Wednesday afternoon: last week's Wednesday.
        found = _from_day(m, now, (named[0] - timedelta(days=7), named[1]), text)
    return found


def _from_day(
    m: re.Match[str], now: datetime, named: tuple[date, str | None] | None, text: str
) -> TimeSpan | None:
    day, implied = named if named is not None else (None, None)
    period = m.group("period") or implied
    if not m.group("clock"):
        return _day_span(day, period, now, text)
    hour_word = m.group("h")
    if hour_word and not hour_word.isascii() and day is None and period is None:
        # "有一点慢", "差一点": a Chinese-numeral hour needs a day, a part of the day or minutes.
        if _minutes(m) is None and not m.group("more"):
            return None
    clock = _clock(m, period)
    if clock is None:
        return None
    readings, minute = clock
    if m.group("more") == "整":
        minute = 0
    return _clock_span(day, readings, minute, now, text)


def _day_only(m: re.Match[str]) -> bool:
    return bool(m.group("date")) and not m.group("period") and not m.group("clock")


def _unlink(token: re.Match[str]) -> str:
    """Blank out a link (same length): its numbers are ids, not times."""
    word = token.group(0)
    lower = word.lower()
    return " " * len(word) if "://" in lower or "www." in lower or "/execute" in lower else word


def _hints(text: str, pos: int = 0) -> Iterator[re.Match[str]]:
    """Non-empty hint matches from `pos` on, left to right, not overlapping; a bounded number of
    tries, so a crafted message costs little (a real hint sits among the first words)."""
    end = pos
    for start in itertools.islice(_STARTS_RE.finditer(text, pos), _MAX_TRIES):
        if start.start() < end:
            continue
        m = _HINT_RE.match(text, start.start())
        if m is not None and m.group(0).strip():
            end = m.end()
            yield m


def _next_hint(text: str, pos: int) -> re.Match[str] | None:
    """The next hint starting within `_JOIN_CHARS` of `pos`."""
    m = next(_hints(text, pos), None)
    return m if m is not None and m.start() <= pos + _JOIN_CHARS else None


def find_time(text: str, *, now: datetime) -> TimeSpan | None:
    """The first time hint in `text` that names a moment not after `now` (an aware datetime)."""
    if not text:
        return None
    plain = _TOKEN_RE.sub(_unlink, unicodedata.normalize("NFKC", text))
    for m in _hints(plain):
        span = _span(m, now)
        if span is not None and _day_only(m) and (named := _day(m, now)) is not None:
            # "昨天的作业下午3点": a time of day a few characters on belongs to this day.
            nxt = _next_hint(plain, m.end())
            if nxt is not None and not nxt.group("date") and not _is_relative(nxt):
                if (joined := _span(nxt, now, named)) is not None:
                    span = TimeSpan(joined.start, joined.end, plain[m.start() : nxt.end()].strip())
        if span is not None and span.start <= now:
            return span
    return None


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _ceil_minute(t: datetime) -> datetime:
    floor = _floor_minute(t)
    return floor if floor == t else floor + timedelta(minutes=1)


def window_of(span: TimeSpan, *, now: datetime, before: timedelta, after: timedelta) -> TimeWindow:
    """The span widened by the padding, in whole minutes, ending no later than `now` (rounded up)."""
    since = _floor_minute(span.start - before)
    until = min(_ceil_minute(span.end + after), _ceil_minute(now))
    return TimeWindow(since=since, until=max(until, since + timedelta(minutes=1)), text=span.text)


def time_window(text: str, *, now: datetime, before: timedelta, after: timedelta) -> TimeWindow | None:
    """The BkLog window the time hint in `text` asks for, or None when it names none."""
    span = find_time(text, now=now)
    return None if span is None else window_of(span, now=now, before=before, after=after)
