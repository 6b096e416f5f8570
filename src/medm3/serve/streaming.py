"""Server-sent events for ``stream: true`` chat completions (OpenAI chunk format).

Order of events: one chunk with ``delta.role``; content chunks as tokens
arrive (every generation of the question, so the expert-call turns such as
``<VISTA3D(liver)>`` appear too, separated by a blank line); for each expert
call a chunk with an empty delta and ``medm3.event`` (the trace step, file
paths as URLs); a last chunk with the last generation's ``finish_reason``
(``length`` when cut by ``max_tokens``) and the full ``medm3``
result (its ``answer`` is the final answer alone); a usage chunk when
``stream_options.include_usage`` (the token counts of every generation of
the question, as in a non-streamed reply); then ``data: [DONE]``.

A failure after the stream started is sent as ``data: {"error": {...}}``
(the ``openai`` client raises it as an ``APIError``). A client that goes away
cancels its job at the next token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from medm3.serve.errors import RequestTimeoutError
from medm3.serve.protocol import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    Medm3Result,
)
from medm3.serve.runner import Job

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.conversations import ChatOutcome
    from medm3.serve.plan import ChatPlan
    from medm3.serve.service import Service


def sse(payload: dict[str, Any] | str) -> str:
    """One ``data:`` event."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def medm3_result(service: Service, out: ChatOutcome) -> Medm3Result:
    """The ``medm3`` extension of a finished question."""
    return Medm3Result(
        session_id=out.session_id,
        answer=out.answer,
        rounds=out.reply.rounds,
        round_limit_reached=out.reply.round_limit_reached,
        overlays=out.overlays,
        files=out.files,
        trace=out.trace,
        archive_url=f"/v1/outputs/{out.session_id}/archive.zip",
        mask=out.mask,
    )


def finish_reason(out: ChatOutcome) -> str:
    """The finish reason of a question's last generation (``length`` when cut by ``max_tokens``).

    A generation that ended in a native tool call is followed by the expert's
    turn and another generation, so the last one is the answer's.
    """
    steps = [s for s in out.reply.trace if s.get("step") == "generate"]
    reason = str(steps[-1].get("finish_reason") or "stop") if steps else "stop"
    return "stop" if reason == "tool_calls" else reason


def start_stream(service: Service, plan: ChatPlan, completion_id: str) -> AsyncIterator[str]:
    """Queue the chat now (so a full queue is refused before streaming) and return the events.

    Raises:
        QueueFullError: No room in the queue.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    job = Job()

    def listener(item: tuple[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    service.start_chat(plan, listener, job)
    return _events(service, plan, completion_id, queue, job)


async def _events(
    service: Service,
    plan: ChatPlan,
    completion_id: str,
    queue: asyncio.Queue[tuple[str, Any]],
    job: Job,
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: Delta, finish: str | None = None, **extra: Any) -> str:
        body = ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=plan.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
            **extra,
        )
        return sse(body.model_dump(exclude_none=True))

    deadline = time.monotonic() + service.settings.request_timeout_s
    after_expert = False
    try:
        yield chunk(Delta(role="assistant", content=""))
        while True:
            remaining = deadline - time.monotonic()
            try:
                kind, payload = await asyncio.wait_for(queue.get(), max(remaining, 0.001))
            except asyncio.TimeoutError:
                job.cancel()
                yield sse(RequestTimeoutError(service.settings.request_timeout_s).body())
                break
            if kind == "delta":
                if after_expert:
                    payload = "\n\n" + payload
                    after_expert = False
                yield chunk(Delta(content=payload))
            elif kind == "event":
                after_expert = True
                step = service.public_trace([payload])[0]
                yield chunk(Delta(), medm3={"event": step})
            elif kind == "done":
                result = medm3_result(service, payload)
                yield chunk(Delta(), finish_reason(payload), medm3=result.model_dump())
                if plan.include_usage:
                    body = ChatCompletionChunk(
                        id=completion_id,
                        created=created,
                        model=plan.model,
                        choices=[],
                        usage=payload.usage,
                    )
                    yield sse(body.model_dump(exclude_none=True))
                break
            else:  # error
                yield sse(service.api_error(payload).body())
                break
        yield sse("[DONE]")
    finally:
        job.cancel()  # no-op when finished; stops a job whose client went away
