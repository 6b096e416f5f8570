"""Shard conversion, shared by the local build loop and remote workers (``--executor``).

:func:`convert_shard` is the one place where a shard's items become rows. A
build on an executor sends whole shards to :class:`ShardWorker` objects (one
per worker process, holding a copy of the driver's builder, so an expert the
builder loads stays warm across shards); the driver alone writes the shard
files, in any order, and assembles the splits and manifest in shard order, so
the output is the same wherever the shards ran. Images are written by the
workers straight into the staging folder, which must be on storage every
worker sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medm3.data.base import BadRow, Builder, Item, ItemContext, SkipRow, item_rng

__all__ = ["ShardWorker", "convert_shard", "lost_shard", "remove_stray_temp_files"]

#: Temporary files of :func:`medm3.utils.atomic.atomic_path` (``.NAME.XXXXXXXX.SUFFIX``)
#: and of :meth:`ItemContext.link_or_copy` (``.NAME.link``).
_TEMP_FILE = re.compile(r"\..+\.(?:[A-Za-z0-9_]{8}(?:\.[A-Za-z0-9]+)+|link)")


def convert_shard(
    builder: Builder,
    items: Sequence[Item],
    staging: Path,
    image_mode: str,
    tick: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Convert one shard: ``{"items", "rows", "bad", "skipped"}`` (the shard file's content).

    Args:
        builder: The builder (its ``prepare`` hook runs first).
        items: The shard's items.
        staging: The staging folder images are written into.
        image_mode: ``copy``, ``hardlink`` or ``symlink``.
        tick: Called with 1 after each item (progress).
    """
    builder.prepare(items)
    rows: list[list[Any]] = []
    bad: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        ctx = ItemContext(
            out=staging,
            rng=item_rng(builder.seed, builder.name, item.id),
            seed=builder.seed,
            image_mode=image_mode,
        )
        try:
            produced = builder.convert(item, ctx)
        except BadRow as exc:
            bad.append({"id": item.id, "reason": exc.reason})
        except SkipRow as exc:
            skipped.append({"id": item.id, "reason": exc.reason})
        else:
            rows.extend([item.split, row] for row in produced)
        if tick is not None:
            tick(1)
    return {"items": len(items), "rows": rows, "bad": bad, "skipped": skipped}


class ShardWorker:
    """Converts whole shards in a worker process (see the module docstring).

    Args:
        builder: The driver's builder (pickled to the worker).
        staging: Absolute path of the staging folder.
        image_mode: ``copy``, ``hardlink`` or ``symlink``.
    """

    def __init__(self, builder: Builder, staging: str, image_mode: str) -> None:
        self.builder = builder
        self.staging = Path(staging)
        self.image_mode = image_mode

    def __call__(self, items: Sequence[Item]) -> dict[str, Any]:
        """The shard file content of ``items``."""
        return convert_shard(self.builder, items, self.staging, self.image_mode)


def lost_shard(_index: int, items: Sequence[Item], reason: str) -> dict[str, Any]:
    """A shard whose worker died on every attempt: each item is a bad row (recorded once)."""
    why = f"the worker died on every attempt ({reason})"
    return {
        "items": len(items),
        "rows": [],
        "bad": [{"id": item.id, "reason": why} for item in items],
        "skipped": [],
    }


def remove_stray_temp_files(staging: Path) -> int:
    """Delete temporary files a killed worker left in the staging folder; how many.

    A worker killed while writing an image (``ray.kill``, a lost node, ``kill -9``)
    leaves the hidden temporary file of its atomic write behind; the item is
    converted again elsewhere, so the file is garbage, and must not be published.
    """
    removed = 0
    for path in staging.rglob(".*"):
        if (path.is_file() or path.is_symlink()) and _TEMP_FILE.fullmatch(path.name):
            path.unlink()
            removed += 1
    return removed
