"""Entry point of the `m3` command.

Subcommands live in their own modules and are imported only when invoked, so
``m3 --help`` never imports numpy-heavy or torch-based code. Every
:class:`medm3.errors.MedM3Error` becomes one line on stderr (at most
:data:`MAX_ERROR_CHARS` characters; ``m3 --verbose`` adds the details) and its
exit code, without a traceback; with ``--json`` (``m3 --json COMMAND`` or
``m3 COMMAND --json``) the error is also printed on stdout as a JSON object,
click's own usage errors (unknown option, missing argument, bad value)
included.

Exit codes: 0 success, 1 model or other runtime failure, 2 bad input (files,
options), 3 missing weights or optional packages.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import click

from medm3 import __version__
from medm3.errors import MedM3Error

#: subcommand name -> ("module:attribute", one-line help shown by `m3 --help`).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("medm3.cli.info:info", "Show modality, geometry and value range of an image."),
    "render": ("medm3.cli.render:render", "Render a slice (with optional label overlay) to PNG."),
    "chat": ("medm3.cli.chat:chat", "Ask about a scan; the VLM calls expert models as needed."),
    "dicomweb": ("medm3.cli.dicomweb:dicomweb", "Browse a DICOMweb server (PACS): list studies."),
    "deid": ("medm3.cli.deid:deid", "De-identify DICOM files (PS3.15 Basic Profile)."),
    "experts": ("medm3.cli.experts:experts", "List, describe, run and download expert models."),
    "eval": (
        "medm3.cli.eval:eval_group",
        "Evaluate a VLM on medical benchmarks (named protocols).",
    ),
    "data": ("medm3.cli.data:data", "Build training data (LLaVA JSON) from public datasets; mix."),
    "serve": ("medm3.cli.serve:serve", "Serve the model: OpenAI-compatible API and web UI."),
    "train": ("medm3.cli.train:train", "Fine-tune VILA-M3 or an HF VLM on LLaVA JSON (full/LoRA)."),
    "demo": ("medm3.cli.demo:demo", "Run one expert-calling chat offline (random weights)."),
    "doctor": ("medm3.cli.doctor:doctor", "Check the installation: versions, devices, weights."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module_name, attr = SUBCOMMANDS[cmd_name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help lines so `m3 --help` imports no subcommand module.
        rows = [(name, SUBCOMMANDS[name][1]) for name in sorted(SUBCOMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from medm3.utils.suggest import did_you_mean

            hint = did_you_mean(name, self.list_commands(ctx), n=1)
            ctx.fail(f"No such command '{name}'.{' ' + hint if hint else ''}")
        return super().resolve_command(ctx, args)

    # Usage errors are raised while parsing (make_context) or while resolving and
    # invoking subcommands (invoke); under --json both become JSON errors.
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            raise _as_json_error(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _as_json_error(exc) from None


class JsonUsageError(click.ClickException):
    """A click usage error shown as medm3's JSON error (``--json``).

    stderr gets the usual one ``m3: error:`` line, stdout the JSON object
    ``{"error": {"message", "path", "type", "exit_code", "details"}}`` that
    medm3's own errors give; the exit code is click's (2 for usage errors).
    """

    def __init__(self, original: click.ClickException) -> None:
        super().__init__(original.format_message())
        self.exit_code = original.exit_code
        self.original = original

    def show(self, file: Any = None) -> None:
        """Print the error line (stderr) and the JSON object (stdout)."""
        details: list[str] = []
        ctx = getattr(self.original, "ctx", None)
        if ctx is not None:
            details.append(" ".join(ctx.get_usage().split()))
            helps = ctx.help_option_names
            if helps:  # the longest name, as click's own hint
                details.append(f"Try '{ctx.command_path} {max(helps, key=len)}' for help.")
        _error_line(self.message)
        _echo_json_error(
            message=self.message,
            path=None,
            kind=type(self.original).__name__,
            exit_code=self.exit_code,
            details=details,
        )


def _as_json_error(exc: click.ClickException) -> click.ClickException:
    """``exc`` itself, or under ``--json`` the :class:`JsonUsageError` showing it."""
    if not _STATE["json"] or isinstance(exc, (JsonUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return JsonUsageError(exc)


class _JsonDefaults(Mapping[str, Any]):
    """``default_map`` under ``m3 --json``: every command's own ``--json`` defaults to on.

    Click looks a parameter's default up by its name and a subcommand's map by
    the subcommand's name; this answers ``as_json`` with ``True`` where the
    command has that parameter and a subcommand's name with its own map.
    """

    def __init__(self, command: click.Command) -> None:
        self._command = command

    def __getitem__(self, key: str) -> Any:
        if key == "as_json" and any(p.name == "as_json" for p in self._command.params):
            return True
        if isinstance(self._command, click.Group):
            sub = self._command.get_command(click.Context(self._command), key)
            if sub is not None:
                return _JsonDefaults(sub)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


#: Longest error line printed; longer messages are cut at a word (details: --verbose).
MAX_ERROR_CHARS = 300


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="m3")
@click.option(
    "-v", "--verbose", is_flag=True, help="On errors, also print the details (lists, causes)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Errors as JSON (usage errors too); turns on the command's own --json where it has one.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, as_json: bool) -> None:
    """medm3: a medical vision-language model that calls expert models.

    Scans in (DICOM, NIfTI, NRRD, PNG/JPG), expert-grounded answers out.
    Run `m3 COMMAND --help` for the options of each command. Start with
    `m3 demo` (offline, random weights) and `m3 doctor`.

    Exit codes: 0 success, 1 model or runtime failure, 2 bad input,
    3 missing weights or optional packages.
    """
    _STATE["verbose"] = verbose
    if as_json:
        _STATE["json"] = True
        ctx.default_map = _JsonDefaults(ctx.command)


#: Per-invocation flags set by the group's options and :func:`main` (reset by it).
_STATE: dict[str, bool] = {"verbose": False, "json": False}


def wants_json(argv: list[str]) -> bool:
    """Whether ``--json`` is among the options of ``argv`` (before any ``--``)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _verbose() -> bool:
    env = os.environ.get("MEDM3_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on")
    return _STATE["verbose"] or env


def error_line(exc: MedM3Error, limit: int = MAX_ERROR_CHARS) -> str:
    """The one-line error text ``m3: error: PATH: MESSAGE``.

    The message (not the path, which the user needs whole) is cut at a word
    boundary so that it takes at most ``limit`` characters with the prefix.
    """
    text = " ".join(str(exc.message).split())
    where = f"{exc.path}: " if exc.path else ""
    hint = " (more: m3 --verbose ...)" if exc.details and not _verbose() else ""
    budget = limit - len("m3: error: ") - len(hint)
    if len(text) > budget:
        text = text[: budget - 3].rsplit(" ", 1)[0] + "..."
        hint = hint or " (more: m3 --verbose ...)"
    return f"m3: error: {where}{text}{hint}"


def _report(exc: MedM3Error, argv: list[str]) -> None:
    line = error_line(exc)
    click.echo(line.encode("utf-8", "backslashreplace").decode("utf-8"), err=True)
    if _verbose():
        full = " ".join(str(exc.message).split())
        if len(full) + len("m3: error: ") > MAX_ERROR_CHARS:
            click.echo(f"  {full}", err=True)
        for line in exc.details:
            click.echo(f"  {line}", err=True)
    if wants_json(argv):
        _echo_json_error(
            message=exc.message,
            path=exc.path,
            kind=type(exc).__name__,
            exit_code=exc.exit_code,
            details=exc.details,
        )


def _echo_json_error(
    *, message: str, path: Any, kind: str, exit_code: int, details: list[str]
) -> None:
    """Print the JSON error object on stdout (one line)."""
    doc = {
        "error": {
            "message": message,
            "path": path,
            "type": kind,
            "exit_code": exit_code,
            "details": details,
        }
    }
    click.echo(json.dumps(doc, default=str))


def main(argv: list[str] | None = None) -> Any:
    """Run the `m3` CLI; user errors print one line and exit non-zero.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Never returns normally when run as a script; raises ``SystemExit``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _STATE["verbose"] = False
    _STATE["json"] = wants_json(args)
    try:
        return cli.main(args=args, prog_name="m3", standalone_mode=True)
    except MedM3Error as exc:
        _report(exc, args)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        where = exc.filename if exc.filename is not None else None
        _error_line(f"{where}: {exc.strerror}" if where is not None else str(exc.strerror))
        sys.exit(1)
    except UnicodeError as exc:  # argv bytes that are not UTF-8 (surrogate-escaped)
        _error_line(
            "an argument holds bytes that are not valid UTF-8 (e.g. a prompt typed in "
            f"another encoding); pass text as UTF-8 ({type(exc).__name__})"
        )
        sys.exit(2)


#: errno values of environment problems (read-only or full disk, permissions)
#: reported as one line rather than as a traceback.
OUTPUT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "ENOTDIR",
        "EISDIR",
        "ENAMETOOLONG",
    )
    if hasattr(errno, name)
)


def _error_line(text: str) -> None:
    """Print ``m3: error: TEXT`` as one line (newlines folded), never failing on encoding."""
    line = " ".join(f"m3: error: {text}".split())
    click.echo(line.encode("utf-8", "backslashreplace").decode("utf-8"), err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
