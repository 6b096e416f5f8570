"""`m3 experts`: list, describe, run and download the expert models.

``list`` and ``cards`` import no torch. ``run`` writes its files into a
temporary folder and moves them into ``-o DIR`` only when everything
succeeded, so a failed run writes nothing. Results go to stdout; status lines
go to stderr when it is a terminal, so a failure is exactly one
``m3: error: ...`` line.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medm3.cli.experts_batch import batch_options, is_batch_run, run_batch_command
from medm3.cli.options import trust_bundle_code_option
from medm3.cli.outputs import check_output_location, writing
from medm3.errors import InputError
from medm3.executors.cli import executor_options

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import Expert, ExpertResult
    from medm3.imaging.image import MedicalImage


def _status(message: str) -> None:
    """A progress line on stderr, only when it is a terminal (errors stay one line in logs)."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


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
    _status(f"downloading weights '{weights_name}' ...")
    folder = download_weights(weights_name, force=force, progress=True)
    click.echo(f"weights '{weights_name}' are in {folder}")


def _parse_images(
    tokens: tuple[str, ...], inputs: tuple[str, ...]
) -> list[tuple[str | None, Path]]:
    """``PATH`` or ``NAME=PATH`` tokens -> (input name or None, path)."""
    parsed: list[tuple[str | None, Path]] = []
    for token in tokens:
        key, sep, rest = token.partition("=")
        if sep and key.lower() in inputs:
            parsed.append((key.lower(), Path(rest)))
        elif sep and not Path(token).exists():
            raise InputError(
                f"unknown input name {key!r} in {token!r}; the inputs are: {', '.join(inputs)}"
            )
        else:
            parsed.append((None, Path(token)))
    named = [n for n, _ in parsed if n is not None]
    if len(set(named)) != len(named):
        raise InputError("an input is given twice")
    if named and len(named) != len(parsed):
        raise InputError("name either all images (NAME=PATH) or none")
    return parsed


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
@trust_bundle_code_option
def run(
    name: str,
    images: tuple[str, ...],
    arg: str,
    out_dir: Path | None,
    as_json: bool,
    mask_path: Path | None,
    labels_path: Path | None,
    modality: str | None,
    device: str,
    weights_path: Path | None,
    slice_index: int | None,
    plane: str,
    no_cache: bool,
    series: str | None,
    store: bool,
    **batch: Any,
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
    if is_batch_run(name, images, batch):
        if store or series is not None:
            flag = "--store" if store else "--series"
            raise InputError(f"{flag} works on one input; it is not available in a batch run")
        if out_dir is not None:
            check_output_location(out_dir, is_dir=True)
        run_batch_command(
            name,
            images,
            batch,
            arg=arg,
            out_dir=out_dir,
            as_json=as_json,
            mask_path=mask_path,
            labels_path=labels_path,
            modality=modality,
            device=device,
            weights_path=weights_path,
            slice_index=slice_index,
            plane=plane,
            no_cache=no_cache,
        )
        return
    if not images:
        raise InputError("missing IMAGE (or give --list FILE / --folder DIR for a batch run)")
    from medm3.experts.base import RunContext
    from medm3.experts.catalogue import resolve_weights
    from medm3.experts.registry import get_expert, get_expert_class
    from medm3.imaging.io import load_image
    from medm3.imaging.label_tables import label_names_for, resolve_labels
    from medm3.imaging.slicing import normalize_plane

    # Cheap checks first: a typo fails before any image is read.
    cls = get_expert_class(name)
    plane = normalize_plane(plane)
    parsed = _parse_images(images, cls.inputs)
    if mask_path is not None and "mask" not in cls.inputs:
        raise InputError(f"expert '{cls.name}' takes no mask (its inputs: {', '.join(cls.inputs)})")
    if labels_path is not None and mask_path is None:
        raise InputError("--labels names the labels of --mask; give --mask too")
    label_names = resolve_labels(labels_path) if labels_path is not None else None
    device = device.strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise InputError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N")
    expert = get_expert(cls.name, device=None if device == "auto" else device, weights=weights_path)
    expert.parse_args(arg)
    if out_dir is not None:
        check_output_location(out_dir, is_dir=True)

    _status(f"loading {len(parsed) + (mask_path is not None)} image(s) ...")
    loaded: dict[str, MedicalImage] | list[MedicalImage]
    if parsed and parsed[0][0] is not None:
        loaded = {str(n): load_image(p, modality=modality, series=series) for n, p in parsed}
    else:
        loaded = [load_image(p, modality=modality, series=series) for _, p in parsed]
    if mask_path is not None:
        named = dict(loaded) if isinstance(loaded, dict) else {}
        if isinstance(loaded, list):
            if len(loaded) != 1:
                raise InputError("with --mask give exactly one image")
            named[cls.inputs[0]] = loaded[0]
        named["mask"] = load_image(mask_path)
        loaded = named
        if label_names is None:  # from the file's header or the built-in table its ids fit
            base = named.get(cls.inputs[0])
            label_names, note = label_names_for(
                named["mask"], modality=getattr(base, "modality", None)
            )
            _status(f"mask {mask_path}: {note}")
            label_names = label_names or None
    # The input is validated against the expert (modality, dimensionality,
    # required inputs) before the weights are looked up: a wrong image must not
    # send the user to download a gigabyte first.
    expert.check_inputs(loaded)
    if cls.weights_name is not None:
        resolve_weights(cls.weights_name, weights_path)

    main = loaded.get(cls.inputs[0]) if isinstance(loaded, dict) else loaded[0]
    if store:  # refuse before running when there is nowhere to store
        from medm3.dicomweb.store import dicomweb_source

        dicomweb_source(main)
    options: dict[str, Any] = {}
    if label_names is not None:
        options["label_names"] = label_names
    context = RunContext(plane=plane, slice_index=slice_index, options=options)
    _status(f"running {cls.name} ...")
    result = expert.run(loaded, arg, context=context, use_cache=not no_cache)

    files: dict[str, str] = {}
    warnings: list[str] = []
    if store:  # before any local file: a refused STOW writes nothing anywhere
        files.update(_store(result, main, loaded.get("mask") if isinstance(loaded, dict) else None))
    if out_dir is not None:
        with writing(out_dir):
            files.update(_save(result, out_dir, main, warnings))
    _report(result, files, as_json, warnings)


def _store(
    result: ExpertResult, image: MedicalImage | None, mask: MedicalImage | None
) -> dict[str, str]:
    """STOW the result's DICOM-SEG and SR to the image's study; kind -> instance URL."""
    from medm3.dicomweb.store import dicomweb_source, store_result

    assert image is not None
    origin = dicomweb_source(image)
    _status(f"storing the results in study {origin['study_uid']} ...")
    stored = store_result(result, image, mask=mask)
    base = f"dicomweb+{origin['root']}/studies/{origin['study_uid']}"
    return {
        f"stored:{o.kind}": f"{base}/series/{o.series_instance_uid}/instances/{o.sop_instance_uid}"
        for o in stored
    }


def _save(
    result: ExpertResult,
    out_dir: Path,
    source_image: MedicalImage | None,
    warnings: list[str] | None = None,
) -> dict[str, str]:
    """Write into a temporary folder, then move every file into ``out_dir``.

    A DICOM series input also gets ``<expert>_seg.dcm``; why one could not be
    written is appended to ``warnings``.
    """
    from medm3.experts.output import save_result

    anchor = out_dir.parent if out_dir.parent.is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix=".m3-experts-", dir=anchor))
    try:
        written = save_result(
            result, tmp, source_image=source_image, warnings=warnings, montage=True
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        final: dict[str, str] = {}
        for kind, path in written.items():
            dest = out_dir / Path(path).name
            shutil.move(path, dest)
            final[kind] = str(dest)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(
    result: ExpertResult, files: dict[str, str], as_json: bool, warnings: list[str] | None = None
) -> None:
    for warning in warnings or []:
        click.echo(f"m3: warning: {warning}", err=True)
    if as_json:
        from medm3.experts.output import json_default

        doc = result.to_dict()
        doc["trigger"] = _trigger(result)
        doc["files"] = files
        if warnings:
            doc["warnings"] = list(warnings)
        click.echo(json.dumps(doc, indent=2, default=json_default))
        return
    from medm3.experts.output import file_note, probability_lines, segmentation_lines

    segmented = segmentation_lines(result)
    click.echo("\n".join(segmented) if segmented else result.text.rstrip())
    probabilities = probability_lines(result)
    if probabilities:
        click.echo("probabilities (threshold as in the text above):")
        for line in probabilities:
            click.echo(f"  {line}")
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items())
    click.echo(f"timings: {timing} (cache: {result.info.get('cache', 'off')})")
    for kind, path in files.items():
        note = file_note(result, kind)
        click.echo(f"wrote {path}" + (f" ({note})" if note else ""))
    if segmented and not files:
        click.echo("no files written: -o DIR saves the overlay, a montage and the label map")
    sys.stdout.flush()


def _trigger(result: ExpertResult) -> str | None:
    try:
        return result.trigger_text
    except Exception:  # expert not in the registry (e.g. a test double)
        return None


__all__ = ["experts"]
