"""Training checkpoints in ``OUTPUT_DIR/checkpoint-STEP``: find, validate, prune.

A checkpoint is written by ``accelerator.save_state`` into
``.checkpoint-STEP.tmp``, completed with ``trainer_state.json`` and only then
renamed, so a folder named ``checkpoint-STEP`` is always complete (a crash
mid-save leaves a ``.tmp`` folder that is ignored and removed by the next save).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from medm3.errors import InputError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_NAME = "trainer_state.json"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """Final folder of the checkpoint after ``step`` optimizer steps."""
    return Path(output_dir) / f"checkpoint-{step}"


def temp_dir(output_dir: Path, step: int) -> Path:
    """Folder a checkpoint is written to before being renamed."""
    return Path(output_dir) / f".checkpoint-{step}.tmp"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of ``output_dir`` as ``(step, folder)``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for item in root.iterdir():
        match = CHECKPOINT_RE.match(item.name)
        if match and item.is_dir() and (item / STATE_NAME).is_file():
            found.append((int(match.group(1)), item))
    return sorted(found)


def read_state(folder: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint.

    Raises:
        InputError: Not a checkpoint folder written by ``m3 train``.
    """
    path = Path(folder) / STATE_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"not an m3 train checkpoint (no readable {STATE_NAME})", folder) from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise InputError(f"{STATE_NAME} has no step", folder)
    return data


def resume_from(output_dir: Path, resume: str) -> Path | None:
    """The checkpoint to continue from, per ``train.resume``.

    Args:
        output_dir: The run's output folder.
        resume: ``auto``, ``never`` or a checkpoint folder.

    Returns:
        A checkpoint folder, or ``None`` to start from the base model.

    Raises:
        InputError: ``never`` while checkpoints exist, or a bad folder.
    """
    existing = list_checkpoints(output_dir)
    if resume == "auto":
        return existing[-1][1] if existing else None
    if resume == "never":
        if existing:
            raise InputError(
                f"{len(existing)} checkpoint(s) already in the output folder; use "
                "train.resume=auto to continue, or another train.output_dir",
                output_dir,
            )
        return None
    folder = Path(resume)
    read_state(folder)
    return folder


def finalize(tmp: Path, final: Path, state: dict[str, Any]) -> None:
    """Write ``trainer_state.json`` into ``tmp`` and rename it to ``final``."""
    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def prune(output_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and stale temp folders).

    Returns:
        The folders removed.
    """
    removed = []
    for _, folder in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def clear_temp(output_dir: Path) -> None:
    """Remove leftovers of interrupted saves (``.checkpoint-*.tmp``)."""
    root = Path(output_dir)
    if root.is_dir():
        for item in root.glob(".checkpoint-*.tmp"):
            shutil.rmtree(item, ignore_errors=True)
