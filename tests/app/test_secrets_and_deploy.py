"""An empty string is never a secret; a channel given in part stops start-up; the compose file starts
with only the variables a user sets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.core.settings import ConfigError, load_settings
from tests.support import REPO

AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # an empty token with a key turned HTTP mode on: GET /wecom/aibot decrypted for anyone
        (
            {"JOB_DOCTOR_WECOM_AIBOT__TOKEN": "", "JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY": AES_KEY},
            "JOB_DOCTOR_WECOM_AIBOT__TOKEN",
        ),
        ({"JOB_DOCTOR_WECOM_AIBOT__TOKEN": "tok-1234"}, "JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY"),
        ({"JOB_DOCTOR_WECOM_AIBOT__BOT_ID": "bot-1", "JOB_DOCTOR_WECOM_AIBOT__SECRET": " "}, "__SECRET"),
        (
            {"JOB_DOCTOR_WORKTOOL__ROBOT_ID": "robot-1", "JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN": ""},
            "JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN",
        ),
        ({"JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN": "tok-1234"}, "JOB_DOCTOR_WORKTOOL__ROBOT_ID"),
    ],
)
def test_a_channel_given_in_part_stops_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], named: str
) -> None:
    _set(monkeypatch, env)
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings()
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err and "Traceback" not in err


def test_empty_secrets_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(
        monkeypatch,
        {
            "JOB_DOCTOR_LLM__API_KEY": "",
            "JOB_DOCTOR_CONSOLE__TOKEN": "",
            "JOB_DOCTOR_BK__APP_SECRET": "",
            "JOB_DOCTOR_WECOM_AIBOT__TOKEN": "",
            "JOB_DOCTOR_WECOM_AIBOT__ENCODING_AES_KEY": "",
            "JOB_DOCTOR_BKLOG__INDEX_SET_ID": "",
            "JOB_DOCTOR_WORKTOOL__ROBOT_ID": "robot-1",  # send-only (the digest): allowed
        },
    )
    s = load_settings()
    assert not s.llm.enabled and s.console.token is None and s.bk.app_secret is None
    assert not s.wecom_aibot.http_enabled and s.bklog.index_set_id is None
    assert s.worktool.robot_id == "robot-1" and not s.worktool.enabled


# --------------------------------------------------------------------------- deploy/docker-compose.yml

_ENTRY = re.compile(r"^      (JOB_DOCTOR_\w+):[ \t]*(.*)$")
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def container_env(compose: str, shell: dict[str, str]) -> dict[str, str]:
    """The bot's environment as compose builds it: `KEY:` without a value is passed only when set
    in the shell (compose spec "environment"); `${X:-d}` is interpolated (unset → the default)."""
    env: dict[str, str] = {}
    for line in compose.splitlines():
        m = _ENTRY.match(line)
        if m is None:
            continue
        key, value = m.group(1), m.group(2).strip()
        if not value:
            if key in shell:
                env[key] = shell[key]
            continue
        value = _DEFAULT.sub(lambda d: shell.get(d.group(1)) or d.group(2), value)
        env[key] = value.strip('"')
    return env


def test_compose_file_starts_with_only_the_variables_a_user_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = Path(REPO, "deploy", "docker-compose.yml").read_text(encoding="utf-8")
    shell = {
        "JOB_DOCTOR_BKLOG__BASE_URL": "https://bkapi.example.com/api/bk-log-search/prod",
        "JOB_DOCTOR_WORKTOOL__ROBOT_ID": "robot-1",
        "JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN": "cb-token-0123456789",
    }
    env = container_env(compose, shell)
    assert env["JOB_DOCTOR_REDIS_URL"] == "redis://redis:6379/0"
    assert "JOB_DOCTOR_LLM__API_KEY" not in env and "JOB_DOCTOR_BKLOG__INDEX_SET_ID" not in env
    _set(monkeypatch, env)
    s = load_settings()
    assert s.worktool.enabled and not s.wecom_aibot.http_enabled and not s.llm.enabled
