"""The browser check's pure parts: which requests count, how stacks are sent to the dev server
to be mapped, which mapped frame is the app's, what the overlay adds, and `ran`."""

from __future__ import annotations

from agent import browser_checks as bc
from agent.checks import CheckResult, CheckStatus, report

ORIGIN = "http://127.0.0.1:41000"


def test_only_the_previews_own_requests_count_and_not_nexts_or_favicon() -> None:
    assert bc.reported_request(f"{ORIGIN}/api/items", ORIGIN)
    assert bc.reported_request(f"{ORIGIN}/about?x=1", ORIGIN)
    assert not bc.reported_request(f"{ORIGIN}/favicon.ico", ORIGIN)
    assert not bc.reported_request(f"{ORIGIN}/_next/static/chunks/a.js", ORIGIN)
    assert not bc.reported_request(f"{ORIGIN}/__nextjs_original-stack-frames", ORIGIN)
    assert not bc.reported_request("http://127.0.0.1:41001/api/items", ORIGIN)
    assert not bc.reported_request("https://cdn.example.com/x.png", ORIGIN)


def test_chromium_resource_lines_are_left_to_the_request_events() -> None:
    text = "Failed to load resource: the server responded with a status of 404 (Not Found)"
    assert bc.console_problem(text, None) is None
    assert bc.console_problem("boom", "stack") == bc.PageProblem(
        kind="console.error", text="boom", stack="stack"
    )


STACK = (
    "Error: effect exploded\n"
    f"    at P.useEffect ({ORIGIN}/_next/static/chunks/_0351b47d._.js:19:19)\n"
    f"    at Object.react_stack_bottom_frame ({ORIGIN}/_next/static/chunks/react-dom.js:13122:22)\n"
    "    at console.error (<anonymous>:2:167)\n"
    "    at https://elsewhere.example.com/x.js:1:2\n"
)


def test_stack_frames_name_the_chunks_under_the_sandboxs_next_directory() -> None:
    frames = bc.stack_frames(STACK, ORIGIN, "/home/user")
    assert frames[0] == {
        "file": "file:///home/user/.next/static/chunks/_0351b47d._.js",
        "methodName": "P.useEffect",
        "arguments": [],
        "line1": 19,
        "column1": 19,
    }
    assert [f["file"] for f in frames[2:]] == [
        "<anonymous>",
        "https://elsewhere.example.com/x.js",
    ]
    assert frames[3]["methodName"] == "<unknown>"


def test_the_first_frame_in_the_apps_own_source_is_the_location() -> None:
    def frame(file: str, line: int, ignored: bool = False) -> dict:
        value = {"originalStackFrame": {"file": file, "line1": line, "ignored": ignored}}
        return {"status": "fulfilled", "value": value}

    mapped = [
        {"status": "rejected", "reason": "no map"},
        frame("<anonymous>", 2),
        frame("node_modules/next/dist/compiled/react-dom.js", 10),
        frame("app/ignored.tsx", 1, ignored=True),
        frame("./app/loop/page.tsx", 7),
        frame("app/other.tsx", 3),
    ]
    assert bc.app_location(mapped) == ("app/loop/page.tsx", 7)
    assert bc.app_location([frame("[project]/components/x.tsx", 4)]) == ("components/x.tsx", 4)
    assert bc.app_location({"unexpected": True}) is None
    assert bc.app_location([]) is None


def test_issues_carry_route_and_location_and_the_overlay_only_alone() -> None:
    problems = [
        bc.PageProblem(kind="uncaught", text="Hydration failed because...\n\nlong text"),
        bc.PageProblem(kind="console.error", text="Maximum update depth exceeded.", stack="s"),
        bc.PageProblem(kind="console.error", text="Maximum update depth exceeded.", stack="s"),
        bc.PageProblem(kind="overlay", text="1 issue(s) in Next.js's error overlay"),
    ]
    found = bc.issues("/loop", problems, {1: ("app/loop/page.tsx", 7), 2: ("app/loop/page.tsx", 7)})
    assert [i.text() for i in found] == [
        "[browser] /loop: uncaught: Hydration failed because...",
        "[browser] app/loop/page.tsx:7: /loop: console.error: Maximum update depth exceeded.",
    ]
    alone = bc.issues("/", [bc.PageProblem(kind="overlay", text="Build Error x")], {})
    assert [i.message for i in alone] == ["/: overlay: Build Error x"]


def test_the_overlay_reports_a_dialog_or_a_nonzero_count() -> None:
    dialog = {
        "dialog": "1/1\nNext.js 15.5.28\nRuntime Error\nboom\napp/page.tsx (5:11)",
        "count": None,
    }
    assert bc.overlay_problem(dialog) == bc.PageProblem(
        kind="overlay", text="Runtime Error boom app/page.tsx (5:11)"
    )
    assert bc.overlay_problem({"dialog": None, "count": "2"}).text.startswith("2 issue(s)")
    assert bc.overlay_problem({"dialog": None, "count": "0"}) is None
    assert bc.overlay_problem(None) is None


def test_ran_lists_the_checks_that_ran_and_skipped_ones_are_not_in_it() -> None:
    results = [
        CheckResult(name="types", status=CheckStatus.PASSED),
        CheckResult(name="routes", status=CheckStatus.PASSED),
        CheckResult(name="server log", status=CheckStatus.PASSED),
        CheckResult(name="browser", status=CheckStatus.SKIPPED, reason="no browser"),
    ]
    checks = report(results, rounds=0)
    assert checks.ran == ["types", "routes", "server_log"]
    assert checks.skipped == ["browser: no browser"]
    assert checks.status == CheckStatus.PASSED
