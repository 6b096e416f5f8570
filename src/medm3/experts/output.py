"""Saving expert results to a folder.

Layout written by :func:`save_result` into ``out_dir``:

* ``<overlay.name>.png`` for every overlay (e.g. ``measure_axial_17.png``);
* ``<expert>_labels.nii.gz``: the label map on the input grid (when the
  result has one), written with :func:`medm3.imaging.io.save_nifti`
  (``<expert>_labels.png``, 8- or 16-bit grey, for 2D label maps);
* ``result.json``: :meth:`ExpertResult.to_dict` plus ``"files"`` (kind ->
  file name relative to ``out_dir``), written last.

Every file is written atomically (temporary file + rename), so a folder never
holds a partial file. DICOM-SEG export is not implemented.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import ExpertResult
    from medm3.imaging.image import MedicalImage

#: File name of the JSON summary.
RESULT_JSON = "result.json"


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars/arrays, paths and sets; else ``str``."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)


def result_files(result: ExpertResult) -> dict[str, str]:
    """File names :func:`save_result` writes for ``result`` (kind -> name), before writing."""
    files = {f"overlay:{o.name}": f"{o.name}.png" for o in result.overlays}
    if result.label_map is not None:
        suffix = ".nii.gz" if result.label_map.is_volume else ".png"
        files["label_map"] = f"{result.expert}_labels{suffix}"
    files["result"] = RESULT_JSON
    return files


def save_result(
    result: ExpertResult,
    out_dir: str | os.PathLike[str],
    *,
    source_image: MedicalImage | None = None,
) -> dict[str, str]:
    """Write a result's overlays, label map and JSON summary into ``out_dir``.

    Args:
        result: The expert result.
        out_dir: Destination folder (created when missing).
        source_image: The input image; when given, the label map must lie on
            its grid (checked), so the NIfTI overlays the input in any viewer.

    Returns:
        Kind -> path of every file written: ``overlay:<name>``, ``label_map``,
        ``result``.

    Raises:
        InputError: The label map does not match ``source_image``'s grid.
    """
    import numpy as np

    from medm3.imaging.io import save_nifti
    from medm3.utils.atomic import atomic_path, atomic_write_text

    folder = Path(out_dir)
    names = result_files(result)
    if result.label_map is not None and source_image is not None:
        lm = result.label_map
        if lm.spatial_shape != source_image.spatial_shape or not np.allclose(
            lm.affine, source_image.affine, atol=1e-3
        ):
            raise InputError(
                f"label map grid {lm.spatial_shape} does not match the input image grid "
                f"{source_image.spatial_shape}"
            )
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for overlay in result.overlays:
        path = folder / names[f"overlay:{overlay.name}"]
        with atomic_path(path) as tmp:
            overlay.image.save(tmp, format="PNG")
        written[f"overlay:{overlay.name}"] = str(path)
    if result.label_map is not None:
        path = folder / names["label_map"]
        if result.label_map.is_volume:
            save_nifti(result.label_map, path)
        else:
            _save_label_png(result.label_map.array, path)
        written["label_map"] = str(path)
    doc = result.to_dict()
    doc["files"] = {kind: names[kind] for kind in [*written, "result"]}
    path = folder / RESULT_JSON
    atomic_write_text(path, json.dumps(doc, indent=2, default=json_default) + "\n")
    written["result"] = str(path)
    return written


def _save_label_png(array: Any, path: Path) -> None:
    import numpy as np
    from PIL import Image

    from medm3.utils.atomic import atomic_path

    labels = np.asarray(array)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise InputError("2D label map values must lie in 0..65535 to be saved as PNG")
    dtype = np.uint8 if not labels.size or labels.max() <= 255 else np.uint16
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(dtype)).save(tmp, format="PNG")
