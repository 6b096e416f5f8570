"""The request guard: checks that run before any request body is read (pure ASGI).

In order, for every HTTP request:

1. ``Host`` must be on the allow-list (loopback names by default on a loopback
   bind): a web page that rebinds its DNS name to 127.0.0.1 gets HTTP 400.
2. An ``Origin`` header (browsers send one with every cross-origin request)
   must name an allowed host too, for anything but GET/HEAD/OPTIONS (403).
3. ``/v1`` routes need the API key when keys are configured (401).
4. State-changing ``/v1`` requests (POST, PUT, PATCH, DELETE) must carry a
   JSON content type or a header a web page cannot send without a CORS
   preflight (``Authorization``, ``X-API-Key``, ``X-Requested-With``): a page
   on another origin cannot push uploads with a plain ``<form>`` (403).
5. The body is capped: uploads (``POST /v1/files``, the web UI) at the upload
   limit, streamed (the upload route keeps its own finer cap); every other body
   at the JSON limit, buffered here before the app sees it, and refused with
   413 as soon as it is over (``Content-Length`` is checked first).

Errors are the API's JSON error bodies. The key a request presented is left
in ``scope["medm3.owner"]`` (a fingerprint) when several keys are configured,
so sessions can be bound to the key that made them.
"""

from __future__ import annotations

import json
from typing import Any

from medm3.serve.auth import host_allowed, host_name, key_from_headers, key_index, key_owner
from medm3.serve.errors import APIError, PayloadTooLargeError

#: Headers a cross-origin page cannot send without a CORS preflight (which is never granted).
CSRF_HEADERS = (b"authorization", b"x-api-key", b"x-requested-with")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_JSON_TYPES = (b"application/json",)
#: Scope key of the session owner (key fingerprint; absent with 0 or 1 key).
OWNER_SCOPE_KEY = "medm3.owner"


class RequestGuard:
    """ASGI middleware applying the checks listed in the module docstring.

    Args:
        app: The wrapped ASGI app.
        api_keys: Accepted keys (empty: no authentication).
        allowed_hosts: Accepted ``Host`` names (``*``: any).
        json_limit: Cap of non-upload bodies in bytes.
        upload_limit: Cap of upload bodies in bytes.
    """

    def __init__(
        self,
        app: Any,
        *,
        api_keys: tuple[str, ...],
        allowed_hosts: tuple[str, ...],
        json_limit: int,
        upload_limit: int,
    ) -> None:
        self.app = app
        self.api_keys = api_keys
        self.allowed_hosts = allowed_hosts
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.owners = tuple(key_owner(k) for k in api_keys) if len(api_keys) > 1 else ()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        err = self._check(scope, headers)
        if err is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await _send_error(send, err)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        upload = path.startswith("/ui") or (path == "/v1/files" and scope["method"] == "POST")
        limit = self.upload_limit if upload else self.json_limit
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            bad = PayloadTooLargeError(limit) if length.isdigit() else _bad_length()
            await _send_error(send, bad)
            return
        if upload:
            await self.app(scope, _counting(receive, limit), send)
            return
        body = await _read_body(receive, limit)
        if isinstance(body, APIError):
            await _send_error(send, body)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check(self, scope: Any, headers: dict[bytes, bytes]) -> APIError | None:
        if headers.get(b"host") is _DUPLICATE:
            return APIError(400, "several Host headers", code="invalid_host")
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if not host_allowed(host, self.allowed_hosts):
            return APIError(
                400,
                "this Host name is not served here (DNS rebinding protection); "
                "start the server with --allowed-hosts NAME to accept it",
                code="invalid_host",
            )
        method = scope.get("method", "GET")
        origin = headers.get(b"origin")
        if origin is not None and method not in _SAFE_METHODS:
            raw = origin.decode("latin-1")
            _scheme, sep, authority = raw.partition("://")
            if not sep or not host_allowed(host_name(authority), self.allowed_hosts):
                return APIError(403, "cross-origin requests are refused", code="cross_origin")
        if not scope.get("path", "").startswith("/v1"):
            return None
        presented = key_from_headers(
            _text(headers.get(b"authorization")), _text(headers.get(b"x-api-key"))
        )
        if self.api_keys:
            index = key_index(presented, self.api_keys)
            if index is None:
                return APIError(
                    401,
                    "invalid or missing API key: send 'Authorization: Bearer KEY'",
                    type="authentication_error",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            if self.owners:
                scope[OWNER_SCOPE_KEY] = self.owners[index]
        if method in _SAFE_METHODS or scope["type"] != "http":
            return None
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type in _JSON_TYPES or any(h in headers for h in CSRF_HEADERS):
            return None
        return APIError(
            403,
            "state-changing requests need a JSON body or an 'Authorization', 'X-API-Key' or "
            "'X-Requested-With' header (cross-site request protection)",
            code="csrf_check_failed",
        )


_DUPLICATE = b"\x00duplicate"


def _headers(scope: Any) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        key = bytes(name).lower()
        out[key] = _DUPLICATE if key == b"host" and key in out else bytes(value)
    return out


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _bad_length() -> APIError:
    return APIError(400, "invalid Content-Length header", code="invalid_request")


def _counting(receive: Any, limit: int) -> Any:
    seen = 0

    async def limited() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(limit)
        return message

    return limited


async def _read_body(receive: Any, limit: int) -> bytes | APIError:
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return APIError(499, "the client went away", code="cancelled")
        body = message.get("body", b"")
        seen += len(body)
        if seen > limit:
            return PayloadTooLargeError(limit)
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: waits for http.disconnect

    return replay


async def _send_error(send: Any, err: APIError) -> None:
    """Answer ``err`` without reading the body; the connection is closed after it."""
    body = json.dumps(err.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
