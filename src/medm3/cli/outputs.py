"""Output checks shared by the commands that write files (``render``, ``experts run``, ``data``).

A read-only or full file system must give one ``m3: error:`` line naming the
output, ideally before any long work starts: :func:`check_output_location`
probes the nearest existing folder by creating (and removing) a temporary
file there, which also catches what permission bits do not show (``root`` on a
read-only mount, ``/sys``). :func:`writing` turns an ``OSError`` raised while
writing into the same kind of line.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medm3.errors import InputError


def check_output_location(path: str | os.PathLike[str], *, is_dir: bool = False) -> None:
    """Fail early when ``path`` cannot be written.

    Args:
        path: The output file or folder (it need not exist yet).
        is_dir: Whether ``path`` is a folder to create or fill.

    Raises:
        InputError: The nearest existing folder is not a folder or does not
            accept new files.
    """
    out = Path(path)
    probe = out if is_dir else out.parent
    probe = Path(os.path.abspath(probe))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write the output: {probe} is not a folder", out)
    try:
        fd, name = tempfile.mkstemp(prefix=".m3-write-check-", dir=probe)
    except OSError as exc:
        raise InputError(
            f"cannot write the output: {probe} does not accept new files ({exc.strerror})", out
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Report an ``OSError`` raised while writing ``path`` as one clear line.

    Args:
        path: The output being written (named in the message).

    Raises:
        InputError: Instead of the ``OSError``.
    """
    try:
        yield
    except OSError as exc:
        raise InputError(f"cannot write the output ({exc.strerror or exc})", path) from None
