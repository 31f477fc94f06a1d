"""Prompt templates (prompts/*.j2), loaded through one Jinja2 environment per library instance.

Everything that came from logs (or tools) goes through the `data` filter, which escapes anything
that could open or close the `<logs>` data block, so a logged `</logs>` cannot end it early.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.core.models import FAULT_SIDE_ZH, PHASE_STATUS_ICON, STAGE_ZH, DiagnosisReport
from bot.core.resources import data_dir
from bot.llm.verify import escape_data


class PromptLibrary:
    def __init__(self, directory: Path | None = None) -> None:
        self._env = Environment(
            loader=FileSystemLoader(str(directory or data_dir("prompts"))),
            undefined=StrictUndefined,
            autoescape=False,  # plain text for a model, not HTML
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["data"] = escape_data
        self._env.globals.update(stage_zh=STAGE_ZH, fault_side_zh=FAULT_SIDE_ZH, phase_icon=PHASE_STATUS_ICON)

    def render(self, template: str, /, **context: Any) -> str:
        return self._env.get_template(template).render(**context).strip() + "\n"

    def system(self, mode: str = "diagnose") -> str:
        """`mode`: "diagnose" (JSON answer) or "chat" (Q&A, digest: free text)."""
        return self.render("system.j2", mode=mode)

    def diagnose(
        self,
        *,
        candidate: DiagnosisReport,
        evidence_text: str,
        tools: Sequence[Mapping[str, str]] = (),
        truncated_lines: int = 0,
        tool_rounds: int = 0,
    ) -> str:
        return self.render(
            "diagnose.j2",
            c=candidate,
            evidence_text=evidence_text,
            tools=list(tools),
            truncated_lines=truncated_lines,
            tool_rounds=tool_rounds,
        )

    def tool_specs(self) -> list[dict[str, Any]]:
        """The read-only tools in OpenAI `tools` form (prompts/tools.j2)."""
        specs = json.loads(self.render("tools.j2"))
        if not isinstance(specs, list):
            raise ValueError("prompts/tools.j2 must render a JSON list")
        return specs

    def repair(self, reason: str) -> str:
        return self.render("repair.j2", reason=reason)

    def final_round(self) -> str:
        return self.render("final_round.j2")

    def tool_result(self, name: str, content: str) -> str:
        return self.render("tool_result.j2", name=name, content=content)

    def qa(self, *, question: str, knowledge: str) -> str:
        return self.render("qa.j2", question=question, knowledge=knowledge)

    def digest_summary(
        self, *, date: str, total_failed_steps: int, groups: Sequence[Mapping[str, Any]]
    ) -> str:
        return self.render(
            "digest_summary.j2", date=date, total_failed_steps=total_failed_steps, groups=list(groups)
        )
