"""What the browser check counts as an error, and where in the app's source it points.

Pure functions over what a headless Chromium saw on a page (uncaught exceptions, console
errors, failed requests, Next.js's error overlay) and over the dev server's answer when asked to
map bundle stack frames to source, so `activities/browser.py` stays thin and this is tested
without a browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

from agent.checks import CheckIssue, bounded

CHECK = "browser"
STACK_FRAMES_PATH = "/__nextjs_original-stack-frames"
"""The dev server's endpoint that maps bundle frames to source (what Next's overlay uses)."""
MAX_FRAMES = 30
IGNORED_PATHS = ("/favicon.ico",)
DEV_PREFIXES = ("/_next/", "/__nextjs")
"""Next.js's own dev endpoints (chunks, hot reload, overlay): never the app's errors."""
RESOURCE_ERROR = "Failed to load resource"
"""Chromium's console line for a failed request; the request itself is reported instead."""

INIT_SCRIPT = """
(() => {
  // The page's console.error calls, with the stack that made them (the console event alone
  // names Next's console wrapper). Set before any of the page's scripts run.
  const original = console.error;
  const stacks = [];
  Object.defineProperty(window, "__qaiConsoleStacks", { value: stacks });
  console.error = function (...args) {
    try {
      if (stacks.length < 50) stacks.push([String(args[0]).slice(0, 500), new Error().stack]);
    } catch (error) {}
    return original.apply(this, args);
  };
})();
"""
OVERLAY_SCRIPT = """
() => {
  // Next.js's dev overlay: its open dialog's text, or the count on its issues badge.
  const portal = document.querySelector("nextjs-portal");
  const root = portal && portal.shadowRoot;
  if (!root) return null;
  const dialog = root.querySelector("[data-nextjs-dialog]");
  if (dialog) return { dialog: dialog.innerText.slice(0, 2000), count: null };
  const count = root.querySelector("[data-issues-count]");
  return count ? { dialog: null, count: count.innerText } : null;
}
"""

_FRAME = re.compile(
    r"^\s*at (?:(?P<method>.*?) \()?(?P<file>[^()\s]+?):(?P<line>\d+):(?P<col>\d+)\)?$"
)


class PageProblem(BaseModel):
    """One thing that went wrong on a page, as the browser saw it."""

    kind: str
    """`uncaught`, `console.error`, `request` or `overlay`."""
    text: str
    stack: str | None = None


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme in {"https", "wss"} else 80)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(url: str, origin: str) -> bool:
    return origin_of(url) == origin_of(origin)


def reported_request(url: str, origin: str) -> bool:
    """A failed or 4xx/5xx request worth reporting: the preview's own, not Next's or favicon."""
    if not same_origin(url, origin):
        return False
    path = urlsplit(url).path
    return not (path in IGNORED_PATHS or path.startswith(DEV_PREFIXES))


def console_problem(text: str, stack: str | None) -> PageProblem | None:
    if text.startswith(RESOURCE_ERROR):
        return None
    return PageProblem(kind="console.error", text=text, stack=stack)


def overlay_problem(overlay: dict[str, Any] | None) -> PageProblem | None:
    """What the overlay shows, when it shows an error dialog or a non-zero issue count."""
    if not overlay:
        return None
    if overlay.get("dialog"):
        lines = [line.strip() for line in str(overlay["dialog"]).splitlines() if line.strip()]
        # Skip the dialog's navigation ("1/1", "Next.js 15.5 ...") down to the error text.
        useful = [line for line in lines if not re.fullmatch(r"[\d/ ]+|Next\.js .*", line)]
        return PageProblem(kind="overlay", text=" ".join(useful[:4]) or "an error")
    count = str(overlay.get("count") or "").strip()
    if count and count != "0":
        return PageProblem(kind="overlay", text=f"{count} issue(s) in Next.js's error overlay")
    return None


def stack_frames(stack: str, origin: str, workdir: str) -> list[dict[str, Any]]:
    """A browser stack as the dev server's frame-mapping endpoint wants it: frames of the
    preview's chunks named by their file under the sandbox's `.next` directory."""
    frames: list[dict[str, Any]] = []
    for raw in stack.splitlines():
        match = _FRAME.match(raw)
        if not match:
            continue
        file = match["file"]
        if same_origin(file, origin) and urlsplit(file).path.startswith("/_next/static/"):
            path = urlsplit(file).path[len("/_next/") :]
            file = f"file://{workdir.rstrip('/')}/.next/{path}"
        frames.append(
            {
                "file": file,
                "methodName": match["method"] or "<unknown>",
                "arguments": [],
                "line1": int(match["line"]),
                "column1": int(match["col"]),
            }
        )
        if len(frames) == MAX_FRAMES:
            break
    return frames


def app_location(mapped: Any) -> tuple[str, int] | None:
    """The first mapped frame in the app's own source: (path relative to the app, line)."""
    if not isinstance(mapped, list):
        return None
    for result in mapped:
        frame = ((result or {}).get("value") or {}).get("originalStackFrame") or {}
        file, line = frame.get("file"), frame.get("line1")
        if not isinstance(file, str) or not isinstance(line, int) or frame.get("ignored"):
            continue
        file = _app_path(file)
        if file:
            return file, line
    return None


def _app_path(file: str) -> str | None:
    for prefix in ("file:///home/user/", "[project]/", "./", "/home/user/"):
        if file.startswith(prefix):
            file = file[len(prefix) :]
    if file.startswith(("<", "node:", "http:", "https:", "file:", "/")) or "node_modules" in file:
        return None
    return file.split("?")[0]


def summary_line(text: str) -> str:
    """An error's first line: React's long explanations after it add nothing for the model."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
    return first


def issues(
    route: str,
    problems: Sequence[PageProblem],
    locations: dict[int, tuple[str, int]],
) -> list[CheckIssue]:
    """The route's problems as check issues; the overlay counts only when nothing else did
    (it repeats the errors the page threw)."""
    found: list[CheckIssue] = []
    for index, problem in enumerate(problems):
        if problem.kind == "overlay" and len(problems) > 1:
            continue
        where = locations.get(index)
        found.append(
            CheckIssue(
                check=CHECK,
                message=f"{route}: {problem.kind}: {summary_line(problem.text)}",
                file=where[0] if where else None,
                line=where[1] if where else None,
            )
        )
    return bounded(found)


def all_issues(per_route: Iterable[list[CheckIssue]]) -> list[CheckIssue]:
    return bounded(issue for route_issues in per_route for issue in route_issues)
