"""The ``openai`` backend: any OpenAI-compatible chat-completions endpoint.

vLLM, SGLang, TGI, llama.cpp, Ollama and hosted APIs all speak
``POST {base_url}/chat/completions``. This backend uses the official ``openai``
Python client (extra ``api``): it is the client those servers test against,
and it brings retries with exponential backoff that honour ``Retry-After``,
typed errors, SSE parsing for streaming and connection pooling; writing those
again over httpx would only add code to maintain.

Request rendering:

* Text-only turns are sent with a string ``content``; user turns with images
  get a content list with ``image_url`` parts holding PNG data URLs re-encoded
  from the pixels only (:mod:`medm3.vlm.images`: no text chunks, no EXIF/ICC),
  downscaled to ``max_image_side``.
* ``tool`` turns that answer a call (``tool_call_id`` set) are sent with role
  ``tool``; their images, which the API does not allow in tool messages, follow
  in one user turn after the run of tool turns. A tool turn without a call id
  becomes a user turn ``Tool result: ...``. Assistant turns with tool calls
  carry ``tool_calls`` (ids required, else they are written as text).
* Images in system/assistant turns move to a user turn right after them.

PHI guard: every string in ``sensitive_values`` (a DICOM's names, IDs, dates,
UIDs, e.g. from :func:`medm3.imaging.deid.phi_values`) is replaced by
:data:`~medm3.imaging.deid.scrub.REDACTION` in every outgoing free-text field -- message text, tool
results, tool-call arguments (keys and values), tool descriptions, stop
strings -- before the request is built. See
:class:`medm3.imaging.deid.scrub.SensitiveValueScrubber` for the matching rules.
The number of replacements is reported as
``Generation.raw["redactions"]`` (the values themselves are never stored
there). Protocol identifiers (model, roles, tool names, call ids) and the
image data URLs are not free text and are not rewritten.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medm3.errors import InputError, MedM3Error, MissingDependencyError
from medm3.imaging.deid.scrub import REDACTION, SensitiveValueScrubber
from medm3.vlm.base import (
    Generation,
    GenerationConfig,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    VLMBackend,
)
from medm3.vlm.images import DEFAULT_MAX_SIDE, to_data_url

__all__ = ["DEFAULT_BASE_URL", "REDACTION", "OpenAIBackend", "SensitiveValueScrubber"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
"""Used when neither ``base_url`` nor an environment variable names a server."""

_BASE_URL_ENV = ("MEDM3_OPENAI_BASE_URL", "OPENAI_BASE_URL")
_API_KEY_ENV = ("MEDM3_OPENAI_API_KEY", "OPENAI_API_KEY")


# --------------------------------------------------------------------------- backend


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("openai", "api", "The 'openai' backend") from None
    return openai


def _env(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, n: int) -> None:
        self.n += n


class OpenAIBackend(VLMBackend):
    """Chat completions on an OpenAI-compatible server, with native tool calls and a PHI guard.

    Args:
        model_id: Model name as served (``gpt-4o``, the vLLM ``--served-model-name`` ...).
        base_url: Server URL ending in ``/v1``; default ``MEDM3_OPENAI_BASE_URL``,
            then ``OPENAI_BASE_URL``, then :data:`DEFAULT_BASE_URL`.
        api_key: Bearer key; default ``MEDM3_OPENAI_API_KEY``, then ``OPENAI_API_KEY``.
            A self-hosted server (any base URL other than the default) may run
            without one (``EMPTY`` is sent).
        timeout: Seconds per request.
        max_retries: Retries on connection errors, 408/409/429 and 5xx (with backoff).
        sensitive_values: Strings never to send (see the module docstring).
        max_image_side: Images are downscaled so their longest side is at most this.
        max_concurrency: Parallel requests of :meth:`generate_batch`.
        max_tokens_field: ``max_tokens`` (most servers) or ``max_completion_tokens``
            (OpenAI reasoning models).
        extra_body: Extra JSON fields for every request (e.g. vLLM's ``{"min_tokens": 2}``).

    Raises:
        MissingDependencyError: The ``openai`` package is not installed.
        InputError: No API key for the default (hosted) server, or bad options.
    """

    name = "openai"
    vila_format = False
    supports_tools = True

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120,
        max_retries: int = 2,
        sensitive_values: Iterable[str] = (),
        max_image_side: int | None = DEFAULT_MAX_SIDE,
        max_concurrency: int = 4,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model_id)
        openai = _import_openai()
        if not model_id:
            raise InputError("the openai backend needs a model name")
        if max_concurrency < 1:
            raise InputError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise InputError("max_tokens_field must be 'max_tokens' or 'max_completion_tokens'")
        resolved_url = base_url or _env(_BASE_URL_ENV)
        key = api_key or _env(_API_KEY_ENV)
        if not key:
            if resolved_url is None or resolved_url.rstrip("/") == DEFAULT_BASE_URL:
                raise InputError(
                    f"no API key for {DEFAULT_BASE_URL}: set MEDM3_OPENAI_API_KEY or "
                    "OPENAI_API_KEY, or pass base_url for a self-hosted server"
                )
            key = "EMPTY"
        self.base_url = (resolved_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = float(timeout)
        self.max_image_side = max_image_side
        self.max_concurrency = max_concurrency
        self.max_tokens_field = max_tokens_field
        self.extra_body = dict(extra_body or {})
        self.scrubber = SensitiveValueScrubber(sensitive_values)
        self.redactions_total = 0
        self._count_lock = threading.Lock()
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=self.timeout, max_retries=max_retries
        )

    # ---------------------------------------------------------------- PHI guard

    def add_sensitive_values(self, values: Iterable[str]) -> None:
        """Add strings that must never leave the machine (e.g. ``phi_values(ds)``).

        Args:
            values: Names, IDs, dates, UIDs ...
        """
        self.scrubber.add(values)

    def _scrub(self, text: str, counter: _Counter) -> str:
        clean, n = self.scrubber.scrub(text)
        counter(n)
        return clean

    def _scrub_json(self, value: Any, counter: _Counter) -> Any:
        if isinstance(value, str):
            return self._scrub(value, counter)
        if isinstance(value, dict):
            return {
                self._scrub(str(k), counter): self._scrub_json(v, counter) for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self._scrub_json(v, counter) for v in value]
        return value

    def _scrub_descriptions(self, value: Any, counter: _Counter) -> Any:
        if isinstance(value, dict):
            return {
                k: (
                    self._scrub(v, counter)
                    if k in ("description", "title") and isinstance(v, str)
                    else self._scrub_descriptions(v, counter)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._scrub_descriptions(v, counter) for v in value]
        return value

    # ---------------------------------------------------------------- requests

    def _parts(self, parts: Sequence[Any], counter: _Counter, prefix: str = "") -> list[dict]:
        out: list[dict[str, Any]] = []
        pending = prefix
        for part in parts:
            if isinstance(part, TextPart):
                pending += part.text
            elif isinstance(part, ImagePart):
                if pending:
                    out.append({"type": "text", "text": self._scrub(pending, counter)})
                    pending = ""
                url = to_data_url(part.image, max_side=self.max_image_side)
                out.append({"type": "image_url", "image_url": {"url": url}})
        if pending:
            out.append({"type": "text", "text": self._scrub(pending, counter)})
        return out

    def _text(self, msg: Message, counter: _Counter, prefix: str = "") -> str:
        return self._scrub(prefix + msg.plain_text, counter)

    def _messages(self, messages: Sequence[Message], counter: _Counter) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        tool_images: list[ImagePart] = []

        def flush_tool_images() -> None:
            if tool_images:
                content = self._parts(
                    [TextPart("Images returned by the tool:"), *tool_images], counter
                )
                out.append({"role": "user", "content": content})
                tool_images.clear()

        for msg in messages:
            images = [p for p in msg.content if isinstance(p, ImagePart)]
            if msg.role == "tool" and msg.tool_call_id:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": msg.tool_call_id,
                        "content": self._text(msg, counter),
                    }
                )
                tool_images.extend(images)
                continue
            flush_tool_images()
            if msg.role == "tool":
                content = self._parts(msg.content, counter, prefix="Tool result: ")
                out.append({"role": "user", "content": _simplify(content)})
            elif msg.role == "user":
                out.append(
                    {"role": "user", "content": _simplify(self._parts(msg.content, counter))}
                )
            elif msg.role == "assistant":
                entry: dict[str, Any] = {"role": "assistant"}
                text = msg.plain_text
                if msg.tool_calls and all(c.id for c in msg.tool_calls):
                    entry["content"] = self._scrub(text, counter) if text else None
                    entry["tool_calls"] = [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {
                                "name": c.name,
                                "arguments": json.dumps(
                                    self._scrub_json(c.arguments, counter), ensure_ascii=False
                                ),
                            },
                        }
                        for c in msg.tool_calls
                    ]
                else:
                    calls = "\n".join(
                        f"Tool call: {c.name} {json.dumps(c.arguments, ensure_ascii=False)}"
                        for c in msg.tool_calls
                    )
                    joined = "\n".join(t for t in (text, calls) if t)
                    entry["content"] = self._scrub(joined, counter)
                out.append(entry)
                if images:
                    out.append({"role": "user", "content": self._parts(images, counter)})
            else:  # system
                out.append({"role": msg.role, "content": self._text(msg, counter)})
                if images:
                    out.append({"role": "user", "content": self._parts(images, counter)})
        flush_tool_images()
        return out

    def prepare_request(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        stream: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """Build the (scrubbed) keyword arguments of ``chat.completions.create``.

        Args:
            messages: The conversation.
            config: Decoding settings.
            tools: OpenAI tool definitions (``{"type": "function", "function": {...}}``).
            stream: Ask for an SSE stream.

        Returns:
            The request fields and the number of redactions made.

        Raises:
            InputError: Empty conversation.
        """
        if not messages:
            raise InputError("cannot generate from an empty conversation")
        config = config or GenerationConfig()
        counter = _Counter()
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": self._messages(messages, counter),
            self.max_tokens_field: max(1, config.max_new_tokens),
            "temperature": max(0.0, config.temperature),
        }
        if config.top_p < 1.0:
            request["top_p"] = config.top_p
        if config.seed is not None:
            request["seed"] = config.seed
        if config.stop:
            request["stop"] = [self._scrub(s, counter) for s in config.stop]
        if tools:
            request["tools"] = self._scrub_descriptions(list(tools), counter)
        if stream:
            request["stream"] = True
            request["stream_options"] = {"include_usage": True}
        if self.extra_body:
            request["extra_body"] = dict(self.extra_body)
        with self._count_lock:
            self.redactions_total += counter.n
        return request, counter.n

    # ---------------------------------------------------------------- errors

    def _error(self, exc: Exception) -> MedM3Error:
        openai = self._openai
        if isinstance(exc, openai.APITimeoutError):
            return MedM3Error(
                f"the OpenAI-compatible server at {self.base_url} did not answer within "
                f"{self.timeout:g} s (raise the timeout or check the server)"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            detail = " ".join(str(cause or exc).split())[:200]
            refused = "refused" in detail.lower() or "errno 111" in detail.lower()
            what = "connection refused" if refused else detail
            return MedM3Error(
                f"cannot connect to the OpenAI-compatible server at {self.base_url} ({what}); "
                "is it running? Set the URL with base_url or MEDM3_OPENAI_BASE_URL"
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = _server_message(exc)
            hint = ""
            if status in (401, 403):
                hint = " (check the API key: MEDM3_OPENAI_API_KEY or OPENAI_API_KEY)"
            elif status == 404:
                hint = (
                    f" (check the model name '{self.model_id}' and the base URL; "
                    f"GET {self.base_url}/models lists the served models)"
                )
            return MedM3Error(
                f"the OpenAI-compatible server at {self.base_url} returned HTTP {status}: "
                f"{message}{hint}"
            )
        return MedM3Error(
            f"request to the OpenAI-compatible server at {self.base_url} failed: {exc}"
        )

    # ---------------------------------------------------------------- generation

    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Send one chat-completions request and parse text and tool calls.

        Args:
            messages: The conversation.
            config: Decoding settings (``min_new_tokens`` is not part of the API;
                pass ``extra_body={"min_tokens": n}`` for vLLM).
            tools: OpenAI tool definitions; tool calls come back as :class:`ToolCall`
                with parsed JSON arguments (unparsable arguments are kept as
                ``{"_raw": "<text>"}``).

        Returns:
            The generation; ``raw`` holds ``redactions``, ``id`` and ``model``.

        Raises:
            MedM3Error: HTTP error (status + server message), connection refused,
                timeout, or a response without choices.
        """
        request, redactions = self.prepare_request(messages, config, tools=tools)
        try:
            response = self.client.chat.completions.create(**request)
        except self._openai.OpenAIError as exc:
            raise self._error(exc) from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise MedM3Error(
                f"the server at {self.base_url} returned no choices: {response!r:.300}"
            )
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
        if calls or finish == "function_call":
            finish = "tool_calls"
        usage = getattr(response, "usage", None)
        return Generation(
            text=message.content or "",
            finish_reason=finish,
            tool_calls=calls,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            raw={
                "redactions": redactions,
                "id": getattr(response, "id", "") or "",
                "model": getattr(response, "model", "") or self.model_id,
            },
        )

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generator[str, None, Generation]:
        """Yield text deltas from an SSE stream (``stream=True``), then return the generation.

        Only text is streamed; use :meth:`generate` when tool calls are expected.
        The request asks for ``stream_options.include_usage``, so the returned
        :class:`Generation` (see :func:`medm3.vlm.base.collect_stream`) carries
        the server's token counts (0 when it sends none) and finish reason.
        The redactions of the request are added to :attr:`redactions_total`.

        Args:
            messages: The conversation.
            config: Decoding settings.
            tools: OpenAI tool definitions.

        Yields:
            Text deltas.

        Raises:
            MedM3Error: As :meth:`generate`.
        """
        request, redactions = self.prepare_request(messages, config, tools=tools, stream=True)
        try:
            events = self.client.chat.completions.create(**request)
        except self._openai.OpenAIError as exc:
            raise self._error(exc) from None
        pieces: list[str] = []
        finish = "stop"
        usage: Any = None
        ident, model = "", ""
        try:
            for chunk in events:
                usage = getattr(chunk, "usage", None) or usage
                ident = ident or getattr(chunk, "id", "") or ""
                model = model or getattr(chunk, "model", "") or ""
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue
                finish = getattr(choices[0], "finish_reason", None) or finish
                delta = getattr(choices[0], "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
                if text:
                    pieces.append(text)
                    yield text
        except self._openai.OpenAIError as exc:
            raise self._error(exc) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return Generation(
            text="".join(pieces),
            finish_reason="tool_calls" if finish == "function_call" else finish,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            raw={"redactions": redactions, "id": ident, "model": model or self.model_id},
        )

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Send the conversations concurrently (at most ``max_concurrency`` at once).

        Args:
            conversations: The conversations.
            config: Decoding settings shared by all.

        Returns:
            One generation per conversation, in order (the first error is raised).
        """
        if not conversations:
            return []
        workers = min(self.max_concurrency, len(conversations))
        if workers == 1:
            return [self.generate(c, config) for c in conversations]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medm3-openai") as pool:
            return list(pool.map(lambda c: self.generate(c, config), conversations))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()


def _simplify(content: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A content list with text only becomes a plain string (widest server support)."""
    if all(p["type"] == "text" for p in content):
        return "".join(p["text"] for p in content)
    return content


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
