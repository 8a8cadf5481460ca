"""The checks' pure logic: parsing tsc and the dev server's log, routes, fingerprints."""

from __future__ import annotations

from agent.checks import (
    MAX_FEEDBACK_CHARS,
    MAX_ISSUES,
    CheckIssue,
    CheckResult,
    CheckStatus,
    feedback,
    fingerprint,
    log_errors,
    parse_tsc,
    report,
    routes_of,
)

TSC_OUTPUT = """app/page.tsx(1,40): error TS2322: Type 'string' is not assignable to type 'number'.
components/list.tsx(12,5): error TS2741: Property 'items' is missing in type '{}' but required
  in type 'Props'.
app/page.tsx(1,40): error TS2322: Type 'string' is not assignable to type 'number'.
"""

# The dev server's own output for a missing module (colours included), as seen in a sandbox.
NEXT_LOG = (
    " ✓ Ready in 1.2s\n"
    " \x1b[31m⨯\x1b[39m ./app/page.tsx:1:1\n"
    "Module not found: Can't resolve './nope'\n"
    "\x1b[0m\x1b[31m\x1b[1m>\x1b[22m\x1b[39m\x1b[90m 1 |\x1b[39m import x from './nope';\n"
    "https://nextjs.org/docs/messages/module-not-found\n"
    " ⨯ Error: boom in render\n"
    " GET / 500 in 3296ms\n"
)


def test_tsc_errors_carry_file_line_and_the_whole_message_once() -> None:
    issues = parse_tsc(TSC_OUTPUT)
    assert [(i.file, i.line) for i in issues] == [("app/page.tsx", 1), ("components/list.tsx", 12)]
    assert issues[0].message == "TS2322: Type 'string' is not assignable to type 'number'."
    assert issues[1].message.endswith("but required in type 'Props'.")
    assert parse_tsc("") == []


def test_the_server_log_gives_located_and_plain_errors_without_colours() -> None:
    issues = log_errors(NEXT_LOG)
    assert [(i.file, i.line, i.message) for i in issues] == [
        ("app/page.tsx", 1, "Module not found: Can't resolve './nope'"),
        (None, None, "Error: boom in render"),
    ]
    assert log_errors(" ✓ Compiled / in 2s\n GET / 200 in 40ms\n") == []


def test_routes_of_pages_skip_groups_and_set_aside_dynamic_ones() -> None:
    routes, dynamic = routes_of(
        [
            "app/page.tsx",
            "app/about/page.tsx",
            "app/(shop)/cart/page.tsx",
            "app/blog/[slug]/page.tsx",
            "components/x.tsx",
            "app/layout.tsx",
        ]
    )
    assert routes == ["/", "/about", "/cart"]
    assert dynamic == ["/blog/[slug]"]


def test_the_fingerprint_ignores_order_but_not_content() -> None:
    a = CheckIssue(check="types", file="a.ts", line=1, message="x")
    b = CheckIssue(check="types", file="b.ts", line=2, message="y")
    assert fingerprint([a, b]) == fingerprint([b, a])
    assert fingerprint([a]) != fingerprint([a.model_copy(update={"line": 3})])


def test_feedback_is_bounded_and_says_what_to_do() -> None:
    issues = [
        CheckIssue(check="types", file=f"f{n}.ts", line=n, message="m" * 300) for n in range(40)
    ]
    text = feedback(issues)
    assert text.endswith("Fix these, then finish with <task_summary>.")
    assert "[types] f0.ts:0: " in text or "[types] f1.ts:1: " in text
    assert len(text) < MAX_FEEDBACK_CHARS + 600


def test_a_report_fails_on_errors_passes_on_none_and_skips_only_when_nothing_ran() -> None:
    failed = CheckResult(
        name="types",
        status=CheckStatus.FAILED,
        issues=[CheckIssue(check="types", message=f"e{n}") for n in range(30)],
    )
    skipped = CheckResult(name="routes", status=CheckStatus.SKIPPED, reason="the sandbox is gone")
    passed = CheckResult(name="server log", status=CheckStatus.PASSED)
    outcome = report([failed, skipped, passed], rounds=2)
    assert outcome.status == CheckStatus.FAILED and len(outcome.errors) == MAX_ISSUES
    assert outcome.skipped == ["routes: the sandbox is gone"] and outcome.rounds == 2
    assert report([skipped, passed], 0).status == CheckStatus.PASSED
    assert report([skipped], 0).status == CheckStatus.SKIPPED
