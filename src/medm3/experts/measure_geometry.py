"""Geometry of the measure expert: connected components, Feret diameters, boundary faces.

Pure numpy/scipy functions on boolean masks and label boxes, used by
:mod:`medm3.experts.measure` (see its docstring for what each figure means).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: RAS+ array axis -> (name of the face at index 0, name of the face at the end).
_FACES = (("L", "R"), ("P", "A"), ("I", "S"))


def component_sizes(
    components: np.ndarray,
    sizes: np.ndarray,
    spacing: tuple[float, ...],
    voxel_ml: float,
    z0: int,
) -> list[dict[str, Any]]:
    """Per connected component: size and largest axial diameter, largest first.

    Args:
        components: Component ids of one structure's bounding box (``ndimage.label``).
        sizes: Voxels per component id (``1..N``).
        spacing: Voxel spacing in mm.
        voxel_ml: Volume of one voxel in mL.
        z0: Index of the box's first axial slice in the volume.

    Returns:
        ``{"voxels", "volume_ml", "max_axial_diameter_mm", "max_axial_diameter_slice"}``
        per component, largest first.
    """
    ndimage = require_scipy().ndimage
    boxes = ndimage.find_objects(components)
    out = []
    for n, box in enumerate(boxes, start=1):
        if box is None:
            continue
        diameter, z = max_axial_diameter(components[box] == n, (spacing[0], spacing[1]))
        out.append(
            {
                "voxels": int(sizes[n - 1]),
                "volume_ml": float(sizes[n - 1]) * voxel_ml,
                "max_axial_diameter_mm": diameter,
                "max_axial_diameter_slice": None if z is None else int(z + box[2].start + z0),
            }
        )
    out.sort(key=lambda c: -c["voxels"])
    return out


def touched_faces(box: tuple[slice, ...], shape: tuple[int, ...]) -> list[str]:
    """Faces of the volume a bounding box touches (``L``/``R``, ``P``/``A``, ``I``/``S``)."""
    faces = []
    for axis, (low, high) in enumerate(_FACES[: len(box)]):
        if box[axis].start == 0:
            faces.append(low)
        if box[axis].stop == shape[axis]:
            faces.append(high)
    return faces


def max_axial_diameter(
    mask: np.ndarray, pixel_spacing: tuple[float, float]
) -> tuple[float, int | None]:
    """Largest in-plane Feret diameter over the axial slices of a 3D mask.

    Args:
        mask: Boolean ``(X, Y, Z)`` mask.
        pixel_spacing: Spacing of the X and Y axes in mm.

    Returns:
        ``(diameter in mm, slice index along Z)``; ``(0.0, None)`` when empty.
    """
    best, best_z = 0.0, None
    for z in np.flatnonzero(mask.reshape(-1, mask.shape[2]).any(axis=0)):
        diameter = feret_diameter(outline_points(mask[:, :, z], pixel_spacing))
        if best_z is None or diameter > best:
            best, best_z = diameter, int(z)
    return best, best_z


def outline_points(mask2d: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Midpoints of the edges between mask pixels and non-mask pixels, in mm.

    Args:
        mask2d: Boolean 2D mask.
        pixel_spacing: Spacing of the two axes in mm.

    Returns:
        ``(N, 2)`` float array of outline points.
    """
    padded = np.pad(mask2d.astype(bool), 1)
    core = padded[1:-1, 1:-1]
    points = []
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        rows, cols = np.nonzero(core & ~neighbour)
        points.append(np.stack([rows + 0.5 * dr, cols + 0.5 * dc], axis=1))
    pts = np.concatenate(points) * np.asarray(pixel_spacing, dtype=np.float64)
    return np.unique(pts, axis=0)


def feret_diameter(points: np.ndarray) -> float:
    """Largest distance between two of the given 2D points (convex hull + pairwise).

    Args:
        points: ``(N, 2)`` array.

    Returns:
        The maximum pairwise distance (0 for fewer than two points).
    """
    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        require_scipy()
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # collinear: the extremes along the main direction
            centred = points - points.mean(axis=0)
            direction = np.linalg.svd(centred, full_matrices=False)[2][0]
            proj = centred @ direction
            return float(math.dist(points[int(proj.argmin())], points[int(proj.argmax())]))
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=-1)).max())


def require_scipy() -> Any:
    """Import scipy (with ``scipy.ndimage``), or say which extra installs it."""
    try:
        import scipy.ndimage
    except ImportError:
        from medm3.errors import MissingDependencyError

        raise MissingDependencyError("scipy", "experts", "The measure expert") from None
    return scipy
