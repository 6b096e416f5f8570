"""Helpers for CLI tests: run the real `m3` entry point in-process and check errors."""

from __future__ import annotations

import pytest

from medm3.cli.main import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``m3 ARGS`` through :func:`medm3.cli.main.main`; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else int(code)), out, err


def assert_one_line_error(code: int, err: str, needle: str, exit_code: int = 2) -> None:
    """A user error: the given exit code and exactly one ``m3: error:`` line, no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("m3: error:") and needle in lines[0], lines[0]
