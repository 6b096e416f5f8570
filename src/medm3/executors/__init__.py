"""Executors: where batch expert runs, data builds and eval runs do their work.

``--executor local`` (the default) runs everything in this process;
``--executor ray`` spreads the items over Ray actors that each keep one model
warm (see ``docs/scale-out.md``). Ray is an optional extra: ``medm3[ray]``.
"""

from medm3.executors.base import (
    EXECUTORS,
    Executor,
    ExecutorSpec,
    LocalExecutor,
    WorkerLostError,
    WorkerSpec,
    make_executor,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorSpec",
    "LocalExecutor",
    "WorkerLostError",
    "WorkerSpec",
    "make_executor",
]
