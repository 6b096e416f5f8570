"""The bounded queue in front of the one model instance.

Every job that touches the model or the experts (a chat question, an expert
run) goes through :class:`ModelRunner`: ``workers`` threads execute jobs, at
most ``max_queue`` more may wait; a job beyond that is refused at once with
:class:`~medm3.serve.errors.QueueFullError` (HTTP 429), so load never turns
into unbounded memory (or GPU memory) use.

A request that times out while its job waits cancels the job. A job already
running cannot be killed (a thread in the middle of a CUDA kernel), so it keeps
its slot until it ends: the bound stays true. Streaming jobs stop at their next
token when their :class:`Job` is cancelled (the client went away).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from medm3.serve.errors import QueueFullError, RequestTimeoutError

T = TypeVar("T")


class JobCancelledError(Exception):
    """Raised inside a job whose client has gone away."""


class Job:
    """A cancellation flag handed to a running job.

    Attributes:
        future: The queued job's future, once submitted.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self.future: Future[Any] | None = None

    def cancel(self) -> None:
        """Ask the job to stop at its next check (a job still waiting is dropped)."""
        self._cancelled.set()
        if self.future is not None:
            self.future.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelledError` when cancelled."""
        if self._cancelled.is_set():
            raise JobCancelledError("the client went away")


class ModelRunner:
    """Run jobs on ``workers`` threads with at most ``max_queue`` waiting.

    Args:
        workers: Jobs executed at once.
        max_queue: Jobs allowed to wait.
        timeout_s: Default time limit of :meth:`run`.
    """

    def __init__(self, workers: int = 1, max_queue: int = 16, timeout_s: float = 600.0) -> None:
        self.workers = workers
        self.capacity = workers + max_queue
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="m3-model")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._closed = False

    @property
    def running(self) -> int:
        """Jobs executing now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs admitted but not started."""
        return self._admitted - self._running

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Admit a job or refuse it.

        Raises:
            QueueFullError: ``workers + max_queue`` jobs are already admitted.
        """
        with self._lock:
            if self._closed or self._admitted >= self.capacity:
                raise QueueFullError(self.capacity)
            self._admitted += 1

        def call() -> T:
            with self._lock:
                self._running += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self._running -= 1

        try:
            future = self._executor.submit(call)
        except RuntimeError:  # executor shut down
            self._release(None)
            raise QueueFullError(self.capacity) from None
        future.add_done_callback(self._release)
        return future

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run a job and wait for it without blocking the event loop.

        Raises:
            QueueFullError: No room in the queue.
            RequestTimeoutError: Not finished in time (a waiting job is cancelled).
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        future = self.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except asyncio.TimeoutError:  # an alias of TimeoutError from Python 3.11
            future.cancel()
            raise RequestTimeoutError(limit) from None

    def call(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Blocking variant of :meth:`run` for threads (the web UI's handlers)."""
        import concurrent.futures

        limit = self.timeout_s if timeout_s is None else timeout_s
        future = self.submit(fn)
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeoutError(limit) from None

    def close(self, wait: bool = False) -> None:
        """Refuse new jobs and stop the workers (waiting jobs are cancelled)."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)
