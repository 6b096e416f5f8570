"""Small workers for the executor tests (importable by Ray worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class Square:
    """``x -> x * x`` after ``delay`` seconds; counts its calls in ``log`` (one line per call)."""

    def __init__(self, delay: float = 0.0, log: str | None = None) -> None:
        self.delay = delay
        self.log = Path(log) if log else None

    def __call__(self, x: int) -> int:
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(f"{x}\n")
        time.sleep(self.delay)
        return x * x


class Crasher(Square):
    """Like :class:`Square`, but the process dies (as in a segfault) on item ``bad``."""

    def __init__(self, bad: int, delay: float = 0.0, log: str | None = None) -> None:
        super().__init__(delay, log)
        self.bad = bad

    def __call__(self, x: int) -> int:
        if x == self.bad:
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write(f"crash {x}\n")
            os._exit(1)
        return super().__call__(x)


class Raiser(Square):
    """Raises ``ValueError`` on item ``bad`` (a worker exception, not a crash)."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad

    def __call__(self, x: int) -> int:
        if x == self.bad:
            raise ValueError(f"item {x} is bad")
        return super().__call__(x)
