"""Checking a finished draft: what counts as an error, and how errors go back to the model.

Pure functions over the checks' raw output (tsc, the preview's answers, the dev server's log),
so the activities that run the checks stay thin and this logic is tested without a sandbox.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import uuid
from collections.abc import Iterable, Sequence
from enum import StrEnum

from pydantic import BaseModel

from sandboxes.template import TSGO_ARGS

MAX_ISSUES = 20
MAX_MESSAGE_CHARS = 300
MAX_FEEDBACK_CHARS = 6_000

TSC_JS_COMMAND = "node_modules/.bin/tsc --noEmit -p . --pretty false"
"""TypeScript 5 (JS), which `next build` also uses; npx would look for it on the network."""
TSGO_COMMAND = shlex.join(TSGO_ARGS)
"""TypeScript 7, the native compiler, as the template runs it (see `sandboxes.template`)."""
TSC_COMMAND = f"if [ -x node_modules/.bin/tsgo ]; then {TSGO_COMMAND}; else {TSC_JS_COMMAND}; fi"
"""The type check: the native compiler, many times cheaper; TypeScript 5 in projects that
dropped it (restored from before the template had it, say)."""
SERVER_LOG = "/tmp/qai-start.log"
NEXT_ERROR_MARKER = 'id="__next_error__"'
"""Next.js renders its error page with this id when rendering a route failed."""

_TSC_LINE = re.compile(
    r"^(?P<file>[^\s(][^(]*)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.+)$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LOG_LOCATION = re.compile(r"^\s*⨯\s+\.?/?(?P<file>[\w./@()\[\]-]+):(?P<line>\d+)(?::\d+)?\s*$")
_LOG_ERROR = re.compile(
    r"^\s*(⨯|Error:|TypeError:|ReferenceError:|SyntaxError:|Module not found|Failed to compile)"
)
_PAGE = re.compile(r"^app/(?P<route>(?:.+/)?)page\.(tsx|ts|jsx|js|mdx)$")


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class CheckIssue(BaseModel):
    check: str
    message: str
    file: str | None = None
    line: int | None = None

    def text(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        where = where or (f"{self.file}: " if self.file else "")
        return f"[{self.check}] {where}{self.message}"


class CheckResult(BaseModel):
    """One check's outcome; `issues` are deduplicated and bounded, so history stays small."""

    name: str
    status: CheckStatus
    issues: list[CheckIssue] = []
    reason: str | None = None
    """Why the check was skipped."""
    log_offset: int | None = None
    """(routes) the server log's size before the routes were requested."""
    screenshot_id: uuid.UUID | None = None
    """(browser) the screenshot of `/` taken while it was checked, if it was."""


class ChecksReport(BaseModel):
    """What a run's checks found, as stored on its fragment."""

    status: CheckStatus
    errors: list[CheckIssue] = []
    skipped: list[str] = []
    """`check: reason` for each check that could not run."""
    rounds: int = 0
    """Fix rounds the model was given."""
    ran: list[str] = []
    """The checks that ran on the final draft (`types`, `routes`, `server_log`, `browser`)."""


def bounded(issues: Iterable[CheckIssue]) -> list[CheckIssue]:
    """Deduplicated, at most MAX_ISSUES, each message cut to MAX_MESSAGE_CHARS."""
    seen: set[tuple[str, str | None, int | None, str]] = set()
    kept: list[CheckIssue] = []
    for issue in issues:
        message = issue.message.strip()[:MAX_MESSAGE_CHARS]
        key = (issue.check, issue.file, issue.line, message)
        if key in seen:
            continue
        seen.add(key)
        kept.append(issue.model_copy(update={"message": message}))
        if len(kept) == MAX_ISSUES:
            break
    return kept


def parse_tsc(output: str) -> list[CheckIssue]:
    """`file(line,col): error TSxxxx: message` lines; continuation lines join their error."""
    issues: list[CheckIssue] = []
    for raw in output.splitlines():
        match = _TSC_LINE.match(raw.strip())
        if match:
            issues.append(
                CheckIssue(
                    check="types",
                    file=match["file"].strip(),
                    line=int(match["line"]),
                    message=f"{match['code']}: {match['msg'].strip()}",
                )
            )
        elif issues and raw.startswith("  ") and raw.strip():
            last = issues[-1]
            issues[-1] = last.model_copy(update={"message": f"{last.message} {raw.strip()}"})
    return bounded(issues)


def log_errors(text: str) -> list[CheckIssue]:
    """Error lines of the Next.js dev server's log, with the file and line they name."""
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    issues: list[CheckIssue] = []
    for index, line in enumerate(lines):
        location = _LOG_LOCATION.match(line)
        if location:
            detail = next((n.strip() for n in lines[index + 1 : index + 4] if n.strip()), "")
            issues.append(
                CheckIssue(
                    check="server log",
                    file=location["file"],
                    line=int(location["line"]),
                    message=detail or "error",
                )
            )
        elif _LOG_ERROR.match(line) and not _located(lines, index):
            issues.append(CheckIssue(check="server log", message=line.strip().lstrip("⨯ ")))
    return bounded(issues)


def _located(lines: Sequence[str], index: int) -> bool:
    """True when this line is the detail of a location line just above it (already reported)."""
    return any(_LOG_LOCATION.match(lines[i]) for i in range(max(0, index - 3), index))


def routes_of(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The URL paths of the given page files, and the dynamic ones that can't be requested."""
    routes: set[str] = set()
    dynamic: set[str] = set()
    for path in paths:
        match = _PAGE.match(path)
        if not match:
            continue
        segments = [
            s for s in match["route"].strip("/").split("/") if s and not s.startswith(("(", "@"))
        ]
        route = "/" + "/".join(segments)
        (dynamic if any(s.startswith("[") for s in segments) else routes).add(route)
    return sorted(routes), sorted(dynamic)


def fingerprint(issues: Iterable[CheckIssue]) -> str:
    """Equal for the same errors in any order, so a round that changed nothing is noticed."""
    keys = sorted(f"{i.check}|{i.file}|{i.line}|{i.message}" for i in issues)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def feedback(issues: Sequence[CheckIssue]) -> str:
    """The message that gives the model its errors and says what to do."""
    lines = [issue.text() for issue in issues]
    body = "\n".join(lines)
    if len(body) > MAX_FEEDBACK_CHARS:
        body = body[:MAX_FEEDBACK_CHARS] + "\n[... more errors cut ...]"
    return (
        "Your work was checked before it reaches the user (tsc --noEmit, the routes you "
        "changed requested through the preview and opened in a browser, and the dev server's "
        "log). These errors "
        f"remain:\n\n{body}\n\nFix these, then finish with <task_summary>."
    )


def report(results: Sequence[CheckResult], rounds: int) -> ChecksReport:
    errors = bounded(issue for result in results for issue in result.issues)
    skipped = [f"{r.name}: {r.reason}" for r in results if r.status == CheckStatus.SKIPPED]
    ran = [r.name.replace(" ", "_") for r in results if r.status != CheckStatus.SKIPPED]
    if errors:
        status = CheckStatus.FAILED
    elif all(r.status == CheckStatus.SKIPPED for r in results):
        status = CheckStatus.SKIPPED
    else:
        status = CheckStatus.PASSED
    return ChecksReport(status=status, errors=errors, skipped=skipped, rounds=rounds, ran=ran)
