"""The staging folder of a build: where a build works until it is published in one rename.

``.{OUT}.partial/`` beside the output holds the build state
(:data:`STATE_NAME`), the finished shards (:data:`SHARDS_DIR`) and the images
written so far. An identical rerun reuses it; :func:`publish` renames it to
the output when the build has finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Name of the build-state file inside the staging folder.
STATE_NAME = ".build-state.json"
#: Folder of finished shards inside the staging folder.
SHARDS_DIR = ".shards"


def staging_path(output: Path) -> Path:
    """The hidden staging folder of an output folder (``.NAME.partial`` beside it)."""
    return output.parent / f".{output.name}.partial"


def open_staging(staging: Path, state: Mapping[str, Any], resume: bool) -> None:
    """Reuse the staging folder of an identical interrupted build, else start it afresh."""
    state_file = staging / STATE_NAME
    if staging.exists():
        saved = None
        if resume and state_file.is_file():
            try:
                saved = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = None
        if saved == dict(state):
            sweep_temporaries(staging)
            return
        shutil.rmtree(staging)
    from medm3.utils.atomic import atomic_write_text

    (staging / SHARDS_DIR).mkdir(parents=True)
    atomic_write_text(state_file, json.dumps(state, ensure_ascii=False, sort_keys=True))


#: Names of the temporary files of :func:`medm3.utils.atomic.atomic_path`
#: (``.NAME.XXXXXXXX.SUFFIX``) and of :meth:`ItemContext.link_or_copy` (``.NAME.link``).
_TEMPORARY = re.compile(r"^\..+(\.[a-z0-9_]{8}(\..*)?|\.link)$")


def sweep_temporaries(staging: Path) -> int:
    """Delete temporary files a killed build left in its staging folder.

    ``kill -9`` skips every cleanup, so an image being written at that moment
    stays as a hidden (often 0-byte) temporary file. Resuming, and publishing,
    first remove them so none reaches the final output.

    Args:
        staging: The staging folder.

    Returns:
        How many files were removed.
    """
    removed = 0
    for folder, _dirs, files in os.walk(staging):
        for name in files:
            path = Path(folder, name)
            if name == STATE_NAME and path.parent == staging:
                continue
            if _TEMPORARY.match(name):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def publish(staging: Path, output: Path) -> None:
    """Move the finished staging folder to the output name (replacing an old output)."""
    old = output.parent / f".{output.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if output.exists() or output.is_symlink():
        os.replace(output, old)
    os.replace(staging, output)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():
        old.unlink()
