"""The ``--executor`` options of ``m3 experts run``, ``m3 data build`` and ``m3 eval run``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from medm3.executors.base import EXECUTORS, ExecutorSpec

F = TypeVar("F", bound=Callable[..., Any])

#: Keyword names the options add to a command's callback.
OPTION_KEYS: tuple[str, ...] = ("executor", "address", "workers", "gpus_per_worker")


def _declarations() -> list[tuple[list[str], dict[str, Any]]]:
    return [
        (
            ["--executor"],
            {
                "type": click.Choice(list(EXECUTORS)),
                "default": "local",
                "show_default": True,
                "help": "Where the work runs: this process, or Ray actors "
                "(pip install 'medm3[ray]').",
            },
        ),
        (
            ["--address"],
            {
                "default": None,
                "help": "Ray cluster: auto (a running one) or HOST:PORT (default: RAY_ADDRESS, "
                "a cluster started on this machine, else a new local one).",
            },
        ),
        (
            ["--workers"],
            {"type": int, "default": None, "help": "Ray workers (default: as many as fit)."},
        ),
        (
            ["--gpus-per-worker"],
            {
                "type": float,
                "default": 0.0,
                "show_default": True,
                "help": "GPUs each Ray worker reserves.",
            },
        ),
    ]


def executor_params() -> list[click.Option]:
    """The four options as click parameters (for commands built from classes)."""
    return [click.Option(decls, **kwargs) for decls, kwargs in _declarations()]


def executor_options(func: F) -> F:
    """Decorator adding ``--executor``, ``--address``, ``--workers``, ``--gpus-per-worker``."""
    for decls, kwargs in reversed(_declarations()):
        func = click.option(*decls, **kwargs)(func)
    return func


def spec_from_options(values: dict[str, Any]) -> ExecutorSpec:
    """Pop the executor keywords from a callback's keywords; the checked spec.

    Raises:
        InputError: Ray options without ``--executor ray`` or a bad number.
    """
    spec = ExecutorSpec(
        kind=values.pop("executor", None) or "local",
        address=values.pop("address", None),
        workers=values.pop("workers", None),
        gpus_per_worker=float(values.pop("gpus_per_worker", None) or 0.0),
    )
    spec.check()
    return spec
