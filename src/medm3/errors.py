"""Exception types shared by the whole package.

The CLI turns every :class:`MedM3Error` into one line on stderr and a non-zero
exit code, without a traceback. Anything else is a bug and keeps its traceback.

Exit codes: 1 model or other runtime failure (:class:`MedM3Error`), 2 bad input
(:class:`InputError`, and click's usage errors), 3 missing weights or optional
packages (``WeightsNotFoundError``, :class:`MissingDependencyError`).
"""

from __future__ import annotations

import os


class MedM3Error(Exception):
    """Base class of the errors medm3 reports to users as one clear line.

    Args:
        message: What went wrong, phrased for the user (one line, short).
        path: The file or folder the problem is about, if any; it is prefixed
            to the message so the user knows which input to fix.
        details: Longer explanations (lists of files, positions ...), shown
            by the CLI only with ``m3 --verbose``.
    """

    exit_code: int = 1

    def __init__(
        self,
        message: str,
        path: str | os.PathLike[str] | None = None,
        *,
        details: list[str] | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.details = list(details or [])
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InputError(MedM3Error):
    """The user's input (a file, an option, a value) cannot be used."""

    exit_code = 2


class MissingDependencyError(MedM3Error):
    """An optional dependency is not installed; the message names the extra to install."""

    exit_code = 3

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed. "
            f'Install it with: pip install "medm3[{extra}]"'
        )
        self.package = package
        self.extra = extra
