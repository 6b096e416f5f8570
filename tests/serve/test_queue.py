"""The bounded model queue: 429 when full, 504 on timeout, one model call at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from tests.serve.conftest import LiveServer

from medm3.serve.errors import QueueFullError, RequestTimeoutError
from medm3.serve.runner import Job, JobCancelledError, ModelRunner
from medm3.vlm.mock import MockBackend


class Gate:
    """A mock model that blocks until released and records how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, messages: list[Any]) -> str:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        self.started.release()
        try:
            assert self.release.wait(20)
            return "done"
        finally:
            with self._lock:
                self.active -= 1


def _chat(url: str, text: str = "hi") -> httpx.Response:
    body = {"model": "mock", "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)


def test_queue_full_is_429_and_the_model_runs_one_at_a_time(make_app: Any) -> None:
    gate = Gate()
    app = make_app(MockBackend("mock", script=gate), workers=1, max_queue=2)
    with LiveServer(app) as server, ThreadPoolExecutor(4) as pool:
        admitted = [pool.submit(_chat, server.url, f"q{i}") for i in range(3)]
        assert gate.started.acquire(timeout=10)  # the first one runs
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.url}/health").json()["waiting"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        health = httpx.get(f"{server.url}/health").json()
        assert (health["running"], health["waiting"], health["capacity"]) == (1, 2, 3)
        refused = _chat(server.url)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "queue_full"
        stream = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "mock", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert stream.status_code == 429  # refused before any event is sent
        gate.release.set()
        assert [f.result().status_code for f in admitted] == [200, 200, 200]
    assert gate.most == 1


def test_request_timeout_is_504_and_frees_the_waiting_slot(make_app: Any) -> None:
    gate = Gate()
    app = make_app(MockBackend("mock", script=gate), workers=1, max_queue=1, request_timeout_s=0.5)
    with LiveServer(app) as server, ThreadPoolExecutor(2) as pool:
        running = pool.submit(_chat, server.url)
        assert gate.started.acquire(timeout=10)
        waited = _chat(server.url)  # waits behind the running one, then gives up
        assert waited.status_code == 504
        assert waited.json()["error"]["code"] == "request_timeout"
        assert httpx.get(f"{server.url}/health").json()["waiting"] == 0
        assert running.result().status_code == 504
        gate.release.set()


def test_runner_bounds_and_cancellation() -> None:
    runner = ModelRunner(workers=1, max_queue=1, timeout_s=5)
    go = threading.Event()
    first = runner.submit(lambda: go.wait(5) and 1)
    second = runner.submit(lambda: 2)
    with pytest.raises(QueueFullError):
        runner.submit(lambda: 3)
    assert second.cancel()  # still waiting: dropped, slot freed
    third = runner.submit(lambda: 3)
    go.set()
    assert (first.result(5), third.result(5)) == (True, 3)
    assert runner.waiting == 0 and runner.running == 0
    with pytest.raises(RequestTimeoutError):
        runner.call(lambda: time.sleep(0.5), timeout_s=0.05)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(runner.run(lambda: time.sleep(0.5), timeout_s=0.05))
    runner.close(wait=True)
    with pytest.raises(QueueFullError):
        runner.submit(lambda: 4)


def test_job_cancellation_flag() -> None:
    job = Job()
    job.check()
    job.cancel()
    assert job.cancelled
    with pytest.raises(JobCancelledError):
        job.check()
