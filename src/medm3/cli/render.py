"""`m3 render`: write one slice (with an optional label overlay) as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from medm3.cli.options import allow_gaps_option
from medm3.cli.outputs import check_output_location, writing
from medm3.errors import InputError


@click.command("render")
@click.argument("image_path", metavar="IMAGE", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="PNG file to write."
)
@click.option(
    "--plane",
    default="axial",
    show_default=True,
    metavar="axial|coronal|sagittal",
    help="Slice plane (2D images: axial only).",
)
@click.option(
    "--slice",
    "index",
    type=int,
    default=None,
    help="Slice index along the plane's normal (RAS+ voxel index: axial 0 = most inferior, "
    "coronal 0 = most posterior, sagittal 0 = patient's leftmost). Default: the slice with "
    "the largest labelled area when --overlay is given, else the middle slice.",
)
@click.option(
    "--window",
    default="auto",
    show_default=True,
    metavar="NAME|W,L",
    help="auto, percentile, stored, abdomen, soft_tissue, lung, bone, brain, or W,L (e.g. 400,40).",
)
@click.option(
    "--overlay",
    "mask_path",
    type=click.Path(path_type=Path),
    help="Label map on the same grid (e.g. a segmentation NIfTI).",
)
@click.option(
    "--labels",
    "labels_path",
    metavar="NAME|FILE",
    help="Label names: totalseg-ct, totalseg-mr, vista3d, brats, or a JSON file "
    '{"1": "spleen", ...} / {"spleen": 1, ...} (default: from the overlay file\'s header or '
    "the built-in table its ids fit).",
)
@click.option("--contours", is_flag=True, help="Draw label outlines instead of filled regions.")
@click.option(
    "--alpha", type=float, default=0.45, show_default=True, help="Opacity of filled labels (0-1)."
)
@click.option("--no-legend", is_flag=True, help="Do not draw the legend.")
@click.option(
    "--legend-all", is_flag=True, help="List every label of the volume, not just this slice's."
)
@click.option("--modality", default=None, help="Override the modality (CT, MR, XR, ...).")
@click.option(
    "--no-annotations",
    is_flag=True,
    help="No orientation letters, scale bar or slice/window text on the image.",
)
@allow_gaps_option
def render(
    image_path: Path,
    output: Path,
    plane: str,
    index: int | None,
    window: str,
    mask_path: Path | None,
    labels_path: Path | None,
    contours: bool,
    alpha: float,
    no_legend: bool,
    legend_all: bool,
    modality: str | None,
    no_annotations: bool,
) -> None:
    """Render a slice of IMAGE (with an optional label overlay) to a PNG.

    Slices are shown in radiological convention: the patient's right on the
    viewer's left; anterior (axial) or superior (coronal, sagittal) at the top;
    anterior on the left for sagittal slices. The image carries orientation
    letters, a scale bar and the slice/window (--no-annotations to leave them
    out), and the PNG records source, plane, slice, window and spacing as text.
    """
    from medm3.imaging.io import load_image
    from medm3.imaging.label_tables import label_names_for, resolve_labels
    from medm3.imaging.render import png_info, render_slice
    from medm3.imaging.slicing import normalize_plane
    from medm3.imaging.windowing import parse_window
    from medm3.utils.atomic import atomic_path

    # Cheap checks first, so typos fail before a large image is read.
    if output.suffix.lower() != ".png":
        raise InputError("output must be a .png file", output)
    check_output_location(output)
    plane = normalize_plane(plane)
    parse_window(window)
    label_names = resolve_labels(labels_path) if labels_path is not None else None

    image = load_image(image_path, modality=modality)
    mask = load_image(mask_path) if mask_path is not None else None
    note = ""
    if mask is not None and label_names is None:
        label_names, note = label_names_for(mask, modality=image.modality)
    result = render_slice(
        image,
        plane=plane,
        index=index,
        window=window,
        mask=mask,
        label_names=label_names,
        contours=contours,
        alpha=alpha,
        legend=not no_legend,
        legend_scope="volume" if legend_all else "slice",
        annotate=not no_annotations,
    )
    info = result.info["medm3"]
    with writing(output), atomic_path(output) as tmp:
        result.save(tmp, format="PNG", pnginfo=png_info(result, source=str(image_path)))

    window_info = info["window"]
    window_text = window_info["text"] if window_info else "none (RGB)"
    labels_text = f", {len(info['labels_in_slice'])} labels shown" if mask is not None else ""
    if info["kind"] == "2d":
        where = "2D image"
    else:
        where = f"{info['plane']} slice {info['index']} of 0-{info['num_slices'] - 1}"
    click.echo(
        f"wrote {output} ({result.width}x{result.height}): {where}, window {window_text}"
        f"{labels_text}"
    )
    if note:
        click.echo(f"labels: {note}")
    for remark in (info.get("annotations") or {}).get("notes", []):
        click.echo(f"note: {remark}")
