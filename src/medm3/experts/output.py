"""Saving expert results to a folder.

Layout written by :func:`save_result` into ``out_dir``:

* ``<overlay.name>.png`` for every overlay (e.g. ``measure_axial_17.png``);
  an overlay drawn without a legend (what the VLM sees: the result text
  names the colours) is saved with one, listing ``id: name`` of the labels
  in its slice;
* ``<expert>_montage.png`` (with ``montage=True``, as ``m3 experts run``
  asks): for a 3D label map with something found, when the input image is
  given: a few evenly spaced slices through the found region with one
  ``id: name`` legend (:func:`medm3.experts.views.montage`), for people;
  the VLM never sees it;
* ``<expert>_labels.nii.gz``: the label map on the input grid (when the
  result has one), written with :func:`medm3.imaging.io.save_nifti`
  (``<expert>_labels.png``, 8- or 16-bit grey, for 2D label maps);
* ``<expert>_seg.dcm``: the label map as a DICOM Segmentation referencing
  the input series (:mod:`medm3.experts.dicom_seg`), only when the input
  image was read from a DICOM series (not for NIfTI, PNG or single DICOM
  files);
* ``result.json``: :meth:`ExpertResult.to_dict` plus ``"files"`` (kind ->
  file name relative to ``out_dir``) and, when something could not be
  written, ``"warnings"`` (one line each), written last.

Every file is written atomically (temporary file + rename), so a folder never
holds a partial file. A DICOM-SEG that cannot be written (empty label map,
source series moved or changed, no Frame of Reference UID, highdicom not
installed ...) does not fail the save: the other files are written and the
reason goes to ``warnings``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.errors import InputError, MedM3Error

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import ExpertResult
    from medm3.imaging.image import MedicalImage

logger = logging.getLogger(__name__)

#: File name of the JSON summary.
RESULT_JSON = "result.json"


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars/arrays, paths and sets; else ``str``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)


def probability_lines(result: ExpertResult) -> list[str]:
    """Human lines for a classification result: ``Effusion: yes (p = 0.73)``, highest first.

    The text a VLM sees keeps the model's yes/no format; these lines are for
    people (``m3 experts run cxr``). Empty when the result has no probabilities.
    """
    findings = dict(result.findings)
    rows = sorted(result.probabilities.items(), key=lambda kv: -float(kv[1]))
    out = []
    for label, p in rows:
        verdict = findings.get(label)
        word = "" if verdict is None else ("yes" if verdict else "no")
        out.append(f"{label}: {word} (p = {float(p):.2f})".replace(":  (", ": ("))
    return out


def segmentation_lines(result: ExpertResult) -> list[str]:
    """Human lines for a segmentation result: what was segmented, with ids, colours and volumes.

    ``VISTA3D (hepatic tumor): 2 structures found`` then one line per label
    (``  26: hepatic tumor, yellow, 12.3 mL``). The text a VLM sees keeps the
    trained ``The results are <segmentation>...`` wording; these lines are for
    people (``m3 experts run``). Empty when the result has no label map.
    """
    from medm3.imaging.labels import label_name
    from medm3.imaging.overlay import label_color_name

    lm = result.label_map
    if lm is None:
        return []
    ids, counts = np.unique(np.asarray(lm.array), return_counts=True)
    found = [(int(i), int(n)) for i, n in zip(ids, counts, strict=True) if i > 0]
    voxel_ml = float(np.prod(lm.spacing[: len(lm.spatial_shape)])) / 1000.0
    colours = {str(k): v for k, v in (result.info.get("colors") or {}).items()}
    what = result.trigger or result.expert.upper()
    if result.args:
        what += f" ({result.args})"
    plural = "" if len(found) == 1 else "s"
    lines = [f"{what}: " + (f"{len(found)} structure{plural} found" if found else "nothing found")]
    for label, voxels in found:
        colour = colours.get(str(label)) or label_color_name(label)
        size = f"{voxels * voxel_ml:.1f} mL" if lm.is_volume else f"{voxels} pixels"
        lines.append(f"  {label}: {label_name(result.label_names, label)}, {colour}, {size}")
    return lines


def file_note(result: ExpertResult, kind: str) -> str:
    """What a file :func:`save_result` wrote shows, for people (``""`` when plain)."""
    if kind.startswith("overlay:"):
        overlay = next((o for o in result.overlays if f"overlay:{o.name}" == kind), None)
        if overlay is not None and overlay.plane and overlay.slice_index is not None:
            return f"overlay, {overlay.plane} slice {overlay.slice_index}, legend with ids"
        return "overlay, legend with ids"
    return {
        "montage": "montage of slices through what was found, legend with ids",
        "label_map": "label map on the input grid",
        "dicom_seg": "DICOM Segmentation",
        "result": "summary",
    }.get(kind, "")


def with_legend(picture: Any, label_names: dict[int, str] | None) -> Any:
    """``picture`` with a legend (``id: name`` per label in its slice) if it has none yet.

    Args:
        picture: A rendered overlay (:func:`medm3.imaging.render.render_slice`
            output; its ``info["medm3"]`` says which labels it shows).
        label_names: ``{id: name}`` of the result.

    Returns:
        The picture, with a legend panel on its right when it had labels but no legend.
    """
    from medm3.imaging.labels import label_name
    from medm3.imaging.overlay import draw_legend, legend_entries
    from medm3.imaging.render import recolor

    meta = dict(getattr(picture, "info", {}).get("medm3") or {})
    ids = meta.get("labels_in_slice") or []
    if not ids or meta.get("legend"):
        return picture
    names = {int(i): f"{int(i)}: {label_name(label_names, int(i))}" for i in ids}
    palette = {int(k): tuple(v) for k, v in (meta.get("colors") or {}).items()}
    entries = recolor(legend_entries(ids, names), palette)  # type: ignore[arg-type]
    out = draw_legend(picture, entries)
    out.info["medm3"] = {**meta, "legend": [e.as_dict() for e in entries]}
    return out


def result_files(
    result: ExpertResult, source_image: MedicalImage | None = None, *, montage: bool = False
) -> dict[str, str]:
    """File names :func:`save_result` may write for ``result`` (kind -> name), before writing.

    Args:
        result: The expert result.
        source_image: The input image; a DICOM series adds ``dicom_seg``
            (which :func:`save_result` skips, with a warning, when it cannot
            be written).
        montage: Include the montage (see :func:`save_result`).
    """
    from medm3.experts.dicom_seg import seg_file_name, supports_dicom_seg

    files = {f"overlay:{o.name}": f"{o.name}.png" for o in result.overlays}
    if montage and _montage_wanted(result, source_image):
        files["montage"] = f"{result.expert}_montage.png"
    if result.label_map is not None:
        suffix = ".nii.gz" if result.label_map.is_volume else ".png"
        files["label_map"] = f"{result.expert}_labels{suffix}"
        if result.label_map.is_volume and supports_dicom_seg(source_image):
            files["dicom_seg"] = seg_file_name(result.expert)
    files["result"] = RESULT_JSON
    return files


def save_result(
    result: ExpertResult,
    out_dir: str | os.PathLike[str],
    *,
    source_image: MedicalImage | None = None,
    warnings: list[str] | None = None,
    montage: bool = False,
) -> dict[str, str]:
    """Write a result's overlays, label map and JSON summary into ``out_dir``.

    Args:
        result: The expert result.
        out_dir: Destination folder (created when missing).
        source_image: The input image; when given, the label map must lie on
            its grid (checked), so the NIfTI overlays the input in any viewer.
            When it was read from a DICOM series the label map is also
            written as a DICOM-SEG.
        warnings: When given, one-line warnings (e.g. why no DICOM-SEG was
            written) are appended to it; they are in ``result.json`` too.
        montage: Also write ``<expert>_montage.png`` (3D label map with
            something found, and ``source_image`` given); ``m3 experts run``
            asks for it.

    Returns:
        Kind -> path of every file written: ``overlay:<name>``, ``montage``,
        ``label_map``, ``dicom_seg``, ``result``.

    Raises:
        InputError: The label map does not match ``source_image``'s grid.
    """
    from medm3.utils.atomic import atomic_write_text

    folder = Path(out_dir)
    names = result_files(result, source_image, montage=montage)
    if result.label_map is not None and source_image is not None:
        _check_grid(result.label_map, source_image)
    folder.mkdir(parents=True, exist_ok=True)
    written = _write_pictures(result, folder, names, source_image)
    if result.label_map is not None:
        written["label_map"] = _write_label_map(result.label_map, folder / names["label_map"])
    notes: list[str] = []
    if "dicom_seg" in names and result.label_map is not None and source_image is not None:
        path = folder / names["dicom_seg"]
        note = _save_dicom_seg(result, source_image, path)
        if note is None:
            written["dicom_seg"] = str(path)
        else:
            notes.append(note)
    doc = result.to_dict()
    doc["files"] = {kind: names[kind] for kind in [*written, "result"]}
    if notes:
        doc["warnings"] = notes
    path = folder / RESULT_JSON
    atomic_write_text(path, json.dumps(doc, indent=2, default=json_default) + "\n")
    written["result"] = str(path)
    if warnings is not None:
        warnings.extend(notes)
    return written


def _check_grid(label_map: MedicalImage, source_image: MedicalImage) -> None:
    if label_map.spatial_shape != source_image.spatial_shape or not np.allclose(
        label_map.affine, source_image.affine, atol=1e-3
    ):
        raise InputError(
            f"label map grid {label_map.spatial_shape} does not match the input image grid "
            f"{source_image.spatial_shape}"
        )


def _write_pictures(
    result: ExpertResult,
    folder: Path,
    names: dict[str, str],
    source_image: MedicalImage | None,
) -> dict[str, str]:
    """The overlays (with an ``id: name`` legend) and the montage when asked; kind -> path."""
    from medm3.utils.atomic import atomic_path

    pictures = [
        (f"overlay:{o.name}", with_legend(o.image, result.label_names)) for o in result.overlays
    ]
    if "montage" in names and source_image is not None:
        pictures.append(("montage", result_montage(result, source_image)))
    written: dict[str, str] = {}
    for kind, picture in pictures:
        if picture is None:
            continue
        path = folder / names[kind]
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
        written[kind] = str(path)
    return written


def _write_label_map(label_map: MedicalImage, path: Path) -> str:
    from medm3.imaging.io import save_nifti

    if label_map.is_volume:
        save_nifti(label_map, path)
    else:
        _save_label_png(label_map.array, path)
    return str(path)


def _montage_wanted(result: ExpertResult, source_image: MedicalImage | None) -> bool:
    lm = result.label_map
    return (
        lm is not None
        and lm.is_volume
        and source_image is not None
        and source_image.is_volume
        and bool(np.asarray(lm.array).any())
    )


def result_montage(result: ExpertResult, source_image: MedicalImage) -> Any:
    """The montage of a segmentation result on its input image (None when nothing was found).

    The panels are in the plane of the result's first overlay (axial when it
    has none); the legend lists ``id: name`` of every structure shown.

    Args:
        result: A result with a 3D label map on ``source_image``'s grid.
        source_image: The volume drawn under the labels.
    """
    from medm3.experts.views import montage

    if result.label_map is None:
        return None
    plane = next((o.plane for o in result.overlays if o.plane), None) or "axial"
    labels = np.asarray(result.label_map.array)
    return montage(source_image, labels, label_names=result.label_names, plane=plane)


def _save_dicom_seg(result: ExpertResult, source_image: MedicalImage, path: Path) -> str | None:
    """Write the DICOM-SEG; return None, or a one-line warning saying why it was not written."""
    from medm3.experts.dicom_seg import write_dicom_seg

    assert result.label_map is not None
    version = result.info.get("weights_version") or result.info.get("bundle_version")
    try:
        write_dicom_seg(
            result.label_map,
            result.label_names,
            source_image,
            path,
            expert=result.expert,
            expert_version=str(version) if version else None,
        )
    except MedM3Error as exc:  # InputError, MissingDependencyError (no highdicom)
        return "no DICOM-SEG written: " + " ".join(exc.message.split())
    except Exception as exc:  # a SEG problem must not lose the other outputs
        logger.warning("DICOM-SEG export failed", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return f"no DICOM-SEG written: {type(exc).__name__}: {first}"
    return None


def _save_label_png(array: Any, path: Path) -> None:
    from PIL import Image

    from medm3.utils.atomic import atomic_path

    labels = np.asarray(array)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise InputError("2D label map values must lie in 0..65535 to be saved as PNG")
    dtype = np.uint8 if not labels.size or labels.max() <= 255 else np.uint16
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(dtype)).save(tmp, format="PNG")
