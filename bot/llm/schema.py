"""The structured answer the model must return, its JSON schema, and a tolerant parser.

Structured-output approach (works on most OpenAI-compatible endpoints): the request carries
`response_format={"type": "json_schema", ...}` (OpenAI, Azure, vLLM, recent Qwen/DashScope, ...);
when an endpoint rejects that with a 4xx, the client remembers it and later requests go out
without `response_format` at all. We do NOT fall back to a `submit_report` function call: tool
calling is the less portable feature (several servers need special flags or ignore
`tool_choice`), while every endpoint returns text. The diagnose prompt always spells out the
JSON contract, and `parse_report` below accepts fenced or chatty JSON, so the prompt-only mode
produces the same object; one repair round covers the rest.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.models import FAULT_SIDE_ZH, STAGE_ZH, FaultSide, Stage

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)

_STAGE_ALIASES: dict[str, str] = {zh: key for key, zh in STAGE_ZH.items()}
_STAGE_ALIASES.update({"参数检查": "parameter_check", "轮询": "result_polling", "结果轮询": "result_polling"})
_SIDE_ALIASES: dict[str, str] = {
    "用户": "user",
    "用户问题": "user",
    "环境": "environment",
    "环境问题": "environment",
    "第三方": "third_party",
    "第三方系统": "third_party",
    "系统": "system",
    "平台": "system",
    "未知": "unknown",
    "third-party": "third_party",
}
_SIDE_ALIASES.update({zh: key for key, zh in FAULT_SIDE_ZH.items()})


class ModelEvidence(BaseModel):
    model_config = ConfigDict(extra="ignore")

    time: str | None = None
    text: str
    why: str = ""


class ModelActions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    immediate: list[str] = Field(default_factory=list)
    root_fix: list[str] = Field(default_factory=list)
    improvements: list[str] = Field(default_factory=list)


class ModelReport(BaseModel):
    """What the model returns. Narrative fields only; ids, timeline and links come from us."""

    model_config = ConfigDict(extra="ignore")

    summary: str = Field(min_length=1)
    stage: Stage
    fault_side: FaultSide
    root_cause: str = Field(min_length=1)
    evidence: list[ModelEvidence] = Field(default_factory=list)
    actions: ModelActions = Field(default_factory=ModelActions)
    prevention: list[str] = Field(default_factory=list)
    missing_info: list[str] = Field(default_factory=list)
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    @field_validator("stage", mode="before")
    @classmethod
    def _stage(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            return _STAGE_ALIASES.get(v, v.lower())
        return v

    @field_validator("fault_side", mode="before")
    @classmethod
    def _side(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            return _SIDE_ALIASES.get(v, v.lower())
        return v

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, v: Any) -> Any:
        # Models sometimes answer in percent.
        if isinstance(v, int | float) and 1.0 < v <= 100.0:
            return v / 100.0
        return v


class ReportInvalid(ValueError):
    """The model's output is not a usable report; `reason` (Chinese) goes into the repair prompt."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _strs() -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}}


def report_json_schema() -> dict[str, Any]:
    """Strict-mode compatible schema (all properties required, no extra properties)."""
    stages = list(STAGE_ZH)
    sides = list(FAULT_SIDE_ZH)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "summary",
            "stage",
            "fault_side",
            "root_cause",
            "evidence",
            "actions",
            "prevention",
            "missing_info",
            "confidence",
        ],
        "properties": {
            "summary": {"type": "string", "description": "问题概述，一到两句中文"},
            "stage": {"type": "string", "enum": stages},
            "fault_side": {"type": "string", "enum": sides},
            "root_cause": {"type": "string", "description": "失败原因（中文），说明是谁的问题"},
            "evidence": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["time", "text", "why"],
                    "properties": {
                        "time": {"type": ["string", "null"]},
                        "text": {"type": "string", "description": "日志原文，逐字引用"},
                        "why": {"type": "string"},
                    },
                },
            },
            "actions": {
                "type": "object",
                "additionalProperties": False,
                "required": ["immediate", "root_fix", "improvements"],
                "properties": {"immediate": _strs(), "root_fix": _strs(), "improvements": _strs()},
            },
            "prevention": _strs(),
            "missing_info": _strs(),
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }


def response_format() -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "diagnosis_report", "strict": True, "schema": report_json_schema()},
    }


def extract_json(text: str) -> Any:
    """The first JSON object in `text`: plain, inside a ``` fence, or surrounded by chatter."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for cand in candidates:
        if not cand:
            continue
        try:
            return json.loads(cand)
        except (ValueError, RecursionError):
            continue
    raise ReportInvalid("输出不是合法的 JSON 对象")


def has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def parse_report(text: str | None) -> ModelReport:
    """Parse and check one model answer; raises ReportInvalid with a reason for the repair prompt."""
    if not text or not text.strip():
        raise ReportInvalid("输出为空")
    data = extract_json(text)
    if not isinstance(data, dict):
        raise ReportInvalid("输出必须是一个 JSON 对象")
    try:
        report = ModelReport.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ReportInvalid(f"JSON 字段不符合约定：{problems}") from None
    if not has_cjk(report.summary) or not has_cjk(report.root_cause):
        raise ReportInvalid("summary 和 root_cause 必须用中文书写")
    return report
