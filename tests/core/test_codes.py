"""The code tables load from config/codes.toml; a broken table fails to load with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.codes import CodesError, codes, host_status_for, load_codes
from bot.core.resources import data_file

GOOD = data_file("config", "codes.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "codes.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_tables_load_once_and_agree() -> None:
    assert codes() is codes()
    c = load_codes()
    assert c == codes()
    assert c.run_status.by_name["ABANDONED"] == 14 and c.run_status.failed == {4, 9, 14}
    assert c.gse.error_to_host_status[709] == 320 and c.agent_state.zh[-2] == "未找到"
    assert (
        host_status_for(1, 0, 0) == 7
        and host_status_for(2, 115, 0) == 7
        and host_status_for(5, 0, 512) == 104
    )


@pytest.mark.parametrize(
    ("old", "new", "table", "hint"),
    [
        ('4 = "FAIL"', 'four = "FAIL"', "run_status", "valid integer"),
        ('310 = "Agent 异常"', "310 = 310", "host_status", "valid string"),
        ("failed = [4, 9, 14]", "failed = [4, 9, 14, 99]", "run_status", "[99]"),
        ("pending = [5, 7]", "pending = [5, 7, 8]", "host_status", "[8]"),
        ("310 = [117]", "310 = [117, 120]", "gse", "[120] twice"),
        ("310 = [117]", "310 = [117]\n777 = [9999]", "gse", "[777]"),
        ("9 = 9\n", "9 = 16\n", "execute_result", "[16]"),
        ('1244003 = "ACCOUNT_NOT_EXIST"\n', "", "api_error", "unknown code(s) [1244003]"),
        ('1 = "START"\n', '1 = "START"\nsurprise = 1\n', "job_action", "valid integer"),
        ("[agent_state.zh]", "[agent_states.zh]", "agent_states", "Extra inputs"),
    ],
)
def test_broken_table_names_it(tmp_path: Path, old: str, new: str, table: str, hint: str) -> None:
    assert old in GOOD
    with pytest.raises(CodesError) as err:
        load_codes(_write(tmp_path, GOOD.replace(old, new, 1)))
    message = str(err.value)
    assert f"table '{table}'" in message
    assert hint in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(CodesError, match="cannot read code tables"):
        load_codes(_write(tmp_path, "[run_status\n"))
    with pytest.raises(CodesError, match="cannot read code tables"):
        load_codes(tmp_path / "missing.toml")
