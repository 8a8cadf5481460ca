"""Which directory a template name means for the local backend, and how its app starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.settings import Settings
from sandboxes.base import SandboxTemplateError


@dataclass(frozen=True)
class LocalTemplate:
    """A built directory (owned by uid/gid 1000): /home/user's read-only lower overlay layer.

    `start_cmd` runs in the background when a sandbox starts (the dev server on `port`). Once it
    listens, `ready_path` is requested in the background until it answers 200, as E2B's
    `compile_page.sh` does, so the first page is compiled before anyone opens the preview.
    """

    name: str
    directory: Path
    start_cmd: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str | None = None


def built_template(settings: Settings, name: str = "nextjs") -> LocalTemplate:
    """A template from `sandbox-templates/`, built (or found cached) by `sandboxes.template`."""
    from sandboxes.template import TemplateError, ensure_template, load_manifest

    try:
        manifest = load_manifest(name)
        directory = ensure_template(settings, name)
    except TemplateError as error:
        raise SandboxTemplateError(str(error)) from None
    return LocalTemplate(
        name=manifest.name,
        directory=Path(directory),
        start_cmd=manifest.start_cmd,
        port=manifest.port,
        env=dict(manifest.env),
        ready_path=manifest.ready_path,
    )
