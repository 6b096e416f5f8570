"""`m3 experts`: list, describe, run and download the expert models.

``list`` and ``cards`` import no torch. ``run`` is in
:mod:`medm3.cli.experts_run` (one input) and :mod:`medm3.cli.experts_batch`
(many): it writes its files into a temporary folder and moves them into
``-o DIR`` only when everything succeeded, so a failed run writes nothing.
Results go to stdout; status lines go to stderr when it is a terminal, so a
failure is exactly one ``m3: error: ...`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medm3.cli.experts_batch import batch_options, is_batch_run, run_batch_command
from medm3.cli.experts_run import RUN_OPTION_KEYS, RunOptions, run_single, status
from medm3.cli.options import allow_gaps_option, trust_bundle_code_option
from medm3.errors import InputError
from medm3.executors.cli import executor_options

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import Expert


def _weights_state(cls: type[Expert], *, exact: bool) -> str:
    if cls.weights_name is None:
        return "not needed"
    from medm3.experts.download import weights_present

    try:
        return "present" if weights_present(cls.weights_name, exact=exact) else "missing"
    except Exception as exc:  # a broken catalogue entry must not break the listing
        return f"unknown ({type(exc).__name__})"


@click.group("experts")
def experts() -> None:
    """List, describe, run and download the expert models."""


@experts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_experts(as_json: bool) -> None:
    """List the experts: name, trigger, modality, task and whether weights are present."""
    from medm3.experts.registry import expert_names, get_expert_class

    rows: list[dict[str, Any]] = []
    for name in expert_names():
        try:
            cls = get_expert_class(name)
        except Exception as exc:  # a broken plugin is shown, not fatal
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(
            {
                "name": cls.name,
                "trigger": cls.trigger,
                "modality": cls.card_modality,
                "task": cls.task,
                "weights": _weights_state(cls, exact=False),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("NAME", "TRIGGER", "MODALITY", "TASK", "WEIGHTS")
    table = [header] + [
        (r["name"], "-", "-", "-", f"unavailable: {r['error']}")
        if "error" in r
        else (r["name"], r["trigger"], r["modality"], r["task"], r["weights"])
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, str(row[-1])]).rstrip())


@experts.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(name: str, as_json: bool) -> None:
    """Describe expert NAME: model card, arguments, inputs, weights source and folder."""
    from medm3.experts import catalogue
    from medm3.experts.registry import get_expert_class

    cls = get_expert_class(name)
    facts = cls.describe()
    if cls.weights_name is not None:
        spec = catalogue.get_spec(cls.weights_name)
        folder = catalogue.weights_dir(cls.weights_name)
        facts["weights"] = {
            "name": spec.name,
            "source": spec.source,
            "description": spec.description,
            "bundle": spec.bundle,
            "version": spec.version,
            "hf_repo": spec.hf_repo,
            "models": list(spec.models),
            "license": spec.license,
            "facts": spec.facts,
            "folder": str(folder),
            "present": _weights_state(cls, exact=True) == "present",
        }
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    lines = [
        f"{facts['name']} ({facts['trigger']}): {facts['task']}, {facts['modality']}",
        f"overview: {facts['overview']}",
        f"accuracy: {facts['accuracy']}",
        f"inputs: {', '.join(facts['inputs'])}",
        f"valid args: {', '.join(facts['valid_args']) or 'none'}"
        + (" (or other names)" if facts["open_args"] else ""),
    ]
    weights = facts["weights"]
    if isinstance(weights, dict):
        lines += [
            f"weights: {weights['description']} [{weights['source']}]",
            f"license: {weights['license']}",
            f"folder: {weights['folder']} ({'present' if weights['present'] else 'missing'})",
        ]
        lines += [f"  {k}: {v}" for k, v in weights["facts"].items()]
        if not weights["present"]:
            lines.append(f"get them with: m3 experts download {cls.name}")
    else:
        lines.append("weights: none needed")
    lines.append(f"model card: {facts['model_card']}")
    click.echo("\n".join(lines))


@experts.command("cards")
def cards() -> None:
    """Print the model-card block shown to the VLM."""
    from medm3.experts.registry import model_cards

    click.echo(model_cards(), nl=False)


@experts.command("download")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even when present.")
def download(name: str, force: bool) -> None:
    """Download the weights of expert NAME into the cache."""
    from medm3.experts import catalogue
    from medm3.experts.download import download_weights
    from medm3.experts.registry import get_expert_class

    if name.lower() in catalogue.CATALOGUE:
        weights_name = name.lower()
    else:
        cls = get_expert_class(name)
        if cls.weights_name is None:
            click.echo(f"expert '{cls.name}' needs no weights")
            return
        weights_name = cls.weights_name
    status(f"downloading weights '{weights_name}' ...")
    folder = download_weights(weights_name, force=force, progress=True)
    click.echo(f"weights '{weights_name}' are in {folder}")


@experts.command("run")
@click.argument("name")
@click.argument("images", nargs=-1, metavar="IMAGE...")
@click.option("--arg", "arg", default="", help="Argument string, as in <NAME(arg)>.")
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for overlays, label map (+ DICOM-SEG for a DICOM series) and result.json "
    "(default: write nothing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--mask", "mask_path", type=click.Path(path_type=Path), help="Label map input.")
@click.option(
    "--labels",
    "labels_path",
    metavar="NAME|FILE",
    help="Names of the mask's labels: totalseg-ct, totalseg-mr, vista3d, brats, or a JSON "
    '{"1": "spleen", ...} / {"spleen": 1, ...} (default: from the file or its ids).',
)
@click.option("--modality", default=None, help="Override the image modality (CT, MR, XR ...).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--weights",
    "weights_path",
    type=click.Path(path_type=Path),
    help="Local weights folder/file instead of the cache.",
)
@click.option("--slice", "slice_index", type=int, default=None, help="Slice for the overlay.")
@click.option(
    "--plane", default="axial", show_default=True, help="axial, coronal or sagittal overlay."
)
@click.option("--no-cache", is_flag=True, help="Do not use the result cache.")
@click.option("--series", default=None, help="DICOM series to read (index, UID or description).")
@click.option(
    "--store",
    is_flag=True,
    help="Store the result in the image's DICOMweb study: DICOM-SEG + SR (see docs/pacs.md).",
)
@batch_options
@executor_options
@allow_gaps_option
@trust_bundle_code_option
def run(
    name: str, images: tuple[str, ...], series: str | None, store: bool, **options: Any
) -> None:
    """Run expert NAME on IMAGE (or NAME=PATH inputs, e.g. t1ce=a.nii.gz t1=b.nii.gz ...).

    Prints the result text, timings and files written; with --json the
    result as JSON. Nothing is written unless -o is given.

    \b
    Batch runs (one result folder per input + results.csv/.jsonl in -o DIR):
      m3 experts run cxr a.png b.png c.dcm -o out/
      m3 experts run vista3d --folder cts/ --arg everything -o out/ --executor ray
      m3 experts run brats --list studies.csv -o out/   (columns t1c,t1,t2,flair)
    """
    opts = RunOptions(**{key: options.pop(key) for key in RUN_OPTION_KEYS})
    if is_batch_run(name, images, options):
        if store or series is not None:
            flag = "--store" if store else "--series"
            raise InputError(f"{flag} works on one input; it is not available in a batch run")
        run_batch_command(name, images, options, opts)
        return
    run_single(name, images, opts, series=series, store=store)


__all__ = ["experts"]
