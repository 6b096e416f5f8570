"""Dynamic batching: questions from different sessions share one ``generate_batch`` call.

:class:`BatchingBackend` wraps the server's one backend and is what every
session's agent loop talks to. Each loop runs in its own worker thread and
stays independent (one may be running an expert while others generate); when a
loop needs a generation it hands its conversation to the batcher and waits. The
batcher thread takes the first waiting conversation, gathers more for at most
``max_wait_ms``, until ``max_batch`` are there or until every running agent
loop is waiting (the server passes its job count), and runs them through the
wrapped backend's :meth:`~medm3.vlm.base.VLMBackend.generate_batch` (the VILA
and transformers backends pad and run them together).

Only requests that batching cannot change are batched: greedy decoding
(temperature 0: batched greedy answers equal unbatched ones, checked by the
tests on the tiny VILA) without native tools, grouped by identical generation
settings. Sampling requests, tool-calling backends and **streamed** requests
run alone, in arrival order with the batches, so a streamed answer still
arrives token by token. All access to the wrapped model goes through one lock:
the backend never runs two calls at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from medm3.vlm.base import Generation, GenerationConfig, Message, VLMBackend

log = logging.getLogger("medm3.serve")


@dataclasses.dataclass
class _Pending:
    messages: list[Message]
    config: GenerationConfig
    future: Future[Generation]
    key: tuple[Any, ...]


class BatchingBackend(VLMBackend):
    """A backend proxy that batches concurrent greedy ``generate`` calls.

    Args:
        inner: The real backend.
        max_batch: Most conversations per ``generate_batch`` call.
        max_wait_ms: Longest the first conversation of a batch waits for company.
        active: Returns how many callers (agent loops) are running now; when all
            of them are already waiting, the batch starts at once instead of
            waiting ``max_wait_ms`` for company that cannot come (a lone user
            pays no batching delay).
    """

    name = "batching"

    def __init__(
        self,
        inner: VLMBackend,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        active: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(inner.model_id)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, not {max_wait_ms}")
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.vila_format = inner.vila_format  # type: ignore[misc]
        self.supports_tools = inner.supports_tools  # type: ignore[misc]
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.active = active
        self.model_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._closed = False
        self.batches: list[int] = []  # sizes of the batches run (for tests and benchmarks)
        self._thread = threading.Thread(target=self._loop, name="m3-batcher", daemon=True)
        self._thread.start()

    # -- VLMBackend ------------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Generate one turn; greedy tool-less requests join a batch."""
        config = config or GenerationConfig()
        if tools or not config.greedy or config.seed is not None:
            with self.model_lock:
                return self.inner.generate(messages, config, tools=tools)
        pending = _Pending(list(messages), config, Future(), _config_key(config))
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(pending)
            self._cond.notify_all()
        return pending.future.result()

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Iterator[str]:
        """Stream one turn on its own (token by token), between batches."""
        with self.model_lock:
            yield from self.inner.stream(messages, config, tools=tools)

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Pass an explicit batch straight to the wrapped backend."""
        with self.model_lock:
            return self.inner.generate_batch(conversations, config)

    def close(self) -> None:
        """Stop the batcher thread (waiting requests fail) and close the wrapped backend."""
        self.stop()
        self.inner.close()

    def stop(self) -> None:
        """Stop the batcher thread; requests still waiting fail with RuntimeError."""
        with self._cond:
            self._closed = True
            waiting, self._queue = self._queue, []
            self._cond.notify_all()
        for p in waiting:
            p.future.set_exception(RuntimeError("the server is shutting down"))

    # -- the batcher thread ----------------------------------------------------------------
    def _take(self) -> list[_Pending] | None:
        """Wait for a first request, then for company; return one batch (same settings)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._queue[0]
            deadline = time.monotonic() + self.max_wait_s
            while True:
                same = [p for p in self._queue if p.key == first.key]
                left = deadline - time.monotonic()
                everyone = self.active is not None and self.active() <= len(self._queue)
                if len(same) >= self.max_batch or left <= 0 or everyone or self._closed:
                    break
                self._cond.wait(left)
            batch = same[: self.max_batch]
            taken = {id(p) for p in batch}
            self._queue = [p for p in self._queue if id(p) not in taken]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        try:
            with self.model_lock:
                if len(batch) == 1:
                    results = [self.inner.generate(batch[0].messages, batch[0].config)]
                else:
                    results = self.inner.generate_batch(
                        [p.messages for p in batch], batch[0].config
                    )
            self.batches.append(len(batch))
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("batched generation failed (%s); retrying one by one", exc)
            for p in batch:
                self._run([p])
            return
        for p, result in zip(batch, results, strict=True):
            p.future.set_result(result)


def _config_key(config: GenerationConfig) -> tuple[Any, ...]:
    return tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(config))
