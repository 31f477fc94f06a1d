"""The phase rules load from config/phases.toml; a broken entry fails to load with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.diagnosis.phases import RESOLVERS, PhasesError, load_phase_rules, phase_rules

GOOD = """
templates = [
  { prefix = "Start gse task fail", phase = "dispatch", severity = "fail" },
  { prefix = "Finish gse task", phase = "result_polling", severity = "info", resolve = "gse_finish" },
  { regex = 'taskInstance \\d+ evicted', first_word = "taskInstance", phase = "result_polling", severity = "fail" },
  { prefix = "Handle job event error", severity = "fail", floor = "initialization" },
]

[expected_first]
parameter_check = "Start task, taskInstanceId=…"
initialization = "Start step, stepInstanceId=…"
dispatch = "Sending task to gse server"
execution = "Analyse execute object task result"
result_polling = "Start pull gse task result"
callback = "Begin to dispatch notification event"

[completion]
result_polling = ["Finish gse task"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "phases.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_small_rules_load_and_index_by_first_word(tmp_path: Path) -> None:
    rules = load_phase_rules(_write(tmp_path, GOOD))
    assert [t.name for t in rules.by_first_word["Start"]] == ["Start gse task fail"]
    assert rules.by_first_word["Finish"][0].resolve is RESOLVERS["gse_finish"]
    assert rules.by_first_word["taskInstance"][0].name == "taskInstance \\d+ evicted"
    assert rules.completion == {"result_polling": ("Finish gse task",)}


def test_packaged_rules_are_cached() -> None:
    assert phase_rules() is phase_rules()
    assert "Sending" in phase_rules().by_first_word


@pytest.mark.parametrize(
    ("old", "new", "entry", "hint"),
    [
        (
            'resolve = "gse_finish"',
            'resolve = "guess"',
            "template #2 ('Finish gse task')",
            "unknown resolver 'guess'",
        ),
        ('phase = "dispatch"', 'phase = "launch"', "template #1 ('Start gse task fail')", "'phase'"),
        (
            'severity = "fail" },\n  { prefix = "Finish',
            'severity = "fatal" },\n  { prefix = "Finish',
            "template #1",
            "'severity'",
        ),
        ('first_word = "taskInstance", ', "", "template #3", "needs first_word"),
        ("'taskInstance \\d+ evicted'", "'taskInstance (\\d+ evicted'", "template #3", "invalid regex"),
        (
            '{ prefix = "Start gse task fail",',
            '{ prefix = "Start gse task fail", regex = "x",',
            "template #1",
            "exactly one",
        ),
        (
            '{ prefix = "Start gse task fail",',
            '{ prefix = "[tag] Start",',
            "template #1 ('[tag] Start')",
            "start with a word",
        ),
        ('floor = "initialization"', 'floor = "initialization", surprise = 1', "template #4", "Extra inputs"),
        ('"Handle job event error"', '"Finish gse task"', "template #4 ('Finish gse task')", "duplicate"),
        (
            'result_polling = ["Finish gse task"]',
            'result_polling = ["Finish gse"]',
            "completion.result_polling",
            "not a template",
        ),
        (
            'callback = "Begin to dispatch notification event"\n',
            "",
            "expected_first.callback",
            "Field required",
        ),
    ],
)
def test_broken_entry_is_named(tmp_path: Path, old: str, new: str, entry: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(PhasesError) as err:
        load_phase_rules(_write(tmp_path, GOOD.replace(old, new, 1)))
    message = str(err.value)
    assert entry in message
    assert hint in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PhasesError, match="cannot read phase rules"):
        load_phase_rules(_write(tmp_path, "templates = [\n"))
    with pytest.raises(PhasesError, match="cannot read phase rules"):
        load_phase_rules(tmp_path / "missing.toml")
