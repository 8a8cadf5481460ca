"""QAI_RUN_TOKEN_BUDGET in the router loop: a run that reaches it makes no more model calls,
checks what exists and keeps it (a RESULT), or, with nothing written, ends in an ERROR."""

from __future__ import annotations

BUDGET_PATCH = "run-token-budget"
"""Runs from before the budget never see `budget_reached`; the marker records the change."""

NOTHING_WRITTEN = (
    "there is nothing to preview. Raise QAI_RUN_TOKEN_BUDGET or ask for a smaller change."
)


def budget_summary(reached: str) -> str:
    """The RESULT's text when the budget stopped a run that wrote something."""
    return (
        f"{reached}, so the agent stopped before it finished. What it wrote so far is kept and "
        "was checked; send a follow-up message to continue."
    )


def budget_error(reached: str) -> str:
    """The ERROR's text when the budget stopped a run before it wrote anything."""
    return f"{reached} before anything was written: {NOTHING_WRITTEN}"
