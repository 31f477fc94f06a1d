"""Find BK-JOB step / job instance ids and request ids (traceIds) in what a user pasted.

Input is free chat text: bare ids with or without a label, BK-JOB UI links in every form of
bk-job.md §6 (wrapped in Chinese punctuation or markdown, URL-encoded, scheme-less), log lines,
32-hex request ids. Numbers that are clearly something else (times, dates, IPs, versions,
quantities, ordinals, a status code the user asks about) are not ids.

The result keeps the order of appearance, is de-duplicated and capped at `max_ids`.
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import unquote

IdKind = Literal["step", "request", "task_only"]

_JAVA_LONG_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class IdRef:
    """One thing to analyse. `task_only` = a job instance without a step (the bot asks which step)."""

    kind: IdKind
    step_instance_id: int | None = None
    task_instance_id: int | None = None
    execute_count: int | None = None
    batch: int | None = None
    request_id: str | None = None  # 32 lowercase hex
    bk_scope_type: str | None = None  # "biz" | "biz_set"
    bk_scope_id: int | None = None
    source: str = ""  # the text it was read from (link or labelled snippet)

    @property
    def key(self) -> str:
        """Identity used for de-duplication: `step:<id>`, `req:<hex>` or `task:<id>`."""
        if self.kind == "step":
            return f"step:{self.step_instance_id}"
        if self.kind == "request":
            return f"req:{self.request_id}"
        return f"task:{self.task_instance_id}"


@dataclass(slots=True)
class ExtractedIds:
    refs: list[IdRef] = field(default_factory=list)
    over_limit: int = 0  # distinct ids found beyond max_ids
    uuid_seen: bool = False  # a dashed UUID was pasted (a GseTaskEvent requestId, not a traceId)

    @property
    def steps(self) -> list[IdRef]:
        return [r for r in self.refs if r.kind == "step"]

    @property
    def requests(self) -> list[IdRef]:
        return [r for r in self.refs if r.kind == "request"]

    @property
    def task_only(self) -> list[IdRef]:
        return [r for r in self.refs if r.kind == "task_only"]


# --------------------------------------------------------------------------- links

# Characters a pasted link can contain: stops at whitespace, quotes, brackets, CJK text and
# CJK / fullwidth punctuation, so "（https://…）" and "[x](https://…)" give the bare link.
_LINK_CHARS = r"[^\s<>\"'()\[\]{}|,\u2018-\u201f\u2026\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"
_LINK_TOKEN_RE = re.compile(_LINK_CHARS + "+")
_SCHEME_RE = re.compile(r"(?i)https?://")
_TRAILING_DIGITS_RE = re.compile(r"[0-9]+\Z")
_LINK_TRAILING = ".,;:!?*_~`'\""
_BK_PATH_RE = re.compile(r"/(?:execute/(?:task|step|quick-launch)/\d|api_execute(?:_step)?/\d)")
_SCOPE_PATH_RE = re.compile(r"/(biz|biz_set)/(\d{1,19})/execute/(?:task|step|quick-launch)/(\d{1,19})(?!\d)")
_API_STEP_RE = re.compile(r"/api_execute_step/(\d{1,19})/(\d{1,19})(?!\d)")
_API_TASK_RE = re.compile(r"/api_execute/(\d{1,19})(?!\d)")
_LEGACY_RE = re.compile(r"/(\d{1,19})/execute/(?:task|step)/(\d{1,19})(?!\d)")
_Q_STEP_RE = re.compile(r"(?i)(?<![a-z_])(?:stepInstanceId|step_instance_id)[=:](\d{1,19})(?!\d)")
_Q_EXEC_RE = re.compile(
    r"(?i)(?<![a-z_])(?:retryCount|executeCount|retry_count|execute_count)=(\d{1,9})(?!\d)"
)
_Q_BATCH_RE = re.compile(r"(?i)(?<![a-z_])batch=(\d{1,9})(?!\d)")
_Q_REQ_RE = re.compile(
    r"(?i)(?<![a-z_])(?:trace_?id|request_?id|job_request_id)[=:]([0-9a-f]{32})(?![0-9a-z])"
)


def _decode_link(token: str) -> str:
    text = html.unescape(token)
    for _ in range(3):  # links pasted from redirect params are often encoded twice
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def _is_link(decoded: str) -> bool:
    return "://" in decoded or decoded.lower().startswith("www.") or _BK_PATH_RE.search(decoded) is not None


def _as_id(digits: str) -> int | None:
    value = int(digits)
    return value if 0 < value <= _JAVA_LONG_MAX else None


def _ref_from_link(decoded: str, source: str) -> IdRef | None:
    scope_type: str | None = None
    scope_id: int | None = None
    task: int | None = None
    step: int | None = None
    if m := _SCOPE_PATH_RE.search(decoded):
        scope_type, scope_id, task = m.group(1), _as_id(m.group(2)), _as_id(m.group(3))
    elif m := _API_STEP_RE.search(decoded):
        task, step = _as_id(m.group(1)), _as_id(m.group(2))
    elif m := _API_TASK_RE.search(decoded):
        task = _as_id(m.group(1))
    elif m := _LEGACY_RE.search(decoded):
        task = _as_id(m.group(2))  # group 1 is the pre-biz-set appId
    if step is None and (m := _Q_STEP_RE.search(decoded)):
        step = _as_id(m.group(1))
    execute_count = int(m.group(1)) if (m := _Q_EXEC_RE.search(decoded)) else None
    batch = int(m.group(1)) if (m := _Q_BATCH_RE.search(decoded)) else None
    if step is not None or task is not None:
        return IdRef(
            kind="step" if step is not None else "task_only",
            step_instance_id=step,
            task_instance_id=task,
            execute_count=execute_count if step is not None else None,
            batch=batch if step is not None else None,
            bk_scope_type=scope_type,
            bk_scope_id=scope_id,
            source=source,
        )
    if m := _Q_REQ_RE.search(decoded):
        return IdRef(kind="request", request_id=m.group(1).lower(), source=source)
    return None


# --------------------------------------------------------------------------- prose

_UUID_RE = re.compile(
    r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"
)
_HEX32_RE = re.compile(r"(?<![0-9A-Za-z_-])([0-9a-fA-F]{32})(?![0-9A-Za-z_-])")
_DIGITS_RE = re.compile(r"(?<![0-9])[0-9]+(?![0-9])")

_LabelKind = Literal["step", "step_weak", "task", "execute_count", "batch", "not_id", "code"]


def _label_alternative(label: str) -> str:
    # " " = optional whitespace, "_" = optional underscore: "step_instance_id" also reads "stepInstanceId"
    return "".join(r"\s*" if ch == " " else "_?" if ch == "_" else re.escape(ch) for ch in label)


def _reversed_group(kind: str, labels: tuple[str, ...]) -> str:
    alternatives = []
    for label in sorted(labels, key=len, reverse=True):
        alternative = _label_alternative(label[::-1])
        if label[0].isascii():
            alternative += r"(?![A-Za-z_])"  # "gseTaskId" is not "TaskId"
        alternatives.append(alternative)
    return rf"(?P<{kind}>{'|'.join(alternatives)})"


_LABELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "step",
        (
            "step_instance_id",
            "step_id",
            "step instance id",
            "step instance",
            "步骤 实例 id",
            "步骤 id",
            "步骤实例",
        ),
    ),
    (
        "task",
        (
            "task_instance_id",
            "job_instance_id",
            "task_id",
            "job instance id",
            "job instance",
            "作业实例 id",
            "作业实例",
            "任务实例 id",
            "任务实例",
            "任务 id",
            "作业 id",
        ),
    ),
    ("execute_count", ("retry_count", "execute_count")),
    ("batch", ("batch",)),
    # Keys of other BK-JOB / CMDB objects: never a step id, whatever the length.
    (
        "not_id",
        (
            *("app_id", "biz_id", "bk_biz_id", "biz", "biz_set", "scope_id", "bk_scope_id", "host_id"),
            *("bk_host_id", "bk_cloud_id", "cloud_id", "gse_task_id", "agent_id", "plan_id", "template_id"),
            *(
                "cron_id",
                "account_id",
                "script_id",
                "port",
                "pid",
                "span_id",
                "version",
                "ver",
                "line",
                "row",
            ),
            *("业务 id", "业务", "主机 id", "主机", "云区域", "端口", "进程", "方案 id", "执行方案", "方案"),
            *("模板", "定时任务", "账号", "脚本 id", "版本", "第"),
        ),
    ),
    # Code-ish words: a short number after them is a code, not an id.
    (
        "code",
        (
            *("code", "error_code", "err_code", "errcode", "exit_code", "exit code", "status", "status_code"),
            *("http", "rc", "ret", "errno", "result_code", "timeout"),
            *("状态码", "错误码", "返回码", "退出码", "错误代码", "报错码", "状态", "错误", "报错", "返回值"),
            *("返回", "超时", "耗时", "共", "约", "重试"),
        ),
    ),
    ("step_weak", ("step", "步骤")),
)
# Matched against the REVERSED text before a number, so one `match` at the number's left edge
# costs the length of the label, not a search over the whole window. The separator comes first:
# `stepInstanceId=`, `"stepInstanceId": "`, `步骤ID：`, `步骤 ID 是`, `step_instance_id (`.
_LABEL_REV_RE = re.compile(
    r"(?i)\s*[\"']?\s*(?:[=:#(是为]\s*)?[\"']?\s*(?:"
    + "|".join(_reversed_group(kind, labels) for kind, labels in _LABELS)
    + ")"
)
_LABEL_MAX_DIGITS: dict[str, int] = {"execute_count": 9, "batch": 9, "code": 9}
_CODE_MAX_DIGITS = 9

# Quantity units after a number ("3台", "10 分钟", "500 ms"); lookaheads keep "20031265375 步骤失败".
_UNIT_RE = re.compile(
    r"(?i)\s*(?:台|个|次|条|步(?!骤)|秒|分钟|分(?!析|享|配|发|支|布|别)|小时|天|日|号|月|年|点(?!击|开|进)|"
    r"人|批(?!量)|组|页|位|倍|元|块|遍|轮|件|项|份|万|千|百|亿|周|核|度|毫秒|%|"
    r"(?:s|ms|sec|secs|seconds?|mins?|minutes?|h|hours?|days?|hosts?|machines?|servers?|times|steps?|"
    r"kb|mb|gb|tb|bytes?)\b)"
)
_CODE_QUESTION_RE = re.compile(
    r"(?i)(?:什么|啥)(?:意思|含义|错误|状态|原因码)|含义|代表(?:什么|啥)|表示(?:什么|啥)|意味着|"
    r"错误码|状态码|返回码|退出码|错误代码|\bcode\b|\bmeaning\b"
)
# "what does/is ... mean" as two linear searches: one `what\s+is\b.*\bmean` regex retries `.*` from
# every "what is" and is quadratic in the message ("what is " * N held the event loop for seconds).
_WHAT_RE = re.compile(r"(?i)\bwhat\s+(?:does|is)\b")
_MEAN_RE = re.compile(r"(?i)\bmean")


def _asks_about_a_code(text: str) -> bool:
    if _CODE_QUESTION_RE.search(text) is not None:
        return True
    for line in text.splitlines():  # `.` stopped at line ends: so does this
        what = _WHAT_RE.search(line)
        if what is not None and _MEAN_RE.search(line, what.end()) is not None:
            return True
    return False


# A short bare number is an id only when the message is about a failure or asks for a look.
_FAILURE_CUE_RE = re.compile(
    r"(?i)失败|报错|出错|错误|异常|挂了|挂掉|卡住|超时|看下|看看|看一下|瞅|帮忙|分析|诊断|排查|查一下|查下|"
    r"为啥|为什么|怎么回事|咋回事|\bfail|\berror|\bcheck\b|\bwhy\b|\bdebug\b"
)
_ONLY_NUMBERS_RE = re.compile(r"\A[\s,;、。.#]*[0-9]+(?:[\s,;、。.]+[0-9]+)*[\s,;、。.]*\Z")
_MENTION_RE = re.compile(r"@\S+")
_WEAK_MIN_DIGITS = 3
_MEDIUM_MIN_DIGITS = 6
_PREFIX_WINDOW = 40


def _looks_like_date_or_epoch(digits: str) -> bool:
    n = len(digits)
    if n in (8, 12, 14) and digits[:2] in ("19", "20"):
        month, day = int(digits[4:6]), int(digits[6:8])
        if 1 <= month <= 12 and 1 <= day <= 31:
            return True
    # Unix seconds / milliseconds between 2017 and 2033.
    return (n == 10 and "15" <= digits[:2] <= "19") or (n == 13 and "15" <= digits[:2] <= "19")


def _is_compound(text: str, start: int, end: int, *, labelled: bool = False) -> bool:
    """Part of a version, IP, time, date, decimal, host name or identifier like `v2`, `host-10`.

    For a labelled number only the right side counts (the label's `:` or `=` sits on the left).
    """
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    length = end - start
    before2 = text[start - 2] if start > 1 else ""
    after2 = text[end + 1] if end + 1 < len(text) else ""
    sides = [(after, after2)] if labelled else [(before, before2), (after, after2)]
    for adjacent, neighbour in sides:
        if adjacent.isascii() and (adjacent.isalpha() or adjacent == "_"):
            return True
        if not neighbour.isascii() or not neighbour.isalnum():
            continue
        if adjacent in ".:":
            return True
        if adjacent in "-/" and (length <= 4 or neighbour.isalpha()):
            return True
    return False


@dataclass(slots=True)
class _Found:
    pos: int
    ref: IdRef
    from_link: bool = False


@dataclass(slots=True)
class _Scan:
    found: list[_Found] = field(default_factory=list)
    exec_counts: list[tuple[int, int]] = field(default_factory=list)
    batches: list[tuple[int, int]] = field(default_factory=list)
    uuid_seen: bool = False


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """Blank out spans (same length, so offsets stay valid) in one pass."""
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(" " * (end - start))
        last = end
    out.append(text[last:])
    return "".join(out)


def _scan_links(text: str, scan: _Scan) -> str:
    spans: list[tuple[int, int]] = []
    for m in _LINK_TOKEN_RE.finditer(text):
        token = m.group(0)
        if "/" not in token and "%" not in token and "www." not in token.lower():
            continue  # cheap exit: most tokens are plain words or numbers
        start, end = m.start(), m.end()
        # "看下https://…" has no space: the link starts at the scheme.
        scheme = _SCHEME_RE.search(token)
        if scheme and scheme.start() > 0:
            start += scheme.start()
            token = token[scheme.start() :]
        stripped = token.rstrip(_LINK_TRAILING)
        end = start + len(stripped)
        lead = len(stripped) - len(stripped.lstrip(_LINK_TRAILING))
        start, stripped = start + lead, stripped[lead:]
        decoded = _decode_link(stripped)
        if not stripped or not _is_link(decoded):
            continue
        if token.endswith("...") or text.startswith("…", m.end()):
            decoded = _TRAILING_DIGITS_RE.sub("", decoded)  # a link shortened for display: last number is cut
        ref = _ref_from_link(decoded, stripped)
        if ref is not None:
            scan.found.append(_Found(start, ref, from_link=True))
        spans.append((start, end))
    return _mask(text, spans)


def _scan_prose(text: str, scan: _Scan) -> None:
    uuids = [m.span() for m in _UUID_RE.finditer(text)]
    scan.uuid_seen = bool(uuids)
    text = _mask(text, uuids)
    hexes: list[tuple[int, int]] = []
    for m in _HEX32_RE.finditer(text):
        hexid = m.group(1)
        if hexid not in (hexid.lower(), hexid.upper()):
            continue  # mixed case: a random token, not a traceId
        if hexid.isdigit():
            continue  # a 32-digit number is neither a traceId nor a step id
        scan.found.append(_Found(m.start(), IdRef(kind="request", request_id=hexid.lower(), source=hexid)))
        hexes.append(m.span())
    text = _mask(text, hexes)

    code_question = _asks_about_a_code(text)
    without_mentions = _MENTION_RE.sub(" ", text)
    only_numbers = _ONLY_NUMBERS_RE.match(without_mentions) is not None
    failure_cue = _FAILURE_CUE_RE.search(text) is not None

    for m in _DIGITS_RE.finditer(text):
        digits, start, end = m.group(0), m.start(), m.end()
        n = len(digits)
        if n > 19:
            continue
        prefix = text[max(0, start - _PREFIX_WINDOW) : start]
        kind, label = _classify_label(prefix, n) if _may_be_labelled(prefix) else (None, "")
        if kind in ("not_id", "code"):
            continue
        if kind is not None:
            if _is_compound(text, start, end, labelled=True):
                continue
            source = (label + digits).strip()
            if kind == "execute_count":
                scan.exec_counts.append((start, int(digits)))
            elif kind == "batch":
                scan.batches.append((start, int(digits)))
            elif (value := _as_id(digits)) is None:
                continue
            elif kind == "task":
                scan.found.append(
                    _Found(start, IdRef(kind="task_only", task_instance_id=value, source=source))
                )
            elif kind == "step" or (
                kind == "step_weak" and n >= _WEAK_MIN_DIGITS and not _UNIT_RE.match(text, end)
            ):
                scan.found.append(_Found(start, IdRef(kind="step", step_instance_id=value, source=source)))
            continue
        # Unlabelled number.
        if n < _WEAK_MIN_DIGITS or (code_question and n <= _CODE_MAX_DIGITS):
            continue
        if _is_compound(text, start, end) or _UNIT_RE.match(text, end) or _looks_like_date_or_epoch(digits):
            continue
        if n < _MEDIUM_MIN_DIGITS and not (only_numbers or failure_cue):
            continue
        if (value := _as_id(digits)) is not None:
            scan.found.append(_Found(start, IdRef(kind="step", step_instance_id=value, source=digits)))


_SEP_CHARS = " \t\r\n\"'=:#(是为"


def _may_be_labelled(prefix: str) -> bool:
    """Cheap pre-check so long number lists and base64-like blobs stay fast: every label ends in
    a letter or a CJK character, and a letter glued to the number only as in `ID20031265375`."""
    if prefix[-1:].isascii() and (prefix[-1:].isalpha() or prefix[-1:] == "_"):
        return prefix[-2:].lower() == "id"
    last = prefix.rstrip(_SEP_CHARS)[-1:]
    return bool(last) and (
        (last.isascii() and (last.isalpha() or last == "_")) or "\u4e00" <= last <= "\u9fff"
    )


def _classify_label(prefix: str, n_digits: int) -> tuple[_LabelKind | None, str]:
    """What the words right before a number say it is."""
    m = _LABEL_REV_RE.match(prefix[::-1])
    if m is None or m.lastgroup is None:
        return None, ""
    kind = m.lastgroup
    if n_digits > _LABEL_MAX_DIGITS.get(kind, 19):
        return None, ""  # e.g. "报错 20031265375": too long for a code, read it as an id
    return cast(_LabelKind, kind), m.group(0)[::-1]


def _with(ref: IdRef, **changes: Any) -> IdRef:
    return dataclasses.replace(ref, **changes)


def _attach_prose_details(scan: _Scan) -> list[_Found]:
    found = sorted(scan.found, key=lambda f: f.pos)
    prose_steps = [i for i, f in enumerate(found) if f.ref.kind == "step" and not f.from_link]
    # executeCount / batch written next to a bare id: belongs to the nearest step before it.
    for values, name in ((scan.exec_counts, "execute_count"), (scan.batches, "batch")):
        for pos, value in values:
            before = [i for i in prose_steps if found[i].pos < pos]
            target = before[-1] if before else (prose_steps[0] if prose_steps else None)
            if target is not None and getattr(found[target].ref, name) is None:
                found[target].ref = _with(found[target].ref, **{name: value})
    # "作业实例 X 步骤 Y": one labelled job instance and one step without its job → one ref.
    prose_tasks = [i for i, f in enumerate(found) if f.ref.kind == "task_only" and not f.from_link]
    steps_without_task = [i for i in prose_steps if found[i].ref.task_instance_id is None]
    drop: set[int] = set()
    if len(prose_tasks) == 1 and len(steps_without_task) == 1:
        t, s = prose_tasks[0], steps_without_task[0]
        found[s].ref = _with(found[s].ref, task_instance_id=found[t].ref.task_instance_id)
        drop.add(t)
    known_tasks = {f.ref.task_instance_id for f in found if f.ref.kind == "step"}
    for i, f in enumerate(found):
        if f.ref.kind == "task_only" and f.ref.task_instance_id in known_tasks:
            drop.add(i)
    return [f for i, f in enumerate(found) if i not in drop]


def _merge(first: IdRef, other: IdRef) -> IdRef:
    """Same id seen twice: keep the first, fill what it lacks from the other (e.g. link details)."""
    changes = {
        name: getattr(other, name)
        for name in ("task_instance_id", "execute_count", "batch", "bk_scope_type", "bk_scope_id")
        if getattr(first, name) is None and getattr(other, name) is not None
    }
    return _with(first, **changes) if changes else first


def extract_ids(text: str, *, max_ids: int) -> ExtractedIds:
    """All ids in `text`, in order of appearance, de-duplicated, at most `max_ids` of them."""
    if max_ids < 0:
        raise ValueError("max_ids must be >= 0")
    normalised = unicodedata.normalize("NFKC", text or "")
    scan = _Scan()
    rest = _scan_links(normalised, scan)
    _scan_prose(rest, scan)

    unique: dict[str, IdRef] = {}
    for f in _attach_prose_details(scan):
        key = f.ref.key
        unique[key] = _merge(unique[key], f.ref) if key in unique else f.ref
    refs = list(unique.values())
    return ExtractedIds(refs=refs[:max_ids], over_limit=max(0, len(refs) - max_ids), uuid_seen=scan.uuid_seen)
