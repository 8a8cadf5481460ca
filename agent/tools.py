"""The agent's tools (the seed's three, and editFiles): their schemas, and running them.

Every call ends in a `ToolOutcome` the model sees. Bad arguments, unknown tools, paths outside
the workspace, forbidden commands and requests the workspace refuses (`WorkspaceError`: a
directory where a file should go, a full disk, a read-only path, a binary or oversized file)
become error results the model can correct, never a crashed run. Infrastructure failures (the
sandbox is gone, envd cannot be reached, timeouts) are raised, so the activity around this can
classify and retry them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agent import edits
from sandboxes.base import (
    HOME,
    CommandFailedError,
    CommandResult,
    InvalidPathError,
    Sandbox,
    SandboxTimeoutError,
    WorkspaceError,
    WriteEntry,
)

TERMINAL = "terminal"
CREATE_OR_UPDATE_FILES = "createOrUpdateFiles"
READ_FILES = "readFiles"
EDIT_FILES = "editFiles"

COMMAND_TIMEOUT_SECONDS = 300
MAX_STREAM_CHARS = 8_000
MAX_READ_CHARS = 60_000


def result_chars(context_tokens: int, output_tokens: int) -> int:
    """The most a readFiles result shows: about a twentieth of the request's room in the window
    (a fifth of its tokens as characters; JSON quoting can double them), at most MAX_READ_CHARS.
    Small steps keep each request mostly the previous one, so prompt caches keep working; the
    model reads larger files in parts (24,000 characters a part in the default window)."""
    return min(MAX_READ_CHARS, max(2_000, (context_tokens - output_tokens) // 5))


TOOL_DEFINITIONS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": TERMINAL,
            "description": (
                "Run a shell command in /home/user (bash). Returns stdout, stderr and the exit "
                "code. Use it to install packages (`npm install <pkg> --yes`) and inspect files."
            ),
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The command."}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": CREATE_OR_UPDATE_FILES,
            "description": (
                "Create or overwrite files. Paths are relative to /home/user, "
                "for example app/page.tsx."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "path": {"type": "string"},
                                "content": {"type": "string"},
                            },
                            "required": ["path", "content"],
                        },
                    }
                },
                "required": ["files"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": READ_FILES,
            "description": "Read files. Paths are relative to /home/user or start with /home/user.",
            "parameters": {
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"type": "string"}},
                    "ranges": {
                        "type": "object",
                        "description": "Optional: read only lines [first, last] (1-based, "
                        'inclusive) of a file, e.g. {"app/page.tsx": [120, 200]}.',
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                },
                "required": ["files"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": EDIT_FILES,
            "description": (
                "Change part of existing files: each edit replaces `old` (copied exactly from "
                "the file, with enough lines around it to occur once) with `new`. Edits apply "
                "in order; if any edit fails, no file is changed. Use it for every change to "
                "an existing file; use createOrUpdateFiles for new files or full rewrites."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "edits": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "path": {"type": "string"},
                                "old": {"type": "string", "description": "Text to replace."},
                                "new": {"type": "string", "description": "Replacement text."},
                                "replace_all": {
                                    "type": "boolean",
                                    "description": "Replace every occurrence of `old`.",
                                },
                            },
                            "required": ["path", "old", "new"],
                        },
                    }
                },
                "required": ["edits"],
            },
        },
    },
]


class TerminalArgs(BaseModel):
    command: str = Field(min_length=1)


class FileToWrite(BaseModel):
    path: str = Field(min_length=1)
    content: str


class CreateOrUpdateFilesArgs(BaseModel):
    files: list[FileToWrite] = Field(min_length=1)


class ReadFilesArgs(BaseModel):
    files: list[str] = Field(min_length=1)
    ranges: dict[str, tuple[int, int]] = Field(default_factory=dict)
    """Per path (as given, or relative to /home/user): the lines [first, last] to read."""

    def range_for(self, given: str, relative: str) -> tuple[int, int] | None:
        return self.ranges.get(given) or self.ranges.get(relative)


class EditArgs(BaseModel):
    path: str = Field(min_length=1)
    old: str
    new: str
    replace_all: bool = False


class EditFilesArgs(BaseModel):
    edits: list[EditArgs] = Field(min_length=1)


class FileDiff(BaseModel):
    path: str
    added: int
    removed: int
    diff: str


class ToolOutcome(BaseModel):
    """What a tool call produced: `content` goes to the model, `written` into the agent state."""

    ok: bool
    content: str
    brief: str
    written: dict[str, str] = Field(default_factory=dict)
    diffs: list[FileDiff] = Field(default_factory=list)
    """For editFiles: what changed in each file, for the event stream and the UI."""
    edits_applied: int = 0
    edits_refused: int = 0


# The template's dev server already runs on port 3000 with hot reload; a second one (or a
# production build) fights it for the port and the .next directory.
_DEV_SERVER = re.compile(
    r"(^|[;&|(]\s*|\s)(npm\s+(run\s+)?(dev|start|build)|yarn\s+(dev|start|build)"
    r"|pnpm\s+(run\s+)?(dev|start|build)|(npx\s+)?next\s+(dev|start|build))\b"
)


def forbidden_command(command: str) -> str | None:
    """Why a command may not run, or None."""
    if _DEV_SERVER.search(command):
        return (
            "The dev server is already running on port 3000 with hot reload; do not run "
            "dev, build or start commands. Just write the files and the preview updates."
        )
    return None


def relative_path(path: str) -> str:
    """Normalise a model-given path to one relative to /home/user, refusing escapes."""
    cleaned = path.strip()
    if cleaned.startswith("@/"):
        raise InvalidPathError(
            f"{path!r}: '@/' is an import alias; use the real path, e.g. {cleaned[2:]!r}"
        )
    if cleaned.startswith(HOME + "/"):
        cleaned = cleaned[len(HOME) + 1 :]
    elif cleaned.startswith("/"):
        raise InvalidPathError(f"{path!r} is outside /home/user; use a path relative to it")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidPathError(f"{path!r} does not name a file inside /home/user")
    return "/".join(parts)


def bound(text: str, limit: int) -> str:
    """Keep the head and the tail of long output, and say what was cut."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut ...]\n{text[-tail:]}"


def _format_command(result: CommandResult, command: str) -> str:
    return json.dumps(
        {
            "command": command,
            "exit_code": result.exit_code,
            "stdout": bound(result.stdout, MAX_STREAM_CHARS),
            "stderr": bound(result.stderr, MAX_STREAM_CHARS),
        },
        ensure_ascii=False,
    )


async def _terminal(
    sandbox: Sandbox, args: TerminalArgs, on_output: Callable[[str], Awaitable[None] | None] | None
) -> ToolOutcome:
    reason = forbidden_command(args.command)
    if reason:
        return ToolOutcome(ok=False, content=f"Error: {reason}", brief="refused dev-server command")
    try:
        result = await sandbox.commands.run(
            args.command,
            cwd=HOME,
            timeout=COMMAND_TIMEOUT_SECONDS,
            on_stdout=on_output,
            on_stderr=on_output,
        )
    except CommandFailedError as failed:
        return ToolOutcome(
            ok=False,
            content=_format_command(failed.result, args.command),
            brief=f"exit {failed.exit_code}",
        )
    except SandboxTimeoutError:
        return ToolOutcome(
            ok=False,
            content=(
                f"Error: the command ran past {COMMAND_TIMEOUT_SECONDS} s and was killed. "
                "Run long tasks with a timeout, and never start servers."
            ),
            brief="timed out",
        )
    return ToolOutcome(ok=True, content=_format_command(result, args.command), brief="exit 0")


_HINTS = {
    "is_a_directory": "Write to a file inside it (for example {path}/page.tsx) or pick another "
    "name.",
    "not_a_directory": "A file cannot contain other files: choose a path whose folders are "
    "folders, or remove that file with the terminal first if it is not needed.",
    "no_space": "Free space with the terminal first: find what is large with "
    "`du -sh * .[!.]* | sort -h` and delete what is not needed (build output, caches, stray "
    "files), then try again.",
    "permission_denied": "Write somewhere else inside /home/user, or, if the file is yours, make "
    "it writable again with `chmod u+w` in the terminal.",
    "name_too_long": "Use shorter file and folder names.",
    "too_large": "Look at parts of it with the terminal instead (head, tail, grep, sed -n).",
}
"""What the model can do about each `WorkspaceError.reason`."""


def workspace_problem(error: WorkspaceError) -> str:
    """The error's words (sandbox paths, no host detail) with what the model can do about it."""
    hint = _HINTS.get(error.reason, "")
    text = str(error).rstrip(".")
    return f"{text}. {hint.format(path=error.path or 'it')}".strip()


async def _create_or_update_files(sandbox: Sandbox, args: CreateOrUpdateFilesArgs) -> ToolOutcome:
    entries: list[WriteEntry] = []
    for file in args.files:
        try:
            entries.append(WriteEntry(path=relative_path(file.path), data=file.content))
        except InvalidPathError as error:
            return ToolOutcome(
                ok=False,
                content=f"Error: nothing was written. Path refused: {error}",
                brief="path refused",
            )
    try:
        await sandbox.files.write_files(entries)
    except InvalidPathError as error:
        return ToolOutcome(
            ok=False,
            content=f"Error: nothing was written. Path refused: {error}",
            brief="path refused",
        )
    except WorkspaceError as error:
        return _write_failed(entries, error)
    written = {entry.path: str(entry.data) for entry in entries}
    listing = ", ".join(f"{path} ({len(content)} chars)" for path, content in written.items())
    return ToolOutcome(
        ok=True,
        content=f"Wrote {len(written)} file(s): {listing}",
        brief=f"wrote {len(written)} file(s)",
        written=written,
    )


def _write_failed(entries: list[WriteEntry], error: WorkspaceError) -> ToolOutcome:
    """Say which file failed, why, and which files were and were not written."""
    done = set(error.written)
    written = {e.path: str(e.data) for e in entries if e.path in done}
    missing = [e.path for e in entries if e.path not in done]
    failed = error.path or "a file"
    lines = [f"Error: could not write {failed}: {workspace_problem(error)}"]
    if error.path is None and not done:
        lines.append("Which of the files were written is not known; check with readFiles.")
    else:
        lines.append(f"Written: {', '.join(written) if written else 'nothing'}.")
        lines.append(f"Not written: {', '.join(missing)}.")
        lines.append("Send the files that were not written again once the problem is fixed.")
    return ToolOutcome(
        ok=False,
        content="\n".join(lines),
        brief=f"write failed: {error.reason.replace('_', ' ')}",
        written=written,
    )


def binary_problem(data: bytes) -> str | None:
    """Why these bytes cannot be shown to the model as text, or None when they can."""
    if b"\0" not in data:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return None
    return f"binary file, {len(data)} bytes; cannot be shown as text"


def _lines(text: str, path: str, wanted: tuple[int, int] | None, limit: int) -> dict[str, str]:
    """A file's text, or the lines asked for; an oversized one shows its first lines that fit
    `limit` and says how to read the rest."""
    lines = text.split("\n")
    total = len(lines)
    if wanted is None and len(text) <= limit:
        return {"path": path, "content": text}
    first, last = wanted if wanted is not None else (1, total)
    first, last = max(1, first), min(total, max(first, last))
    if first > total:
        return {"path": path, "error": f"the file has only {total} lines; ask for lines 1-{total}"}
    shown, size, end = [], 0, first - 1
    for number in range(first - 1, last):
        size += len(lines[number]) + 1
        if size > limit and shown:
            break
        shown.append(lines[number])
        end = number + 1
    result = {"path": path, "lines": f"{first}-{end} of {total}", "content": "\n".join(shown)}
    if end < last:
        step = max(20, end - first + 1)
        result["note"] = (
            f"{'The file' if wanted is None else 'The range'} is too long to show whole "
            f"({len(text)} characters, {total} lines); lines {first}-{end} are shown. Read the "
            f'rest a part at a time: {{"files": ["{path}"], "ranges": {{"{path}": '
            f"[{end + 1}, {min(total, end + step)}]}}}}, or search it with the terminal (grep -n)."
        )
    return result


async def _read_files(sandbox: Sandbox, args: ReadFilesArgs, limit: int) -> ToolOutcome:
    results: list[dict[str, str]] = []
    failures = 0
    budget = limit
    for path in args.files:
        try:
            relative = relative_path(path)
            data = await sandbox.files.read(relative, format="bytes")
        except InvalidPathError as error:
            failures += 1
            results.append({"path": path, "error": str(error)})
            continue
        except FileNotFoundError:
            failures += 1
            results.append({"path": path, "error": "no such file"})
            continue
        except WorkspaceError as error:
            failures += 1
            results.append({"path": relative, "error": workspace_problem(error)})
            continue
        problem = binary_problem(data)
        if problem is not None:
            failures += 1
            results.append({"path": relative, "error": problem})
            continue
        item = _lines(
            data.decode("utf-8"), relative, args.range_for(path, relative), max(budget, 1_000)
        )
        failures += "error" in item
        budget -= len(item.get("content", ""))
        results.append(item)
    return ToolOutcome(
        ok=failures == 0,
        content=json.dumps(results, ensure_ascii=False),
        brief=f"read {len(results) - failures} of {len(results)} file(s)",
    )


async def _edit_files(sandbox: Sandbox, args: EditFilesArgs) -> ToolOutcome:
    """Apply every edit, or none: one failing edit leaves every file of the call as it was."""
    grouped: dict[str, list[edits.Edit]] = {}
    for item in args.edits:
        try:
            path = relative_path(item.path)
        except InvalidPathError as error:
            return _edit_refused(f"Path refused: {error}", len(args.edits))
        grouped.setdefault(path, []).append(edits.Edit(item.old, item.new, item.replace_all))
    changed: dict[str, str] = {}
    diffs: list[FileDiff] = []
    problems: list[str] = []
    for path, file_edits in grouped.items():
        try:
            data = await sandbox.files.read(path, format="bytes")
        except FileNotFoundError:
            problems.append(
                f"{path}: the file does not exist. Create it with createOrUpdateFiles, or check "
                "the path (list files with the terminal)."
            )
            continue
        except WorkspaceError as error:
            problems.append(f"{path}: {workspace_problem(error)}")
            continue
        problem = binary_problem(data)
        if problem is not None:
            problems.append(f"{path}: {problem}; it cannot be edited as text.")
            continue
        before = data.decode("utf-8")
        try:
            after = edits.apply(before, path, file_edits)
        except edits.EditError as error:
            problems.append(str(error))
            continue
        changed[path] = after
        change = edits.change(path, before, after)
        diffs.append(FileDiff(**change.__dict__))
    if problems:
        return _edit_refused("\n\n".join(problems), len(args.edits))
    entries = [WriteEntry(path=path, data=content) for path, content in changed.items()]
    try:
        await sandbox.files.write_files(entries)
    except WorkspaceError as error:
        outcome = _write_failed(entries, error)
        return outcome.model_copy(update={"edits_refused": len(args.edits)})
    listing = ", ".join(f"{d.path} (+{d.added} -{d.removed})" for d in diffs)
    added = sum(d.added for d in diffs)
    removed = sum(d.removed for d in diffs)
    return ToolOutcome(
        ok=True,
        content=f"Edited {len(diffs)} file(s): {listing}. Lines added {added}, removed {removed}.",
        brief=f"edited {len(diffs)} file(s) +{added} -{removed}",
        written=changed,
        diffs=diffs,
        edits_applied=len(args.edits),
    )


def _edit_refused(problem: str, count: int) -> ToolOutcome:
    return ToolOutcome(
        ok=False,
        content=f"Error: no file was changed.\n{problem}",
        brief="edit refused",
        edits_refused=count,
    )


def _invalid(name: str, detail: str) -> ToolOutcome:
    return ToolOutcome(
        ok=False,
        content=f"Error: invalid arguments for {name}: {detail}. Send a JSON object that "
        "matches the tool's schema.",
        brief="invalid arguments",
    )


def _validation_detail(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "arguments"
    return f"{where}: {first['msg']}"


async def execute_tool(
    sandbox: Sandbox,
    name: str,
    raw_arguments: str,
    *,
    on_output: Callable[[str], Awaitable[None] | None] | None = None,
    max_result_chars: int = MAX_READ_CHARS,
) -> ToolOutcome:
    """Run one tool call from the model; anything the model got wrong becomes an error result.

    `max_result_chars` bounds what readFiles shows (a small context window asks for less)."""
    try:
        arguments = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError as error:
        return _invalid(name, f"not valid JSON ({error.msg} at position {error.pos})")
    try:
        if name == TERMINAL:
            return await _terminal(sandbox, TerminalArgs.model_validate(arguments), on_output)
        if name == CREATE_OR_UPDATE_FILES:
            files_args = CreateOrUpdateFilesArgs.model_validate(arguments)
            return await _create_or_update_files(sandbox, files_args)
        if name == READ_FILES:
            read_args = ReadFilesArgs.model_validate(arguments)
            return await _read_files(sandbox, read_args, min(max_result_chars, MAX_READ_CHARS))
        if name == EDIT_FILES:
            return await _edit_files(sandbox, EditFilesArgs.model_validate(arguments))
    except ValidationError as error:
        return _invalid(name, _validation_detail(error))
    known = ", ".join(tool["function"]["name"] for tool in TOOL_DEFINITIONS)
    return ToolOutcome(
        ok=False,
        content=f"Error: unknown tool {name!r}. Available tools: {known}.",
        brief="unknown tool",
    )
