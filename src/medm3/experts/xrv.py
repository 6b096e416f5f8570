"""torchxrayvision glue (a leaf module: imported by the CXR expert and the weights catalogue)."""

from __future__ import annotations

import warnings
from typing import Any


def import_xrv() -> Any:
    """Import torchxrayvision without letting it silence all Python warnings.

    ``torchxrayvision.models`` calls ``warnings.filterwarnings("ignore")`` at
    import time, process-wide; the filters are restored afterwards.
    """
    with warnings.catch_warnings():
        import torchxrayvision as xrv
    return xrv
