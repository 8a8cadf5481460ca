"""Fixtures of the LLM tests: small scripts built as dicts."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def three_turns() -> dict[str, Any]:
    return {
        "title": "Script title",
        "conversations": [
            {
                "match": "todo",
                "title": "Todo title",
                "turns": [
                    {
                        "content": "Writing the page.",
                        "tool_calls": [
                            {
                                "name": "createOrUpdateFiles",
                                "arguments": {
                                    "files": [{"path": "app/page.tsx", "content": "export {}"}]
                                },
                            }
                        ],
                    },
                    {"tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}]},
                    {"content": "<task_summary>Done.</task_summary>"},
                ],
            },
            {
                "match": "weather",
                "turns": [
                    {"tool_calls": [{"name": "readFiles", "arguments": {"files": ["a.txt"]}}]},
                    {"content": "<task_summary>Weather.</task_summary>"},
                ],
            },
        ],
        "default": {"turns": [{"content": "<task_summary>Default.</task_summary>"}]},
    }
