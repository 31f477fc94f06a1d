from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.core.resources import data_file
from bot.core.settings import ConfigError, Settings, load_settings


def test_defaults_need_no_file() -> None:
    s = load_settings()
    assert s.redis_url == ""
    assert s.http.port == 8080
    assert s.bklog.time_zone == "Asia/Shanghai"
    assert s.llm.enabled is False
    assert s.worktool.enabled is False


def test_toml_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "jd.toml"
    cfg.write_text(
        '[bklog]\nbase_url = "http://bklog.local/api/bk-log-search/prod"\nindex_set_id = 7\n'
        "[http]\nport = 9000\n[digest]\nbiz_ids = [2]\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("JOB_DOCTOR_CONFIG", str(cfg))
    monkeypatch.setenv("JOB_DOCTOR_HTTP__PORT", "9100")
    monkeypatch.setenv("JOB_DOCTOR_DIGEST__TARGETS", '[{"channel": "worktool", "chat": "运维值班群"}]')
    s = load_settings()
    assert s.bklog.index_set_id == 7
    assert str(s.bklog.base_url).startswith("http://bklog.local/")
    assert s.http.port == 9100  # env wins over the file
    assert s.digest.biz_ids == [2]
    assert s.digest.targets[0].chat == "运维值班群"


def test_local_file_is_read_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job-doctor.toml").write_text('log_level = "DEBUG"\n', encoding="utf-8")
    assert load_settings().log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("JOB_DOCTOR_BKLOG__INDEX_SET_ID", "abc", "JOB_DOCTOR_BKLOG__INDEX_SET_ID"),
        ("JOB_DOCTOR_BKLOG__BASE_URL", "not a url", "JOB_DOCTOR_BKLOG__BASE_URL"),
        ("JOB_DOCTOR_HTTP__PORT", "99999", "JOB_DOCTOR_HTTP__PORT"),
        ("JOB_DOCTOR_REDIS_URL", "localhost:6379", "JOB_DOCTOR_REDIS_URL"),
        ("JOB_DOCTOR_DIGEST__TARGETS", '[{"channel": "fax"}]', "JOB_DOCTOR_DIGEST__TARGETS"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bklog\nindex_set_id = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "missing.toml"))


def test_secret_values_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_DOCTOR_BK__APP_SECRET", "s3cr3t-app-secret")
    monkeypatch.setenv("JOB_DOCTOR_LLM__API_KEY", "sk-testkey-0123456789")
    s = load_settings()
    assert "s3cr3t-app-secret" not in repr(s)
    assert "s3cr3t-app-secret" in s.secret_values()
    assert s.llm.enabled
    # shared [bk] credentials apply to BkLog unless it sets its own
    assert s.credentials_for(s.bklog).app_secret is not None


def test_example_toml_documents_every_setting() -> None:
    data = tomllib.loads(data_file("config", "job-doctor.example.toml").read_text(encoding="utf-8"))
    Settings(**data)  # the example itself is valid

    def walk(model: type, prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields") and name not in ("targets",):
                out += walk(ann, f"{prefix}{name}.")
            else:
                out.append(prefix + name)
        return out

    def present(path: str) -> bool:
        node: object = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    text = data_file("config", "job-doctor.example.toml").read_text(encoding="utf-8")
    missing = [p for p in walk(Settings, "") if not present(p) and f"# {p.split('.')[-1]} =" not in text]
    assert missing == []


def test_a_malformed_redis_url_is_one_line_without_its_password() -> None:
    for url in ("http://admin:S3cret-pw@10.0.0.5:6379/0", "redis://:S3cret-pw@10.0.0.5:notaport/0"):
        with pytest.raises(ConfigError) as err:
            load_settings(redis_url=url)
        text = str(err.value)
        assert "JOB_DOCTOR_REDIS_URL" in text and "S3cret-pw" not in text and "\n" not in text
