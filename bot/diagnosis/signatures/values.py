"""Placeholder values of a signature's Chinese templates: captured groups, derived codes, fallbacks."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.core.codes import codes

# how many distinct values a placeholder lists before "等 N 个"
MAX_LISTED_VALUES = 10
# Ids every decisive line may provide (see match.py), whatever the entry's own regexes capture.
COMMON_NAMES = frozenset(
    {"gse_task", "task_instance_id", "gse_task_id", "step_instance_id", "execute_count", "batch", "trace_id"}
)
# Placeholders `derive_values` may produce besides the captured groups.
DERIVED_NAMES = frozenset(
    {
        "host_status",
        "host_status_zh",
        "exit_code",
        "exit_code_raw",
        "exit_code_note",
        "gse_error_note",
        "api_code",
        "api_error_zh",
        "run_status_zh",
        "gse_task_status_zh",
        "execute_result_zh",
        "run_duration_s",
        "hosts",
        "host",
        "host_count",
        "count",
        "time",
        "title",
    }
)
# What a placeholder shows when the logs did not provide it.
FALLBACKS: dict[str, str] = {
    "hosts": "（日志未列出主机）",
    "host": "<主机>",
    "host_count": "若干",
    "error_msg": "（GSE 未给出错误信息）",
    "count": "0",
    "callback_url": "（日志未记录回调地址）",
    "uri": "（日志未记录接口地址）",
}
DEFAULT_FALLBACK = "未知"

_HOST_KEYS = ("hosts", "agent_id", "execute_object_key", "ip")


def _ints(values: Iterable[str]) -> list[int]:
    out: list[int] = []
    for v in values:
        try:
            out.append(int(v.strip()))
        except ValueError:
            continue
    return out


def _join(values: Sequence[str]) -> str:
    if len(values) <= MAX_LISTED_VALUES:
        return "、".join(values)
    return "、".join(values[:MAX_LISTED_VALUES]) + f" 等 {len(values)} 个"


def unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v != ""))


def _exit(raw: int) -> int:
    # GSE may report the raw wait status: `exit 1` shows as 256 (§2.3)
    return raw // 256 if raw >= 256 else raw


_ARG_RE = re.compile(r"\{\d+\}")


def derive_values(captured: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Turn captured group values (all distinct values per name, in line order) into placeholders.

    Every captured name is rendered as its values joined with "、". Derived names:
    - `error_code` (GSE atomic error_code) -> `host_status` + `host_status_zh` (§2.3, §2.2); a
      captured/default `host_status` is translated as well;
    - `exit_code` normalised (≥256 → ÷256), `exit_code_raw` as logged, `exit_code_note` explains
      a conversion (empty when none); `gse_error_note` = "（GSE 返回码 c：msg）" from
      `gse_code`/`gse_error_code`/`error_msg` (empty when none);
    - `api_code` -> `api_error_zh` (§2.5, message arguments shown as "…");
    - `run_status` -> `run_status_zh`, `gse_task_status` (enum name) -> `gse_task_status_zh`,
      `execute_result` -> `execute_result_zh`; `run_duration` (ms) -> `run_duration_s`;
    - `hosts`/`host`/`host_count` from `hosts`, `agent_id`, `execute_object_key` or `ip`.
    Names nobody provided are left out; `render` shows a fallback for them.
    """
    out = {name: _join(unique(vals)) for name, vals in captured.items() if unique(vals)}
    tables = codes()

    status_codes: list[int] = _ints(captured.get("host_status", ()))
    for code in _ints(captured.get("error_code", ())):
        if code != 0:
            status_codes.append(tables.gse.error_to_host_status.get(code, 0))
    statuses = list(dict.fromkeys(status_codes))
    if statuses:
        out["host_status"] = _join([str(s) for s in statuses])
        out["host_status_zh"] = _join([tables.host_status.zh.get(s, "未知状态") for s in statuses])

    raw_exit = _ints(captured.get("exit_code", ()))
    if raw_exit:
        norm = list(dict.fromkeys(_exit(c) for c in raw_exit))
        out["exit_code"] = _join([str(c) for c in norm])
        out["exit_code_raw"] = _join([str(c) for c in dict.fromkeys(raw_exit)])
        converted = [c for c in dict.fromkeys(raw_exit) if c >= 256]
        if converted:
            pairs = "、".join(f"exitCode={c} 即 {_exit(c)}" for c in converted)
            out["exit_code_note"] = f"（日志中 {pairs}：GSE 报的是原始等待状态，÷256 为真实返回码）"

    api_codes = _ints(captured.get("api_code", ()))
    if api_codes:
        out["api_error_zh"] = _join(
            [_ARG_RE.sub("…", tables.api_error.zh.get(a, "未收录的错误码")) for a in dict.fromkeys(api_codes)]
        )
    run_status = _ints(captured.get("run_status", ()))
    if run_status:
        out["run_status_zh"] = _join(
            [tables.run_status.zh.get(r, "未知状态") for r in dict.fromkeys(run_status)]
        )
    gse_status = unique(captured.get("gse_task_status", ()))
    if gse_status:
        out["gse_task_status_zh"] = _join(
            [tables.run_status.zh.get(tables.run_status.by_name.get(n, -1), n) for n in gse_status]
        )
    results = _ints(captured.get("execute_result", ()))
    if results:
        out["execute_result_zh"] = _join(
            [tables.execute_result.zh.get(r, "未知") for r in dict.fromkeys(results)]
        )
    gse_codes = unique([*captured.get("gse_code", ()), *captured.get("gse_error_code", ())])
    msgs = unique(captured.get("error_msg", ()))
    if gse_codes or msgs:
        detail = "：".join(
            p for p in (f"GSE 返回码 {_join(gse_codes)}" if gse_codes else "", _join(msgs)) if p
        )
        out["gse_error_note"] = f"（{detail}）"
    durations = _ints(captured.get("run_duration", ()))
    if durations:
        out["run_duration_s"] = _join([str(d // 1000) for d in dict.fromkeys(durations)])

    hosts: list[str] = []
    for key in _HOST_KEYS:
        hosts.extend(captured.get(key, ()))
    hosts = unique(hosts)
    if hosts:
        out.setdefault("hosts", _join(hosts))
        out["host"] = hosts[0]
        if "host_count" not in out and "hosts" not in captured:
            out["host_count"] = str(len(hosts))
    return out


def _fallback(name: str) -> str:
    # `*_note` placeholders are optional asides: absent means nothing to add
    return "" if name.endswith("_note") else FALLBACKS.get(name, DEFAULT_FALLBACK)


class _SafeFormatter(string.Formatter):
    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        name = str(key)
        value = kwargs.get(name)
        if value is None or value == "":
            return _fallback(name)
        return value


_FORMATTER = _SafeFormatter()


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders; a name with no value shows its fallback, never `{name}`."""
    return _FORMATTER.vformat(template, (), values)


def template_fields(template: str) -> list[str]:
    """Placeholder names of a template; raises ValueError for anything but plain `{name}`."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must be a plain name (no index, format or conversion)")
        names.append(name)
    return names
