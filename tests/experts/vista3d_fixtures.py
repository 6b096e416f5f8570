"""Helpers for the VISTA3D expert tests (imported by ``test_vista3d.py``).

The random-weight bundle builder lives in :mod:`medm3.testing.experts` (public,
used by ``m3 demo`` too) and is re-exported here; this module keeps the
test-only helpers (the shared CT, a synthetic phantom, a stand-in network).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medm3.imaging.image import MedicalImage
from medm3.testing.experts import TINY_NETWORK_DEF, TINY_ROI, write_vista3d_bundle

__all__ = ["TINY_NETWORK_DEF", "TINY_ROI", "write_vista3d_bundle"]


def ct_image(path: Path) -> MedicalImage:
    """The shared CT as a :class:`MedicalImage` (via ``load_image``, else nibabel)."""
    try:
        from medm3.imaging.io import load_image

        return load_image(path, modality="CT")
    except ImportError:  # pragma: no cover - reader not available
        import nibabel as nib

        nii = nib.as_closest_canonical(nib.load(str(path)))
        return MedicalImage(
            array=np.asarray(nii.dataobj),
            spacing=tuple(float(z) for z in nii.header.get_zooms()[:3]),
            affine=nii.affine,
            modality="CT",
            modality_source="caller",
            source=str(path),
        )


def box_phantom(
    shape: Sequence[int] = (40, 50, 20),
    spacing: Sequence[float] = (3.0, 1.5, 3.0),
    origin: Sequence[float] = (-60.0, 25.0, 110.0),
) -> tuple[MedicalImage, np.ndarray]:
    """A synthetic CT: air with a 200 HU box ("liver") and a 1000 HU box ("spleen").

    Args:
        shape: Volume shape (X, Y, Z).
        spacing: Voxel size (mm); multiples of 1.5 mm keep the resampling exact.
        origin: World position of voxel (0, 0, 0).

    Returns:
        ``(image, expected)`` where ``expected`` holds 1 in the 200 HU box and
        3 in the 1000 HU box (VISTA3D ids of liver and spleen), else 0.
    """
    array = np.full(tuple(shape), -1000, dtype=np.int16)
    expected = np.zeros(tuple(shape), dtype=np.uint8)
    array[8:20, 12:34, 4:12] = 200
    expected[8:20, 12:34, 4:12] = 1
    array[25:31, 30:40, 9:15] = 1000
    expected[25:31, 30:40, 9:15] = 3
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    affine[:3, 3] = origin
    image = MedicalImage(
        array=array,
        spacing=tuple(float(s) for s in spacing),
        affine=affine,
        modality="CT",
        modality_source="caller",
        source="phantom",
    )
    return image, expected


class IntensityNetwork:
    """Stand-in for the VISTA3D forward: logits that depend only on the input intensity.

    Class prompts: class 1 (liver) is positive where the scaled intensity is in
    (0.5, 0.75) (200 HU -> 0.577), class 3 (spleen) where it is above 0.9
    (1000 HU -> 0.98), every other class is negative. Point prompts: only the
    voxel nearest to each positive point is positive. Output ``[1, B, H, W, D]``
    (``transpose=True``), so sliding-window blending, the label-id mapping, the
    point mapping and the inversion can be checked voxel by voxel. Records the
    keyword arguments of every call in :attr:`calls`.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, input_images: Any, **kwargs: Any) -> Any:
        import torch

        self.calls.append({"shape": tuple(input_images.shape), **kwargs})
        cv = kwargs.get("class_vector")
        points = kwargs.get("point_coords")
        x = input_images[:, :1].float()
        if points is not None:
            start = [s.start for s in kwargs["patch_coords"][0][-3:]]
            out = torch.full_like(x, -5.0)
            for p, lab in zip(points[0].tolist(), kwargs["point_labels"][0].tolist(), strict=True):
                i, j, k = (round(c - s0) for c, s0 in zip(p, start, strict=True))
                inside = all(0 <= v < n for v, n in zip((i, j, k), x.shape[-3:], strict=True))
                if lab in (1, 3) and inside:
                    out[0, 0, i, j, k] = 5.0
            return out
        channels = []
        for cid in [int(i) for i in cv.flatten()]:
            if cid == 1:
                on = (x > 0.5) & (x < 0.75)
            elif cid == 3:
                on = x > 0.9
            else:
                on = torch.zeros_like(x, dtype=torch.bool)
            channels.append(torch.where(on, 5.0, -5.0))
        return torch.cat(channels, dim=1)
