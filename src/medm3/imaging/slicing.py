"""Cutting 2D slices out of volumes, in radiological display convention.

Volumes are ``(X, Y, Z)`` arrays in RAS+ voxel order (see
:mod:`medm3.imaging.image`): X grows toward the patient's Right, Y toward
Anterior, Z toward Superior.

**Slice index convention** (what ``--slice N`` and every ``index`` here mean):
the voxel index along the plane's normal axis of that RAS+ array:

=========  ===========  ========================  ============================
plane      normal axis  index 0 is                display (row 0 / column 0)
=========  ===========  ========================  ============================
axial      Z (2)        most inferior slice       anterior at top, patient
                                                  right on the viewer's left
coronal    Y (1)        most posterior slice      superior at top, patient
                                                  right on the viewer's left
sagittal   X (0)        patient's leftmost slice  superior at top, anterior
                                                  on the viewer's left
=========  ===========  ========================  ============================

Display pixels ``(row, col)`` of a slice at native resolution map to voxels
with :func:`slice_to_voxel` and back with :func:`voxel_to_slice`. Rendered
PNGs are resampled to square pixels (and possibly scaled); divide rendered
pixel coordinates by :attr:`SliceView.zoom` (per axis) to get native ones.

2D images have a single "axial" slice, index 0; asking for another plane or
index is an :class:`~medm3.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage

#: Planes, in the order users usually think of them.
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Plane -> index of its normal axis in the ``(X, Y, Z)`` RAS+ array.
PLANE_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}


def normalize_plane(plane: str) -> str:
    """Validate a plane name.

    Args:
        plane: ``axial``, ``coronal`` or ``sagittal`` (case-insensitive).

    Returns:
        The lower-case plane name.

    Raises:
        InputError: For any other name.
    """
    name = str(plane).strip().lower()
    if name not in PLANE_AXIS:
        raise InputError(f"unknown plane '{plane}'; valid planes: {', '.join(PLANES)}")
    return name


def _in_plane_axes(plane: str) -> tuple[int, int]:
    """The two remaining axes ``(a, b)``, a < b; display cols come from a, rows from b."""
    normal = PLANE_AXIS[normalize_plane(plane)]
    a, b = (ax for ax in range(3) if ax != normal)
    return a, b


def num_slices(shape: tuple[int, ...], plane: str) -> int:
    """Number of slices of a volume of ``shape`` in ``plane``.

    Args:
        shape: Volume shape ``(X, Y, Z[, C])``.
        plane: Plane name.

    Returns:
        The length of the plane's normal axis.
    """
    return int(shape[PLANE_AXIS[normalize_plane(plane)]])


def check_slice(index: int, shape: tuple[int, ...], plane: str) -> int:
    """Validate a slice index (no negative/Python-style indices).

    Args:
        index: Requested slice.
        shape: Volume shape.
        plane: Plane name.

    Returns:
        ``index`` as an int.

    Raises:
        InputError: If it is outside ``0 .. num_slices - 1``.
    """
    count = num_slices(shape, plane)
    if isinstance(index, bool) or int(index) != index or not 0 <= int(index) < count:
        raise InputError(
            f"slice {index} is out of range for the {normalize_plane(plane)} plane: "
            f"valid slices are 0-{count - 1}"
        )
    return int(index)


def slice_to_voxel(
    plane: str, index: int, row: int, col: int, shape: tuple[int, ...]
) -> tuple[int, int, int]:
    """Voxel ``(x, y, z)`` shown at display pixel ``(row, col)`` of a slice.

    ``(row, col)`` are native (un-resampled) display coordinates of the slice
    returned by :func:`take_slice`; row 0 is the top, col 0 the left.

    Args:
        plane: Plane name.
        index: Slice index (see the module docstring).
        row: Display row.
        col: Display column.
        shape: Volume shape ``(X, Y, Z[, C])``.

    Returns:
        The voxel index in the RAS+ array.
    """
    a, b = _in_plane_axes(plane)
    voxel = [0, 0, 0]
    voxel[PLANE_AXIS[normalize_plane(plane)]] = int(index)
    voxel[a] = int(shape[a]) - 1 - int(col)
    voxel[b] = int(shape[b]) - 1 - int(row)
    return (voxel[0], voxel[1], voxel[2])


def voxel_to_slice(
    voxel: tuple[int, int, int], plane: str, shape: tuple[int, ...]
) -> tuple[int, int, int]:
    """Inverse of :func:`slice_to_voxel`: where voxel ``(x, y, z)`` is displayed.

    Args:
        voxel: Voxel index in the RAS+ array.
        plane: Plane name.
        shape: Volume shape ``(X, Y, Z[, C])``.

    Returns:
        ``(index, row, col)``: the slice holding the voxel and its native
        display pixel.
    """
    a, b = _in_plane_axes(plane)
    index = int(voxel[PLANE_AXIS[normalize_plane(plane)]])
    return index, int(shape[b]) - 1 - int(voxel[b]), int(shape[a]) - 1 - int(voxel[a])


def take_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Cut one display-oriented slice (native resolution) out of a RAS+ volume.

    Args:
        volume: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` array.
        plane: Plane name.
        index: Slice index (validated against the shape).

    Returns:
        ``(rows, cols[, C])`` array, row 0 at the top (see module docstring).
    """
    plane = normalize_plane(plane)
    index = check_slice(index, volume.shape, plane)
    # basic indexing is a view whatever the memory order (np.take copies non-C arrays whole)
    cut = volume[(slice(None),) * PLANE_AXIS[plane] + (index,)]  # (a, b[, C])
    return np.swapaxes(cut, 0, 1)[::-1, ::-1]


def slice_pixel_spacing(spacing: tuple[float, ...], plane: str) -> tuple[float, float]:
    """``(row_spacing, col_spacing)`` in mm of a slice of a volume.

    Args:
        spacing: Voxel size ``(sx, sy, sz)``.
        plane: Plane name.

    Returns:
        Pixel size along display rows and columns.
    """
    a, b = _in_plane_axes(plane)
    return float(spacing[b]), float(spacing[a])


def largest_slice(mask: np.ndarray, plane: str, label: int | None = None) -> int | None:
    """Slice with the most labelled voxels (first one on ties).

    Args:
        mask: ``(X, Y, Z)`` label array.
        plane: Plane name.
        label: Count only this label id; default: any nonzero label.

    Returns:
        The slice index, or None if nothing is labelled.
    """
    axis = PLANE_AXIS[normalize_plane(plane)]
    hits = mask != 0 if label is None else mask == label
    counts = np.count_nonzero(hits, axis=tuple(ax for ax in range(3) if ax != axis))
    return int(np.argmax(counts)) if counts.any() else None


def default_slice(shape: tuple[int, ...], plane: str, mask: np.ndarray | None = None) -> int:
    """Slice shown when the user names none.

    Args:
        shape: Volume shape.
        plane: Plane name.
        mask: Optional label array on the same grid.

    Returns:
        The slice with the largest labelled area when ``mask`` has labels,
        else the middle slice (``n // 2``).
    """
    if mask is not None:
        best = largest_slice(mask, plane)
        if best is not None:
            return best
    return num_slices(shape, plane) // 2


def square_size(
    native: tuple[int, int], pixel_spacing: tuple[float, float], scale: float = 1.0
) -> tuple[int, int]:
    """Display size ``(rows, cols)`` giving square pixels, times ``scale``.

    The finer spacing is kept, the coarser axis is upsampled: a coronal slice
    of 3 mm slices with 1 mm pixels gets 3 rows per slice.

    Args:
        native: Native ``(rows, cols)``.
        pixel_spacing: ``(row_spacing, col_spacing)`` in mm.
        scale: Extra zoom factor applied to both axes.

    Returns:
        Output ``(rows, cols)``, each at least 1.
    """
    row_sp, col_sp = (abs(float(s)) or 1.0 for s in pixel_spacing)
    pixel = min(row_sp, col_sp)
    rows = max(1, round(native[0] * row_sp / pixel * scale))
    cols = max(1, round(native[1] * col_sp / pixel * scale))
    return rows, cols


def resize_pixels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 grey or RGB image (bilinear; box filter when shrinking).

    Args:
        array: ``(rows, cols)`` or ``(rows, cols, 3)`` uint8.
        size: Output ``(rows, cols)``.

    Returns:
        The resized uint8 array.
    """
    if tuple(array.shape[:2]) == tuple(size):
        return array
    shrinking = size[0] < array.shape[0] or size[1] < array.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    image = Image.fromarray(np.ascontiguousarray(array))
    return np.asarray(image.resize((size[1], size[0]), resample=resample))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label image with nearest neighbour (label ids are never mixed).

    Args:
        labels: ``(rows, cols)`` integer array.
        size: Output ``(rows, cols)``.

    Returns:
        The resized array, same dtype.
    """
    if tuple(labels.shape) == tuple(size):
        return labels
    rows = _nearest_indices(labels.shape[0], size[0])
    cols = _nearest_indices(labels.shape[1], size[1])
    return labels[np.ix_(rows, cols)]


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre for nearest-neighbour resizing."""
    centres = (np.arange(n_out) + 0.5) * n_in / n_out
    return np.minimum(centres.astype(np.intp), n_in - 1)


@dataclass
class SliceView:
    """One slice ready to display, at native resolution.

    Attributes:
        pixels: ``(rows, cols)`` intensities or ``(rows, cols, C)`` channels.
        mask: Label slice ``(rows, cols)`` on the same pixels, or None.
        plane: Plane name (``axial`` for 2D images).
        index: Slice index (0 for 2D images).
        count: Number of slices in this plane (1 for 2D images).
        pixel_spacing: ``(row_spacing, col_spacing)`` in mm.
        zoom: ``(row_zoom, col_zoom)`` from native to rendered pixels; set by
            the renderer (``(1.0, 1.0)`` until then).
    """

    pixels: np.ndarray
    mask: np.ndarray | None
    plane: str
    index: int
    count: int
    pixel_spacing: tuple[float, float]
    zoom: tuple[float, float] = (1.0, 1.0)


def extract_slice(
    image: MedicalImage,
    plane: str = "axial",
    index: int | None = None,
    mask: np.ndarray | None = None,
) -> SliceView:
    """Cut the requested slice (and the matching mask slice) out of ``image``.

    Args:
        image: A volume or a 2D image.
        plane: Plane name; 2D images accept only ``axial``.
        index: Slice index, or None for :func:`default_slice`.
        mask: Label array with ``image``'s spatial shape (already validated).

    Returns:
        The :class:`SliceView`.

    Raises:
        InputError: Unknown plane, out-of-range slice, or a non-axial plane /
            nonzero slice requested of a 2D image.
    """
    plane = normalize_plane(plane)
    if not image.is_volume:
        if plane != "axial":
            raise InputError(
                f"{image.source or 'image'} is a 2D image: it has no {plane} plane "
                "(omit the plane or use axial)"
            )
        if index is not None and index != 0:
            raise InputError(
                f"{image.source or 'image'} is a 2D image: its only slice is 0, not {index}"
            )
        spacing = (float(image.spacing[0]), float(image.spacing[1]))
        return SliceView(image.array, mask, "axial", 0, 1, spacing)
    shape = image.spatial_shape
    index = default_slice(shape, plane, mask) if index is None else check_slice(index, shape, plane)
    pixels = take_slice(image.array, plane, index)
    mask_slice = take_slice(mask, plane, index) if mask is not None else None
    spacing = slice_pixel_spacing(image.spacing, plane)
    return SliceView(pixels, mask_slice, plane, index, num_slices(shape, plane), spacing)
