"""One activity per tool call: arguments and output travel through PostgreSQL, not history."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import sandbox_failure
from activities.heartbeat import heartbeating
from activities.services import Services
from agent.tools import execute_tool
from sandboxes.base import SandboxError
from storage import transcript


class ToolCallInput(BaseModel):
    run_id: uuid.UUID
    sandbox_id: str
    iteration: int
    tool_call_id: str


class ToolCallResult(BaseModel):
    name: str
    ok: bool
    brief: str
    """A few words for progress and the Web UI; the full result is in the transcript."""
    files_in_run: int = 0
    """Distinct files this run has written so far, tool calls before this one included."""


class ToolActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="run_tool")
    async def run_tool(self, input: ToolCallInput) -> ToolCallResult:
        db = self._services.db
        async with db.session() as session:
            turn = await transcript.assistant_turn(session, input.run_id, input.iteration)
            call = next(
                (
                    c
                    for c in (turn.message.get("tool_calls") or [] if turn else [])
                    if c["id"] == input.tool_call_id
                ),
                None,
            )
            if call is None:
                raise ApplicationError(
                    f"tool call {input.tool_call_id} is not in iteration {input.iteration}",
                    type="UnknownToolCall",
                    non_retryable=True,
                )
            name = call["function"]["name"]
            done = await transcript.tool_result(session, input.run_id, input.tool_call_id)
            if done is not None:  # a retry after the result was stored: don't run it again
                files = await transcript.file_count(session, input.run_id)
                return ToolCallResult(name=name, ok=True, brief="already done", files_in_run=files)

        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            async with heartbeating(5.0, name):
                outcome = await execute_tool(sandbox, name, call["function"].get("arguments", ""))
        except SandboxError as error:
            raise sandbox_failure(error, f"running {name}") from error

        async with db.session() as session:
            await transcript.append_entry(
                session,
                input.run_id,
                role="tool",
                iteration=input.iteration,
                tool_call_id=input.tool_call_id,
                message={
                    "role": "tool",
                    "tool_call_id": input.tool_call_id,
                    "content": outcome.content,
                },
            )
            await transcript.record_files(session, input.run_id, outcome.written)
            files = await transcript.file_count(session, input.run_id)
            await session.commit()
        return ToolCallResult(name=name, ok=outcome.ok, brief=outcome.brief, files_in_run=files)
