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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.data.base import BadRow, Builder, Item, ItemContext, SkipRow, item_rng

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.limits import ReadLimits

__all__ = ["ShardWorker", "convert_shard", "lost_shard"]


def convert_shard(
    builder: Builder,
    items: Sequence[Item],
    staging: Path,
    image_mode: str,
    tick: Callable[[int], Any] | None = None,
    *,
    source_root: Path | None = None,
    limits: ReadLimits | None = None,
) -> dict[str, Any]:
    """Convert one shard: ``{"items", "rows", "bad", "skipped"}`` (the shard file's content).

    Args:
        builder: The builder (its ``prepare`` hook runs first).
        items: The shard's items.
        staging: The staging folder images are written into.
        image_mode: ``copy``, ``hardlink`` or ``symlink``.
        tick: Called with 1 after each item (progress).
        source_root: The dataset folder source images must stay inside.
        limits: Decoding limits for source images (default: from the environment).
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
            source_root=source_root,
            limits=limits,
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
        source_root: Absolute path of the dataset folder source images must stay inside.
        limits: Decoding limits for source images.
    """

    def __init__(
        self,
        builder: Builder,
        staging: str,
        image_mode: str,
        source_root: str | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        self.builder = builder
        self.staging = Path(staging)
        self.image_mode = image_mode
        self.source_root = Path(source_root) if source_root is not None else None
        self.limits = limits

    def __call__(self, items: Sequence[Item]) -> dict[str, Any]:
        """The shard file content of ``items``."""
        return convert_shard(
            self.builder,
            items,
            self.staging,
            self.image_mode,
            source_root=self.source_root,
            limits=self.limits,
        )


def lost_shard(_index: int, items: Sequence[Item], reason: str) -> dict[str, Any]:
    """A shard whose worker died on every attempt: each item is a bad row (recorded once)."""
    why = f"the worker died on every attempt ({reason})"
    return {
        "items": len(items),
        "rows": [],
        "bad": [{"id": item.id, "reason": why} for item in items],
        "skipped": [],
    }
