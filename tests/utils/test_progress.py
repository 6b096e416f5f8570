"""Progress bars only on a terminal, and never when MEDM3_NO_PROGRESS is set."""

from __future__ import annotations

import io
import sys

import pytest

from medm3.utils.progress import progress_enabled


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_shows_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDM3_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress_enabled()
    monkeypatch.setenv("MEDM3_NO_PROGRESS", "1")
    assert not progress_enabled()


def test_pipes_and_logs_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDM3_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_enabled()
