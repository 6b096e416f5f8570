"""What to do with a DICOM stack that has missing slices (``--allow-gaps``).

By default a stack whose slice positions are not evenly spaced is refused
(:mod:`.dicom_geometry`); the error says how to go on. Two ways on, chosen per
:func:`~medm3.imaging.io.load_image` call (``allow_gaps=``) or for a whole
process with the environment variable ``MEDM3_ALLOW_GAPS`` (so chat, serve and
expert runs get it without options of their own):

``largest``
    Keep the longest run of consecutive, evenly spaced slices (the first one
    along the slice normal when two runs are equally long) and leave the other
    files out. Nothing is invented; the volume is shorter.
``fill``
    Put every real slice on the regular grid and fill each missing position
    with a copy of the nearest real slice (on a tie, the first one along the
    slice normal). Only gaps that are whole multiples of the spacing can be
    filled. The filled slices are marked: ``metadata['filled_slices']`` lists
    their indices along the RAS axis ``metadata['gaps']['axis']``, and a
    warning is logged.

Either way ``metadata['gaps']`` records the policy, the slices found and used,
and a one-line ``note`` for people.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medm3.errors import InputError

#: Environment variable that sets the policy when the caller gives none.
GAPS_ENV = "MEDM3_ALLOW_GAPS"
#: Accepted policies; ``refuse`` is the default.
GAP_POLICIES: tuple[str, ...] = ("refuse", "largest", "fill")
#: Appended to gap errors: how to go on.
GAPS_HINT = "to load anyway: --allow-gaps largest|fill (or MEDM3_ALLOW_GAPS)"


def resolve_gap_policy(value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The gap policy of one read: ``value``, else ``$MEDM3_ALLOW_GAPS``, else ``refuse``.

    Args:
        value: The caller's choice (``"refuse"``, ``"largest"``, ``"fill"``) or None.
        environ: Environment to read (default: ``os.environ``).

    Returns:
        One of :data:`GAP_POLICIES`.

    Raises:
        InputError: If the value (or the variable) is none of them.
    """
    env = os.environ if environ is None else environ
    source = "allow_gaps"
    if value is None:
        value, source = env.get(GAPS_ENV, "").strip() or "refuse", GAPS_ENV
    policy = str(value).strip().lower()
    if policy not in GAP_POLICIES:
        raise InputError(f"{source} must be one of {', '.join(GAP_POLICIES)}, not {value!r}")
    return policy


@dataclass(frozen=True)
class GapReport:
    """What a gap policy did to one stack (kept on :class:`~.dicom_geometry.Stack`).

    Attributes:
        policy: ``largest`` or ``fill``.
        found: Slices in the series.
        used: Real slices in the volume.
        dropped: Files (or frames) left out (``largest``).
        filled: Output slice indices (sorted along the normal) that are copies.
        copied_from: For each filled slice, the output index of the real slice copied.
        range_mm: First and last position along the slice normal of the volume.
    """

    policy: str
    found: int
    used: int
    dropped: list[str] = field(default_factory=list)
    filled: list[int] = field(default_factory=list)
    copied_from: list[int] = field(default_factory=list)
    range_mm: tuple[float, float] = (0.0, 0.0)


def largest_run(dist: np.ndarray, spacing: float, tol: float) -> tuple[int, int]:
    """The longest run of evenly spaced consecutive positions.

    Args:
        dist: Sorted positions along the slice normal (mm).
        spacing: The nominal spacing.
        tol: Allowed deviation from it.

    Returns:
        ``(first, last)`` indices into ``dist``, inclusive; the lowest run wins a tie.
    """
    even = np.abs(np.diff(dist) - spacing) <= tol
    best, start = (0, 0), 0
    for i, ok in enumerate(even):
        if not ok:
            start = i + 1
        elif i + 1 - start > best[1] - best[0]:
            best = (start, i + 1)
    return best


def grid_indices(dist: np.ndarray, spacing: float, tol: float) -> np.ndarray | None:
    """Place sorted positions on the regular grid of ``spacing``.

    Args:
        dist: Sorted positions along the slice normal (mm).
        spacing: The nominal spacing.
        tol: Allowed deviation of each step from a whole multiple of it.

    Returns:
        The grid index of each position (first is 0), or None when a step is
        not a whole multiple of the spacing.
    """
    steps = np.diff(dist) / spacing
    whole = np.round(steps)
    if np.any(whole < 1) or np.any(np.abs(steps - whole) * spacing > tol):
        return None
    return np.concatenate([[0], np.cumsum(whole)]).astype(np.int64)


def nearest_on_grid(grid: np.ndarray) -> np.ndarray:
    """For every grid position, the index (into ``grid``) of the nearest real slice.

    Args:
        grid: Increasing grid indices of the real slices, starting at 0.

    Returns:
        One index per grid position ``0 .. grid[-1]``; ties go to the lower index.
    """
    positions = np.arange(int(grid[-1]) + 1)
    upper = np.clip(np.searchsorted(grid, positions), 0, len(grid) - 1)
    lower = np.clip(upper - 1, 0, len(grid) - 1)
    take_lower = np.abs(positions - grid[lower]) <= np.abs(grid[upper] - positions)
    return np.where(take_lower, lower, upper)


def gap_note(report: GapReport, axis: int, filled_ras: list[int]) -> str:
    """One line for people saying what the policy did.

    Args:
        report: The policy's report.
        axis: RAS array axis along which slices were stacked.
        filled_ras: Indices of the filled slices along that axis.

    Returns:
        The note (also logged as a warning by ``load_image``).
    """
    lo, hi = report.range_mm
    if report.policy == "largest":
        return (
            f"DICOM series has gaps: loaded the largest evenly spaced run, {report.used} of "
            f"{report.found} slices ({lo:.2f} to {hi:.2f} mm along the slice normal); "
            f"{len(report.dropped)} left out"
        )
    shown = ", ".join(str(i) for i in filled_ras[:6]) + (", ..." if len(filled_ras) > 6 else "")
    return (
        f"DICOM series has gaps: {len(filled_ras)} missing slice(s) filled with a copy of the "
        f"nearest real slice (axis {axis}, index {shown}); they hold no measured data"
    )


def gap_metadata(report: GapReport, affine_ras: np.ndarray, count: int) -> dict[str, Any]:
    """``metadata`` entries recording a gap policy, with slice indices in the RAS+ array.

    Args:
        report: The policy's report.
        affine_ras: Affine of the stacked (column, row, slice) voxels, RAS.
        count: Slices in the volume.

    Returns:
        ``{"gaps": {...}, "filled_slices": [...]}`` (the latter only for ``fill``).
    """
    import nibabel as nib

    axis, direction = nib.orientations.io_orientation(affine_ras)[2]
    ras = [k if direction > 0 else count - 1 - k for k in report.filled]
    sources = [k if direction > 0 else count - 1 - k for k in report.copied_from]
    gaps: dict[str, Any] = {
        "policy": report.policy,
        "slices_found": report.found,
        "slices_used": report.used,
        "axis": int(axis),
        "range_mm": [round(report.range_mm[0], 4), round(report.range_mm[1], 4)],
        "note": gap_note(report, int(axis), sorted(ras)),
    }
    out: dict[str, Any] = {"gaps": gaps}
    if report.policy == "largest":
        gaps["left_out"] = list(report.dropped)
    else:
        pairs = sorted(zip(ras, sources, strict=True))
        gaps["copied_from"] = {int(k): int(s) for k, s in pairs}
        out["filled_slices"] = [int(k) for k, _ in pairs]
    return out
