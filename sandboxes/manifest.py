"""The sandbox template's manifest (`sandbox-templates/<name>/template.json`): what the template
holds and how its dev server starts. Every backend reads it; the local build lives in
`sandboxes.template`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_SOURCE = PROJECT_ROOT / "sandbox-templates"
# Inputs of the build that the app itself does not need (E2B files and the manifest).
NOT_COPIED = frozenset(
    {"e2b.toml", "e2b.Dockerfile", "compile_page.sh", "template.json", ".dockerignore"}
)


class TemplateManifest(BaseModel):
    """template.json: what the template holds, for the system prompt and the backends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    workdir: str
    port: int
    start_cmd: str
    ready_path: str = "/"
    env: dict[str, str] = {}
    components: list[str]
    preinstalled: list[str]
    paths: dict[str, str]
    notes: list[str] = []


class TemplateError(Exception):
    """The template is missing or its build failed; the message says which step and why."""


def template_source(name: str = "nextjs") -> Path:
    source = TEMPLATES_SOURCE / name
    if not (source / "template.json").is_file():
        raise TemplateError(f"unknown sandbox template {name!r}: no {source / 'template.json'}")
    return source


def load_manifest(name: str = "nextjs") -> TemplateManifest:
    path = template_source(name) / "template.json"
    try:
        return TemplateManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise TemplateError(f"invalid {path}: {error}") from error
