"""Option parsing shared by several commands (``--weights NAME=DIR`` ...)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from medm3.errors import InputError

_F = TypeVar("_F", bound=Callable[..., Any])


def set_env_for_command(ctx: click.Context, name: str, value: str) -> None:
    """Set environment variable ``name`` while the command runs; restore it afterwards.

    Options such as ``--trust-bundle-code`` act through an environment variable
    that the library reads wherever it is; restoring it when the command's context
    closes keeps an in-process call (``main([...])``, tests) from leaking it into
    the next command.
    """
    old = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old

    ctx.call_on_close(restore)


def _trust_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        from medm3.experts.bundle_code import TRUST_ENV  # only when the flag is given

        set_env_for_command(ctx, TRUST_ENV, "1")
    return value


def trust_bundle_code_option(func: _F) -> _F:
    """``--trust-bundle-code``: let bundles run code beyond the known network constructors.

    Setting the flag sets ``MEDM3_TRUST_BUNDLE_CODE=1`` for this process, which
    :func:`medm3.experts.bundle_code.check_network_def` honours; the command
    itself receives no argument for it.
    """
    return click.option(
        "--trust-bundle-code",
        is_flag=True,
        expose_value=False,
        callback=_trust_callback,
        help="Let a MONAI bundle's network_def run code other than a known network "
        "constructor (only for bundles you trust; sets MEDM3_TRUST_BUNDLE_CODE=1).",
    )(func)


def parse_weights(values: Iterable[str]) -> dict[str, Path]:
    """``--weights NAME=DIR`` values -> ``{expert registry name: folder}``.

    Args:
        values: Strings such as ``vista3d=/models/vista3d`` (the expert's
            registry or trigger name, any case).

    Returns:
        The mapping (checked: known experts, existing folders).

    Raises:
        InputError: No ``=``, an unknown expert, or a folder that does not exist.
    """
    from medm3.experts.registry import get_expert_class

    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = str(value).partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise InputError(
                f"--weights takes NAME=DIR (e.g. vista3d=/models/vista3d), not {value!r}"
            )
        expert = get_expert_class(name.strip()).name
        path = Path(folder.strip()).expanduser()
        if not path.is_dir():
            raise InputError(
                "weights folder not found" if not path.exists() else "not a folder", path
            )
        out[expert] = path
    return out


def weights_option(func: _F) -> _F:
    """``--weights NAME=DIR`` (repeatable), parsed later with :func:`parse_weights`."""
    return click.option(
        "--weights",
        "weights",
        multiple=True,
        metavar="NAME=DIR",
        help="Local weights folder of an expert, instead of the cache (repeatable).",
    )(func)


def mock_script_option(func: _F) -> _F:
    """``--mock-script FILE``: the mock backend's scripted replies."""
    return click.option(
        "--mock-script",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="--backend mock: replies to give, separated by '---' lines (then it echoes); "
        "runs the whole expert loop without a model.",
    )(func)


def _allow_gaps_callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        from medm3.imaging.readers.dicom_gaps import GAPS_ENV  # only when the option is given

        set_env_for_command(ctx, GAPS_ENV, value)


def allow_gaps_option(func: _F) -> _F:
    """``--allow-gaps largest|fill``: load DICOM series that have missing slices.

    Giving the option sets ``MEDM3_ALLOW_GAPS`` for this process, which every
    :func:`medm3.imaging.io.load_image` call honours (see
    :mod:`medm3.imaging.readers.dicom_gaps`); the command itself receives no
    argument for it, so any command that reads images can take it.
    """
    return click.option(
        "--allow-gaps",
        type=click.Choice(["largest", "fill"], case_sensitive=False),
        default=None,
        expose_value=False,
        callback=_allow_gaps_callback,
        help="DICOM series with missing slices: load the largest evenly spaced run, or fill "
        "the missing positions with marked copies of the nearest slice (default: refuse; "
        "sets MEDM3_ALLOW_GAPS).",
    )(func)


def _stacked(func: _F, *options: Callable[[_F], _F]) -> _F:
    """``func`` under the given click option decorators, the first listed first in --help."""
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: _F) -> _F:
    """``--model``, ``--backend``, ``--device``, ``--base-url``: the VLM (chat, serve, eval).

    They go to :func:`medm3.cli.backends.build_vlm` (or the eval runner's loader).
    """
    return _stacked(
        func,
        click.option(
            "--model",
            default=None,
            help="Hub id or local folder (default: VILA-M3 8B on CUDA, 3B on CPU, for vila).",
        ),
        click.option(
            "--backend",
            default="vila",
            show_default=True,
            help="vila, hf, openai, mock (or a plugin).",
        ),
        click.option("--device", default=None, help="Device for the VLM (auto, cpu, cuda)."),
        click.option(
            "--base-url", default=None, help="OpenAI-compatible server URL (backend openai)."
        ),
    )


def expert_device_option(func: _F) -> _F:
    """``--expert-device``: where the experts run."""
    return click.option(
        "--expert-device", default=None, help="Device for the experts (default: automatic)."
    )(func)


def agent_options(func: _F) -> _F:
    """``--protocol``, ``--max-rounds``, ``--max-new-tokens``, ``--expert-device`` (chat, serve).

    The settings of :class:`medm3.agent.AgentConfig` that ``m3 chat`` and
    ``m3 serve`` share.
    """
    return _stacked(
        func,
        click.option(
            "--protocol",
            metavar="[released|medm3]",
            default=None,
            help="How the agent talks to the model: released (the released VILA-M3 training "
            "conversations; default for --backend vila) or medm3 (MEASURE, chained calls; "
            "default for the others). See docs/fidelity.md.",
        ),
        click.option(
            "--max-rounds",
            type=click.IntRange(0, 10),
            default=3,
            show_default=True,
            help="Most expert calls per question (protocol released: at most 1).",
        ),
        click.option(
            "--max-new-tokens", type=click.IntRange(1, 8192), default=1024, show_default=True
        ),
        expert_device_option,
    )


def output_folder_option(help_text: str) -> Callable[[_F], _F]:
    """``-o/--output`` FOLDER (parameter ``out_dir``, default ``None``) with ``help_text``."""
    return click.option(
        "-o",
        "--output",
        "out_dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=help_text,
    )
