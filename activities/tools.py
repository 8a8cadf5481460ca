"""One activity per tool call: arguments and output travel through PostgreSQL, not history."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import sandbox_failure
from activities.events import emit, run_phase
from activities.heartbeat import heartbeating
from activities.services import Services
from agent.tools import TOOL_DEFINITIONS, execute_tool
from contract import StoreErrorType, ToolCallInput, ToolCallResult
from runtime import metrics
from sandboxes.base import SandboxError
from storage import snapshots, transcript
from storage.events import EventKind

KNOWN_TOOLS = frozenset(tool["function"]["name"] for tool in TOOL_DEFINITIONS)


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
                    type=StoreErrorType.UNKNOWN_TOOL_CALL,
                    non_retryable=True,
                )
            name = call["function"]["name"]
            done = await transcript.tool_result(session, input.run_id, input.tool_call_id)
            if done is not None:  # a retry after the result was stored: don't run it again
                files = await transcript.file_count(session, input.run_id)
                return ToolCallResult(name=name, ok=True, brief="already done", files_in_run=files)
        await run_phase(
            db,
            input.run_id,
            "tool",
            iteration=input.iteration,
            max_iterations=input.max_iterations,
            tool=name,
            key=f"tool:{input.tool_call_id}",
        )

        backend = self._services.sandboxes
        try:
            sandbox = await backend.connect(input.sandbox_id)
            async with heartbeating(5.0, name):
                outcome = await execute_tool(sandbox, name, call["function"].get("arguments", ""))
                snapshot = await sandbox.snapshot(await backend.template_index())
        except SandboxError as error:
            metrics.tool_call(name, KNOWN_TOOLS, "error")
            raise sandbox_failure(error, f"running {name}") from error
        metrics.tool_call(name, KNOWN_TOOLS, "ok" if outcome.ok else "failed")
        content = outcome.content
        if input.restarted:
            content = f"{input.restarted}\n\n{content}"

        async with db.session() as session:
            await transcript.append_entry(
                session,
                input.run_id,
                role="tool",
                iteration=input.iteration,
                tool_call_id=input.tool_call_id,
                message={"role": "tool", "tool_call_id": input.tool_call_id, "content": content},
            )
            await transcript.record_files(session, input.run_id, outcome.written)
            await snapshots.save(
                session,
                project_id=input.project_id,
                run_id=input.run_id,
                snapshot=snapshot,
                tool_call_id=input.tool_call_id,
            )
            files = await transcript.file_count(session, input.run_id)
            await session.commit()
        await emit(
            db,
            input.run_id,
            EventKind.TOOL,
            f"tool-done:{input.tool_call_id}",
            {
                "message_id": str(input.run_id),
                "iteration": input.iteration,
                "name": name,
                "ok": outcome.ok,
                "brief": outcome.brief,
            },
        )
        return ToolCallResult(
            name=name,
            ok=outcome.ok,
            brief=outcome.brief,
            files_in_run=files,
            workspace_files=len(snapshot.files) if snapshot else 0,
        )
