"""The UI's Jinja2 environment and the small formatting filters its templates use.

Beside `api.ui` rather than in it: the login pages of `api.auth` render with it too, and the UI
pages import `api.auth`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent / "ui"
STATIC = HERE / "static"

PHASES = {
    "starting": "Starting",
    "sandbox": "Preparing the sandbox",
    "waiting": "Waiting for a free sandbox",
    "thinking": "Thinking",
    "tool": "Running a tool",
    "verifying": "Checking the app",
    "saving": "Saving the version",
}


def when(value: datetime | str | None, seconds: bool = False) -> str:
    """A short UTC time: today's as 14:05, older ones with their date."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    moment = moment.astimezone(UTC)
    clock = "%H:%M:%S" if seconds else "%H:%M"
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime(clock)
    return moment.strftime(f"%d %b %Y, {clock}")


def iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.isoformat()


def phase_label(phase: str) -> str:
    return PHASES.get(phase, phase.capitalize())


environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(when=when, iso=iso, phase_label=phase_label)


def render(template: str, **values: Any) -> str:
    return environment.get_template(template).render(**values)
