"""Dynamic batching across sessions: same answers as one-at-a-time greedy generation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from medm3.serve.batching import BatchingBackend
from medm3.vlm.base import Generation, GenerationConfig, Message
from medm3.vlm.mock import MockBackend


def _question(i: int) -> list[Message]:
    return [Message.text("user", f"Question number {i}: what is {i} plus {i}?")]


def _concurrently(fn: Any, n: int) -> list[Any]:
    start = threading.Barrier(n)

    def one(i: int) -> Any:
        start.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_greedy_calls_share_generate_batch() -> None:
    inner = MockBackend("mock", script=lambda messages: "echo " + messages[-1].plain_text)
    proxy = BatchingBackend(inner, max_batch=4, max_wait_ms=500)
    try:
        answers = _concurrently(lambda i: proxy.generate(_question(i)).text, 8)
    finally:
        proxy.stop()
    assert answers == ["echo " + _question(i)[0].plain_text for i in range(8)]
    batched = [r for r in inner.requests if r.method == "generate_batch"]
    assert batched and max(proxy.batches) == 4 and sum(proxy.batches) == 8


def test_no_wait_when_every_caller_is_already_waiting() -> None:
    inner = MockBackend("mock", script=lambda messages: "ok")
    proxy = BatchingBackend(inner, max_batch=8, max_wait_ms=5000, active=lambda: 1)
    try:
        start = time.monotonic()
        assert proxy.generate(_question(0)).text == "ok"
        assert time.monotonic() - start < 2.5  # did not wait 5 s for company
    finally:
        proxy.stop()


def test_sampling_tools_and_streams_are_not_batched() -> None:
    inner = MockBackend("mock", script=lambda messages: "one two three")
    proxy = BatchingBackend(inner, max_batch=8, max_wait_ms=50)
    try:
        sampled = GenerationConfig(temperature=0.7, seed=1)
        assert proxy.generate(_question(0), sampled).text == "one two three"
        assert "".join(proxy.stream(_question(1))) == "one two three"
    finally:
        proxy.stop()
    assert [r.method for r in inner.requests] == ["generate", "stream"]
    assert proxy.batches == []


class _FailingBatch(MockBackend):
    def generate_batch(self, conversations: Any, config: Any = None) -> list[Generation]:
        raise RuntimeError("batch exploded")


def test_a_failing_batch_is_retried_one_by_one() -> None:
    def script(messages: list[Message]) -> str:
        if "3" in messages[-1].plain_text:
            raise ValueError("bad question")
        return "fine"

    proxy = BatchingBackend(_FailingBatch("mock", script=script), max_batch=4, max_wait_ms=300)

    def ask(i: int) -> str:
        try:
            return proxy.generate(_question(i)).text
        except ValueError as exc:
            return f"error: {exc}"

    try:
        answers = _concurrently(ask, 4)
    finally:
        proxy.stop()
    assert answers == ["fine", "fine", "fine", "error: bad question"]


@pytest.fixture(scope="module")
def tiny_vila(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from medm3.testing import build_tiny_vila
    from medm3.vlm.registry import load_backend

    folder = build_tiny_vila(tmp_path_factory.mktemp("vila") / "tiny-vila")
    return load_backend("vila", str(folder), device="cpu")


def test_batched_vila_answers_equal_unbatched_greedy(tiny_vila: Any) -> None:
    config = GenerationConfig(max_new_tokens=12)
    questions = [
        [Message.text("user", "Describe the image. " * (1 + i % 3) + f"Case {i}.")]
        for i in range(6)
    ]
    alone = [tiny_vila.generate(q, config).text for q in questions]
    proxy = BatchingBackend(tiny_vila, max_batch=6, max_wait_ms=1000)
    try:
        together = _concurrently(lambda i: proxy.generate(questions[i], config).text, 6)
    finally:
        proxy.stop()
    assert max(proxy.batches) > 1
    assert together == alone


def test_server_batches_questions_of_different_sessions(client_for: Any, tmp_path: Path) -> None:
    seen: list[int] = []

    class Recording(MockBackend):
        def generate_batch(self, conversations: Any, config: Any = None) -> list[Generation]:
            seen.append(len(conversations))
            return super().generate_batch(conversations, config)

    def slow_answer(messages: list[Message]) -> str:
        time.sleep(0.3)  # a question that arrives alone keeps the model busy meanwhile
        return "answer to " + messages[-1].plain_text

    vlm = Recording("mock", script=slow_answer)
    client = client_for(vlm, batch_size=4, batch_wait_ms=400, use_experts=False)

    def ask(i: int) -> str:
        body = {"model": "mock", "messages": [{"role": "user", "content": f"q{i}"}]}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    answers = _concurrently(ask, 4)
    assert answers == [f"answer to q{i}" for i in range(4)]
    assert seen and max(seen) > 1
