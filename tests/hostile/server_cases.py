"""The hostile-input corpus of ``m3 serve``: :data:`CASES`.

Each :class:`ServerCase` is one raw HTTP request (built from
:mod:`tests.hostile.generators_server`, nothing committed) and the status it
must get; :mod:`tests.hostile.server_harness` runs it on a real server and
:func:`~tests.hostile.server_harness.problems` lists what a result breaks:

* the HTTP status (and the error ``code`` when the case names one);
* the body is one line of JSON, an ``{"error": {...}}`` object for errors,
  with no traceback and no server path in it;
* no traceback in the server log;
* no file left outside the data folder (the server's working and temporary
  folders stay as they were) and nothing left in the data folder's ``tmp/``;
* server RSS growth during the request < :data:`RSS_LIMIT_MB`.

Two servers run: ``open`` (loopback, no API key: the Host/Origin/CSRF rules
matter most there) and ``keyed`` (loopback with two API keys).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.hostile import generators_server as g

#: Largest server RSS growth accepted for one hostile request.
RSS_LIMIT_MB = 300.0
#: Limits the corpus servers run with (small, so bombs stay cheap to build).
MAX_UPLOAD_MB = 32
MAX_JSON_MB = 4
MAX_IMAGE_MB = 16
KEYS = {"k1": "key-one-7f3a", "k2": "key-two-91bc"}
_MiB = 1 << 20

Body = bytes | Callable[[], bytes] | None


@dataclass(frozen=True)
class ServerCase:
    """One hostile request and the answer it must get.

    Attributes:
        name: Unique name (``group/what``).
        method: HTTP method.
        path: Request target; ``@FILE@``, ``@CT@``, ``@SESS@``, ``@FILE_K@``,
            ``@SESS_K1@`` and ``@PORT@`` are replaced by the harness.
        status: Accepted statuses.
        server: ``open`` or ``keyed``.
        body: Bytes (or a function building them, called once); tokens replaced too.
        content_type: ``Content-Type`` header.
        headers: Other headers (values may be bytes).
        host: ``Host`` header (``None``: ``127.0.0.1:PORT``).
        key: API key name (``k1``/``k2``) sent as ``Authorization: Bearer``.
        script: Send ``X-Requested-With`` (what a script does; a web page cannot).
        declared: ``Content-Length`` to declare instead of the body's (a prefix is sent).
        chunked: Send the body with chunked transfer encoding.
        code: Expected error code, if any.
        json: The answer comes from the app (JSON); False for requests the HTTP
            server itself (uvicorn's h11 parser) refuses before the app sees them.
    """

    name: str
    method: str
    path: str
    status: tuple[int, ...]
    server: str = "open"
    body: Body = None
    content_type: str | None = None
    headers: tuple[tuple[str, str | bytes], ...] = ()
    host: str | None = None
    key: str | None = None
    script: bool = True
    declared: int | None = None
    chunked: bool = False
    code: str | None = None
    json: bool = True


# ----------------------------------------------------------------- payloads
def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@functools.cache
def _png() -> bytes:
    return g.png()


@functools.cache
def _ct() -> bytes:
    import numpy as np

    ct = np.full((32, 32, 16), -1000, np.int16)
    ct[8:24, 8:24, 4:12] = 40
    ct[12:16, 12:16, 6:8] = 900
    return g.nifti(ct)


def _upload(
    data: Callable[[], bytes], filename: str = "scan", **fields: str
) -> Callable[[], bytes]:
    return lambda: g.multipart((filename, data()), fields or None)[0]


_MULTIPART = "multipart/form-data; boundary=hostile-boundary-7d3f"
_CHAT_OK = g.chat_body("hello")
_PNG_UPLOAD = _upload(_png, "a.png")


def _chat(content: Any = "hello", **extra: Any) -> bytes:
    return g.chat_body(content, **extra)


def _with_image(url: str, text: str = "what is it?") -> bytes:
    return _chat([{"type": "text", "text": text}, g.image_part(url)])


Route = tuple[str, str, Body, str | None]


def _routes(file: str, session: str) -> list[Route]:
    """The routes every guard must hold (``file``/``session``: the ids' tokens)."""
    return [
        ("GET", "/v1/models", None, None),
        ("GET", "/v1/files", None, None),
        ("GET", f"/v1/files/{file}/content", None, None),
        ("GET", f"/v1/sessions/{session}", None, None),
        ("POST", "/v1/chat/completions", _CHAT_OK, "application/json"),
        ("POST", "/v1/files", _PNG_UPLOAD, _MULTIPART),
        ("DELETE", f"/v1/files/{file}", None, None),
    ]


def _across(
    variants: dict[str, dict[str, Any]], routes: list[Route], status: int, **fixed: Any
) -> list[ServerCase]:
    """Each variant (``name prefix: case fields``, such as a bad ``Host``) on every route:
    ``PREFIX-METHOD/PATH`` cases; a variant's fields win over the route's content type."""
    return [
        ServerCase(
            f"{prefix}-{method.lower()}{path}",
            method,
            path,
            (status,),
            **{"body": body, "content_type": ctype, **fixed, **fields},
        )
        for prefix, fields in variants.items()
        for method, path, body, ctype in routes
    ]


def _table(
    prefix: str,
    path: str,
    table: dict[str, tuple[Body, int | tuple[int, ...]]],
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    **fixed: Any,
) -> list[ServerCase]:
    """One case per ``name: (body, status)`` of ``table``, each sent to ``method path``."""
    return [
        ServerCase(
            f"{prefix}{name}",
            method,
            path,
            status if isinstance(status, tuple) else (status,),
            body=body,
            content_type=content_type,
            **fixed,
        )
        for name, (body, status) in table.items()
    ]


# -------------------------------------------------------------------- cases
def _host_cases() -> list[ServerCase]:
    bad_hosts = [
        "evil.example.com",
        "evil.example.com:@PORT@",
        "127.0.0.1.nip.io:@PORT@",
        "localhost.evil.com",
        "LOCALHOST.attacker.net:@PORT@",
        "0.0.0.0:@PORT@",
        "192.168.1.7:@PORT@",
        "[::1",
        "127.0.0.1:abc",
        "user@127.0.0.1",
    ]
    routes = [("GET", "/health", None, None), *_routes("@FILE@", "@SESS@")]
    variants = {f"host/{i}": {"host": host} for i, host in enumerate(bad_hosts)}
    cases = _across(variants, routes, 400, code="invalid_host")
    cases.append(
        ServerCase(
            "host/duplicate",
            "GET",
            "/v1/models",
            (400,),
            headers=(("Host", "evil.example.com"),),
            json=False,  # h11 refuses a second Host header itself (plain-text 400)
        )
    )
    for good in ("127.0.0.1:@PORT@", "localhost:@PORT@", "[::1]:@PORT@", "LocalHost", "127.0.0.1"):
        cases.append(ServerCase(f"host/ok-{good}", "GET", "/v1/models", (200,), host=good))
    return cases


def _csrf_cases() -> list[ServerCase]:
    unsafe: list[Route] = [
        ("POST", "/v1/chat/completions", _CHAT_OK, "application/json"),
        ("POST", "/v1/files", _PNG_UPLOAD, _MULTIPART),
        ("POST", "/v1/experts/measure/run", _json({"file_id": "@CT@"}), "application/json"),
        ("DELETE", "/v1/sessions/@SESS@", None, None),
        ("DELETE", "/v1/files/@FILE@", None, None),
    ]
    origins = [
        "http://evil.example.com",
        "null",
        "http://127.0.0.1.evil.com:@PORT@",
        "http://localhost.evil.com",
        "file://",
    ]
    cases = _across(
        {f"origin/{i}": {"headers": (("Origin", o),)} for i, o in enumerate(origins)},
        unsafe,
        403,
        code="cross_origin",
    )
    # a page's <form> or no-cors fetch: simple content types, no custom header
    simple = [None, "text/plain", "application/x-www-form-urlencoded", _MULTIPART]
    same_origin = (("Origin", "http://127.0.0.1:@PORT@"),)
    forms = {
        f"csrf/{j}": {"content_type": ctype, "headers": same_origin if j == 3 else ()}
        for j, ctype in enumerate(simple)
    }
    cases += _across(forms, unsafe, 403, script=False, code="csrf_check_failed")
    cases += [
        ServerCase("csrf/json-ok", "POST", "/v1/chat/completions", (200,), body=_CHAT_OK,
                   content_type="application/json", script=False),
        ServerCase("csrf/script-upload-ok", "POST", "/v1/files", (200,), body=_PNG_UPLOAD,
                   content_type=_MULTIPART),
        ServerCase("csrf/same-origin-upload-ok", "POST", "/v1/files", (200,), body=_PNG_UPLOAD,
                   content_type=_MULTIPART, headers=(("Origin", "http://localhost:@PORT@"),)),
        ServerCase("csrf/get-cross-origin-read", "GET", "/v1/models", (200,),
                   headers=(("Origin", "http://evil.example.com"),), script=False),
    ]  # fmt: skip
    return cases


def _auth_cases() -> list[ServerCase]:
    creds: list[tuple[str, tuple[tuple[str, str | bytes], ...]]] = [
        ("none", ()),
        ("wrong", (("Authorization", "Bearer wrong"),)),
        ("empty", (("Authorization", "Bearer "),)),
        ("basic", (("Authorization", "Basic a2V5LW9uZS03ZjNhOg=="),)),
        ("prefix", (("Authorization", "Bearer " + KEYS["k1"][:-1]),)),
        ("longer", (("Authorization", "Bearer " + KEYS["k1"] + "x"),)),
        ("huge", (("Authorization", "Bearer " + "k" * 8000),)),
        ("latin1", (("Authorization", b"Bearer \xff\xfe\xfd"),)),
        ("x-api-key-wrong", (("X-API-Key", "nope"),)),
    ]
    core = _routes("@FILE_K@", "@SESS_K1@")
    routes = [
        *core[:4],
        ("GET", "/v1/outputs/@SESS_K1@/archive.zip", None, None),
        *core[4:6],
        ("POST", "/v1/experts/measure/run", _json({"file_id": "@FILE_K@"}), "application/json"),
        core[6],
    ]
    variants = {f"auth/{name}": {"headers": headers} for name, headers in creds}
    cases = _across(variants, routes, 401, server="keyed", code="invalid_api_key")
    big = 120 * _MiB
    cases += [
        ServerCase("auth/query-key", "GET", f"/v1/models?api_key={KEYS['k1']}", (401,),
                   server="keyed"),
        ServerCase("auth/health-open", "GET", "/health", (200,), server="keyed"),
        ServerCase("auth/ok-x-api-key", "GET", "/v1/models", (200,), server="keyed",
                   headers=(("X-API-Key", KEYS["k2"]),)),
        # the body is never read without a valid key
        ServerCase("auth/120mb-json-no-key", "POST", "/v1/chat/completions", (401,),
                   server="keyed", body=b"{" + b" " * 65536, declared=big,
                   content_type="application/json", code="invalid_api_key"),
        ServerCase("auth/900mb-upload-no-key", "POST", "/v1/files", (401,), server="keyed",
                   body=b"-" * 65536, declared=900 * _MiB, content_type=_MULTIPART,
                   code="invalid_api_key"),
        ServerCase("auth/chunked-40mb-no-key", "POST", "/v1/chat/completions", (401,),
                   server="keyed", body=lambda: b" " * (40 * _MiB), chunked=True,
                   content_type="application/json", code="invalid_api_key"),
        ServerCase("auth/120mb-json-with-key", "POST", "/v1/chat/completions", (413,),
                   server="keyed", key="k1", body=b"{" + b" " * 65536, declared=big,
                   content_type="application/json", code="payload_too_large"),
        ServerCase("auth/chunked-6mb-with-key", "POST", "/v1/chat/completions", (413,),
                   server="keyed", key="k1", body=lambda: b" " * (6 * _MiB), chunked=True,
                   content_type="application/json", code="payload_too_large"),
        # sessions belong to the key that made them
        ServerCase("owner/get-other-key", "GET", "/v1/sessions/@SESS_K1@", (404,),
                   server="keyed", key="k2", code="session_not_found"),
        ServerCase("owner/get-own-key", "GET", "/v1/sessions/@SESS_K1@", (200,),
                   server="keyed", key="k1"),
        ServerCase("owner/continue-other-key", "POST", "/v1/chat/completions", (404,),
                   server="keyed", key="k2", body=_chat("more", session_id="@SESS_K1@"),
                   content_type="application/json", code="session_not_found"),
        ServerCase("owner/archive-other-key", "GET", "/v1/outputs/@SESS_K1@/archive.zip",
                   (404,), server="keyed", key="k2"),
        ServerCase("owner/delete-other-key", "DELETE", "/v1/sessions/@SESS_K1@", (404,),
                   server="keyed", key="k2", code="session_not_found"),
        ServerCase("owner/archive-own-key", "GET", "/v1/outputs/@SESS_K1@/archive.zip",
                   (200,), server="keyed", key="k1"),
    ]  # fmt: skip
    return cases


def _protocol_cases() -> list[ServerCase]:
    msg = [{"role": "user", "content": "x"}]
    bodies: dict[str, tuple[bytes | Callable[[], bytes], int]] = {
        "not-json": (b"{model: mock", 400),
        "non-utf8": (b'{"model":"mock","messages":[{"role":"user","content":"\xff\xfe"}]}', 400),
        "surrogate-text": (b'{"model":"mock","messages":[{"role":"user","content":"\\ud800"}]}',
                           400),
        "surrogate-part": (_chat([{"type": "text", "text": "\udc80 hi"}]), 400),
        "surrogate-model": (b'{"model":"\\udfff","messages":[{"role":"user","content":"x"}]}', 400),
        "surrogate-stop": (_chat("x", stop=["\ud800"]), 400),
        "surrogate-window": (_chat("x", medm3={"window": "\ud800"}), 400),
        "surrogate-expert": (_chat("x", medm3={"experts": ["\ud800"]}), 400),
        "surrogate-session": (_chat("x", session_id="\ud800"), 400),
        "surrogate-extra-field": (_chat("x", user="\ud800"), 400),
        "surrogate-key": (b'{"model":"mock","messages":[{"role":"user","content":"x"}],'
                          b'"medm3":{"images":{"\\ud800":"file-0"}}}', 400),
        "experts-200k": (lambda: _chat("x", medm3={"experts": ["vista3d"] * 200_000}), 400),
        "experts-unknown": (_chat("x", medm3={"experts": ["nosuch"]}), 400),
        "experts-long-name": (_chat("x", medm3={"experts": ["v" * 5000]}), 400),
        "messages-10k": (lambda: _json({"model": "mock", "messages": msg * 10_000}), 400),
        "parts-1000": (_chat([{"type": "text", "text": "x"}] * 1000), 400),
        "images-100": (_chat("x", medm3={"images": {f"i{i}": "file-x" for i in range(100)}}), 400),
        "stop-100": (_chat("x", stop=["s"] * 100), 400),
        "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, 400),
        "deep-object": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
        "huge-float": (b'{"model":"mock","messages":[{"role":"user","content":"x"}],'
                       b'"temperature":1e999}', 400),
        "huge-int": (_json({"model": "mock", "messages": msg, "max_tokens": 10**40}), 200),
        "negative-tokens": (_chat("x", max_tokens=-1), 400),
        "n-5": (_chat("x", n=5), 400),
        "array-body": (b"[1,2,3]", 400),
        "string-body": (b'"hello"', 400),
        "null-body": (b"null", 400),
        "empty-body": (b"", 400),
        "no-messages": (_json({"model": "mock", "messages": []}), 400),
        "no-model": (_json({"messages": msg}), 400),
        "bad-role": (_json({"model": "mock", "messages": [{"role": "root", "content": "x"}]}), 400),
        "tool-role": (_json({"model": "mock", "messages": [{"role": "tool", "content": "x"}]}),
                      400),
        "last-assistant": (_json({"model": "mock",
                                  "messages": [{"role": "assistant", "content": "x"}]}), 400),
        "null-content": (_json({"model": "mock", "messages": [{"role": "user", "content": None}]}),
                         400),
        "blank-content": (_chat("   \n\t "), 400),
        "bad-part-type": (_chat([{"type": "audio", "audio": {}}]), 400),
        "unknown-model": (_json({"model": "gpt-9", "messages": msg}), 404),
        "slice-negative": (_chat("x", medm3={"slice_index": -1}), 400),
        "bad-window": (_chat("x", medm3={"window": "999999,abc"}), 400),
        "bad-plane": (_chat("x", medm3={"plane": "oblique"}), 400),
        "rounds-99": (_chat("x", medm3={"max_rounds": 99}), 400),
        "image-file-url": (_with_image("file:///etc/passwd"), 400),
        "image-http-url": (_with_image("http://169.254.169.254/latest/meta-data"), 400),
        "image-path": (_with_image("/etc/passwd"), 400),
        "image-traversal-id": (_with_image("medm3://file/../../medm3.sqlite3"), 400),
        "image-unknown-id": (_with_image("medm3://file/file-0123456789abcdef01234567"), 404),
        "image-bad-base64": (_with_image("data:image/png;base64,@@@@"), 415),
        "image-not-base64": (_with_image("data:image/png,rawbytes"), 400),
        "image-text-as-png": (lambda: _with_image(g.data_url(b"hello" * 1000)), 415),
        "image-zip-bomb": (lambda: _with_image(g.data_url(_zip_bomb(), "application/zip")), 413),
        "image-gzip-bomb": (lambda: _with_image(g.data_url(_gzip_bomb(), "image/png")), 413),
        "image-png-bomb": (lambda: _with_image(g.data_url(g.png_declaring(60000, 60000))), 413),
        "file-data-inline": (_chat([{"type": "text", "text": "x"},
                                    {"type": "file", "file": {"file_data": "AAAA"}}]), 400),
        "file-id-long": (_chat([{"type": "text", "text": "x"},
                                {"type": "file", "file": {"file_id": "f" * 10_000}}]), 400),
        "session-client-chosen": (_chat("x", session_id="sess-000000000000000000000000"), 404),
        "session-made-up": (_chat("x", session_id="my-own-session"), 404),
        "session-traversal": (_chat("x", session_id="../../etc"), 400),
        "session-too-long": (_chat("x", session_id="s" * 65), 400),
        "two-images-unnamed": (_chat([{"type": "text", "text": "x"},
                                      g.image_part("medm3://file/@FILE@"),
                                      g.image_part("medm3://file/@CT@")]), 400),
        "over-json-cap": (lambda: _chat("x" * (5 * _MiB)), 413),
        # a session's own label map: an uploaded file id and a built-in table name only
        "mask-traversal-id": (_chat("x", medm3={"mask": "../../medm3.sqlite3"}), 400),
        "mask-unknown-id": (_chat("x", medm3={"mask": "file-0123456789abcdef01234567"}), 404),
        "mask-surrogate": (_chat("x", medm3={"mask": "\ud800"}), 400),
        "mask-without-image": (_chat("x", medm3={"mask": "@CT@"}), 400),
        "mask-not-a-label-map": (_chat([{"type": "text", "text": "x"},
                                        g.image_part("medm3://file/@CT@")],
                                       medm3={"mask": "@CT@"}), 400),
        "labels-path": (_chat("x", medm3={"labels": "/etc/passwd"}), 400),
        "labels-json-file": (_chat("x", medm3={"labels": "labels.json"}), 400),
        "labels-without-mask": (_chat("x", medm3={"labels": "vista3d"}), 400),
    }  # fmt: skip
    cases = _table("protocol/", "/v1/chat/completions", bodies)
    # streamed requests are checked the same way, before the stream starts
    streamed: dict[str, tuple[Callable[[], bytes], int]] = {
        "surrogate": (lambda: _chat([{"type": "text", "text": "\ud800"}], stream=True), 400),
        "experts-200k": (
            lambda: _chat("x", stream=True, medm3={"experts": ["vista3d"] * 200_000}),
            400,
        ),
        "session-client-chosen": (lambda: _chat("x", stream=True, session_id="sess-abc"), 404),
        "image-zip-bomb": (
            lambda: _chat(
                [{"type": "text", "text": "x"},
                 g.image_part(g.data_url(_zip_bomb(), "application/zip"))],
                stream=True,
            ),
            413,
        ),
        "unknown-model": (lambda: _json({"model": "x", "messages": msg, "stream": True}), 404),
        "remote-image": (
            lambda: _chat([{"type": "text", "text": "x"}, g.image_part("http://10.0.0.1/a.png")],
                          stream=True),
            400,
        ),
        "stream-options-bad": (lambda: _chat("x", stream=True, stream_options=[1]), 400),
    }  # fmt: skip
    cases += _table("protocol/stream-", "/v1/chat/completions", streamed)
    cases += _table("protocol/", "/v1/experts/nosuch/run",
                    {"run-unknown-expert": (_json({"file_id": "@CT@"}), 404)})  # fmt: skip
    runs: dict[str, tuple[Body, int]] = {
        "run-no-file": (_json({}), 400),
        "run-bad-file-id": (_json({"file_id": "../../etc/passwd"}), 400),
        "run-surrogate-args": (_json({"file_id": "@CT@", "args": "\ud800"}), 400),
        "run-args-too-long": (_json({"file_id": "@CT@", "args": "a" * 1000}), 400),
        "run-options-many": (_json({"file_id": "@CT@", "options": {str(i): i for i in range(99)}}),
                             400),
        "run-inputs-many": (_json({"inputs": {f"i{i}": "@CT@" for i in range(50)}}), 400),
        "run-bad-plane": (_json({"file_id": "@CT@", "plane": "x"}), 400),
    }  # fmt: skip
    return cases + _table("protocol/", "/v1/experts/measure/run", runs)


@functools.cache
def _zip_bomb() -> bytes:
    return g.zip_bomb(MAX_IMAGE_MB * 2)


@functools.cache
def _gzip_bomb() -> bytes:
    return g.gzip_bomb_nifti((512, 512, MAX_IMAGE_MB * 4))  # int16: 2x the cap


def _upload_cases() -> list[ServerCase]:
    import numpy as np

    def nii(data: Any = None, **kw: Any) -> Callable[[], bytes]:
        return functools.cache(lambda: g.nifti(None if data is None else data(), **kw))

    uploads: dict[str, tuple[Callable[[], bytes], tuple[int, ...]]] = {
        "zip-bomb": (_zip_bomb, (413,)),
        "zip-bomb-ratio": (lambda: g.zip_bomb(MAX_IMAGE_MB // 2), (413,)),
        "zip-bomb-lying-size": (lambda: g.zip_bomb(8, lie_about_size=True), (400, 413)),
        "gzip-bomb-nifti": (_gzip_bomb, (413,)),
        "nifti-declares-2gb": (lambda: g.nifti_declaring((1024, 1024, 1000)), (413,)),
        "nifti-declares-huge-float64": (lambda: g.nifti_declaring((4096, 4096, 64), "float64"),
                                        (413,)),
        "nifti-declares-small-truncated": (lambda: g.nifti_declaring((64, 64, 64)), (400,)),
        "nifti-header-only": (lambda: g.nifti(compress=False)[:352], (400,)),
        "nifti-truncated": (lambda: g.nifti(compress=False)[:1000], (400,)),
        "nifti-gz-truncated": (lambda: g.nifti()[:200], (400,)),
        "nifti-singular-affine": (nii(singular=True), (400,)),
        "nifti-zero-dim": (nii(lambda: np.zeros((16, 0, 8), np.int16)), (400,)),
        "nifti-5d": (nii(lambda: np.zeros((8, 8, 4, 2, 2), np.int16)), (400,)),
        "nifti-complex": (nii(lambda: np.zeros((8, 8, 4), np.complex64)), (200, 400)),
        "nifti-nan": (nii(lambda: np.full((8, 8, 4), np.nan, np.float32)), (200, 400)),
        "nifti-inf": (nii(lambda: np.full((8, 8, 4), np.inf, np.float32)), (200, 400)),
        "nifti-ok": (nii(), (200,)),
        "dicom-ok": (g.dicom, (200,)),
        "dicom-truncated": (lambda: g.dicom()[:400], (400,)),
        "dicom-declares-30000x30000": (lambda: g.dicom(declared=(30000, 30000)), (413,)),
        "dicom-preamble-only": (lambda: b"\0" * 128 + b"DICM", (400,)),
        "png-declares-60000x60000": (lambda: g.png_declaring(60000, 60000), (413,)),
        "png-truncated": (lambda: g.png()[:40], (400,)),
        "png-ok": (_png, (200,)),
        "jpeg-truncated": (lambda: g.jpeg()[:100], (400,)),
        "jpeg-garbage-body": (lambda: b"\xff\xd8\xff\xe0" + os.urandom(3000), (400,)),
        "zip-traversal": (lambda: g.zip_of({"../../evil.dcm": g.dicom()}), (400,)),
        "zip-absolute": (lambda: g.zip_of({"/etc/evil.dcm": g.dicom()}), (400,)),
        "zip-no-dicom": (lambda: g.zip_of({"readme.txt": b"hello"}), (415,)),
        "zip-many-members": (lambda: g.zip_many(3000), (415,)),
        "zip-encrypted": (g.zip_encrypted_flag, (400,)),
        "zip-symlink-member": (g.zip_symlink, (200, 400)),
        "zip-nested": (lambda: g.zip_of({"inner.zip": g.zip_of({"IM1.dcm": g.dicom()})}), (415,)),
        "zip-truncated": (lambda: g.zip_of({"IM1.dcm": g.dicom()})[:100], (400, 415)),
        "text-file": (lambda: b"patient: Jane Doe\n" * 100, (415,)),
        "empty-file": (lambda: b"", (415,)),
        "elf-binary": (lambda: b"\x7fELF" + bytes(2000), (415,)),
        "html": (lambda: b"<html><script>alert(1)</script></html>", (415,)),
    }  # fmt: skip
    cases: list[ServerCase] = []
    for name, (data, status) in uploads.items():
        bomb = "image_too_large" if status == (413,) else None  # refused from declared sizes
        one = {name: (_upload(data, name), status)}
        cases += _table("upload/", "/v1/files", one, content_type=_MULTIPART, code=bomb)
    names = {
        "traversal": "../../../etc/passwd",
        "absolute": "/etc/passwd",
        "windows": "C:\\Windows\\system32\\cmd.png",
        "control-chars": "a\x01\x1b[31mred.png",
        "surrogate": "\ud800.png",
    }
    named = {k: (lambda f=f: g.multipart((f, _png()))[0], 200) for k, f in names.items()}
    cases += _table("upload/filename-", "/v1/files", named, content_type=_MULTIPART)
    raw: dict[str, tuple[Body, str | None, tuple[int, ...]]] = {
        "not-multipart": (_png, "image/png", (400,)),
        "json-instead": (_json({"file": "x"}), "application/json", (400,)),
        "no-boundary": (_PNG_UPLOAD, "multipart/form-data", (400,)),
        "wrong-boundary": (_PNG_UPLOAD, "multipart/form-data; boundary=other", (400,)),
        "no-file-part": (lambda: g.multipart(None, {"purpose": "x"})[0], _MULTIPART, (400,)),
        "two-files": (lambda: g.multipart(("a.png", _png()), extra_files=1)[0], _MULTIPART,
                      (400,)),
        "purpose-10kb": (lambda: g.multipart(("a.png", _png()), {"purpose": "p" * 10_000})[0],
                         _MULTIPART, (400,)),
        "garbage-body": (lambda: os.urandom(5000), _MULTIPART, (400,)),
        "filename-5000-chars": (lambda: g.multipart(("x" * 5000 + ".png", _png()))[0], _MULTIPART,
                                (400,)),
        "over-upload-cap": (lambda: g.multipart(("a.png", b"\x89PNG\r\n\x1a\n" +
                                                  bytes((MAX_UPLOAD_MB + 1) * _MiB)))[0],
                            _MULTIPART, (413,)),
    }  # fmt: skip
    for name, (body, ctype, status) in raw.items():
        cases += _table("upload/", "/v1/files", {name: (body, status)}, content_type=ctype)
    cases.append(
        ServerCase(
            "upload/declared-over-cap",
            "POST",
            "/v1/files",
            (413,),
            body=b"--hostile-boundary-7d3f\r\n" + b"x" * 1000,
            declared=(MAX_UPLOAD_MB + 2) * _MiB,
            content_type=_MULTIPART,
            code="payload_too_large",
        )
    )
    return cases


def _path_cases() -> list[ServerCase]:
    paths = {
        "files-traversal": ("/v1/files/..%2F..%2Fmedm3.sqlite3", (400, 404)),
        "files-content-traversal": ("/v1/files/..%2F..%2Fmedm3.sqlite3/content", (400, 404)),
        "files-dotdot": ("/v1/files/%2e%2e/content", (400, 404)),
        "files-unknown": ("/v1/files/file-0123456789abcdef01234567", (404,)),
        "outputs-traversal": ("/v1/outputs/@SESS@/..%2F..%2Fmedm3.sqlite3", (404,)),
        "outputs-encoded-dots": ("/v1/outputs/%2e%2e/%2e%2e/medm3.sqlite3", (404,)),
        "outputs-etc-passwd": ("/v1/outputs/@SESS@/%2Fetc%2Fpasswd", (404,)),
        "outputs-file-folder": ("/v1/outputs/@FILE@/..%2F..%2Ffiles%2F@FILE@%2Fimage.png", (404,)),
        "archive-traversal": ("/v1/outputs/..%2F..%2F/archive.zip", (404,)),
        "archive-unknown": ("/v1/outputs/sess-nosuch/archive.zip", (404,)),
        "session-traversal": ("/v1/sessions/..%2F..%2Fsecret", (404,)),
        "session-unknown": ("/v1/sessions/sess-000000000000000000000000", (404,)),
        "session-long": ("/v1/sessions/" + "s" * 3000, (404,)),
        "unknown-route": ("/v1/nosuch", (404,)),
        "admin": ("/admin", (404,)),
        "docs-traversal": ("/docs/../../etc/passwd", (404,)),
    }
    cases = [
        ServerCase(f"path/{name}", "GET", path, status) for name, (path, status) in paths.items()
    ]
    cases += [
        ServerCase("path/put-files", "PUT", "/v1/files", (405,), body=b"{}",
                   content_type="application/json"),
        ServerCase("path/delete-models", "DELETE", "/v1/models", (405,)),
        ServerCase("path/delete-unknown-file", "DELETE", "/v1/files/file-0123456789abcdef01234567",
                   (404,)),
        ServerCase("path/delete-bad-file-id", "DELETE", "/v1/files/..%2F..%2Fx", (400, 404)),
        ServerCase("path/delete-unknown-session", "DELETE",
                   "/v1/sessions/sess-000000000000000000000000", (404,)),
    ]  # fmt: skip
    return cases


def _expert_cases() -> list[ServerCase]:
    ct_image = [{"type": "text", "text": "<VISTA3D(liver)>"}, g.image_part("medm3://file/@CT@")]
    return [
        ServerCase("weights/run-vista3d", "POST", "/v1/experts/vista3d/run", (503,),
                   body=_json({"file_id": "@CT@"}), content_type="application/json",
                   code="expert_weights_missing"),
        ServerCase("weights/chat-vista3d", "POST", "/v1/chat/completions", (503,),
                   body=_chat(ct_image), content_type="application/json",
                   code="expert_weights_missing"),
        ServerCase("weights/run-cxr-on-png", "POST", "/v1/experts/cxr/run", (400, 503),
                   body=_json({"file_id": "@FILE@"}), content_type="application/json"),
        ServerCase("experts/measure-ok", "POST", "/v1/experts/measure/run", (200, 400),
                   body=_json({"file_id": "@CT@"}), content_type="application/json"),
    ]  # fmt: skip


def _reference_cases() -> list[ServerCase]:
    """``POST /v1/files`` by DICOMweb reference on servers without ``--dicomweb``: nothing
    is fetched (tests/dicomweb/test_api_reference.py covers a configured PACS)."""
    refs = {
        "loopback": "dicomweb+http://127.0.0.1:@PORT@/dicom-web/studies/1.2.3",
        "metadata-ip": "dicomweb+http://169.254.169.254/latest/studies/1.2.3",
        "userinfo": "dicomweb+http://u:p@127.0.0.1:@PORT@/dicom-web/studies/1.2.3",
        "dotdot": "dicomweb+http://127.0.0.1:@PORT@/dicom-web/../v1/studies/1.2.3",
        "file": "file:///etc/passwd",
    }
    by_ref = {name: (_json({"dicomweb": ref}), 400) for name, ref in refs.items()}
    cases = _table("reference/", "/v1/files", by_ref, code="dicomweb_not_configured")
    bodies: dict[str, tuple[Body, int]] = {
        "not-json": (b"{dicomweb:", 400),
        "list": (_json(["dicomweb+http://127.0.0.1/dicom-web/studies/1"]), 400),
        "number": (_json({"dicomweb": 7}), 400),
        "extra-key": (_json({"dicomweb": refs["loopback"], "auth": "u:p"}), 400),
        "bool-series": (_json({"dicomweb": refs["loopback"], "series": True}), 400),
        "oversized": (lambda: _json({"dicomweb": "1" * 40000}), 413),
    }
    return cases + _table("reference/", "/v1/files", bodies)


def all_cases() -> list[ServerCase]:
    """Every server case (names are unique)."""
    cases = (
        _host_cases()
        + _csrf_cases()
        + _auth_cases()
        + _protocol_cases()
        + _upload_cases()
        + _path_cases()
        + _expert_cases()
        + _reference_cases()
    )
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


CASES = all_cases()
