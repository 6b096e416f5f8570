"""Voxel-axis reorientation to RAS+ and LPS <-> RAS affine conversion.

Readers build an affine in the world convention of their format (DICOM, NRRD
and MetaImage are LPS; NIfTI is RAS), convert it to RAS with :func:`lps_to_ras`
where needed, then call :func:`reorient_to_ras`. That flips/permutes the voxel
axes exactly like ``nibabel.as_closest_canonical`` (no resampling), so the
array axes point Right, Anterior, Superior.
"""

from __future__ import annotations

import os

import numpy as np

from medm3.errors import InputError

#: Flips the first two world axes: LPS <-> RAS (the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a voxel -> LPS-mm affine into a voxel -> RAS-mm affine.

    Args:
        affine: 4x4 matrix mapping voxel indices to LPS world mm.

    Returns:
        The 4x4 matrix mapping the same voxel indices to RAS world mm.
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def axis_codes(affine: np.ndarray) -> str:
    """Axis codes of a RAS affine, e.g. ``"LPS"`` (nibabel ``aff2axcodes``).

    Args:
        affine: 4x4 voxel -> RAS-mm matrix.

    Returns:
        Three letters, one per voxel axis.
    """
    import nibabel as nib

    return "".join(str(c) for c in nib.orientations.aff2axcodes(affine))


def check_affine(affine: np.ndarray, source: str | os.PathLike[str] | None = None) -> None:
    """Refuse an affine that cannot orient a volume (non-finite or singular).

    Args:
        affine: 4x4 voxel -> world matrix.
        source: The file it comes from (for the message).

    Raises:
        InputError: If the matrix holds NaN/inf, a voxel axis has zero length,
            or two axes are (nearly) parallel.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise InputError("the image's affine (voxel-to-world matrix) is not finite", source)
    rot = matrix[:3, :3]
    norms = np.sqrt((rot**2).sum(axis=0))
    if np.any(norms <= 0) or abs(np.linalg.det(rot)) <= 1e-6 * float(np.prod(norms)):
        raise InputError(
            "the image's affine (voxel-to-world matrix) is singular (a zero voxel size or "
            "parallel axes), so the volume has no orientation; fix the header (sform/qform, "
            "pixdim)",
            source,
        )


def reorient_to_ras(
    array: np.ndarray, affine: np.ndarray, source: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Flip/permute the first three axes of ``array`` so they point R, A, S.

    Same semantics as ``nibabel.as_closest_canonical``: each voxel axis is
    assigned to the world axis it is closest to; oblique data keeps its
    rotation in the affine. Extra trailing axes (channels) are kept.

    Args:
        array: Voxel data, ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: 4x4 voxel -> RAS-mm matrix of ``array``.
        source: The file the data comes from (named in errors).

    Returns:
        ``(array, affine, original_codes)``: the reoriented data (a contiguous
        copy unless already RAS), its affine and the original axis codes.

    Raises:
        InputError: If the affine is not finite or singular (:func:`check_affine`).
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    check_affine(affine, source)
    original = axis_codes(affine)
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return np.ascontiguousarray(array), affine, original
    new_array = np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt))
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape[:3])
    return new_array, new_affine, original


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each voxel axis (column norms of the affine).

    Args:
        affine: 4x4 voxel -> world matrix.

    Returns:
        ``(sx, sy, sz)`` in mm.
    """
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def affine_2d(row_spacing: float, col_spacing: float) -> np.ndarray:
    """The affine of a 2D image: scales ``(row, col, 0)`` indices by the spacing.

    Args:
        row_spacing: Distance between rows in mm.
        col_spacing: Distance between columns in mm.

    Returns:
        A 4x4 diagonal matrix.
    """
    return np.diag([float(row_spacing), float(col_spacing), 1.0, 1.0])
