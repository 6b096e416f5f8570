"""Views of segmentation results: the default overlay slice and the montage people read.

:func:`overlay_slice` is the one rule every segmentation expert (VISTA3D,
BraTS, measure) uses when the caller names no slice: the slice with the
largest cross-section of the structures asked for (or, when none of those
was found, of any structure found); ties go to the slice nearest the middle
of the found region (then the lower one), after optional tie-break groups
(BraTS: more tumour core, then more enhancing tumour). With nothing found it is the middle
slice, never an edge slice.

:func:`montage` is the human-facing picture saved beside the single-slice
overlay (:func:`medm3.experts.output.save_result`): a lightbox of a few
evenly spaced slices through the found region (as 3D Slicer's lightbox or
TotalSegmentator's preview show it), each panel annotated with orientation
letters and its slice number, and one legend listing ``id: name`` for every
structure shown. It is never sent to a VLM.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from medm3.imaging.image import MedicalImage

#: Panels of a montage (at most; fewer when the found region is thinner).
MONTAGE_PANELS = 6
#: Panels per montage row.
MONTAGE_COLUMNS = 3


def _area(labels: np.ndarray, axis: int, ids: Iterable[int] | None) -> np.ndarray:
    """Labelled voxels per slice along ``axis`` (of ``ids``, or of any nonzero label)."""
    chosen = list(ids) if ids is not None else None
    hits = labels != 0 if chosen is None else np.isin(labels, chosen)
    return np.count_nonzero(hits, axis=tuple(a for a in range(labels.ndim) if a != axis))


def _found_area(labels: np.ndarray, axis: int, ids: Iterable[int] | None) -> np.ndarray:
    """Per-slice area of ``ids``; of every label when none of ``ids`` is present."""
    wanted = None if ids is None else [int(i) for i in ids]
    area = _area(labels, axis, wanted)
    return _area(labels, axis, None) if wanted is not None and not area.any() else area


def overlay_slice(
    labels: np.ndarray,
    plane: str = "axial",
    *,
    ids: Iterable[int] | None = None,
    tiebreak: Sequence[Iterable[int]] = (),
) -> int:
    """The slice an overlay shows when the caller names none.

    Args:
        labels: ``(X, Y, Z)`` label array (RAS+ voxel order).
        plane: ``axial``, ``coronal`` or ``sagittal``.
        ids: The structures asked for (None: every label). When none of
            them is in ``labels``, every label found counts instead.
        tiebreak: Id groups deciding ties of equal area, most important
            first (e.g. BraTS ``((1, 4), (4,))``: more core, then more
            enhancing tumour).

    Returns:
        The slice with the largest cross-section; ties go to the tie-break
        groups, then to the slice nearest the middle of the found region,
        then to the lower index. The middle slice when nothing is labelled.
    """
    from medm3.imaging.slicing import PLANE_AXIS, normalize_plane

    labels = np.asarray(labels)
    axis = PLANE_AXIS[normalize_plane(plane)]
    area = _found_area(labels, axis, ids)
    count = labels.shape[axis]
    if not area.any():
        return count // 2
    found = np.flatnonzero(area)
    centre = (found[0] + found[-1]) / 2.0
    index = np.arange(count)
    keys: list[np.ndarray] = [-index, -np.abs(index - centre)]  # least significant first
    keys += [_area(labels, axis, group) for group in reversed(list(tiebreak))]
    keys.append(area)
    return int(np.lexsort(keys)[-1])


def montage_slices(
    labels: np.ndarray,
    plane: str = "axial",
    *,
    ids: Iterable[int] | None = None,
    panels: int = MONTAGE_PANELS,
) -> list[int]:
    """Evenly spaced slices through the region the structures occupy (first to last).

    Args:
        labels: ``(X, Y, Z)`` label array.
        plane: Plane of the panels.
        ids: Structures to cover (None: every label; falls back to every
            label when none of ``ids`` is present).
        panels: Most slices returned.

    Returns:
        Sorted, distinct slice indices; empty when nothing is labelled.
    """
    from medm3.imaging.slicing import PLANE_AXIS, normalize_plane

    labels = np.asarray(labels)
    area = _found_area(labels, PLANE_AXIS[normalize_plane(plane)], ids)
    found = np.flatnonzero(area)
    if not found.size:
        return []
    first, last = int(found[0]), int(found[-1])
    if last - first + 1 <= panels:
        return list(range(first, last + 1))
    # panel centres of ``panels`` equal bins over [first, last]: no panel on the thin tips
    edges = np.linspace(first, last + 1, panels + 1)
    picks = [int((lo + hi) // 2) for lo, hi in itertools.pairwise(edges)]
    return sorted(set(picks))


def montage(
    image: MedicalImage,
    labels: np.ndarray,
    *,
    label_names: Mapping[int, str] | None = None,
    plane: str = "axial",
    ids: Iterable[int] | None = None,
    panels: int = MONTAGE_PANELS,
    columns: int = MONTAGE_COLUMNS,
) -> Image.Image | None:
    """A lightbox of evenly spaced slices through the found region, with one legend.

    Args:
        image: The volume the labels lie on (drawn under them).
        labels: Label array on ``image``'s grid.
        label_names: ``{id: name}``; the legend shows ``id: name``.
        plane: Plane of the panels.
        ids: Structures to show (None: every label).
        panels: Most panels.
        columns: Panels per row.

    Returns:
        An RGB picture whose ``info["medm3"]`` holds ``plane``, ``slices``
        and ``legend``; None when nothing is labelled.
    """
    from PIL import Image

    from medm3.imaging.labels import label_name
    from medm3.imaging.overlay import draw_legend, legend_entries
    from medm3.imaging.render import render_slice

    labels = np.asarray(labels)
    slices = montage_slices(labels, plane, ids=ids, panels=panels)
    if not slices:
        return None
    shown = labels if ids is None else np.where(np.isin(labels, list(ids)), labels, 0)
    if ids is not None and not shown.any():
        shown = labels
    pictures = [
        render_slice(image, plane=plane, index=i, mask=shown, legend=False, annotate=True)
        for i in slices
    ]
    width = max(p.width for p in pictures)
    height = max(p.height for p in pictures)
    cols = max(1, min(columns, len(pictures)))
    rows = -(-len(pictures) // cols)
    sheet = Image.new("RGB", (cols * width, rows * height), (0, 0, 0))
    for n, picture in enumerate(pictures):
        row, col = divmod(n, cols)
        sheet.paste(picture, (col * width, row * height))
    ids_shown = sorted({i for p in pictures for i in p.info["medm3"].get("labels_in_slice", [])})
    names = {i: f"{i}: {label_name(label_names, i)}" for i in ids_shown}
    entries = legend_entries(ids_shown, names)
    out = draw_legend(sheet, entries)
    out.info["medm3"] = {
        "kind": "montage",
        "plane": plane,
        "slices": slices,
        "labels_in_slice": ids_shown,
        "legend": [e.as_dict() for e in entries],
    }
    return out
