"""Settings (DESIGN.md "Settings"): code defaults < TOML file < `JOB_DOCTOR_` environment.

Built once by the entry point (`load_settings`) and passed in; nothing reads the environment
anywhere else. Secrets are `SecretStr` and never appear in logs or reprs.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from redis.asyncio.connection import parse_url

from bot.core.redact import mask_url_credentials
from bot.core.scope import parse_scope

ENV_PREFIX = "JOB_DOCTOR_"
DEFAULT_CONFIG_NAME = "job-doctor.toml"


class ConfigError(Exception):
    """A setting is wrong; the message is one line that names it."""


def _url(v: Any) -> Any:
    # Empty strings mean "not configured" (env vars are often exported empty).
    if isinstance(v, str) and not v.strip():
        return None
    return v


def _blank(v: Any) -> bool:
    if isinstance(v, SecretStr):
        v = v.get_secret_value()
    return isinstance(v, str) and not v.strip()


def _secret(v: Any) -> Any:
    # An empty string is never a secret: `X=""` (compose exports unset variables so) means unset.
    return None if _blank(v) else v


class MissingSetting(ValueError):
    """A setting that another one needs is missing or empty; `name` is its environment name."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name} {why}")
        self.name = name
        self.why = why


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class HttpSettings(_Section):
    host: str | None = None  # None: 0.0.0.0 for serve, 127.0.0.1 for demo
    port: int = Field(default=8080, ge=0, le=65535)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)


class Credentials(_Section):
    app_code: str = ""
    app_secret: SecretStr | None = None
    username: str = ""
    # A verified user for resources that require one (BK-JOB's public APIs): sent as
    # `access_token` in X-Bkapi-Authorization instead of `bk_username`.
    access_token: SecretStr | None = None

    _s = field_validator("app_secret", mode="before")(_secret)


class BkSettings(Credentials):
    tenant_id: str = ""


class BkLogSettings(Credentials):
    base_url: AnyHttpUrl | None = None  # gateway stage URL; the client appends /esquery_search/
    index_set_id: int | None = None
    time_zone: str = "Asia/Shanghai"
    # "esquery": data.hits.hits[]._source; "ui": data.list / origin_log_list (UI search resource)
    response_shape: Literal["esquery", "ui"] = "esquery"
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    page_size: int = Field(default=500, ge=1, le=10000)
    max_pages: int = Field(default=20, ge=1)
    max_queries: int = Field(default=12, ge=1)  # per analysis
    lookback_days: float = Field(default=3.0, gt=0)
    pad_before_s: float = Field(default=300.0, ge=0)
    pad_after_s: float = Field(default=900.0, ge=0)
    # Where the engine's line and traceId are in a document: installs with JSON logs, another
    # pattern, or a collector that extracts fields have no `[app,traceId,spanId]` in the line.
    log_field: str = Field(default="log", pattern=r"^[A-Za-z_@][\w.@-]*$")
    trace_field: str = Field(default="", pattern=r"^([A-Za-z_@][\w.@-]*)?$")
    queries_file: str = ""  # a TOML [queries] table replacing some of the packaged query templates

    _v = field_validator("base_url", "index_set_id", mode="before")(_url)

    @field_validator("queries_file")
    @classmethod
    def _queries_file_exists(cls, v: str) -> str:
        v = v.strip()
        if v and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v


class BkJobSettings(Credentials):
    base_url: AnyHttpUrl | None = None  # the client appends /api/v3/<api> (or /api/v3/system/<api>)
    web_url: AnyHttpUrl | None = None  # JOB web root, for links
    # The app-only twins of the user APIs (`/api/v3/system/<api>`): no verified user needed,
    # the gateway admin grants the app those resources instead.
    use_system_api: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    # Failing hosts per result group whose output is read (0 = never read host output), and how
    # many of the output's last lines are looked at.
    host_logs: int = Field(default=3, ge=0, le=50)
    host_log_tail_lines: int = Field(default=30, ge=1, le=1000)
    # Businesses to try, in order, for an id given without one (one cheap call each).
    scopes: list[str] = Field(default_factory=list)

    _v = field_validator("base_url", "web_url", mode="before")(_url)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(str(parse_scope(s)) for s in v))


class GseSettings(Credentials):
    base_url: AnyHttpUrl | None = None
    api_version: Literal["v1", "v2"] = "v2"
    timeout_s: float = Field(default=5.0, gt=0)

    _v = field_validator("base_url", mode="before")(_url)


class LlmSettings(_Section):
    base_url: AnyHttpUrl | None = None
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    timeout_s: float = Field(default=30.0, gt=0)
    deadline_s: float = Field(default=60.0, gt=0)
    prompt_max_chars: int = Field(default=24000, ge=1000)
    max_tool_rounds: int = Field(default=2, ge=0, le=10)
    daily_token_budget: int = Field(default=2_000_000, ge=0)  # whole bot, per day; 0 = unlimited
    group_daily_token_budget: int = Field(default=300_000, ge=0)  # per chat, per day; 0 = unlimited
    user_daily_token_budget: int = Field(default=100_000, ge=0)  # per real sender, per day; 0 = unlimited

    _v = field_validator("base_url", mode="before")(_url)
    _s = field_validator("api_key", mode="before")(_secret)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())


class WorkToolSettings(_Section):
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.worktool.ymdyes.cn")
    robot_id: str = ""
    callback_token: SecretStr | None = None
    bot_name: str = ""
    send_interval_s: float = Field(default=4.5, ge=0)
    part_max_chars: int = Field(default=1800, ge=200)
    requests_per_minute: int = Field(default=60, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _callback_whole(cls, data: Any) -> Any:
        # The callback needs both halves; the robot alone is the digest's send-only use.
        if isinstance(data, dict):
            robot, token = str(data.get("robot_id") or "").strip(), data.get("callback_token")
            if robot and token is not None and _blank(token):
                raise MissingSetting(
                    "JOB_DOCTOR_WORKTOOL__CALLBACK_TOKEN", "is empty (unset it for a send-only robot)"
                )
            if not robot and token is not None and not _blank(token):
                raise MissingSetting("JOB_DOCTOR_WORKTOOL__ROBOT_ID", "is required with a callback token")
        return data

    _s = field_validator("callback_token", mode="before")(_secret)

    @property
    def enabled(self) -> bool:
        return bool(self.robot_id) and self.callback_token is not None


class WecomAibotSettings(_Section):
    token: SecretStr | None = None
    encoding_aes_key: SecretStr | None = None
    bot_id: str = ""
    secret: SecretStr | None = None
    ws_url: str = "wss://openws.work.weixin.qq.com"

    @model_validator(mode="before")
    @classmethod
    def _modes_whole(cls, data: Any) -> Any:
        # Half a mode is refused: an empty token with a key made GET /wecom/aibot a decryption
        # oracle (anyone can compute the signature over an empty token).
        if isinstance(data, dict):
            pairs = (
                ("TOKEN", "ENCODING_AES_KEY", data.get("token"), data.get("encoding_aes_key")),
                ("BOT_ID", "SECRET", data.get("bot_id"), data.get("secret")),
            )
            for a_name, b_name, a, b in pairs:
                has_a, has_b = a is not None and not _blank(a), b is not None and not _blank(b)
                if has_a != has_b:
                    missing = b_name if has_a else a_name
                    raise MissingSetting(f"JOB_DOCTOR_WECOM_AIBOT__{missing}", "is required (and not empty)")
        return data

    _s = field_validator("token", "encoding_aes_key", "secret", mode="before")(_secret)

    @property
    def http_enabled(self) -> bool:
        return self.token is not None and self.encoding_aes_key is not None

    @property
    def ws_enabled(self) -> bool:
        return bool(self.bot_id) and self.secret is not None


class ConsoleSettings(_Section):
    token: SecretStr | None = None

    _s = field_validator("token", mode="before")(_secret)


class ChatSettings(_Section):
    progress_after_s: float = Field(default=2.0, ge=0)
    ask_ttl_s: float = Field(default=600.0, gt=0)
    dedup_window_s: float = Field(default=20.0, gt=0)
    max_ids_per_message: int = Field(default=3, ge=1)
    report_cache_s: float = Field(default=300.0, ge=0)
    allowed_groups: list[str] = Field(default_factory=list)  # empty = all
    allowed_users: list[str] = Field(default_factory=list)  # empty = all
    user_rate_per_min: int = Field(default=6, ge=1)
    group_rate_per_min: int = Field(default=20, ge=1)
    # A message is cut to this before any parsing (chat text is never worth more, and every
    # parser then runs on a bounded input).
    max_text_chars: int = Field(default=4000, ge=100, le=100_000)
    # `重新分析` skips the report cache: at most this many per sender and hour (0 = never forced),
    # one forced id per message, and one forced run per step within `reanalyze_cooldown_s`
    reanalyze_per_hour: int = Field(default=5, ge=0)
    reanalyze_cooldown_s: float = Field(default=60.0, ge=0)
    # chat name (or id) → "biz:<id>" | "biz_set:<id>": with BK-JOB configured, that chat gets
    # reports only of steps of its own business
    group_scopes: dict[str, str] = Field(default_factory=dict)

    @field_validator("group_scopes")
    @classmethod
    def _group_scopes(cls, v: dict[str, str]) -> dict[str, str]:
        return {str(chat).strip(): str(parse_scope(scope)) for chat, scope in v.items() if str(chat).strip()}

    # A time named in the message ("20031265375 昨天下午3点") replaces the look-back: the BkLog
    # window is what it names, widened by these. More before than after: the step's first lines
    # (start, dispatch) come before the failure the user saw, and people round the time they give.
    time_hint_before_s: float = Field(default=7200.0, ge=0)
    time_hint_after_s: float = Field(default=3600.0, ge=0)


class DigestTarget(_Section):
    channel: Literal["worktool", "webhook"]
    chat: str = ""
    key: SecretStr | None = None


class DigestSettings(_Section):
    biz_ids: list[int] = Field(default_factory=list)
    cron: str = "0 9 * * *"
    time_zone: str = "Asia/Shanghai"
    targets: list[DigestTarget] = Field(default_factory=list)
    failed_statuses: list[int] = Field(default_factory=lambda: [4, 9, 14])
    post_when_empty: bool = True
    catch_up_grace_s: float = Field(default=6 * 3600.0, ge=0)
    concurrency: int = Field(default=8, ge=1)


class WorkerSettings(_Section):
    concurrency: int = Field(default=4, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    # Heartbeats keep a live worker's entries for longer analyses; this only bounds how long the
    # work of a replica that died waits (a stopped one hands its work back at once).
    claim_idle_s: float = Field(default=30.0, gt=0)
    # Callbacks are refused (503) rather than an unprocessed inbox entry ever being trimmed.
    inbox_max_entries: int = Field(default=100_000, ge=10)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    redis_url: str = ""  # empty = embedded in-process store
    redis_key_prefix: str = "jd:"
    # Sentinel: "host:port,host:port" of the Sentinels and the monitored master's name; password
    # and db still come from redis_url, which may then omit the host.
    redis_sentinels: str = ""
    redis_sentinel_master: str = Field(default="", validate_default=True)
    redis_sentinel_password: SecretStr | None = None  # when the Sentinels themselves require AUTH
    # Cluster: redis_url is one node of a Redis Cluster.
    redis_cluster: bool = Field(default=False, validate_default=True)
    log_level: str = "INFO"
    http: HttpSettings = Field(default_factory=HttpSettings)
    bk: BkSettings = Field(default_factory=BkSettings)
    bklog: BkLogSettings = Field(default_factory=BkLogSettings)
    bkjob: BkJobSettings = Field(default_factory=BkJobSettings)
    gse: GseSettings = Field(default_factory=GseSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    worktool: WorkToolSettings = Field(default_factory=WorkToolSettings)
    wecom_aibot: WecomAibotSettings = Field(default_factory=WecomAibotSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    digest: DigestSettings = Field(default_factory=DigestSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if v:
            try:  # the client's own parser: a bad port or db fails here, not in a traceback later
                parse_url(v)
            except ValueError as exc:
                raise ValueError(
                    f"is not a valid Redis URL ({mask_url_credentials(str(exc))[:80]})"
                ) from None
        return v

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinels_list(cls, v: Any) -> Any:
        return ",".join(str(x) for x in v) if isinstance(v, list) else v  # TOML may give a list

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, v: str) -> str:
        items = [item.strip() for item in v.split(",") if item.strip()]
        for item in items:
            parse_host_port(item)
        return ",".join(items)

    @field_validator("redis_sentinel_master")
    @classmethod
    def _sentinel_master(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        sentinels = info.data.get("redis_sentinels", "")
        if sentinels and not v:
            raise ValueError("required with JOB_DOCTOR_REDIS_SENTINELS: the name the Sentinels monitor")
        if v and not sentinels:
            raise ValueError("needs JOB_DOCTOR_REDIS_SENTINELS (comma-separated host:port)")
        if v and str(info.data.get("redis_url", "")).startswith("unix://"):
            raise ValueError("needs a redis:// or rediss:// JOB_DOCTOR_REDIS_URL (password and db only)")
        return v

    @field_validator("redis_cluster")
    @classmethod
    def _cluster(cls, v: bool, info: ValidationInfo) -> bool:
        if not v:
            return v
        url = str(info.data.get("redis_url", ""))
        if info.data.get("redis_sentinels"):
            raise ValueError("cannot be combined with JOB_DOCTOR_REDIS_SENTINELS")
        if not url or url.startswith("unix://") or not urlsplit(url).hostname:
            raise ValueError("needs JOB_DOCTOR_REDIS_URL = redis://host:port of one node of the cluster")
        if urlsplit(url).path.strip("/") not in ("", "0"):
            raise ValueError("a cluster has only db 0: drop the db from JOB_DOCTOR_REDIS_URL")
        if any(c in str(info.data.get("redis_key_prefix", "")) for c in "{}"):
            raise ValueError("JOB_DOCTOR_REDIS_KEY_PREFIX must not contain { or } on a cluster (hash tags)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must override it.
        return (env_settings, init_settings)

    # ---- derived credentials: a service's own values win over the shared [bk] ones

    def credentials_for(self, section: Credentials) -> Credentials:
        return Credentials(
            app_code=section.app_code or self.bk.app_code,
            app_secret=section.app_secret or self.bk.app_secret,
            username=section.username or self.bk.username,
            access_token=_secret(section.access_token) or _secret(self.bk.access_token),
        )

    def secret_values(self) -> list[str]:
        """Every configured secret, for the redaction processor and the model scrubber."""
        out: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                val = obj.get_secret_value()
                if len(val) >= 4:
                    out.append(val)
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, list):
                for item in obj:
                    walk(item)

        walk(self)
        if "@" in self.redis_url and ":" in self.redis_url.split("@", 1)[0][8:]:
            pwd = self.redis_url.split("@", 1)[0].rsplit(":", 1)[-1]
            for candidate in (pwd, unquote(pwd)):  # as written and as sent (percent-decoded)
                if len(candidate) >= 4:
                    out.append(candidate)
        return sorted(set(out), key=len, reverse=True)


def parse_host_port(item: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) → (host, port); ValueError naming the item otherwise."""
    host, sep, port = item.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected comma-separated host:port, got {item[:60]!r}")
    return host, int(port)


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "__".join(p.upper() for p in parts) if parts else ENV_PREFIX


def config_path_from_env(explicit: str | None = None) -> tuple[Path | None, bool]:
    """The TOML file to read and whether it was asked for explicitly (then it must exist)."""
    if explicit:
        return Path(explicit), True
    env = os.environ.get("JOB_DOCTOR_CONFIG", "").strip()
    if env:
        return Path(env), True
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return (local, False) if local.is_file() else (None, False)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(config: str | None = None, **overrides: Any) -> Settings:
    """Build the one Settings object. Raises ConfigError with a one-line message naming the setting."""
    path, explicit = config_path_from_env(config)
    data: dict[str, Any] = {}
    if path is not None:
        if explicit and not path.is_file():
            raise ConfigError(f"config file not found: {path} (from --config / JOB_DOCTOR_CONFIG)")
        data = read_toml(path)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, MissingSetting):
            raise ConfigError(f"invalid setting {cause.name}: {cause.why}") from None
        name = _env_name(tuple(err.get("loc", ())))
        value = err.get("input")
        # credentials inside an echoed URL are masked (a malformed REDIS_URL carries its password)
        got = mask_url_credentials(str(value))[:60]
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {got!r})"
        if "secret" in name.lower() or "token" in name.lower() or "key" in name.lower():
            shown = ""
        more = f"; and {len(exc.errors()) - 1} more" if len(exc.errors()) > 1 else ""
        why = mask_url_credentials(str(err.get("msg", "invalid")))
        raise ConfigError(f"invalid setting {name}: {why}{shown}{more}") from None
