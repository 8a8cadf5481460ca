"""The stable preview URL of a project, and the project a gateway request is for.

Users only ever see `http://<project_id>.preview.localhost:8080/` (or the public form set by
QAI_PREVIEW_URL): it stays the same across sandbox replacement, hibernation and hosts. The
sandbox's own address stays internal to the gateway.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from runtime.settings import Settings

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def url_template(settings: Settings) -> str:
    return settings.qai_preview_url or (
        f"http://{{project_id}}.preview.localhost:{settings.qai_preview_port}"
    )


def preview_url(settings: Settings, project_id: uuid.UUID | str) -> str:
    """What users open: the gateway's address for this project."""
    return url_template(settings).replace("{project_id}", str(project_id)) + "/"


def publish_template(settings: Settings) -> str:
    """The published app's URL form: `http://{project_id}.app.localhost:<port>` by default."""
    return settings.qai_publish_url or (
        f"http://{{project_id}}.app.localhost:{settings.qai_preview_port}"
    )


def publish_url(settings: Settings, project_id: uuid.UUID | str) -> str:
    """The published app's stable address (the same across republishes)."""
    return publish_template(settings).replace("{project_id}", str(project_id)) + "/"


def publish_host_pattern(settings: Settings) -> re.Pattern[str]:
    return host_pattern(settings, publish_template(settings))


def host_pattern(settings: Settings, template: str | None = None) -> re.Pattern[str]:
    """Matches a request's host name (port ignored) and captures the project id."""
    template = template or url_template(settings)
    host = urlsplit(template.replace("{project_id}", "PROJECT-ID")).hostname or ""
    literal = re.escape(host.lower()).replace("project\\-id", f"({UUID_PATTERN})")
    return re.compile(f"^{literal}$")


def project_from_host(pattern: re.Pattern[str], host_header: str) -> uuid.UUID | None:
    """The project a `Host:` header names, or None when it names none."""
    host = host_header.strip().lower()
    if host.startswith("["):  # an IPv6 literal never names a project
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    match = pattern.match(host)
    return uuid.UUID(match.group(1)) if match else None


def loopback_target(url: str) -> tuple[str, str | None]:
    """For clients outside a browser: `*.localhost` names resolve to loopback only in browsers,
    so connect to 127.0.0.1 and send the name in `Host`. Returns (url to connect, Host header)."""
    parts = urlsplit(url)
    name = parts.hostname or ""
    if name.endswith(".localhost"):
        netloc = f"127.0.0.1:{parts.port}" if parts.port else "127.0.0.1"
        host = f"{name}:{parts.port}" if parts.port else name
        return parts._replace(netloc=netloc).geturl(), host
    return url, None
