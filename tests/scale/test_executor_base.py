"""The executor interface itself: ``map`` checks the payloads, executors implement ``_run``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from medm3.executors import LocalExecutor, WorkerSpec
from medm3.executors.base import Executor, LostHandler


class Doubler:
    """A worker that counts how often it was built."""

    built = 0

    def __init__(self) -> None:
        Doubler.built += 1

    def __call__(self, payload: int) -> int:
        return 2 * payload


class Reversed(Executor):
    """A third-party executor: only ``_run`` is written, in reverse order."""

    name = "reversed"

    def _run(
        self, spec: WorkerSpec, payloads: Sequence[Any], on_lost: LostHandler | None
    ) -> Iterator[tuple[int, Any]]:
        worker = spec.create()
        for index in reversed(range(len(payloads))):
            yield index, worker(payloads[index])


def test_no_payloads_build_no_worker() -> None:
    Doubler.built = 0
    for executor in (LocalExecutor(), Reversed()):
        assert list(executor.map(WorkerSpec(Doubler), [])) == []
    assert Doubler.built == 0


def test_map_runs_the_executors_own_loop() -> None:
    Doubler.built = 0
    assert list(LocalExecutor().map(WorkerSpec(Doubler), [1, 2, 3])) == [(0, 2), (1, 4), (2, 6)]
    assert list(Reversed().map(WorkerSpec(Doubler), [1, 2])) == [(1, 4), (0, 2)]
    assert Doubler.built == 2
