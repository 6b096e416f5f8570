"""Stacking DICOM slices (or frames) into a volume: sort, validate, build the affine.

Slices are sorted by their position along the slice normal
(``row_direction x column_direction`` from ImageOrientationPatient), never by
file name or InstanceNumber. The stack is refused with a message naming the
files involved when slices have different sizes, orientations or pixel
spacings, share a position (duplicates), or are unevenly spaced (a gap is
reported with the position of the missing slice, and how to go on: see
:mod:`.dicom_gaps` for ``--allow-gaps largest|fill``). The step between slices
is the mean IPP difference, so gantry-tilted stacks keep their shear.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medm3.errors import InputError
from medm3.imaging.readers.dicom_gaps import (
    GAPS_HINT,
    GapReport,
    grid_indices,
    largest_run,
    nearest_on_grid,
)

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
        order: Indices into the input list, sorted along the slice normal, one
            per slice of the volume (a ``fill`` policy repeats the nearest
            real slice at missing positions; ``largest`` leaves slices out).
        affine_lps: 4x4 matrix mapping ``(col, row, slice)`` indices to LPS mm.
        slice_spacing: Distance between consecutive slices in mm.
        gaps: What a gap policy did, or None for a regular stack.
    """

    order: list[int]
    affine_lps: np.ndarray
    slice_spacing: float
    gaps: GapReport | None = None


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
    gaps: str = "refuse",
) -> Stack:
    """Sort slices along their normal, validate the stack and build its LPS affine.

    Args:
        slices: One entry per slice, in any order.
        path: The folder/archive/file the slices come from (for messages).
        thickness: Slice spacing to use when there is a single slice.
        gaps: What to do with missing slices or uneven spacing: ``refuse``,
            ``largest`` or ``fill`` (see :mod:`.dicom_gaps`).

    Returns:
        The sort order, the voxel -> LPS affine and the slice spacing.

    Raises:
        InputError: On inconsistent size/orientation/spacing, duplicate
            positions, a missing slice or uneven spacing (unless ``gaps`` allows it).
    """
    _check_alike(slices, path)
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
    report = None
    if len(slices) == 1:
        spacing = float(thickness) if thickness and thickness > 0 else 1.0
        step = normal * spacing
        grid = np.zeros(1, dtype=np.int64)
    else:
        spacing, tol = _nominal_spacing(dist, labels, path)
        grid = np.arange(len(order))
        if np.any(np.abs(np.diff(dist) - spacing) > tol):
            keep, grid, report = _apply_gaps(gaps, dist, labels, spacing, tol, path)
            order = [order[i] for i in keep]
            labels = [labels[i] for i in keep]
        step = (positions[order[-1]] - positions[order[0]]) / int(grid[-1])
        _check_line(positions[order], grid, step, spacing, labels, path)
    row_sp, col_sp = slices[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_sp
    affine[:3, 1] = col_dir * row_sp
    affine[:3, 2] = step
    affine[:3, 3] = positions[order[0]]
    if report is not None and report.policy == "fill":
        order = [order[i] for i in nearest_on_grid(grid)]
    return Stack(order=order, affine_lps=affine, slice_spacing=spacing, gaps=report)


def _check_alike(slices: Sequence[SliceGeometry], path: str | os.PathLike[str]) -> None:
    """Refuse slices of different sizes, orientations or pixel spacings."""
    _first_mismatch(slices, "rows", None, path)
    _first_mismatch(slices, "cols", None, path)
    _first_mismatch(
        slices, "orientation", lambda a, b: np.allclose(a, b, atol=ORIENTATION_TOL), path
    )
    _first_mismatch(
        slices, "pixel_spacing", lambda a, b: np.allclose(a, b, rtol=1e-3, atol=1e-4), path
    )


def _check_line(
    positions: np.ndarray,
    grid: np.ndarray,
    step: np.ndarray,
    spacing: float,
    labels: list[str],
    path: str | os.PathLike[str],
) -> None:
    """Refuse slices that are not on the straight line ``first + grid * step``."""
    expected = positions[0] + np.outer(grid, step)
    off = np.linalg.norm(positions - expected, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > max(0.1 * spacing, 0.05):
        raise InputError(
            f"slices do not lie on a straight line: {labels[worst]} is {off[worst]:.2f} mm "
            "off the stack axis",
            path,
        )


def _nominal_spacing(
    dist: np.ndarray, labels: list[str], path: str | os.PathLike[str]
) -> tuple[float, float]:
    """Refuse duplicates; return the nominal slice spacing and the tolerance around it."""
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
    return spacing, SPACING_REL_TOL * spacing + 0.01


def _apply_gaps(
    policy: str,
    dist: np.ndarray,
    labels: list[str],
    spacing: float,
    tol: float,
    path: str | os.PathLike[str],
) -> tuple[list[int], np.ndarray, GapReport]:
    """Keep or place the slices of an uneven stack as ``policy`` says, or refuse it.

    Returns:
        The indices (into the sorted slices) kept, their grid indices and the report.
    """
    if policy == "largest":
        first, last = largest_run(dist, spacing, tol)
        keep = list(range(first, last + 1))
        dropped = [labels[i] for i in range(len(labels)) if not first <= i <= last]
        span = (float(dist[first]), float(dist[last]))
        report = GapReport("largest", len(labels), len(keep), dropped=dropped, range_mm=span)
        return keep, np.arange(len(keep)), report
    grid = grid_indices(dist, spacing, tol) if policy == "fill" else None
    if grid is None:
        _refuse(dist, labels, spacing, tol, path, policy)
    assert grid is not None
    nearest = nearest_on_grid(grid)
    real = set(int(g) for g in grid)
    filled = [k for k in range(len(nearest)) if k not in real]
    report = GapReport(
        "fill",
        len(labels),
        len(labels),
        filled=filled,
        copied_from=[int(grid[nearest[k]]) for k in filled],
        range_mm=(float(dist[0]), float(dist[-1])),
    )
    return list(range(len(labels))), grid, report


def _refuse(
    dist: np.ndarray,
    labels: list[str],
    spacing: float,
    tol: float,
    path: str | os.PathLike[str],
    policy: str,
) -> None:
    """Raise the error for the first gap or uneven step, saying how to go on."""
    diffs = np.diff(dist)
    i = int(np.flatnonzero(np.abs(diffs - spacing) > tol)[0])
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
            f"spacing {spacing:.2f} mm elsewhere); {GAPS_HINT}",
            path,
            details=[
                f"gap between {labels[i]} at {dist[i]:.2f} mm and {labels[i + 1]} at "
                f"{dist[i + 1]:.2f} mm",
                "missing positions (mm): " + ", ".join(f"{m:.2f}" for m in missing),
            ],
        )
    hint = "cannot fill it on a regular grid; try --allow-gaps largest" if policy == "fill" else ""
    raise InputError(
        f"non-uniform slice spacing: {gap:.2f} mm between {Path(labels[i]).name} and "
        f"{Path(labels[i + 1]).name} but {spacing:.2f} mm elsewhere; "
        + (hint or "to load the largest evenly spaced run: --allow-gaps largest"),
        path,
    )
