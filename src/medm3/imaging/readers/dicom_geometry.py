"""Stacking DICOM slices (or frames) into a volume: sort, validate, build the affine.

Slices are sorted by their position along the slice normal
(``row_direction x column_direction`` from ImageOrientationPatient), never by
file name or InstanceNumber. The stack is refused with a message naming the
files involved when slices have different sizes, orientations or pixel
spacings, share a position (duplicates), or are unevenly spaced (a gap is
reported with the position of the missing slice). The step between slices is
the mean IPP difference, so gantry-tilted stacks keep their shear.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError

#: Direction cosines may differ by this much between slices.
ORIENTATION_TOL = 1e-3
#: Slices closer than this along the normal (mm) are duplicates.
DUPLICATE_TOL_MM = 1e-2
#: A spacing may differ from the nominal one by this fraction (+ 0.01 mm) before it is uneven.
SPACING_REL_TOL = 0.05


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one 2D slice of a stack.

    Attributes:
        label: File name (or ``frame N``) for messages.
        position: ImagePositionPatient, LPS mm (centre of the first pixel).
        orientation: ImageOrientationPatient (row direction, then column direction).
        pixel_spacing: ``(row_spacing, col_spacing)`` in mm.
        rows: Number of rows.
        cols: Number of columns.
    """

    label: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int


@dataclass(frozen=True)
class Stack:
    """The result of :func:`stack_slices`.

    Attributes:
        order: Indices into the input list, sorted along the slice normal.
        affine_lps: 4x4 matrix mapping ``(col, row, slice)`` indices to LPS mm.
        slice_spacing: Distance between consecutive slices in mm.
    """

    order: list[int]
    affine_lps: np.ndarray
    slice_spacing: float


def _first_mismatch(
    slices: Sequence[SliceGeometry],
    key: str,
    same: Callable[[Any, Any], bool] | None,
    path: str | os.PathLike[str],
) -> None:
    ref = slices[0]
    for s in slices[1:]:
        a, b = getattr(ref, key), getattr(s, key)
        ok = same(a, b) if same is not None else a == b
        if not ok:
            raise InputError(
                f"slices do not form one volume: {ref.label} has {key}={_fmt(a)} but "
                f"{s.label} has {key}={_fmt(b)}",
                path,
            )


def _fmt(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"
    return str(value)


def stack_slices(
    slices: Sequence[SliceGeometry],
    path: str | os.PathLike[str],
    thickness: float | None = None,
) -> Stack:
    """Sort slices along their normal, validate the stack and build its LPS affine.

    Args:
        slices: One entry per slice, in any order.
        path: The folder/archive/file the slices come from (for messages).
        thickness: Slice spacing to use when there is a single slice.

    Returns:
        The sort order, the voxel -> LPS affine and the slice spacing.

    Raises:
        InputError: On inconsistent size/orientation/spacing, duplicate
            positions, a missing slice or uneven spacing.
    """
    _first_mismatch(slices, "rows", None, path)
    _first_mismatch(slices, "cols", None, path)
    _first_mismatch(
        slices, "orientation", lambda a, b: np.allclose(a, b, atol=ORIENTATION_TOL), path
    )
    _first_mismatch(
        slices, "pixel_spacing", lambda a, b: np.allclose(a, b, rtol=1e-3, atol=1e-4), path
    )
    iop = np.asarray(slices[0].orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise InputError(
            f"{slices[0].label} has an invalid ImageOrientationPatient {_fmt(tuple(iop))}", path
        )
    normal /= norm
    positions = np.asarray([s.position for s in slices], dtype=np.float64)
    dist = positions @ normal
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    dist = dist[order]
    labels = [slices[i].label for i in order]
    if len(slices) == 1:
        spacing = float(thickness) if thickness and thickness > 0 else 1.0
        step = normal * spacing
    else:
        spacing = _check_spacing(dist, labels, path)
        step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
        expected = positions[order[0]] + np.outer(np.arange(len(order)), step)
        off = np.linalg.norm(positions[order] - expected, axis=1)
        worst = int(np.argmax(off))
        if off[worst] > max(0.1 * spacing, 0.05):
            raise InputError(
                f"slices do not lie on a straight line: {labels[worst]} is {off[worst]:.2f} mm "
                "off the stack axis",
                path,
            )
    row_sp, col_sp = slices[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_sp
    affine[:3, 1] = col_dir * row_sp
    affine[:3, 2] = step
    affine[:3, 3] = positions[order[0]]
    return Stack(order=order, affine_lps=affine, slice_spacing=spacing)


def _check_spacing(dist: np.ndarray, labels: list[str], path: str | os.PathLike[str]) -> float:
    """Refuse duplicates, gaps and uneven spacing; return the slice spacing."""
    diffs = np.diff(dist)
    dup = np.flatnonzero(diffs < DUPLICATE_TOL_MM)
    if dup.size:
        i = int(dup[0])
        raise InputError(
            f"duplicate slice position {dist[i]:.2f} mm along the slice normal: "
            f"{labels[i]} and {labels[i + 1]} (several acquisitions in one series? "
            "split them into separate folders)",
            path,
        )
    # Gaps only make differences larger: the nominal spacing is the median of
    # the differences close to the smallest one (robust with few slices).
    base = float(diffs.min())
    spacing = float(np.median(diffs[diffs <= base * (1 + SPACING_REL_TOL) + 0.01]))
    tol = SPACING_REL_TOL * spacing + 0.01
    bad = np.flatnonzero(np.abs(diffs - spacing) > tol)
    if not bad.size:
        return spacing
    i = int(bad[0])
    gap = float(diffs[i])
    ratio = gap / spacing
    if round(ratio) >= 2 and abs(ratio - round(ratio)) * spacing <= tol:
        missing = [dist[i] + k * spacing for k in range(1, round(ratio))]
        where = ", ".join(f"{m:.2f} mm" for m in missing[:3])
        if len(missing) > 3:
            where += f" ... ({len(missing)} slices)"
        raise InputError(
            f"missing slice(s) at {where} along the slice normal "
            f"(between {Path(labels[i]).name} and {Path(labels[i + 1]).name}; "
            f"spacing {spacing:.2f} mm elsewhere)",
            path,
            details=[
                f"gap between {labels[i]} at {dist[i]:.2f} mm and {labels[i + 1]} at "
                f"{dist[i + 1]:.2f} mm",
                "missing positions (mm): " + ", ".join(f"{m:.2f}" for m in missing),
            ],
        )
    raise InputError(
        f"non-uniform slice spacing: {gap:.2f} mm between {labels[i]} and {labels[i + 1]} "
        f"but {spacing:.2f} mm elsewhere",
        path,
    )
