"""One activity per agent iteration (the model call), and the title call.

The reply is stored before the activity returns, and a retry finds it there: a completed model
call is never paid for twice. The transcript is read from PostgreSQL, never from history.
"""

from __future__ import annotations

import json
import uuid

from openai import APIError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.events import TokenStream, run_phase
from activities.heartbeat import heartbeating
from activities.images import model_messages
from activities.services import Services
from agent import context
from agent.llm import (
    LLMErrorType,
    chat_completion,
    classify_llm_error,
    images_refused,
    stream_chat_completion,
    usage_of,
)
from agent.prompt import TITLE_PROMPT, clean_title, extract_task_summary, fallback_title
from agent.tools import TOOL_DEFINITIONS
from contract import AgentTurnInput, AgentTurnResult, TitleInput, ToolCallRef
from runtime import metrics
from storage import transcript

NUDGE = (
    "Continue with the task using the tools. When everything is done, reply with the "
    "<task_summary> block; that is the only way to finish."
)
CUT_SUMMARY_NUDGE = (
    "Your last reply was cut off at the output limit before </task_summary>, so the task is "
    "not finished. Reply again with the complete <task_summary> block, shorter."
)
CUT_TEXT_NUDGE = (
    "Your last reply was cut off at the output limit. Keep replies short and continue with the "
    "task using the tools. When everything is done, reply with the <task_summary> block."
)
CUT_CALL_RESULT = (
    "Error: your reply was cut off at the output limit ({limit} tokens) before this call's "
    "arguments were complete, so no call of that reply was run and nothing was written. Split "
    "the work: write large files in several smaller files over several calls, and change "
    "existing files with editFiles instead of rewriting them."
)
BUDGET_TEXT = "The run's token budget (QAI_RUN_TOKEN_BUDGET = {budget} tokens) was reached"


def _result(
    entry: transcript.TranscriptEntry, *, replayed: bool, answered: set[str] = frozenset()
) -> AgentTurnResult:
    """The turn for the workflow: the calls still to run (a cut-off reply's were answered
    already), and the summary unless the reply was cut off before its end."""
    message = entry.message
    calls = [
        ToolCallRef(id=call["id"], name=call["function"]["name"])
        for call in message.get("tool_calls") or []
        if call["id"] not in answered
    ]
    content = message.get("content")
    cut_summary = entry.finish_reason == "length" and "</task_summary>" not in (content or "")
    return AgentTurnResult(
        tool_calls=calls,
        summary=None if cut_summary else extract_task_summary(content),
        prompt_tokens=entry.prompt_tokens or 0,
        completion_tokens=entry.completion_tokens or 0,
        replayed=replayed,
    )


def unique_tool_call_ids(ids: list[str | None], iteration: int, taken: set[str]) -> list[str]:
    """The model's tool-call ids, with empty or repeated ones replaced by fresh unique ids.

    Each tool result is stored and answered under its call's id, so two calls sharing one (or
    having none) would leave one unrun. The transcript keeps the replaced ids, so the model sees
    every call answered under its own id.
    """
    seen = set(taken)
    unique = []
    for index, call_id in enumerate(ids):
        if not call_id or call_id in seen:
            base = f"call_{iteration}_{index}"
            call_id, n = base, 1
            while call_id in seen:
                n += 1
                call_id = f"{base}_{n}"
        seen.add(call_id)
        unique.append(call_id)
    return unique


def _complete_json(text: str | None) -> bool:
    try:
        json.loads(text or "{}")
    except json.JSONDecodeError:
        return False
    return True


def _entry(row: transcript.TranscriptEntry) -> context.Entry:
    return context.Entry(
        seq=row.seq, role=row.role, message=row.message, prompt_tokens=row.prompt_tokens
    )


def _nudge(last: transcript.TranscriptEntry) -> str:
    if last.finish_reason == "length":
        content = last.message.get("content") or ""
        return CUT_SUMMARY_NUDGE if "<task_summary>" in content else CUT_TEXT_NUDGE
    return NUDGE


async def _answered(
    session: AsyncSession, run_id: uuid.UUID, turn: transcript.TranscriptEntry
) -> set[str]:
    """Calls of a stored turn answered when it was stored (a cut-off reply's)."""
    if turn.finish_reason != "length":
        return set()
    ids = [call["id"] for call in turn.message.get("tool_calls") or []]
    return {i for i in ids if await transcript.tool_result(session, run_id, i) is not None}


def _count_elisions(plan: dict) -> None:
    if plan.get("new_elided"):
        metrics.ELISIONS.labels("elided").inc(plan["new_elided"])
    if plan.get("new_summarized"):
        metrics.ELISIONS.labels("summarized").inc(plan["new_summarized"])


def _is_context(error: ApplicationError) -> bool:
    return error.type == LLMErrorType.CONTEXT_LENGTH_EXCEEDED


def _too_long(error: ApplicationError, plan: dict, settings) -> ApplicationError:
    """The run gives up on a request that is still too long after compacting: say so."""
    return ApplicationError(
        "The conversation is too long for the model's context window, even after leaving out "
        f"{len(plan.get('elided', []))} older tool outputs and summarizing "
        f"{len(plan.get('summarized', []))} early steps (about {plan.get('estimate', 0)} "
        f"tokens were sent; QAI_CONTEXT_TOKENS is {settings.qai_context_tokens}, of which "
        f"QAI_OUTPUT_TOKENS = {settings.qai_output_tokens} are kept for the reply). Start a "
        "new project or ask for a smaller change.",
        *error.details,
        type=LLMErrorType.CONTEXT_LENGTH_EXCEEDED,
        non_retryable=True,
    )


class LlmActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="agent_turn")
    async def agent_turn(self, input: AgentTurnInput) -> AgentTurnResult:
        db = self._services.db
        settings = self._services.settings
        await run_phase(
            db,
            input.run_id,
            "thinking",
            iteration=input.iteration,
            max_iterations=input.max_iterations,
            key=f"thinking:{input.iteration}",
        )
        async with db.session() as session:
            stored = await transcript.assistant_turn(session, input.run_id, input.iteration)
            if stored is not None:
                answered = await _answered(session, input.run_id, stored)
                return _result(stored, replayed=True, answered=answered)
            budget = settings.qai_run_token_budget
            if budget is not None:
                used = await transcript.run_usage(session, input.run_id)
                if used["prompt_tokens"] + used["completion_tokens"] >= budget:
                    metrics.RUN_BUDGET_STOPS.inc()
                    return AgentTurnResult(
                        tool_calls=[],
                        summary=None,
                        budget_reached=BUDGET_TEXT.format(budget=budget),
                    )
            entries = await transcript.chat_entries(session, input.run_id)
            last = entries[-1] if entries else None
            if last and last.role == "assistant" and not last.message.get("tool_calls"):
                # The model answered in prose without finishing: ask it to carry on.
                await transcript.append_entry(
                    session,
                    input.run_id,
                    role="user",
                    iteration=input.iteration,
                    message={"role": "user", "content": _nudge(last)},
                )
                await session.commit()
                entries = await transcript.chat_entries(session, input.run_id)
            plan = await self._plan(session, input, entries)
        view = [_entry(e) for e in entries]
        try:
            completion = await self._call(input, context.render(view, plan))
        except ApplicationError as error:
            if not _is_context(error):
                raise
            if plan.get("hard"):
                raise _too_long(error, plan, settings) from error
            # Compact harder and try once more; the harder plan is recorded first, so a retry
            # of this activity sends exactly this request.
            metrics.CONTEXT_RETRIES.inc()
            plan = self._harder(view, plan)
            async with db.session() as session:
                await transcript.save_plan(session, input.run_id, input.iteration, plan)
                await session.commit()
            try:
                completion = await self._call(input, context.render(view, plan))
            except ApplicationError as again:
                if not _is_context(again):
                    raise
                raise _too_long(again, plan, settings) from again
        return await self._store(input, completion)

    async def _plan(self, session: AsyncSession, input: AgentTurnInput, entries: list) -> dict:
        """The recorded plan of this call (a retry), else a new one from the last call's."""
        plan = await transcript.plan_for(session, input.run_id, input.iteration)
        if plan is not None:
            return plan
        settings = self._services.settings
        previous = await transcript.latest_plan(session, input.run_id, before=input.iteration)
        plan = context.make_plan(
            [_entry(e) for e in entries],
            previous,
            TOOL_DEFINITIONS,
            settings.qai_context_tokens - settings.qai_output_tokens,
        )
        await transcript.save_plan(session, input.run_id, input.iteration, plan)
        await session.commit()
        _count_elisions(plan)
        return plan

    def _harder(self, view: list[context.Entry], plan: dict) -> dict:
        harder = context.make_plan(view, plan, TOOL_DEFINITIONS, plan["budget"], hard=True)
        harder["previous"] = plan.get("previous")
        harder["estimate"] = context.estimate(view, harder, TOOL_DEFINITIONS)
        _count_elisions(harder)
        return harder

    async def _call(self, input: AgentTurnInput, rendered: list[dict]):
        # Image references become data URLs only here, so the transcript and the plan keep
        # references, and a retry builds the same request from the same stored bytes.
        async with self._services.db.session() as session:
            messages, images = await model_messages(session, rendered)
        tokens_out = TokenStream(self._services.db, input.run_id, input.iteration)
        watch = metrics.Stopwatch()
        try:
            async with heartbeating():
                completion = await stream_chat_completion(
                    self._services.llm,
                    model=input.model,
                    messages=messages,
                    tools=TOOL_DEFINITIONS,
                    on_text=tokens_out.add,
                    max_tokens=self._services.settings.qai_output_tokens,
                )
                await tokens_out.flush()
        except APIError as error:
            metrics.model_call_failed(input.model, "agent")
            refused = images_refused(error, input.model) if images else None
            raise refused or classify_llm_error(error) from error
        tokens = usage_of(completion)
        metrics.model_call_done(input.model, "agent", watch, tokens)
        metrics.tokens_used(
            tokens["prompt_tokens"], tokens["completion_tokens"], tokens["cached_tokens"]
        )
        return completion

    async def _store(self, input: AgentTurnInput, completion) -> AgentTurnResult:
        """Store the reply once. A reply cut off inside its tool calls' arguments runs none of
        them: each call is answered at once with what happened and what to do instead."""
        db = self._services.db
        choice = completion.choices[0]
        reply = choice.message
        finish = choice.finish_reason
        message: dict = {"role": "assistant", "content": reply.content or ""}
        tokens = usage_of(completion)
        cut_calls = finish == "length" and any(
            not _complete_json(call.function.arguments) for call in reply.tool_calls or []
        )
        if finish == "length":
            metrics.CUT_OFF_REPLIES.labels("tool_calls" if reply.tool_calls else "text").inc()
        async with db.session() as session:
            if reply.tool_calls:
                taken = await transcript.tool_call_ids(session, input.run_id)
                ids = unique_tool_call_ids(
                    [call.id for call in reply.tool_calls], input.iteration, taken
                )
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            # Cut-off arguments are not sent back: providers want valid JSON.
                            "arguments": "{}" if cut_calls else call.function.arguments,
                        },
                    }
                    for call_id, call in zip(ids, reply.tool_calls, strict=True)
                ]
            entry = await transcript.append_entry(
                session,
                input.run_id,
                role="assistant",
                iteration=input.iteration,
                message=message,
                prompt_tokens=tokens["prompt_tokens"],
                completion_tokens=tokens["completion_tokens"],
                cached_tokens=tokens["cached_tokens"],
                finish_reason=finish,
            )
            answered: set[str] = set()
            if cut_calls:
                limit = self._services.settings.qai_output_tokens
                for call in message["tool_calls"]:
                    await transcript.append_entry(
                        session,
                        input.run_id,
                        role="tool",
                        iteration=input.iteration,
                        tool_call_id=call["id"],
                        message={
                            "role": "tool",
                            "tool_call_id": call["id"],
                            "content": CUT_CALL_RESULT.format(limit=limit),
                        },
                    )
                    answered.add(call["id"])
            await session.commit()
        return _result(entry, replayed=False, answered=answered)

    @activity.defn(name="generate_title")
    async def generate_title(self, input: TitleInput) -> str:
        """A short title from a small model; any failure falls back to the user's words.

        The title is optional, so its call has its own short timeout (QAI_TITLE_TIMEOUT): a slow
        title model never holds up, or fails, a finished run.
        """
        await run_phase(
            self._services.db,
            input.run_id,
            "saving",
            max_iterations=input.max_iterations,
            key="saving",
        )
        async with self._services.db.session() as session:
            stored = await transcript.stored_title(session, input.run_id)
        if stored:
            return stored
        watch = metrics.Stopwatch()
        try:
            completion = await chat_completion(
                self._services.llm,
                model=input.model,
                messages=[
                    {"role": "system", "content": TITLE_PROMPT},
                    {"role": "user", "content": input.summary[:2000]},
                ],
                max_tokens=20,
                request_timeout=self._services.settings.qai_title_timeout,
            )
        except APIError as error:
            metrics.model_call_failed(input.model, "title")
            activity.logger.warning("title model failed; using the fallback", exc_info=error)
            return fallback_title(input.summary, input.prompt)
        title = clean_title(completion.choices[0].message.content) or fallback_title(
            input.summary, input.prompt
        )
        tokens = usage_of(completion)
        metrics.model_call_done(input.model, "title", watch, tokens)
        metrics.tokens_used(
            tokens["prompt_tokens"], tokens["completion_tokens"], tokens["cached_tokens"]
        )
        async with self._services.db.session() as session:
            await transcript.append_entry(
                session,
                input.run_id,
                role=transcript.TITLE_ROLE,
                iteration=0,
                message={"role": "assistant", "content": title},
                prompt_tokens=tokens["prompt_tokens"],
                completion_tokens=tokens["completion_tokens"],
                cached_tokens=tokens["cached_tokens"],
                finish_reason=completion.choices[0].finish_reason,
            )
            await session.commit()
        return title
