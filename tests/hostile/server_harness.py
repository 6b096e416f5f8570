"""The harness of the server corpus: ``m3 serve`` subprocesses, raw requests, checks.

:class:`ServerHarness` starts ``m3 serve --backend mock`` as a subprocess,
prepares a few uploads and sessions, and :meth:`ServerHarness.run` sends a
case with :mod:`http.client` (so ``Host``, ``Origin``, lengths and encodings
are exactly what the case says) while sampling the server's RSS.
:func:`problems` lists what a result breaks (see :mod:`tests.hostile.server_cases`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.hostile import generators_server as g
from tests.hostile.server_cases import (
    _CHAT_OK,
    KEYS,
    MAX_IMAGE_MB,
    MAX_JSON_MB,
    MAX_UPLOAD_MB,
    RSS_LIMIT_MB,
    ServerCase,
    _ct,
    _png,
)

_MiB = 1 << 20


@dataclass
class Result:
    """What one case got."""

    case: ServerCase
    status: int = 0
    body: bytes = b""
    seconds: float = 0.0
    rss_growth_mb: float = 0.0
    log: str = ""
    stray: list[str] = field(default_factory=list)
    error: str | None = None


# ------------------------------------------------------------------ harness
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerHarness:
    """``m3 serve --backend mock`` in a subprocess, with its scratch folders.

    Args:
        root: Scratch folder (the server's working folder, ``TMPDIR`` and data folder).
        keyed: Configure the two API keys of :data:`KEYS`.
    """

    def __init__(self, root: Path, *, keyed: bool = False) -> None:
        import psutil

        self.root = root
        self.keyed = keyed
        self.data = root / "data"
        self.tmp = root / "tmp"
        self.log_path = root / "server.log"
        for folder in (self.tmp, root / "cache"):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        cmd = [
            sys.executable, "-m", "medm3", "serve", "--backend", "mock", "--no-ui",
            "--port", str(self.port), "--data-dir", str(self.data),
            "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-json-mb", str(MAX_JSON_MB),
            "--max-image-mb", str(MAX_IMAGE_MB), "--log-level", "warning",
        ]  # fmt: skip
        if keyed:
            for key in KEYS.values():
                cmd += ["--api-key", key]
        env = {
            **os.environ,
            "TMPDIR": str(self.tmp),
            "MEDM3_CACHE": str(root / "cache"),
            "HF_HUB_OFFLINE": "1",
            "MEDM3_NO_PROGRESS": "1",
            "MEDM3_API_KEY": "",
            "PYTHONWARNINGS": "ignore",
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log, stderr=self._log)
        self.ps = psutil.Process(self.proc.pid)
        self._log_offset = 0
        self.tokens: dict[str, str] = {"@PORT@": str(self.port)}
        self._wait_ready()
        self._prepare()
        self.snapshot = self._outside()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"m3 serve exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                status, _ = self.request("GET", "/health")
                if status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("m3 serve did not start within 60 s")

    def _auth(self, key: str | None = "k1") -> list[tuple[str, str | bytes]]:
        return [("Authorization", f"Bearer {KEYS[key]}")] if self.keyed and key else []

    def _prepare(self) -> None:
        """Uploads and sessions the cases refer to."""
        script = [("X-Requested-With", "corpus"), *self._auth()]
        suffix = "_K" if self.keyed else ""
        for token, (name, data) in {
            f"@FILE{suffix}@": ("a.png", _png()),
            f"@CT{suffix}@": ("ct.nii.gz", _ct()),
        }.items():
            body, ctype = g.multipart((name, data))
            status, out = self.request(
                "POST", "/v1/files", body, [("Content-Type", ctype), *script]
            )
            assert status == 200, out
            self.tokens[token] = json.loads(out)["id"]
        status, out = self.request(
            "POST",
            "/v1/chat/completions",
            _CHAT_OK,
            [("Content-Type", "application/json"), *script],
        )
        assert status == 200, out
        self.tokens["@SESS_K1@" if self.keyed else "@SESS@"] = json.loads(out)["medm3"][
            "session_id"
        ]

    def fill(self, value: bytes | str) -> Any:
        """``value`` with the tokens replaced."""
        for token, real in self.tokens.items():
            value = (
                value.replace(token.encode(), real.encode())
                if isinstance(value, bytes)
                else value.replace(token, real)
            )
        return value

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: list[tuple[str, str | bytes]] | None = None,
        *,
        host: str | None = None,
        declared: int | None = None,
        chunked: bool = False,
        timeout: float = 60,
    ) -> tuple[int, bytes]:
        """Send one raw request; returns the status and the body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host if host is not None else f"127.0.0.1:{self.port}")
            for name, value in headers or []:
                conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif body is not None or method in ("POST", "PUT"):
                conn.putheader("Content-Length", str(declared or len(body or b"")))
            conn.endheaders()
            if body or chunked:
                _send_body(conn.sock, body or b"", chunked)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def run(self, case: ServerCase) -> Result:
        """Send ``case`` and collect what :func:`problems` checks."""
        body = case.body() if callable(case.body) else case.body
        body = self.fill(body) if body is not None else None
        headers: list[tuple[str, str | bytes]] = []
        if case.content_type:
            headers.append(("Content-Type", case.content_type))
        if case.script:
            headers.append(("X-Requested-With", "corpus"))
        if case.key:
            headers += self._auth(case.key)
        headers += [(k, self.fill(v)) for k, v in case.headers]
        host = self.fill(case.host) if case.host is not None else None
        result = Result(case)
        base = self.ps.memory_info().rss
        peak = base
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                with contextlib.suppress(Exception):
                    peak = max(peak, self.ps.memory_info().rss)
                done.wait(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        try:
            result.status, result.body = self.request(
                case.method,
                self.fill(case.path),
                body,
                headers,
                host=host,
                declared=case.declared,
                chunked=case.chunked,
            )
        except (OSError, http.client.HTTPException) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        peak = max(peak, self.ps.memory_info().rss)
        result.rss_growth_mb = (peak - base) / _MiB
        result.log = self._new_log()
        result.stray = self._strays()
        return result

    def _new_log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            data = fh.read()
        self._log_offset += len(data)
        return data.decode("utf-8", "replace")

    def _outside(self) -> set[str]:
        """Everything under the scratch folder but the data folder and the log."""
        found = set()
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root)
            if rel.parts[0] in ("data", "server.log", "cache"):
                continue
            found.add(rel.as_posix())
        return found

    def _strays(self) -> list[str]:
        deadline = time.monotonic() + 2  # a download's temporary zip goes once it is sent
        while True:
            new = sorted(self._outside() - self.snapshot)
            new += [f"data/tmp/{p.name}" for p in (self.data / "tmp").iterdir()]
            if not new or time.monotonic() > deadline:
                return new
            time.sleep(0.05)

    def close(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL); returns the rest of its log."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return self.log_path.read_text(errors="replace")[-4000:]


def _send_body(sock: socket.socket, body: bytes, chunked: bool) -> None:
    """Send ``body`` a piece at a time, stopping as soon as the server has answered
    (a guard that refuses a request answers before reading its body)."""
    import select

    view = memoryview(body)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for at in range(0, len(body), 256 * 1024):
            if select.select([sock], [], [], 0)[0]:
                return
            piece = bytes(view[at : at + 256 * 1024])
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
        if chunked and not select.select([sock], [], [], 0)[0]:
            sock.sendall(b"0\r\n\r\n")


@contextlib.contextmanager
def servers(root: Path) -> Iterator[dict[str, ServerHarness]]:
    """The ``open`` and ``keyed`` servers, started in ``root`` and stopped after."""
    started: dict[str, ServerHarness] = {}
    try:
        started["open"] = ServerHarness(root / "open")
        started["keyed"] = ServerHarness(root / "keyed", keyed=True)
        yield started
    finally:
        for harness in started.values():
            harness.close()


def problems(result: Result, data_dir: Path | None = None) -> list[str]:
    """What ``result`` breaks (empty: the case passed)."""
    case = result.case
    found: list[str] = []
    if result.error:
        return [f"no answer: {result.error}"]
    if result.status not in case.status:
        found.append(f"status {result.status}, expected {case.status}: {result.body[:300]!r}")
    text = result.body.decode("utf-8", "replace")
    if not case.json or (result.status == 200 and case.path.endswith(("archive.zip", "/content"))):
        pass  # refused by the HTTP parser, or a file download
    else:
        if "\n" in text.strip():
            found.append("the body is not one line")
        try:
            doc = json.loads(text)
        except ValueError:
            found.append(f"the body is not JSON: {text[:200]!r}")
            doc = None
        if result.status >= 400 and doc is not None:
            err = doc.get("error") if isinstance(doc, dict) else None
            if not isinstance(err, dict) or not isinstance(err.get("message"), str):
                found.append(f"not an error object: {text[:200]!r}")
            elif case.code is not None and err.get("code") != case.code:
                found.append(f"error code {err.get('code')!r}, expected {case.code!r}")
    if "Traceback" in text or 'File "' in text:
        found.append("a traceback in the response")
    if data_dir is not None and str(data_dir.resolve()) in text:
        found.append("the server's data path in the response")
    if "Traceback" in result.log or "Exception in ASGI" in result.log:
        found.append(f"a traceback in the server log: {result.log[-600:]}")
    if result.stray:
        found.append(f"files left behind: {result.stray[:5]}")
    if result.rss_growth_mb >= RSS_LIMIT_MB:
        found.append(f"server RSS grew {result.rss_growth_mb:.0f} MB")
    return found
