"""The executor interface: run one kind of work item over a list of payloads.

A job (a batch expert run, a data build, an eval run) describes its worker as a
:class:`WorkerSpec`: a class and the keyword arguments that build it. The
worker is built once per process (so a model is loaded once and stays warm)
and then called with one payload at a time. An executor decides where that
happens:

* :class:`LocalExecutor` -- in this process, in order (today's behaviour);
* :class:`~medm3.executors.ray.RayExecutor` -- on a pool of Ray actors, each
  holding one warm worker; payloads go to whichever actor is free.

Results come back to the caller, which alone writes the job's tables, shards
and manifests; so the output does not depend on where the work ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from medm3.errors import InputError, MedM3Error

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorSpec",
    "LocalExecutor",
    "LostHandler",
    "WorkerLostError",
    "WorkerSpec",
]

#: Executor names accepted by ``--executor``.
EXECUTORS: tuple[str, ...] = ("local", "ray")

#: ``on_lost(index, payload, reason) -> result``: the result of an item whose
#: worker died on every attempt (it is recorded once, never retried forever).
LostHandler = Callable[[int, Any, str], Any]


class WorkerLostError(MedM3Error):
    """An item's worker died on every attempt (a crash, a lost node, out of memory)."""


@dataclass(frozen=True)
class WorkerSpec:
    """How to build a worker: ``cls(**kwargs)``; the worker is then called with each payload.

    Attributes:
        cls: A class importable by every process (a top-level class of an installed module).
        kwargs: Constructor keywords (picklable).
    """

    cls: type
    kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Any:
        """Build the worker."""
        return self.cls(**self.kwargs)


@dataclass(frozen=True)
class ExecutorSpec:
    """The ``--executor`` options.

    Attributes:
        kind: ``local`` or ``ray``.
        address: Ray cluster: ``auto`` (a running cluster), ``HOST:PORT``, or None
            (Ray's default: ``RAY_ADDRESS``, a cluster started on this machine,
            else a new local one).
        workers: Number of Ray actors (default: as many as the cluster fits).
        gpus_per_worker: GPUs each actor reserves (0: CPU only).
        cpus_per_worker: CPUs each actor reserves.
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def check(self) -> None:
        """Check the values (no cluster contact).

        Raises:
            InputError: An unknown executor or an out-of-range number.
        """
        if self.kind not in EXECUTORS:
            raise InputError(
                f"unknown executor {self.kind!r}; choose one of: {', '.join(EXECUTORS)}"
            )
        if self.kind == "local":
            given = [
                name
                for name, value, default in (
                    ("--address", self.address, None),
                    ("--workers", self.workers, None),
                    ("--gpus-per-worker", self.gpus_per_worker, 0.0),
                )
                if value != default
            ]
            if given:
                raise InputError(f"{', '.join(given)} need(s) --executor ray")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, not {self.workers}")
        if self.gpus_per_worker < 0:
            raise InputError(f"--gpus-per-worker must not be negative, not {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise InputError(f"CPUs per worker must be positive, not {self.cpus_per_worker}")


class Executor(ABC):
    """Runs a worker over payloads; see the module docstring."""

    #: Registry name (``local``, ``ray``).
    name: str = ""

    @property
    def is_local(self) -> bool:
        """True when the work runs in this process."""
        return False

    def map(
        self,
        spec: WorkerSpec,
        payloads: Sequence[Any],
        *,
        on_lost: LostHandler | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Run ``spec``'s worker on every payload; yield ``(index, result)`` once per payload.

        Results may come in any order (the local executor keeps the input order).
        An exception raised by the worker propagates to the caller unchanged (a
        job that must survive bad items catches them in its worker). An item
        whose worker process dies is retried on another worker; when it died on
        every attempt, ``on_lost`` gives its result (without one,
        :class:`WorkerLostError` is raised). No payloads: no worker is built.

        Args:
            spec: The worker.
            payloads: One payload per item (picklable for remote executors).
            on_lost: Result of an item that kept killing its workers.
        """
        if payloads:
            yield from self._run(spec, payloads, on_lost)

    @abstractmethod
    def _run(
        self, spec: WorkerSpec, payloads: Sequence[Any], on_lost: LostHandler | None
    ) -> Iterator[tuple[int, Any]]:
        """:meth:`map` for at least one payload (what each executor implements)."""

    def close(self) -> None:
        """Release what the executor holds (actors, a cluster it started)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Everything in this process, in input order, with one worker."""

    name = "local"

    @property
    def is_local(self) -> bool:
        """Always True."""
        return True

    def _run(
        self, spec: WorkerSpec, payloads: Sequence[Any], on_lost: LostHandler | None
    ) -> Iterator[tuple[int, Any]]:
        """Build the worker once and call it on each payload in order."""
        worker = spec.create()
        for index, payload in enumerate(payloads):
            yield index, worker(payload)
