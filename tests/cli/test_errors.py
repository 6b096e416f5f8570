"""Errors: one short line, details with `m3 --verbose`, JSON with --json, documented exit codes."""

from __future__ import annotations

import json

import click
import pytest

from medm3.cli import main as main_module
from medm3.errors import InputError, MedM3Error, MissingDependencyError
from tests.cli.helpers import run


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch):
    """Register `m3 fail`, raising the error the test puts in ``box``."""
    box: dict[str, Exception] = {}

    @click.command("fail")
    @click.option("--json", "as_json", is_flag=True)
    def fail(as_json: bool) -> None:
        raise box["error"]

    main_module.cli.add_command(fail)
    yield box
    main_module.cli.commands.pop("fail", None)


def test_long_errors_are_cut_and_details_need_verbose(failing, capsys) -> None:
    positions = [f"{z:.1f}" for z in range(0, 400, 2)]
    failing["error"] = InputError(
        "the series has gaps at " + ", ".join(positions), "scan/", details=["missing: x", "y"]
    )
    code, _, err = run(["fail"], capsys)
    (line,) = err.strip().splitlines()
    assert code == 2 and len(line) - len("scan/: ") <= main_module.MAX_ERROR_CHARS
    assert line.startswith("m3: error: scan/: the series has gaps at 0.0, 2.0")
    assert line.endswith("... (more: m3 --verbose ...)")
    code, _, err = run(["--verbose", "fail"], capsys)
    lines = err.strip().splitlines()
    assert lines[1].strip().endswith("398.0") and lines[2:] == ["  missing: x", "  y"]
    code, _, err = run(["fail"], capsys)  # --verbose does not stick to later calls
    assert len(err.strip().splitlines()) == 1


def test_a_long_path_is_kept_whole(failing, capsys) -> None:
    path = "dicomweb+https://pacs.example/" + "x" * 250
    failing["error"] = InputError("the series is refused before download", path)
    _, _, err = run(["fail"], capsys)
    assert err.strip() == f"m3: error: {path}: the series is refused before download"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MedM3Error("model failed"), 1),
        (InputError("bad file"), 2),
        (MissingDependencyError("torch", "experts", "VISTA3D"), 3),
    ],
)
def test_exit_codes_and_json_errors(failing, capsys, error, code) -> None:
    from medm3.experts.catalogue import WeightsNotFoundError

    assert WeightsNotFoundError.exit_code == 3
    failing["error"] = error
    got, out, err = run(["fail", "--json"], capsys)
    assert got == code and err.startswith("m3: error:")
    doc = json.loads(out)["error"]
    assert (doc["exit_code"], doc["type"]) == (code, type(error).__name__)
    assert doc["message"] == error.message


def test_exit_codes_are_documented(capsys) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for text in ("exit code 1", "exit code 2", "exit code 3"):
        assert text in readme.lower()
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "Exit codes: 0 success, 1 model" in out


@pytest.mark.parametrize(
    ("args", "kind", "needle"),
    [
        (["--json", "chat", "--nope"], "NoSuchOption", "No such option '--nope'"),
        (["chat", "--nope", "--json"], "NoSuchOption", "No such option '--nope'"),
        (["--json", "chat", "--plane", "up"], "BadParameter", "'up' is not one of"),
        (["chat", "--json", "--max-rounds", "x"], "BadParameter", "'x' is not a valid integer"),
        (["--json", "experts", "run"], "MissingParameter", "Missing argument 'NAME'"),
        (["--json", "nosuch"], "UsageError", "No such command 'nosuch'"),
        (["--json", "--nope", "chat"], "NoSuchOption", "No such option '--nope'"),
    ],
)
def test_usage_errors_are_json_with_json(capsys, args, kind, needle) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("m3: error: ") and needle in line
    doc = json.loads(out)["error"]  # stdout holds the one JSON object, nothing else
    assert (doc["type"], doc["exit_code"], doc["path"]) == (kind, 2, None)
    assert needle in doc["message"] and "Usage:" not in doc["message"]
    usage, hint = doc["details"]
    assert usage.startswith("Usage: m3 ") and hint.startswith("Try 'm3")
    assert hint.endswith("--help' for help.")


def test_usage_errors_stay_text_without_json(capsys) -> None:
    code, out, err = run(["chat", "--nope"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("Usage: m3 chat") and "Error: No such option '--nope'" in err
    assert "{" not in err


def test_json_before_the_command_makes_its_errors_and_output_json(failing, capsys) -> None:
    failing["error"] = InputError("bad file", "scan.nii")
    code, out, err = run(["--json", "fail"], capsys)
    assert code == 2 and err.startswith("m3: error: scan.nii: bad file")
    assert json.loads(out)["error"]["path"] == "scan.nii"

    seen: list[bool] = []

    @click.command("flag")
    @click.option("--json", "as_json", is_flag=True)
    def flag(as_json: bool) -> None:
        seen.append(as_json)

    main_module.cli.add_command(flag)
    try:
        assert run(["--json", "flag"], capsys)[0] == 0
        assert run(["flag"], capsys)[0] == 0  # not sticky
    finally:
        main_module.cli.commands.pop("flag", None)
    assert seen == [True, False]


def test_json_after_a_double_dash_is_an_argument() -> None:
    assert main_module.wants_json(["chat", "--json"])
    assert not main_module.wants_json(["chat", "--", "--json"])
