"""The build engine behind ``m3 data build``: sharded, resumable, atomic, deterministic.

Design:

* All work happens in a hidden staging folder beside the output,
  ``.{OUT}.partial/``. Nothing appears under the final name until the build
  has finished; then the staging folder is renamed to ``OUT`` in one step
  (with ``overwrite``, the old ``OUT`` is moved aside first and deleted after).
* The builder's items are cut into shards of ``shard_size`` items. Each
  finished shard is saved as ``.shards/NNNNNN.json`` (rows, bad and skipped
  ids; written atomically). Images are written into the staging folder as
  items are converted.
* ``.build-state.json`` records what is being built (builder and version,
  source, options, seed, limit, shard size, source checksums). A rerun with
  the same state skips the finished shards; any difference starts afresh.
  Items are converted independently with an RNG seeded from the seed and the
  item id, so a resumed build is byte-identical to an uninterrupted one.
* Malformed rows (:class:`~medm3.data.base.BadRow`) are counted; as soon as
  more than ``max_bad_fraction`` of all items are bad the build stops with
  :class:`TooManyBadRowsError` and the staging folder is removed.
* At the end the split files ``{split}.json`` and ``manifest.json`` are
  written (no timestamps: same inputs, same bytes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.data.base import IMAGE_MODES, Builder, Item
from medm3.data.llava import FORMAT, MANIFEST_NAME, sha256_file, split_counts, write_rows
from medm3.data.staging import (
    SHARDS_DIR,
    STATE_NAME,
    open_staging,
    publish,
    staging_path,
    sweep_temporaries,
)
from medm3.errors import InputError
from medm3.executors.base import ExecutorSpec

if TYPE_CHECKING:  # pragma: no cover
    from medm3.executors.base import Executor

#: Default of ``--max-bad-fraction``.
DEFAULT_MAX_BAD_FRACTION = 0.05


class TooManyBadRowsError(InputError):
    """More source rows are malformed than ``--max-bad-fraction`` allows."""


@dataclass
class BuildSummary:
    """What a finished build produced.

    Attributes:
        output: The output folder.
        manifest: The manifest written into it.
        reused_items: Items taken from shards of an earlier, interrupted run.
    """

    output: Path
    manifest: dict[str, Any]
    reused_items: int = 0

    def line(self) -> str:
        """One summary line, e.g. ``wrote out/: train 12 rows, test 4 rows (1 bad, 0 skipped)``."""
        counts = self.manifest["counts"]
        parts = ", ".join(f"{split} {c['rows']} rows" for split, c in counts.items())
        bad = self.manifest["bad"]["count"]
        skipped = self.manifest["skipped"]["count"]
        return f"wrote {self.output}: {parts} ({bad} bad, {skipped} skipped)"


def build_dataset(
    name: str,
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    limit: int | None = None,
    shard_size: int | None = None,
    resume: bool = True,
    progress: bool | None = None,
    image_mode: str = "copy",
    executor: Executor | ExecutorSpec | None = None,
) -> BuildSummary:
    """Build a dataset folder (split JSONs, images, manifest) from a public source.

    Args:
        name: Builder name (``vqa-rad`` ...; see :func:`medm3.data.registry.builder_names`).
        source: The downloaded dataset (folder or file, as the builder documents).
        output: Output folder (must not exist unless ``overwrite``).
        options: Builder-specific options by key.
        seed: Seed of all random choices.
        overwrite: Replace an existing output folder (only once the build succeeded).
        max_bad_fraction: Largest tolerated fraction of malformed source rows.
        limit: Use only the first ``limit`` items (quick trial builds).
        shard_size: Items per shard (default: the builder's).
        resume: Reuse the finished shards of an interrupted identical build.
        progress: Show a tqdm bar on stderr (None: only when stderr is a terminal).
        image_mode: How source images are placed: ``copy``, ``hardlink`` or ``symlink``
            (rendered images are always written).
        executor: Where the shards are converted (default: this process; see
            :mod:`medm3.data.distributed`); a spec is turned into an executor after
            the source checks and closed at the end. The output is the same either way.

    Returns:
        The summary with the manifest.

    Raises:
        InputError: Bad arguments, missing source, wrong layout, existing output,
            no usable rows, or too many bad rows (:class:`TooManyBadRowsError`).
    """
    from medm3.data.registry import get_builder

    cls = get_builder(name)
    src, out = Path(source), Path(output)
    _check_arguments(max_bad_fraction, limit, shard_size, image_mode)
    if not src.exists():
        raise InputError("source not found", src)
    if out.exists() and not overwrite:
        raise InputError("output already exists (pass --overwrite to replace it)", out)
    builder = cls(src, options, seed=seed)
    builder.check_source()
    size = int(shard_size or cls.shard_size)
    state = _build_state(builder, limit, size, image_mode)
    items = _source_items(builder, limit)
    executor, owned = _open_executor(executor)
    try:
        staging = staging_path(out)
        open_staging(staging, state, resume)
        run = _Run(builder, staging, len(items), max_bad_fraction, image_mode)
        shards = [items[i : i + size] for i in range(0, len(items), size)]
        _convert(run, shards, executor, _progress(len(items), cls.name, progress))
    finally:
        if owned is not None:
            owned.close()
    manifest = run.finish(state)
    sweep_temporaries(staging)  # left by workers or builds killed mid-write
    publish(staging, out)
    return BuildSummary(output=out, manifest=manifest, reused_items=run.reused)


def _build_state(builder: Builder, limit: int | None, size: int, image_mode: str) -> dict[str, Any]:
    """What is being built (a rerun with the same state resumes); source files checksummed."""
    src = builder.source
    return {
        "builder": builder.name,
        "builder_version": builder.version,
        "source": str(src.resolve()),
        "options": _jsonable(builder.opts),
        "seed": builder.seed,
        "limit": limit,
        "shard_size": size,
        "image_mode": image_mode,
        "source_checksums": {_relative(p, src): sha256_file(p) for p in builder.annotation_files()},
    }


def _source_items(builder: Builder, limit: int | None) -> list[Item]:
    """The builder's items (ids checked), cut to ``limit``.

    Raises:
        InputError: Duplicate ids, or no items.
    """
    items = list(builder.items())
    _check_ids(items, builder.name)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise InputError(f"no {builder.name} rows found in the source", builder.source)
    return items


def _open_executor(
    executor: Executor | ExecutorSpec | None,
) -> tuple[Executor | None, Executor | None]:
    """``(executor to use, the one to close after)``: a spec is turned into its executor."""
    if isinstance(executor, ExecutorSpec):
        from medm3.executors.factory import make_executor

        made = make_executor(executor)
        return made, made
    return executor, None


def _convert(run: _Run, shards: list[list[Item]], executor: Executor | None, bar: Any) -> None:
    """Convert every shard, here or on ``executor``."""
    try:
        if executor is None or executor.is_local:
            for index, shard in enumerate(shards):
                run.shard(index, shard, bar)
        else:
            run.shards_on(executor, shards, bar)
    finally:
        bar.close()


class _Run:
    """Shard processing and assembly of one build."""

    def __init__(
        self,
        builder: Builder,
        staging: Path,
        n_items: int,
        max_bad_fraction: float,
        image_mode: str,
    ) -> None:
        self.builder = builder
        self.image_mode = image_mode
        self.staging = staging
        self.n_items = n_items
        self.max_bad = max_bad_fraction
        self.bad: list[dict[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.reused = 0
        source = builder.source
        self.source_root = source if source.is_dir() else source.parent
        from medm3.imaging.limits import ReadLimits

        self.limits = ReadLimits.from_env()

    def _shard_file(self, index: int) -> Path:
        return self.staging / SHARDS_DIR / f"{index:06d}.json"

    def shard(self, index: int, items: list[Item], bar: Any) -> None:
        path = self._shard_file(index)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            self.reused += len(items)
            bar.update(len(items))
        else:
            data = self._convert(items, bar)
            from medm3.utils.atomic import atomic_write_text

            atomic_write_text(path, json.dumps(data, ensure_ascii=False))
        self.bad.extend(data["bad"])
        self.skipped.extend(data["skipped"])
        self._check_bad()

    def _convert(self, items: list[Item], bar: Any) -> dict[str, Any]:
        from medm3.data.distributed import convert_shard

        return convert_shard(
            self.builder,
            items,
            self.staging,
            self.image_mode,
            bar.update,
            source_root=self.source_root,
            limits=self.limits,
        )

    def shards_on(self, executor: Executor, shards: list[list[Item]], bar: Any) -> None:
        """Convert the unfinished shards on ``executor``; account all in shard order."""
        from medm3.data.distributed import ShardWorker, lost_shard
        from medm3.executors.base import WorkerSpec
        from medm3.utils.atomic import atomic_write_text

        done: dict[int, dict[str, Any]] = {}
        for index, items in enumerate(shards):
            if (path := self._shard_file(index)).is_file():
                done[index] = json.loads(path.read_text(encoding="utf-8"))
                self.reused += len(items)
                bar.update(len(items))
        pending = [i for i in range(len(shards)) if i not in done]
        staging = str(self.staging.resolve())
        spec = WorkerSpec(
            ShardWorker,
            {
                "builder": self.builder,
                "staging": staging,
                "image_mode": self.image_mode,
                "source_root": str(self.source_root.resolve()),
                "limits": self.limits,
            },
        )
        n_bad = sum(len(d["bad"]) for d in done.values())
        results = executor.map(spec, [shards[i] for i in pending], on_lost=lost_shard)
        with contextlib.closing(results):  # stops the workers on any exit
            for k, data in results:
                index = pending[k]
                atomic_write_text(self._shard_file(index), json.dumps(data, ensure_ascii=False))
                done[index] = data
                bar.update(len(shards[index]))
                n_bad += len(data["bad"])
                if n_bad > self.max_bad * self.n_items:
                    break  # accounted below, in order; _check_bad then stops the build
        for index in sorted(done):
            self.bad.extend(done[index]["bad"])
            self.skipped.extend(done[index]["skipped"])
        self._check_bad()

    def _check_bad(self) -> None:
        if len(self.bad) <= self.max_bad * self.n_items:
            return
        shutil.rmtree(self.staging, ignore_errors=True)
        first = self.bad[0]
        raise TooManyBadRowsError(
            f"{self.builder.name}: {len(self.bad)} of {self.n_items} source rows are malformed "
            f"(more than --max-bad-fraction {self.max_bad:g}); first: {first['id']}: "
            f"{first['reason']}; nothing was written"
        )

    def finish(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Write the split files and the manifest into the staging folder."""
        from medm3 import __version__
        from medm3.utils.atomic import atomic_write_text

        by_split: dict[str, list[dict[str, Any]]] = {}
        index = 0
        while (path := self._shard_file(index)).is_file():
            for split, row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
                by_split.setdefault(split, []).append(row)
            index += 1
        if not by_split:
            shutil.rmtree(self.staging, ignore_errors=True)
            reasons = Counter(s["reason"] for s in self.skipped).most_common(2)
            why = "; ".join(f"{n} x {r}" for r, n in reasons) or "all rows were bad"
            raise InputError(
                f"{self.builder.name}: no rows were produced from {self.n_items} source items "
                f"({why}); nothing was written"
            )
        _check_row_ids(by_split)
        order = [s for s in self.builder.splits if s in by_split]
        order += sorted(s for s in by_split if s not in order)
        files: dict[str, str] = {}
        counts: dict[str, Any] = {}
        for split in order:
            files[split] = f"{split}.json"
            write_rows(self.staging / files[split], by_split[split])
            counts[split] = split_counts(by_split[split])
        manifest = {
            "format": FORMAT,
            "builder": state["builder"],
            "builder_version": state["builder_version"],
            "medm3_version": __version__,
            "seed": state["seed"],
            "options": state["options"],
            "limit": state["limit"],
            "image_mode": state["image_mode"],
            "source": state["source"],
            "source_checksums": state["source_checksums"],
            "files": files,
            "counts": counts,
            "total_rows": sum(c["rows"] for c in counts.values()),
            "source_items": self.n_items,
            "bad": {"count": len(self.bad), "max_fraction": self.max_bad, "rows": self.bad},
            "skipped": {
                "count": len(self.skipped),
                "reasons": dict(sorted(Counter(s["reason"] for s in self.skipped).items())),
                "rows": self.skipped,
            },
        }
        atomic_write_text(
            self.staging / MANIFEST_NAME, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
        )
        shutil.rmtree(self.staging / SHARDS_DIR, ignore_errors=True)
        (self.staging / STATE_NAME).unlink(missing_ok=True)
        return manifest


# ------------------------------------------------------------------ helpers
def _check_arguments(
    max_bad_fraction: float, limit: int | None, shard_size: int | None, image_mode: str
) -> None:
    if image_mode not in IMAGE_MODES:
        raise InputError(
            f"--image-mode must be one of {', '.join(IMAGE_MODES)}, not {image_mode!r}"
        )
    if not 0.0 <= float(max_bad_fraction) <= 1.0:
        raise InputError(f"--max-bad-fraction must be between 0 and 1, not {max_bad_fraction}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, not {limit}")
    if shard_size is not None and shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {shard_size}")


def _check_ids(items: list[Item], name: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{name}: the source lists the id {item.id!r} twice")
        seen.add(item.id)


def _check_row_ids(by_split: Mapping[str, list[dict[str, Any]]]) -> None:
    seen: set[str] = set()
    for rows in by_split.values():
        for row in rows:
            if row["id"] in seen:
                raise RuntimeError(f"builder produced the row id {row['id']!r} twice")
            seen.add(row["id"])


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
        for k, v in sorted(values.items())
    }


class _NoBar:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int, name: str, progress: bool | None) -> Any:
    if progress is False:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=f"m3 data build {name}",
        unit="item",
        file=sys.stderr,
        disable=None if progress is None else False,
        dynamic_ncols=True,
    )
