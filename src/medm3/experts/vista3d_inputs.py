"""VISTA3D input checks and point prompts (see :mod:`medm3.experts.vista3d`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.experts import vista3d_labels as labels
from medm3.experts.base import ExpertError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage


def volume_array(image: MedicalImage, trigger: str) -> np.ndarray:
    if not image.is_volume:
        raise ExpertError(f"{trigger} needs a 3D CT volume, but {image.source} is a 2D image")
    array = np.asarray(image.array)
    if array.ndim == 4:
        if array.shape[-1] != 1:
            raise ExpertError(
                f"{trigger} needs a single-channel CT volume, got {array.shape[-1]} channels"
            )
        array = array[..., 0]
    if min(array.shape) < 1:
        raise ExpertError(f"{trigger} got an empty volume {array.shape}")
    return array


def main_image(inputs: Mapping[str, MedicalImage] | MedicalImage, name: str) -> MedicalImage | None:
    from medm3.imaging.image import MedicalImage

    if isinstance(inputs, MedicalImage):
        return inputs
    if isinstance(inputs, Mapping):
        return inputs.get(name) or next(iter(inputs.values()), None)
    return None


def point_prompts(
    options: Mapping[str, Any], prompt: Sequence[int], shape: Sequence[int], trigger: str
) -> tuple[list[list[float]], list[int], int] | None:
    """Validate ``points``/``point_labels``/``point_class``; None when no points."""
    raw = options.get("points")
    if raw is None:
        return None
    try:
        points = [[float(c) for c in p] for p in raw]
    except (TypeError, ValueError):
        raise ExpertError(f"{trigger} points must be [[x, y, z], ...] voxel indices") from None
    if not points or any(len(p) != 3 for p in points):
        raise ExpertError(f"{trigger} points must be [[x, y, z], ...] voxel indices")
    for p in points:
        if not all(-0.5 <= c <= s - 0.5 for c, s in zip(p, shape, strict=True)):
            raise ExpertError(f"{trigger} point {p} lies outside the volume {tuple(shape)}")
    raw_labels = options.get("point_labels")
    point_labels = [1] * len(points) if raw_labels is None else list(raw_labels)
    if len(point_labels) != len(points) or any(v not in (0, 1) for v in point_labels):
        raise ExpertError(f"{trigger} point_labels must hold one 1 (positive) or 0 per point")
    cls = options.get("point_class")
    if cls is not None:
        sid = labels.structure_id(str(cls))
        if sid is None:
            hint = labels.did_you_mean(str(cls))
            raise ExpertError(
                f"{trigger} point_class {cls!r} is not a VISTA3D structure."
                + (f" {hint}" if hint else "")
            )
    elif len(prompt) == 1:
        sid = prompt[0]
    else:
        raise ExpertError(
            f"{trigger} point prompts segment one structure: name it as the argument "
            "(e.g. 'liver') or give the point_class option"
        )
    if sid in labels.SUBCLASS:
        raise ExpertError(
            f"{trigger} point prompts need a single structure; "
            f"{labels.VISTA3D_LABELS[sid]!r} stands for several (name one of them)"
        )
    return points, [int(v) for v in point_labels], int(sid)


def to_preprocessed(
    points: list[list[float]], input_affine: Any, pre_affine: Any
) -> list[list[float]]:
    """Input-grid voxel coordinates -> voxel coordinates of the preprocessed volume."""
    original = np.asarray(input_affine, dtype=np.float64)
    current = np.asarray(pre_affine, dtype=np.float64)
    homogeneous = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
    mapped = (np.linalg.inv(current) @ original @ homogeneous.T).T[:, :3]
    return mapped.tolist()
