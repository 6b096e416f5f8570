"""When to show progress bars."""

from __future__ import annotations

import os
import sys


def progress_enabled() -> bool:
    """True when progress bars help: stderr is a terminal and ``MEDM3_NO_PROGRESS`` is unset.

    Logs and captured output (CI, ``--json`` pipelines, servers) stay free of
    bar redraws.
    """
    if os.environ.get("MEDM3_NO_PROGRESS", "").strip() not in ("", "0"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
