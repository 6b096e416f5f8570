"""`m3 info`: modality, geometry and value range of one or more images.

All images are read before anything is printed, so a bad input prints only the
one-line error (``m3: error: <file>: <problem>``, exit 2). ``--json`` prints a
JSON list with one :meth:`MedicalImage.summary` object per image, in argument
order; the default is a human-readable block per image.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from medm3.cli.options import allow_gaps_option


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _num(value: float) -> str:
    return f"{value:.6g}"


def format_summary(summary: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Render one image's summary as an aligned text block.

    Args:
        summary: :meth:`MedicalImage.summary` of the image.
        metadata: The image's metadata (for the stored DICOM window).

    Returns:
        Several lines, the first being the source path.
    """
    how = {
        "inferred": "inferred from intensities",
        "dicom": "from DICOM tag",
        "caller": "given with --modality",
        "header": "from file header",
    }.get(summary["modality_source"], summary["modality_source"])
    orientation = summary["orientation"]
    if summary.get("original_orientation") and summary["original_orientation"] != orientation:
        orientation += f" (original {summary['original_orientation']})"
    lo, hi = summary["value_range"]
    bad = summary.get("nonfinite_values") or 0
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        value_text = f"no finite values ({bad:,} NaN/inf)"
    else:
        value_text = f"{_num(lo)} .. {_num(hi)}" + (f" ({bad:,} NaN/inf ignored)" if bad else "")
    rows = [
        ("modality", f"{summary['modality']} ({how})"),
        ("kind", "3D volume" if summary["kind"] == "volume" else "2D image"),
        ("shape", " x ".join(str(s) for s in summary["shape"])),
        (
            "spacing (mm)",
            "unknown (assumed 1 mm)"
            if metadata.get("spacing_assumed")
            else " x ".join(_num(s) for s in summary["spacing_mm"]),
        ),
        ("orientation", orientation),
        ("value range", value_text),
        ("dtype", summary["dtype"]),
        ("format", summary.get("format") or "-"),
        ("series", summary.get("series_description") or "-"),
    ]
    window = metadata.get("window")
    if window:
        rows.append(("window (W/L)", f"{_num(window[0])} / {_num(window[1])}"))
    if metadata.get("photometric"):
        rows.append(("photometric", str(metadata["photometric"])))
    if metadata.get("converted_to_grayscale"):
        rows.append(("note", "RGB file with three equal channels: read as greyscale"))
    gaps = metadata.get("gaps")
    if gaps:
        rows.append(("gaps", f"--allow-gaps {gaps['policy']}: {gaps['note']}"))
    if metadata.get("filled_slices"):
        filled = ", ".join(str(i) for i in metadata["filled_slices"])
        rows.append(("filled slices", f"axis {gaps['axis'] if gaps else '?'} index {filled}"))
    if summary["modality"] == "SEG":
        rows.append(("note", "integer labels: read as a label map (--modality to override)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join([summary["source"], *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


@click.command("info")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@click.option(
    "--modality",
    "-m",
    default=None,
    metavar="M",
    help="Override the modality: CT, MR, XR, PT, US, OT (aliases: MRI, CXR, X-ray, ...).",
)
@click.option(
    "--series",
    default=None,
    metavar="S",
    help="For a DICOM folder/zip with several series: its index or SeriesInstanceUID.",
)
@allow_gaps_option
def info(images: tuple[str, ...], as_json: bool, modality: str | None, series: str | None) -> None:
    """Show modality, shape, spacing, orientation and value range of IMAGE(s).

    IMAGE is a NIfTI/NRRD/MetaImage/DICOM/PNG/JPEG file, a folder holding a
    DICOM series, or a .zip of one.
    """
    from medm3.imaging.io import load_image

    loaded = [load_image(path, modality, series=series) for path in images]
    if as_json:
        click.echo(json.dumps([_finite(img.summary()) for img in loaded], indent=2))
        return
    click.echo("\n\n".join(format_summary(img.summary(), img.metadata) for img in loaded))
