"""One activity per agent iteration (the model call), and the title call.

The reply is stored before the activity returns, and a retry finds it there: a completed model
call is never paid for twice. The transcript is read from PostgreSQL, never from history.
"""

from __future__ import annotations

from openai import APIError
from temporalio import activity

from activities.events import TokenStream, run_phase
from activities.heartbeat import heartbeating
from activities.services import Services
from agent.llm import chat_completion, classify_llm_error, stream_chat_completion, usage_of
from agent.prompt import TITLE_PROMPT, clean_title, extract_task_summary, fallback_title
from agent.tools import TOOL_DEFINITIONS
from contract import AgentTurnInput, AgentTurnResult, TitleInput, ToolCallRef
from runtime import metrics
from storage import transcript

NUDGE = (
    "Continue with the task using the tools. When everything is done, reply with the "
    "<task_summary> block; that is the only way to finish."
)


def _result(entry: transcript.TranscriptEntry, *, replayed: bool) -> AgentTurnResult:
    message = entry.message
    calls = [
        ToolCallRef(id=call["id"], name=call["function"]["name"])
        for call in message.get("tool_calls") or []
    ]
    return AgentTurnResult(
        tool_calls=calls,
        summary=extract_task_summary(message.get("content")),
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


class LlmActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="agent_turn")
    async def agent_turn(self, input: AgentTurnInput) -> AgentTurnResult:
        db = self._services.db
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
                return _result(stored, replayed=True)
            messages = await transcript.chat_messages(session, input.run_id)
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and not last.get("tool_calls"):
                # The model answered in prose without finishing: ask it to carry on.
                await transcript.append_entry(
                    session,
                    input.run_id,
                    role="user",
                    iteration=input.iteration,
                    message={"role": "user", "content": NUDGE},
                )
                await session.commit()
                messages = await transcript.chat_messages(session, input.run_id)
        tokens_out = TokenStream(db, input.run_id, input.iteration)
        watch = metrics.Stopwatch()
        try:
            async with heartbeating():
                completion = await stream_chat_completion(
                    self._services.llm,
                    model=input.model,
                    messages=messages,
                    tools=TOOL_DEFINITIONS,
                    on_text=tokens_out.add,
                )
                await tokens_out.flush()
        except APIError as error:
            metrics.model_call_failed(input.model, "agent")
            raise classify_llm_error(error) from error
        choice = completion.choices[0].message
        message: dict = {"role": "assistant", "content": choice.content or ""}
        tokens = usage_of(completion)
        metrics.model_call_done(input.model, "agent", watch, tokens)
        async with db.session() as session:
            if choice.tool_calls:
                taken = await transcript.tool_call_ids(session, input.run_id)
                ids = unique_tool_call_ids(
                    [call.id for call in choice.tool_calls], input.iteration, taken
                )
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                    for call_id, call in zip(ids, choice.tool_calls, strict=True)
                ]
            entry = await transcript.append_entry(
                session,
                input.run_id,
                role="assistant",
                iteration=input.iteration,
                message=message,
                prompt_tokens=tokens["prompt_tokens"],
                completion_tokens=tokens["completion_tokens"],
            )
            await session.commit()
        return _result(entry, replayed=False)

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
        async with self._services.db.session() as session:
            await transcript.append_entry(
                session,
                input.run_id,
                role=transcript.TITLE_ROLE,
                iteration=0,
                message={"role": "assistant", "content": title},
                prompt_tokens=tokens["prompt_tokens"],
                completion_tokens=tokens["completion_tokens"],
            )
            await session.commit()
        return title
