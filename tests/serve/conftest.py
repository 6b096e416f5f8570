"""Fixtures of the server tests: apps on a temporary data folder, a live uvicorn server,
the FAKESEG test double registered, scripted mock models."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medm3 import prompts

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


#: Headers of a script client: the anti-CSRF header a web page cannot send.
SCRIPT = {"X-Requested-With": "tests"}


def last_user_text(messages: list[Any]) -> str:
    """Text of the last user turn a mock model received."""
    return next((m.plain_text for m in reversed(messages) if m.role == "user"), "")


def segment_then_answer(messages: list[Any]) -> str:
    """Mock model: ask FAKESEG for the bright region, then answer from its result."""
    last = last_user_text(messages)
    if "The colors in this image describe" in last:
        return "The bright region is shown in red."
    return "<FAKESEG(bright)>"


def segment_measure_answer(messages: list[Any]) -> str:
    """Mock model: FAKESEG, then MEASURE, then an answer quoting the measured volume."""
    last = last_user_text(messages)
    if prompts.MEASUREMENT_HEADER in last:
        return "Done: the bright region was segmented and measured (see the overlay)."
    if "The colors in this image describe" in last:
        return "<MEASURE(bright)>"
    return "<FAKESEG(bright)>"


def echo(messages: list[Any]) -> str:
    """Mock model: repeat the last question."""
    text = last_user_text(messages).strip().splitlines()
    return f"echo: {text[-1] if text else ''}"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_app(script_or_vlm, **settings)`` -> FastAPI app on ``tmp_path / 'data'``."""
    from medm3.serve import ServeSettings, create_app
    from medm3.vlm.base import VLMBackend
    from medm3.vlm.mock import MockBackend

    def build(model: Any = echo, **overrides: Any) -> Any:
        vlm = model if isinstance(model, VLMBackend) else MockBackend("mock", script=model)
        overrides.setdefault("data_dir", tmp_path / "data")
        overrides.setdefault("ui", False)
        overrides.setdefault("allowed_hosts", ("testserver", "127.0.0.1", "localhost"))
        return create_app(ServeSettings(vlm=vlm, **overrides))

    yield build


@pytest.fixture
def client_for(make_app: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``client_for(script_or_vlm, **settings)`` -> started TestClient (closed at teardown)."""
    from fastapi.testclient import TestClient

    opened: list[Any] = []

    def build(model: Any = echo, **overrides: Any) -> Any:
        # a script, not a web page: it may send the anti-CSRF header
        client = TestClient(make_app(model, **overrides), headers=SCRIPT)
        client.__enter__()
        opened.append(client)
        return client

    yield build
    for client in opened:
        client.__exit__(None, None, None)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving an app in a background thread on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def png_bytes() -> bytes:
    """A small grey PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (32, 24), 128).save(buf, format="PNG")
    return buf.getvalue()
