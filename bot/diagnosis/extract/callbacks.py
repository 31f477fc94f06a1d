"""Notification and job callback lines (`Begin to dispatch notification event:{json}`, `CallbackListener`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from bot.core.codes import codes
from bot.diagnosis.extract.kv import as_int


def _json_after(message: str, marker: str) -> tuple[dict[str, Any] | None, str | None]:
    i = message.find(marker)
    if i == -1:
        return None, None
    text = message[i + len(marker) :].strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None, text
    return (data if isinstance(data, dict) else None), text


def _json_int(data: dict[str, Any] | None, text: str | None, key: str) -> int | None:
    if data is not None:
        v = data.get(key)
        if isinstance(v, bool) or v is None:
            return None
        return v if isinstance(v, int) else as_int(str(v))
    if text:
        m = re.search(r'"' + re.escape(key) + r'"\s*:\s*(-?\d+)', text)
        return int(m.group(1)) if m else None
    return None


@dataclass(frozen=True, slots=True)
class Notification:
    """`Begin to dispatch notification event:{json}` (`resourceExecuteStatus` 1 SUCCESS, 2 FAIL)."""

    resource_execute_status: int | None
    task_instance_id: int | None
    step_name: str | None
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def status_name(self) -> str | None:
        s = self.resource_execute_status
        return codes().notify_execute_status.name.get(s, str(s)) if s is not None else None

    @property
    def failed(self) -> bool:
        return self.resource_execute_status == 2


def parse_notification(message: str) -> Notification | None:
    marker = "Begin to dispatch notification event:"
    if marker not in message:
        return None
    data, text = _json_after(message, marker)
    step_name = data.get("stepName") if data else None
    if step_name is None and text:
        m = re.search(r'"stepName"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
        step_name = m.group(1) if m else None
    return Notification(
        resource_execute_status=_json_int(data, text, "resourceExecuteStatus"),
        task_instance_id=_json_int(data, text, "taskInstanceId"),
        step_name=str(step_name) if step_name is not None else None,
        data=data or {},
    )


@dataclass(frozen=True, slots=True)
class CallbackInfo:
    """A callback line (`CallbackListener`) or the callback dispatch (§1.4)."""

    # dispatch | handle | json_failed | form_failed | result | rejected | invalid_url | request_failed
    kind: str
    task_instance_id: int | None = None
    http_status: int | None = None
    job_status: int | None = None  # `status` in the callback JSON (RunStatusEnum)
    ok: bool | None = None
    url: str | None = None
    step_statuses: dict[int, int] = field(default_factory=dict, compare=False, hash=False)


# Marker first, then the fields after it on the same line: one `marker.*?fields` regex retries `.*?`
# from every repeated marker and is quadratic in the line.
_CB_JSON_FAILED = "Callback using json body failed"
_CB_JSON_FAILED_TAIL_RE = re.compile(r"TaskInstanceId=(\d+), statusCode=(\d+)")
_CB_FORM_FAILED_RE = re.compile(r"Callback using form data failed, statusCode=(\d+)")
_CB_RESULT_RE = re.compile(
    r"Callback result: taskInstanceId=(\d+), postJsonSuccess=(\w+), httpStatusCode=(-?\d+|null)"
)
_CB_REJECTED_RE = re.compile(
    r"Callback url rejected by whitelist on egress, taskInstanceId=(\d+), callbackUrl=(\S+)"
)
_CB_HANDLE_RE = re.compile(r"Handle callback, taskInstanceId: (\d+)")
_CB_INVALID_RE = re.compile(r"Invalid callbackUrl: ?(\S*)")
_CB_REQFAIL_RE = re.compile(r"Callback request failed, callbackUrl=([^,\s]+)")


def _after_marker(message: str, marker: str, tail: re.Pattern[str]) -> re.Match[str] | None:
    """`tail` searched after the first `marker`, on the marker's line (linear in the message)."""
    i = message.find(marker)
    if i < 0:
        return None
    end = message.find("\n", i)
    return tail.search(message, i + len(marker), len(message) if end < 0 else end)


def parse_callback(message: str) -> CallbackInfo | None:
    if "allback" not in message:
        return None
    if "Begin to dispatch job callback event, callback:" in message:
        data, text = _json_after(message, "callback:")
        steps: dict[int, int] = {}
        if data is not None:
            for item in data.get("step_instances") or data.get("step_instance_list") or []:
                if isinstance(item, dict):
                    sid, st = as_int(str(item.get("step_instance_id"))), as_int(str(item.get("status")))
                    if sid is not None and st is not None:
                        steps[sid] = st
        return CallbackInfo(
            kind="dispatch",
            task_instance_id=_json_int(data, text, "job_instance_id"),
            job_status=_json_int(data, text, "status"),
            step_statuses=steps,
        )
    m = _after_marker(message, _CB_JSON_FAILED, _CB_JSON_FAILED_TAIL_RE)
    if m:
        return CallbackInfo("json_failed", int(m.group(1)), int(m.group(2)), ok=False)
    m = _CB_FORM_FAILED_RE.search(message)
    if m:
        return CallbackInfo("form_failed", http_status=int(m.group(1)), ok=False)
    m = _CB_RESULT_RE.search(message)
    if m:
        http = as_int(m.group(3))
        ok = http is not None and 200 <= http < 300
        return CallbackInfo("result", int(m.group(1)), http, ok=ok)
    m = _CB_REJECTED_RE.search(message)
    if m:
        return CallbackInfo("rejected", int(m.group(1)), ok=False, url=m.group(2))
    m = _CB_HANDLE_RE.search(message)
    if m:
        return CallbackInfo("handle", int(m.group(1)))
    m = _CB_INVALID_RE.search(message)
    if m:
        return CallbackInfo("invalid_url", ok=False, url=m.group(1) or None)
    m = _CB_REQFAIL_RE.search(message)
    if m:
        return CallbackInfo("request_failed", ok=False, url=m.group(1))
    return None
