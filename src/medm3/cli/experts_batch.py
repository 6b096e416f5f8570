"""The batch part of ``m3 experts run``: many inputs, one result folder each, one table.

Kept apart from :mod:`medm3.cli.experts` (the single-run path) so both stay small.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from medm3.cli.experts_run import RunOptions, check_run_options
from medm3.errors import InputError, MedM3Error

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import Expert
    from medm3.experts.batch import BatchSettings

F = TypeVar("F", bound=Callable[..., Any])

#: Keywords the batch options add to the ``run`` callback.
BATCH_KEYS = ("list_file", "folder", "batch_flag", "retry_failed", "progress")


def batch_options(func: F) -> F:
    """Decorator adding the batch options (--list, --folder, --batch, --retry-failed ...)."""
    decorators = [
        click.option(
            "--list",
            "list_file",
            type=click.Path(path_type=Path),
            help="Batch: a .csv/.jsonl list of inputs (column input, or one per input name; "
            "optional id, mask).",
        ),
        click.option(
            "--folder",
            type=click.Path(path_type=Path),
            help="Batch: every image file and DICOM series folder in DIR.",
        ),
        click.option(
            "--batch", "batch_flag", is_flag=True, help="Batch run even for a single IMAGE."
        ),
        click.option(
            "--retry-failed", is_flag=True, help="Batch: run inputs that failed before again."
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Batch: progress bar on stderr (default: when it is a terminal).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def is_batch_run(name: str, images: tuple[str, ...], options: Mapping[str, Any]) -> bool:
    """Batch: --list/--folder/--batch/--executor ray, or several images for a 1-input expert."""
    if options.get("list_file") or options.get("folder") or options.get("batch_flag"):
        return True
    if options.get("executor", "local") != "local":
        return True
    if len(images) > 1 and not any("=" in t and not Path(t).exists() for t in images):
        from medm3.experts.registry import get_expert_class

        return len(get_expert_class(name).inputs) == 1
    return False


def run_batch_command(
    name: str, images: tuple[str, ...], options: dict[str, Any], opts: RunOptions
) -> None:
    """Check everything cheap, then run the batch and print one summary line (or JSON).

    Args:
        name: The expert.
        images: Inputs given on the command line (besides --list / --folder).
        options: The batch and executor options (:data:`BATCH_KEYS`, ``--executor`` ...).
        opts: The options shared with single runs.

    Raises:
        InputError: Bad options or inputs (before anything runs).
        MedM3Error: Some inputs failed (after the run; they are in the table).
    """
    from medm3.executors import make_executor
    from medm3.executors.cli import spec_from_options
    from medm3.experts.batch import collect_inputs, run_batch

    spec = spec_from_options(options)
    cls, settings = _batch_settings(name, opts)
    items = collect_inputs(
        images, cls.inputs, list_file=options.get("list_file"), folder=options.get("folder")
    )
    assert opts.out_dir is not None
    with make_executor(spec) as executor:
        summary = run_batch(
            settings,
            items,
            opts.out_dir,
            executor=executor,
            retry_failed=bool(options.get("retry_failed")),
            progress=options.get("progress"),
        )
    if opts.as_json:
        payload = {
            "output": str(summary.out_dir),
            "total": summary.total,
            "ok": summary.ok,
            "failed": summary.failed,
            "resumed": summary.resumed,
        }
        click.echo(json.dumps(payload, indent=1))
    else:
        click.echo(summary.line())
    if summary.failed:
        raise MedM3Error(
            f"{summary.failed} of {summary.total} inputs failed; their errors are in "
            f"{summary.out_dir / 'results.csv'}"
        )


def _batch_settings(name: str, opts: RunOptions) -> tuple[type[Expert], BatchSettings]:
    """The cheap checks of a batch run (nothing read yet) and its settings."""
    from medm3.experts.batch import BatchSettings
    from medm3.experts.catalogue import resolve_weights
    from medm3.experts.registry import get_expert
    from medm3.imaging.labels import load_label_map

    if opts.out_dir is None:
        raise InputError("a batch run needs -o/--output FOLDER")
    if opts.mask_path is not None:
        raise InputError("a batch run takes masks from a 'mask' column of --list, not --mask")
    cls = check_run_options(name, opts)
    if opts.labels_path is not None:
        load_label_map(opts.labels_path)
    if cls.weights_name is not None:
        resolve_weights(cls.weights_name, opts.weights_path)
    get_expert(cls.name, weights=opts.weights_path).parse_args(opts.arg)  # a bad arg fails now
    settings = BatchSettings(
        expert=cls.name,
        arg=opts.arg,
        modality=opts.modality,
        device=opts.device,
        weights=str(opts.weights_path) if opts.weights_path is not None else None,
        labels=str(opts.labels_path) if opts.labels_path is not None else None,
        plane=opts.plane,
        slice_index=opts.slice_index,
        use_cache=not opts.no_cache,
    )
    return cls, settings
