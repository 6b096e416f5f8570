"""Run work items on a pool of Ray actors (``--executor ray``).

Each actor builds its worker once (loads its expert or VLM) and keeps it warm;
the driver hands every free actor the next item and gets the results back.
Faults:

* an actor that dies (crash, ``ray.kill``, lost node) is replaced; its items
  go back to the queue and run on another actor, so nothing is lost, and each
  result is yielded exactly once;
* the item an actor was running when it died counts one attempt; after
  :data:`MAX_ATTEMPTS` the item is given up (``on_lost``), so one item that
  crashes its worker every time is recorded once instead of retried forever;
* an exception raised by the worker is not a crash: it comes back to the
  driver and is raised there unchanged, as with the local executor.

Ray is imported only here (``pip install "medm3[ray]"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from medm3.errors import InputError, MissingDependencyError
from medm3.executors.base import Executor, LostHandler, WorkerLostError, WorkerSpec

__all__ = ["MAX_ATTEMPTS", "RayExecutor", "import_ray"]

#: Attempts of one item whose worker dies while running it.
MAX_ATTEMPTS = 3
#: Items in flight per actor. One: when an actor dies, the item it was running
#: is known for sure (a result computed just before a crash can be lost with the
#: process, so with deeper queues an innocent item could be blamed).
DEPTH = 1
#: Seconds to wait for a TCP answer from ``--address HOST:PORT``.
CONNECT_TIMEOUT = 5.0


#: Ray's switch for its single-machine (loopback-only) mode on Linux.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "ray", "--executor ray") from None
    return ray


@dataclass
class _Failure:
    """An exception raised by a worker, carried back to the driver."""

    error: BaseException
    trace: str

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        trace = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # an exception that does not survive pickling
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return cls(exc, trace)


class _Actor:
    """The body of a Ray actor: one warm worker."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker: Any = None
        self.failure: _Failure | None = None
        try:
            self.worker = spec.create()
        except Exception as exc:  # reported by ready(), not as an actor crash
            self.failure = _Failure.of(exc)

    def ready(self) -> _Failure | int:
        """The process id once the worker is built, or why it could not be built."""
        return self.failure if self.failure is not None else os.getpid()

    def run(self, payload: Any) -> Any:
        """The worker's result for one payload (a raised exception comes back as data)."""
        try:
            return self.worker(payload)
        except Exception as exc:
            return _Failure.of(exc)


def _check_address(address: str) -> None:
    """Fail fast (one line) when ``HOST:PORT`` does not answer."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        return  # Ray Client: Ray reports its own errors
    if not sep or not port.isdigit():
        raise InputError(f"--address must be auto or HOST:PORT, not {address!r}")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
            "start it with `ray start --head` or check --address"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


class RayExecutor(Executor):
    """A pool of Ray actors; see the module docstring.

    Args:
        address: ``auto``, ``HOST:PORT`` or None (Ray's default: ``RAY_ADDRESS``,
            a cluster started on this machine, else a new local one). Ignored
            when Ray is already initialised in this process.
        workers: Number of actors (default: as many as the cluster fits).
        gpus_per_worker: GPUs each actor reserves.
        cpus_per_worker: CPUs each actor reserves.

    Raises:
        MissingDependencyError: Ray is not installed.
        InputError: The cluster cannot be reached, or no node has the GPUs/CPUs
            one worker needs.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0,
    ) -> None:
        self.ray = import_ray()
        self.gpus = float(gpus_per_worker)
        self.cpus = float(cpus_per_worker)
        self.owns_cluster = False
        self._connect(address)
        capacity = self._capacity()
        self.workers = int(workers) if workers is not None else max(1, capacity)
        #: Live actor handles of the running :meth:`map` (tests kill one of them).
        self.actors: list[Any] = []
        #: Actors replaced after they died, over this executor's life.
        self.replaced = 0

    # ------------------------------------------------------------ cluster
    def _connect(self, address: str | None) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        if address and address != "auto":
            _check_address(address)
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False
            # A cluster started here is this machine only: keep Ray's processes on
            # loopback (Ray's single-machine mode) unless the user chose otherwise.
            os.environ.setdefault(LOOPBACK_ENV, "0")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise InputError(
                f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}"
                f": {first}; start one with `ray start --head` or check --address"
            ) from None
        self.owns_cluster = True

    def _capacity(self) -> int:
        """How many workers fit; checks that at least one does."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        most_gpus = max((float(r.get("GPU", 0)) for r in nodes), default=0.0)
        most_cpus = max((float(r.get("CPU", 0)) for r in nodes), default=0.0)
        if self.gpus > most_gpus:
            raise InputError(
                f"--gpus-per-worker {self.gpus:g}: no node of the Ray cluster has that many "
                f"GPUs (the most on one node: {most_gpus:g})"
            )
        if self.cpus > most_cpus:
            raise InputError(
                f"a worker needs {self.cpus:g} CPUs; no node of the Ray cluster has that many "
                f"(the most on one node: {most_cpus:g})"
            )
        fits = 0
        for r in nodes:
            n = int(float(r.get("CPU", 0)) // self.cpus)
            if self.gpus > 0:
                n = min(n, int(float(r.get("GPU", 0)) // self.gpus))
            fits += n
        return fits

    def close(self) -> None:
        """Shut down the cluster when this executor started it."""
        if self.owns_cluster and self.ray.is_initialized():
            self.ray.shutdown()
            self.owns_cluster = False

    # ------------------------------------------------------------ map
    def _run(
        self, spec: WorkerSpec, payloads: Sequence[Any], on_lost: LostHandler | None
    ) -> Iterator[tuple[int, Any]]:
        """See :meth:`Executor.map`; results come in the order they finish."""
        pool = _Pool(self, spec, len(payloads))
        try:
            yield from pool.run(payloads, on_lost)
        finally:
            pool.shutdown()
            self.actors = []


class _Pool:
    """The actors of one :meth:`RayExecutor.map` and its dispatch loop."""

    def __init__(self, executor: RayExecutor, spec: WorkerSpec, n_items: int) -> None:
        ray = executor.ray
        self.ray = ray
        self.executor = executor
        self.size = max(1, min(executor.workers, n_items))
        self.remote = ray.remote(_Actor).options(
            num_cpus=executor.cpus, num_gpus=executor.gpus, max_restarts=0, max_task_retries=0
        )
        self.spec_ref = ray.put(spec)
        self.starting: dict[Any, Any] = {}  # ready ref -> actor
        self.inflight: dict[Any, tuple[Any, int]] = {}  # result ref -> (actor, index)
        self.queues: dict[Any, deque[Any]] = {}  # actor -> its result refs in submit order
        self.budget = 2 * self.size + MAX_ATTEMPTS  # replacements allowed
        self.killers: set[Any] = set()  # refs that were running when their actor died
        self.last_death = ""  # why the last actor died (for error messages)
        for _ in range(self.size):
            self._start()

    def _start(self) -> None:
        actor = self.remote.remote(self.spec_ref)
        self.starting[actor.ready.remote()] = actor

    @property
    def live(self) -> list[Any]:
        return list(self.queues)

    def run(
        self, payloads: Sequence[Any], on_lost: LostHandler | None
    ) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        lost_types = (ray.exceptions.RayActorError,) + (
            (ray.exceptions.ActorUnavailableError,)
            if hasattr(ray.exceptions, "ActorUnavailableError")
            else ()
        )
        todo: deque[int] = deque(range(len(payloads)))
        attempts = [0] * len(payloads)
        remaining = len(payloads)
        while remaining:
            self._dispatch(todo, payloads)
            if not self.starting and not self.inflight:
                raise WorkerLostError(
                    f"every Ray worker died; {remaining} item(s) were not processed "
                    f"(last: {self.last_death or 'unknown'})"
                )
            ref = ray.wait([*self.starting, *self.inflight], num_returns=1)[0][0]
            if ref in self.starting:
                self._started(ref, lost_types)
                continue
            actor, index = self.inflight.pop(ref)
            try:
                value = ray.get(ref)
            except lost_types as exc:
                reason = self.last_death = _first_line(exc)
                given_up = self._died(actor, ref, index, attempts, todo)
                if given_up:
                    if on_lost is None:
                        raise WorkerLostError(
                            f"item {index}: its worker died {MAX_ATTEMPTS} times ({reason})"
                        ) from None
                    remaining -= 1
                    yield index, on_lost(index, payloads[index], reason)
                continue
            if actor in self.queues:
                self.queues[actor].popleft()
            if isinstance(value, _Failure):
                raise value.error
            remaining -= 1
            yield index, value

    def _dispatch(self, todo: deque[int], payloads: Sequence[Any]) -> None:
        for actor, queue in self.queues.items():
            while todo and len(queue) < DEPTH:
                index = todo.popleft()
                ref = actor.run.remote(payloads[index])
                self.inflight[ref] = (actor, index)
                queue.append(ref)
        self.executor.actors = self.live

    def _started(self, ref: Any, lost_types: tuple[type, ...]) -> None:
        actor = self.starting.pop(ref)
        try:
            state = self.ray.get(ref)
        except lost_types as exc:
            self.last_death = _first_line(exc)
            self._replace()
            return
        if isinstance(state, _Failure):  # the worker cannot be built: same everywhere
            raise state.error
        self.queues[actor] = deque()

    def _died(
        self, actor: Any, ref: Any, index: int, attempts: list[int], todo: deque[int]
    ) -> bool:
        """Requeue the item of a dead actor; True when it has used up its attempts.

        Only the item the actor was running when it died counts an attempt; the
        items queued behind it go back to the queue as they were.
        """
        queue = self.queues.pop(actor, None)
        if queue is not None:  # first notice of this death: replace the actor
            self.killers.add(queue[0] if queue else ref)
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor, no_restart=True)
            self._replace()
        if ref in self.killers:
            self.killers.discard(ref)
            attempts[index] += 1
            if attempts[index] >= MAX_ATTEMPTS:
                return True
        todo.appendleft(index)
        return False

    def _replace(self) -> None:
        if self.budget <= 0:
            return
        self.budget -= 1
        self.executor.replaced += 1
        self._start()

    def shutdown(self) -> None:
        for actor in [*self.queues, *self.starting.values()]:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor, no_restart=True)
        self.queues.clear()
        self.starting.clear()
        self.inflight.clear()
