"""`job-doctor cases export DIR`: disputed reports (👎 / 不准确) become scenario folders.

The folder holds the report's evidence lines as `logs.txt` and the bot's own answer as
`expected.json` with the feedback in `description`: an engineer corrects stage / fault side
there, and the wrong diagnosis is a regression test from then on.
"""

from __future__ import annotations

from pathlib import Path

from bot.app.services import AppOptions, build_services
from bot.core.settings import Settings
from bot.devtools.scenarios import write_scenario


async def export_disputed(settings: Settings, target: Path) -> list[Path]:
    written: list[Path] = []
    async with build_services(settings, options=AppOptions(mode="cli")) as services:
        reports = services.reports
        for key in await reports.disputed():
            stored = await reports.get(key)
            if stored is None:
                continue
            rep = stored.report
            feedback = await reports.feedback(key)
            notes = "; ".join(f"{f.get('by', '?')}: {f.get('note') or f.get('verdict')}" for f in feedback)
            logs = "\n".join(e.text for e in rep.evidence)
            name = "case_" + key.replace(":", "_")
            expected = {
                "step_instance_id": rep.step_instance_id,
                "task_instance_id": rep.task_instance_id,
                "stage": rep.stage,
                "fault_side": rep.fault_side,
                "key_lines": [],
                "request_ids": list(rep.request_ids),
                "expect_missing_info": bool(rep.missing_info),
                "description": f"DISPUTED — correct stage/fault_side/key_lines. Bot said: {rep.summary} "
                f"Feedback: {notes}",
            }
            written.append(write_scenario(target, name, logs + "\n", expected))
    return written
