"""The single-input part of ``m3 experts run``: check, load, run, store, save, report.

:class:`RunOptions` holds the options a single run and a batch run
(:mod:`medm3.cli.experts_batch`) share; :func:`check_run_options` does the
cheap checks both make before any image is read. Files are written into a
temporary folder and moved into ``-o DIR`` only when everything succeeded, so
a failed run writes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medm3.cli.outputs import check_output_location, writing
from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import Expert, ExpertResult
    from medm3.imaging.image import MedicalImage


#: Keywords of the ``run`` callback that fill :class:`RunOptions`.
RUN_OPTION_KEYS = (
    "arg",
    "out_dir",
    "as_json",
    "mask_path",
    "labels_path",
    "modality",
    "device",
    "weights_path",
    "slice_index",
    "plane",
    "no_cache",
)


@dataclass
class RunOptions:
    """Options of ``m3 experts run`` shared by single and batch runs (see its ``--help``)."""

    arg: str = ""
    out_dir: Path | None = None
    as_json: bool = False
    mask_path: Path | None = None
    labels_path: str | None = None
    modality: str | None = None
    device: str = "auto"
    weights_path: Path | None = None
    slice_index: int | None = None
    plane: str = "axial"
    no_cache: bool = False


def status(message: str) -> None:
    """A progress line on stderr, only when it is a terminal (errors stay one line in logs)."""
    if sys.stderr.isatty():
        click.echo(message, err=True)


def check_device(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (lower-cased), else an :class:`InputError`."""
    device = device.strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise InputError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def check_run_options(name: str, opts: RunOptions) -> type[Expert]:
    """The cheap checks of single and batch runs: expert name, plane, device, output folder.

    Normalises ``opts.plane`` and ``opts.device`` in place.

    Returns:
        The expert class.
    """
    from medm3.experts.registry import get_expert_class
    from medm3.imaging.slicing import normalize_plane

    cls = get_expert_class(name)
    opts.plane = normalize_plane(opts.plane)
    opts.device = check_device(opts.device)
    if opts.out_dir is not None:
        check_output_location(opts.out_dir, is_dir=True)
    return cls


def parse_images(tokens: tuple[str, ...], inputs: tuple[str, ...]) -> list[tuple[str | None, Path]]:
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


def run_single(
    name: str, images: tuple[str, ...], opts: RunOptions, *, series: str | None, store: bool
) -> None:
    """Run one expert on one input (or one named set), then store / save / print the result."""
    from medm3.experts.base import RunContext
    from medm3.experts.catalogue import resolve_weights
    from medm3.experts.registry import get_expert
    from medm3.imaging.label_tables import resolve_labels

    if not images:
        raise InputError("missing IMAGE (or give --list FILE / --folder DIR for a batch run)")
    # Cheap checks first: a typo fails before any image is read.
    cls = check_run_options(name, opts)
    parsed = parse_images(images, cls.inputs)
    if opts.mask_path is not None and "mask" not in cls.inputs:
        raise InputError(f"expert '{cls.name}' takes no mask (its inputs: {', '.join(cls.inputs)})")
    if opts.labels_path is not None and opts.mask_path is None:
        raise InputError("--labels names the labels of --mask; give --mask too")
    label_names = resolve_labels(opts.labels_path) if opts.labels_path is not None else None
    device = None if opts.device == "auto" else opts.device
    expert = get_expert(cls.name, device=device, weights=opts.weights_path)
    expert.parse_args(opts.arg)

    loaded, label_names = _load_inputs(cls, parsed, opts, series, label_names)
    # The input is validated against the expert (modality, dimensionality,
    # required inputs) before the weights are looked up: a wrong image must not
    # send the user to download a gigabyte first.
    expert.check_inputs(loaded)
    if cls.weights_name is not None:
        resolve_weights(cls.weights_name, opts.weights_path)
    main = loaded.get(cls.inputs[0]) if isinstance(loaded, dict) else loaded[0]
    if store:  # refuse before running when there is nowhere to store
        from medm3.dicomweb.store import dicomweb_source

        dicomweb_source(main)
    options: dict[str, Any] = {} if label_names is None else {"label_names": label_names}
    context = RunContext(plane=opts.plane, slice_index=opts.slice_index, options=options)
    status(f"running {cls.name} ...")
    result = expert.run(loaded, opts.arg, context=context, use_cache=not opts.no_cache)

    files: dict[str, str] = {}
    warnings: list[str] = []
    if store:  # before any local file: a refused STOW writes nothing anywhere
        mask = loaded.get("mask") if isinstance(loaded, dict) else None
        files.update(_store(result, main, mask))
    if opts.out_dir is not None:
        with writing(opts.out_dir):
            files.update(_save(result, opts.out_dir, main, warnings))
    report(result, files, opts.as_json, warnings)


def _load_inputs(
    cls: type[Expert],
    parsed: list[tuple[str | None, Path]],
    opts: RunOptions,
    series: str | None,
    label_names: dict[int, str] | None,
) -> tuple[dict[str, MedicalImage] | list[MedicalImage], dict[int, str] | None]:
    """Read the images (and the mask); label names from the mask when not given."""
    from medm3.imaging.io import load_image
    from medm3.imaging.label_tables import label_names_for

    status(f"loading {len(parsed) + (opts.mask_path is not None)} image(s) ...")
    modality = opts.modality
    loaded: dict[str, MedicalImage] | list[MedicalImage]
    if parsed and parsed[0][0] is not None:
        loaded = {str(n): load_image(p, modality=modality, series=series) for n, p in parsed}
    else:
        loaded = [load_image(p, modality=modality, series=series) for _, p in parsed]
    if opts.mask_path is None:
        return loaded, label_names
    named = dict(loaded) if isinstance(loaded, dict) else {}
    if isinstance(loaded, list):
        if len(loaded) != 1:
            raise InputError("with --mask give exactly one image")
        named[cls.inputs[0]] = loaded[0]
    named["mask"] = load_image(opts.mask_path)
    if label_names is None:  # from the file's header or the built-in table its ids fit
        base = named.get(cls.inputs[0])
        label_names, note = label_names_for(named["mask"], modality=getattr(base, "modality", None))
        status(f"mask {opts.mask_path}: {note}")
        label_names = label_names or None
    return named, label_names


def _store(
    result: ExpertResult, image: MedicalImage | None, mask: MedicalImage | None
) -> dict[str, str]:
    """STOW the result's DICOM-SEG and SR to the image's study; kind -> instance URL."""
    from medm3.dicomweb.store import dicomweb_source, store_result

    assert image is not None
    origin = dicomweb_source(image)
    status(f"storing the results in study {origin['study_uid']} ...")
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
    written is appended to ``warnings``. A 3D segmentation also gets its montage.
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


def report(
    result: ExpertResult, files: dict[str, str], as_json: bool, warnings: list[str] | None = None
) -> None:
    """Print a result: JSON, or what was found (segmentations: ids, names, volumes) and files."""
    from medm3.experts.output import file_note, json_default, probability_lines, segmentation_lines

    for warning in warnings or []:
        click.echo(f"m3: warning: {warning}", err=True)
    if as_json:
        doc = result.to_dict()
        doc["trigger"] = _trigger(result)
        doc["files"] = files
        if warnings:
            doc["warnings"] = list(warnings)
        click.echo(json.dumps(doc, indent=2, default=json_default))
        return
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
