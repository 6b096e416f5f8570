"""Building the executor an :class:`~medm3.executors.base.ExecutorSpec` describes."""

from __future__ import annotations

from medm3.executors.base import Executor, ExecutorSpec, LocalExecutor

__all__ = ["make_executor"]


def make_executor(spec: ExecutorSpec | None = None) -> Executor:
    """The executor ``spec`` describes (local when None).

    Raises:
        InputError: Bad options, Ray not installed, an unreachable cluster, or
            more GPUs per worker than any node has.
    """
    spec = spec or ExecutorSpec()
    spec.check()
    if spec.kind == "local":
        return LocalExecutor()
    from medm3.executors.ray_executor import RayExecutor

    return RayExecutor(
        address=spec.address,
        workers=spec.workers,
        gpus_per_worker=spec.gpus_per_worker,
        cpus_per_worker=spec.cpus_per_worker,
    )
