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

Request building lives in :mod:`medm3.vlm.openai_request`; response and
stream parsing and error messages in :mod:`medm3.vlm.openai_response`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from medm3.errors import InputError, MedM3Error, MissingDependencyError
from medm3.imaging.deid.scrub import REDACTION, SensitiveValueScrubber
from medm3.vlm.base import Generation, GenerationConfig, Message, VLMBackend
from medm3.vlm.images import DEFAULT_MAX_SIDE
from medm3.vlm.openai_request import ChatRequestWriter
from medm3.vlm.openai_response import StreamCollector, describe_error, parse_completion

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

    def add_sensitive_values(self, values: Iterable[str]) -> None:
        """Add strings that must never leave the machine (e.g. ``phi_values(ds)``).

        Args:
            values: Names, IDs, dates, UIDs ...
        """
        self.scrubber.add(values)

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
        writer = ChatRequestWriter(self.scrubber, self.max_image_side)
        request = writer.request(
            self.model_id,
            messages,
            config or GenerationConfig(),
            tools=tools,
            stream=stream,
            max_tokens_field=self.max_tokens_field,
            extra_body=self.extra_body,
        )
        with self._count_lock:
            self.redactions_total += writer.redactions
        return request, writer.redactions

    def _error(self, exc: Exception) -> MedM3Error:
        return describe_error(
            self._openai, exc, server=self.base_url, timeout=self.timeout, model=self.model_id
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
        return parse_completion(
            response, redactions=redactions, model=self.model_id, server=self.base_url
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
        collector = StreamCollector()
        try:
            for chunk in events:
                text = collector.add(chunk)
                if text:
                    yield text
        except self._openai.OpenAIError as exc:
            raise self._error(exc) from None
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return collector.result(redactions=redactions, model=self.model_id)

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
            return super().generate_batch(conversations, config)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medm3-openai") as pool:
            return list(pool.map(lambda c: self.generate(c, config), conversations))

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()
