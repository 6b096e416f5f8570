"""`m3 data`: build LLaVA-style training data from public datasets, and mix it.

``m3 data build NAME --source PATH -o OUT`` runs one builder; each builder is
a subcommand generated from its class (``m3 data build NAME --help`` shows the
source layout it expects and its own options). ``m3 data mix CONFIG.yaml -o
OUT.json`` combines built datasets with repeat counts. Bad input is one
``m3: error: ...`` line and exit code 2; nothing is written.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medm3.cli.outputs import check_output_location
from medm3.errors import InputError, MedM3Error

if TYPE_CHECKING:  # pragma: no cover
    from medm3.data.base import Builder, BuilderOption


class BuildInterrupted(MedM3Error):
    """The build was interrupted (Ctrl-C); its finished shards are kept for resuming."""

    exit_code = 130


#: Options every builder command has (builder options must not reuse these names).
COMMON_OPTIONS = (
    "source",
    "output",
    "seed",
    "overwrite",
    "max-bad-fraction",
    "limit",
    "shard-size",
    "image-mode",
    "no-resume",
    "progress",
    "json",
    "executor",
    "address",
    "workers",
    "gpus-per-worker",
)


@click.group("data")
def data() -> None:
    """Build training data (LLaVA JSON) from public datasets, and mix datasets."""


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_builders(as_json: bool) -> None:
    """List the dataset builders."""
    from medm3.data.registry import builder_names, get_builder

    rows = [get_builder(name).describe() for name in builder_names()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['summary']}")


def help_text(doc: str) -> str:
    """A docstring as click help: indented blocks kept verbatim (``\\b`` paragraphs)."""
    text = textwrap.dedent(doc).strip("\n")
    first, _, rest = text.partition("\n")
    text = first.strip() + ("\n" + textwrap.dedent(rest) if rest else "")
    paragraphs = []
    for block in text.split("\n\n"):
        block = block.rstrip()
        if block.endswith("::"):
            block = block[:-1]
        if any(line.startswith((" ", "\t")) for line in block.splitlines()):
            block = "\b\n" + block
        paragraphs.append(block)
    return "\n\n".join(paragraphs)


def _click_option(option: BuilderOption) -> click.Option:
    flag = f"--{option.name}"
    if option.name in COMMON_OPTIONS:
        raise RuntimeError(f"builder option --{option.name} clashes with a common option")
    if option.kind == "flag":
        return click.Option([flag, option.key], is_flag=True, default=False, help=option.help)
    kinds: dict[str, Any] = {
        "int": int,
        "float": float,
        "str": str,
        "path": click.Path(path_type=Path),
        "choice": click.Choice(list(option.choices), case_sensitive=False),
    }
    return click.Option(
        [flag, option.key],
        type=kinds[option.kind],
        default=option.default,
        show_default=option.default is not None,
        help=option.help,
    )


def _common_build_params() -> list[click.Parameter]:
    """The options every ``m3 data build NAME`` command has (the builder's own follow)."""
    from medm3.data.base import IMAGE_MODES
    from medm3.data.engine import DEFAULT_MAX_BAD_FRACTION
    from medm3.executors.cli import executor_params

    return [
        click.Option(
            ["--source"],
            type=click.Path(path_type=Path),
            help="The dataset as downloaded (layout above).",
        ),
        click.Option(
            ["-o", "--output"],
            type=click.Path(path_type=Path),
            help="Output folder (split JSONs, images/, manifest.json).",
        ),
        click.Option(
            ["--seed"], type=int, default=0, show_default=True, help="Seed of all choices."
        ),
        click.Option(["--overwrite"], is_flag=True, help="Replace an existing output folder."),
        click.Option(
            ["--max-bad-fraction"],
            type=float,
            default=DEFAULT_MAX_BAD_FRACTION,
            show_default=True,
            help="Fail when more of the source rows than this are malformed.",
        ),
        click.Option(["--limit"], type=int, help="Convert only the first N source items."),
        click.Option(["--shard-size"], type=int, help="Items per resumable shard."),
        click.Option(
            ["--image-mode"],
            type=click.Choice(list(IMAGE_MODES)),
            default="copy",
            show_default=True,
            help="How source images are placed in the output.",
        ),
        click.Option(
            ["--no-resume"], is_flag=True, help="Discard an interrupted build instead of resuming."
        ),
        click.Option(
            ["--progress/--no-progress"],
            default=None,
            help="Progress bar on stderr (default: when it is a terminal).",
        ),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the manifest as JSON."),
        *executor_params(),
    ]


def _run_build(cls: type[Builder], kwargs: dict[str, Any]) -> None:
    """Build dataset ``cls`` from the command's options (checked here, then built)."""
    from medm3.data.engine import build_dataset, staging_path
    from medm3.executors.cli import spec_from_options

    source, output = kwargs.pop("source"), kwargs.pop("output")
    if source is None:
        raise InputError(f"missing --source PATH (see `m3 data build {cls.name} --help`)")
    if output is None:
        raise InputError(f"missing -o/--output FOLDER (see `m3 data build {cls.name} --help`)")
    keys = [o.key for o in cls.options]
    options = {k: kwargs[k] for k in keys if kwargs.get(k) not in (None, False)}
    check_output_location(Path(output).parent, is_dir=True)
    executor = spec_from_options(kwargs)  # the cluster is joined after the source checks
    try:
        summary = build_dataset(
            cls.name,
            source,
            output,
            options=options,
            seed=kwargs["seed"],
            overwrite=kwargs["overwrite"],
            max_bad_fraction=kwargs["max_bad_fraction"],
            limit=kwargs["limit"],
            shard_size=kwargs["shard_size"],
            resume=not kwargs["no_resume"],
            progress=kwargs["progress"],
            image_mode=kwargs["image_mode"],
            executor=executor,
        )
    except KeyboardInterrupt:
        raise BuildInterrupted(
            f"interrupted; finished shards are kept in {staging_path(Path(output))} - "
            "rerun the same command to resume"
        ) from None
    if kwargs["as_json"]:
        click.echo(json.dumps(summary.manifest, indent=2, ensure_ascii=False))
    else:
        click.echo(summary.line())


def build_command(cls: type[Builder]) -> click.Command:
    """The ``m3 data build NAME`` command of one builder."""
    params = [*_common_build_params(), *(_click_option(o) for o in cls.options)]

    def run(**kwargs: Any) -> None:
        _run_build(cls, kwargs)

    return click.Command(
        cls.name,
        params=params,
        callback=run,
        help=help_text(cls.__doc__ or cls.summary),
        short_help=cls.summary,
    )


class BuildGroup(click.Group):
    """``m3 data build``: one subcommand per registered builder, unknown names -> InputError."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from medm3.data.registry import builder_names

        return builder_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from medm3.data.registry import BUILDERS, get_builder

        if cmd_name not in BUILDERS:
            raise InputError(BUILDERS.unknown_message(cmd_name))
        return build_command(get_builder(cmd_name))


@data.group("build", cls=BuildGroup)
def build() -> None:
    """Build a dataset folder: m3 data build NAME --source PATH -o OUT.

    The output folder holds one LLaVA JSON per split, the images and
    manifest.json (counts, source checksums, builder version, seed, bad and
    skipped rows). Builds are deterministic, and resumable: an interrupted
    build continues where it stopped when rerun with the same arguments.
    Run `m3 data build NAME --help` for the source layout a builder expects.
    """


@data.command("mix")
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Mixed JSON file."
)
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Folder the mixture's relative paths resolve against (default: current folder).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffle.")
@click.option("--shuffle/--no-shuffle", default=None, help="Override the mixture's shuffle.")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Leave out datasets that are not built instead of failing.",
)
def mix_command(
    config: Path,
    output: Path,
    root: Path | None,
    overwrite: bool,
    seed: int,
    shuffle: bool | None,
    allow_missing: bool,
) -> None:
    """Combine built datasets with repeat counts (a mixture YAML) into one training JSON.

    Example: m3 data mix configs/mixtures/vila_m3_released.yaml --root data -o mix.json
    """
    from medm3.data.mix import load_mixture, mix

    mixture = load_mixture(config)
    summary = mix(
        mixture,
        output,
        root=root,
        overwrite=overwrite,
        seed=seed,
        shuffle=shuffle,
        allow_missing=allow_missing,
    )
    for entry in summary["datasets"]:
        click.echo(f"{entry['name']}: {entry['rows']} rows x {entry['repeat']} = {entry['total']}")
    if summary["missing"]:
        click.echo(f"left out (not built): {', '.join(summary['missing'])}")
    click.echo(f"wrote {output}: {summary['rows']} rows")
