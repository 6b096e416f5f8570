"""Response side of the ``openai`` backend: completions, SSE chunks and errors.

:func:`parse_completion` turns a chat-completions response into a
:class:`~medm3.vlm.base.Generation` (text, tool calls with parsed JSON
arguments, finish reason, token counts); :class:`StreamCollector` does the same
from the chunks of a stream; :func:`describe_error` turns the ``openai``
client's exceptions into one clear :class:`~medm3.errors.MedM3Error` line.
"""

from __future__ import annotations

import json
from typing import Any

from medm3.errors import MedM3Error
from medm3.vlm.base import Generation, ToolCall

__all__ = ["StreamCollector", "describe_error", "parse_completion"]


def parse_completion(response: Any, *, redactions: int, model: str, server: str) -> Generation:
    """The generation of a (non-streamed) chat-completions response.

    Args:
        response: The ``ChatCompletion`` object.
        redactions: Replacements made in the request (kept in ``raw``).
        model: The requested model, used when the response names none.
        server: The base URL, for the error message.

    Raises:
        MedM3Error: A response without choices.
    """
    choices = getattr(response, "choices", None)
    if not choices:
        raise MedM3Error(f"the server at {server} returned no choices: {response!r:.300}")
    choice = choices[0]
    message = choice.message
    calls = [
        ToolCall(
            name=tc.function.name,
            arguments=_parse_arguments(tc.function.arguments),
            id=tc.id or "",
        )
        for tc in (getattr(message, "tool_calls", None) or [])
        if getattr(tc, "function", None) is not None
    ]
    finish = choice.finish_reason or "stop"
    return _generation(
        message.content or "",
        "tool_calls" if calls else finish,
        getattr(response, "usage", None),
        {
            "redactions": redactions,
            "id": getattr(response, "id", "") or "",
            "model": getattr(response, "model", "") or model,
        },
        calls,
    )


class StreamCollector:
    """Collects the chunks of a chat-completions stream into the final generation.

    Feed each chunk to :meth:`add` (it returns the text delta, if any), then
    call :meth:`result`. The finish reason is the last one sent (``stop`` when
    none is); the token counts come from the usage chunk that
    ``stream_options.include_usage`` asks for (0 when the server sends none).
    """

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.finish = "stop"
        self.usage: Any = None
        self.id = ""
        self.model = ""

    def add(self, chunk: Any) -> str | None:
        """Take one chunk; return its text delta (``None`` when it has none)."""
        self.usage = getattr(chunk, "usage", None) or self.usage
        self.id = self.id or getattr(chunk, "id", "") or ""
        self.model = self.model or getattr(chunk, "model", "") or ""
        choices = getattr(chunk, "choices", None)
        if not choices:
            return None
        self.finish = getattr(choices[0], "finish_reason", None) or self.finish
        delta = getattr(choices[0], "delta", None)
        text = getattr(delta, "content", None) if delta is not None else None
        if not text:
            return None
        self.pieces.append(text)
        return text

    def result(self, *, redactions: int, model: str) -> Generation:
        """The generation of the stream so far.

        Args:
            redactions: Replacements made in the request.
            model: The requested model, used when no chunk names one.
        """
        raw = {"redactions": redactions, "id": self.id, "model": self.model or model}
        return _generation("".join(self.pieces), self.finish, self.usage, raw)


def _generation(
    text: str,
    finish: str,
    usage: Any,
    raw: dict[str, Any],
    tool_calls: list[ToolCall] | None = None,
) -> Generation:
    return Generation(
        text=text,
        finish_reason="tool_calls" if finish == "function_call" else finish,
        tool_calls=tool_calls or [],
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        raw=raw,
    )


def describe_error(
    openai: Any, exc: Exception, *, server: str, timeout: float, model: str
) -> MedM3Error:
    """One clear error for an exception of the ``openai`` client.

    Args:
        openai: The ``openai`` module (its exception classes).
        exc: The exception raised by a request.
        server: The base URL.
        timeout: Seconds per request (named on a timeout).
        model: The requested model (named on a 404).
    """
    if isinstance(exc, openai.APITimeoutError):
        return MedM3Error(
            f"the OpenAI-compatible server at {server} did not answer within "
            f"{timeout:g} s (raise the timeout or check the server)"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = " ".join(str(cause or exc).split())[:200]
        refused = "refused" in detail.lower() or "errno 111" in detail.lower()
        what = "connection refused" if refused else detail
        return MedM3Error(
            f"cannot connect to the OpenAI-compatible server at {server} ({what}); "
            "is it running? Set the URL with base_url or MEDM3_OPENAI_BASE_URL"
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        hint = ""
        if status in (401, 403):
            hint = " (check the API key: MEDM3_OPENAI_API_KEY or OPENAI_API_KEY)"
        elif status == 404:
            hint = (
                f" (check the model name '{model}' and the base URL; "
                f"GET {server}/models lists the served models)"
            )
        return MedM3Error(
            f"the OpenAI-compatible server at {server} returned HTTP {status}: "
            f"{_server_message(exc)}{hint}"
        )
    return MedM3Error(f"request to the OpenAI-compatible server at {server} failed: {exc}")


def _parse_arguments(arguments: str | None) -> dict[str, Any]:
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(message, dict):
            message = message.get("message") or json.dumps(message)
        if message is None:
            message = json.dumps(body)
    elif isinstance(body, str) and body.strip():
        message = body
    if not message:
        response = getattr(exc, "response", None)
        try:
            message = response.text if response is not None else ""
        except Exception:  # a streamed body that was not read
            message = ""
    if not message:
        message = getattr(exc, "message", "") or str(exc)
    return " ".join(str(message).split())[:500]
