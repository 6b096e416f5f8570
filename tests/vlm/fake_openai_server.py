"""A local fake OpenAI-compatible server for tests: records exactly what left the machine.

Usage::

    call = FakeReply(tool_calls=[("VISTA3D", {"target": "liver"})])
    with FakeOpenAIServer(["Hello", call]) as srv:
        backend = OpenAIBackend("fake-model", base_url=srv.base_url, api_key="k")
        ...
        srv.requests[0].json          # parsed body of the first request
        srv.requests[0].body          # its raw bytes
        srv.requests[0].headers["authorization"]
        srv.all_bodies()              # every raw body, for PHI searches

It binds 127.0.0.1 on a free port, serves from a daemon thread, and is bounded:
at most ``max_requests`` requests (then 503), bodies up to ``max_body_bytes``,
5 s socket timeout, and it shuts itself down after ``lifetime_s`` seconds even if
a test forgets to stop it. Routes:

* ``POST /v1/chat/completions`` -- the next scripted reply (non-stream JSON, or
  SSE when the body has ``"stream": true``), then ``default_text``.
* ``GET /v1/models`` -- the served model list.

A script entry is a ``str`` (assistant text), a :class:`FakeReply`, or a callable
``(request_json) -> str | FakeReply``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer", "FakeReply", "RecordedRequest"]


@dataclass
class FakeReply:
    """One scripted answer.

    Attributes:
        text: Assistant text (``None`` sends ``content: null``).
        tool_calls: ``(name, arguments_dict_or_json_string)`` pairs.
        status: HTTP status; anything but 200 sends an OpenAI-style error object.
        error: Error message for a non-200 status (``raw_error`` sends it as plain text).
        raw_error: Send ``error`` as a plain-text body instead of JSON.
        finish_reason: Override (default ``stop``, or ``tool_calls`` with calls).
        headers: Extra response headers (e.g. ``{"retry-after-ms": "1"}``).
    """

    text: str | None = ""
    tool_calls: Sequence[tuple[str, dict[str, Any] | str]] = ()
    status: int = 200
    error: str = "fake server error"
    raw_error: bool = False
    finish_reason: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    """A request as received: method, path, headers (lower-case names) and raw body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None


Script = Iterable[str | FakeReply | Callable[[Any], str | FakeReply]]


class FakeOpenAIServer:
    """Fake OpenAI-compatible HTTP server (see the module docstring).

    Args:
        script: Replies in order.
        model: Model name listed by ``/v1/models``.
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get 401.
        default_text: Reply once the script is used up.
        max_requests: Requests served before answering 503.
        max_body_bytes: Larger bodies get 413.
        lifetime_s: The server stops itself after this many seconds.
    """

    def __init__(
        self,
        script: Script = (),
        *,
        model: str = "fake-model",
        api_key: str | None = None,
        default_text: str = "fake reply",
        max_requests: int = 200,
        max_body_bytes: int = 32 * 1024 * 1024,
        lifetime_s: float = 120.0,
    ) -> None:
        self.model = model
        self.api_key = api_key
        self.default_text = default_text
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.lifetime_s = lifetime_s
        self.requests: list[RecordedRequest] = []
        self._script = list(script)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAIServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ scripting

    def push(self, *replies: str | FakeReply | Callable[[Any], str | FakeReply]) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    def all_bodies(self) -> list[bytes]:
        """Raw bodies of every request received so far."""
        with self._lock:
            return [r.body for r in self.requests]

    def chat_requests(self) -> list[Any]:
        """Parsed JSON bodies of the chat-completions requests."""
        with self._lock:
            return [r.json for r in self.requests if r.path.endswith("/chat/completions")]

    def _next_reply(self, request_json: Any) -> FakeReply:
        with self._lock:
            item = self._script.pop(0) if self._script else self.default_text
        if callable(item):
            item = item(request_json)
        return FakeReply(text=item) if isinstance(item, str) else item


def _make_handler(srv: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def log_message(self, format: str, *args: Any) -> None:  # silence
            pass

        # ---------------------------------------------------------- helpers
        def _record(self, body: bytes) -> bool:
            with srv._lock:
                srv.requests.append(
                    RecordedRequest(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                return len(srv.requests) <= srv.max_requests

        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None):
            self._send_json(
                status,
                {"error": {"message": message, "type": "fake_error", "code": status}},
                headers,
            )

        def _read_body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > srv.max_body_bytes:
                self.close_connection = True
                self._send_error(413, "request body too large")
                return None
            return self.rfile.read(length) if length else b""

        def _authorized(self) -> bool:
            if srv.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {srv.api_key}":
                return True
            self._send_error(401, "Incorrect API key provided")
            return False

        # ---------------------------------------------------------- routes
        def do_GET(self) -> None:
            if not self._record(b""):
                self._send_error(503, "fake server request limit reached")
                return
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                model = {"id": srv.model, "object": "model", "created": 0, "owned_by": "medm3"}
                self._send_json(200, {"object": "list", "data": [model]})
            else:
                self._send_error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            body = self._read_body()
            if body is None:
                return
            if not self._record(body):
                self._send_error(503, "fake server request limit reached")
                return
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_error(404, f"no route {self.path}")
                return
            try:
                request = json.loads(body)
            except json.JSONDecodeError:
                self._send_error(400, "body is not JSON")
                return
            if request.get("model") != srv.model:
                self._send_error(404, f"The model `{request.get('model')}` does not exist.")
                return
            reply = srv._next_reply(request)
            if reply.status != 200:
                if reply.raw_error:
                    data = reply.error.encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._send_error(reply.status, reply.error, reply.headers)
                return
            if request.get("stream"):
                self._stream(reply, request)
            else:
                self._send_json(200, _completion(srv, reply), reply.headers)

        def _stream(self, reply: FakeReply, request: dict[str, Any]) -> None:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            cid = f"chatcmpl-fake-{next(srv._ids)}"
            base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time())}
            base["model"] = srv.model

            def event(delta: dict[str, Any], finish: str | None = None) -> None:
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()

            event({"role": "assistant", "content": ""})
            text = reply.text or ""
            pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
            for piece in pieces:
                event({"content": piece})
            calls = _tool_calls(srv, reply)
            if calls:
                event({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
            event({}, reply.finish_reason or ("tool_calls" if calls else "stop"))
            if (request.get("stream_options") or {}).get("include_usage"):
                words = len((reply.text or "").split())
                usage = {"prompt_tokens": 7, "completion_tokens": words, "total_tokens": 7 + words}
                chunk = {**base, "choices": [], "usage": usage}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _tool_calls(srv: FakeOpenAIServer, reply: FakeReply) -> list[dict[str, Any]]:
    calls = []
    for name, args in reply.tool_calls:
        arguments = args if isinstance(args, str) else json.dumps(args)
        calls.append(
            {
                "id": f"call_fake_{next(srv._ids)}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    return calls


def _completion(srv: FakeOpenAIServer, reply: FakeReply) -> dict[str, Any]:
    calls = _tool_calls(srv, reply)
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if calls:
        message["tool_calls"] = calls
    text = reply.text or ""
    return {
        "id": f"chatcmpl-fake-{next(srv._ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": srv.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reply.finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": len(text.split()),
            "total_tokens": 7 + len(text.split()),
        },
    }
