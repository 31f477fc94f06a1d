"""Generic stage actions load from config/stages.toml; a broken stage fails to load with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.models import PHASES
from bot.core.resources import data_file
from bot.diagnosis.rules import StagesError, load_stage_actions, stage_actions

GOOD = data_file("config", "stages.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stages.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_phase_has_actions_and_they_are_cached() -> None:
    assert stage_actions() is stage_actions()
    assert list(stage_actions()) == list(PHASES)
    assert stage_actions()["callback"].immediate == ["检查回调地址是否可达并返回 2xx"]


@pytest.mark.parametrize(
    ("old", "new", "stage", "hint"),
    [
        ("[callback]", "[call_back]", "call_back", "Extra inputs"),
        ("[callback]", "[call_back]", "callback", "Field required"),
        (
            'improvements = ["为结果拉取异常配置告警"]',
            "improvements = []",
            "result_polling",
            "'improvements'",
        ),
        (
            'improvements = ["为结果拉取异常配置告警"]',
            'improvements = [""]',
            "result_polling",
            "'improvements.0'",
        ),
        ('improvements = ["为结果拉取异常配置告警"]', "improvements = [1]", "result_polling", "valid string"),
        ('improvements = ["为结果拉取异常配置告警"]', "", "result_polling", "Field required"),
        (
            'improvements = ["为结果拉取异常配置告警"]',
            'improvement = ["x"]',
            "result_polling",
            "'improvement'",
        ),
    ],
)
def test_broken_stage_is_named(tmp_path: Path, old: str, new: str, stage: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(StagesError) as err:
        load_stage_actions(_write(tmp_path, GOOD.replace(old, new, 1)))
    message = str(err.value)
    assert f"stage '{stage}'" in message
    assert hint in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(StagesError, match="cannot read stage actions"):
        load_stage_actions(_write(tmp_path, "[dispatch\n"))
